"""Mind-wandering classification: trained as answer generation, validated by scoring.

Validation asks the model for the log-likelihood of every candidate answer (the dataset's
``answers``) after the clip's prompt; the argmax is the prediction and the softmax over
candidates gives the probability of the positive class for ROC AUC.  The log-likelihood of
the true answer gives the validation loss, the training loss on the held-out clips: what
picks the best epoch of a fold whose held-out clips are all of one class.  The first candidate is
the positive class: the dataset lists its ``positive_label``'s answer first.  Train and
validation use the same answer texts (the original trained on ``mw``/``nonmw`` and compared
with the long texts).
"""

from __future__ import annotations

import torch

from minigpt4.common import dist_utils
from minigpt4.common.registry import registry
from minigpt4.tasks.image_text_pretrain import EvalResult, ImageTextPretrainTask
from minigpt4.tasks.metrics import binary_classification_metrics

POSITIVE = 0  # index of the positive class among the candidates


@registry.register_task("mw_classification")
class MWClassificationTask(ImageTextPretrainTask):
    METRICS = {
        "accuracy": True,
        "balanced_accuracy": True,
        "precision": True,
        "recall": True,
        "f1": True,
        "macro_f1": True,
        "roc_auc": True,
        "loss": False,
    }

    @torch.no_grad()
    def evaluation(self, model, loader, candidates) -> EvalResult:
        """``candidates``: every answer text, the positive class's first.

        ``loss``: the class-weighted cross-entropy of the true answers' tokens (their end
        symbol included), as training computes it: sum(w * token loss) / sum(w) over tokens.
        """
        answer_tokens = [len(model.layout.answer_ids(candidate)) for candidate in candidates]
        rows, weighted_nll, weighted_tokens = [], 0.0, 0.0
        for samples in loader:
            scores = model.score_candidates(samples, candidates)  # [B, C] log-likelihoods
            probs = scores.float().softmax(dim=-1)
            per_clip = zip(samples["video_id"], samples["label"], scores.tolist(), probs.tolist(),
                           samples["class_weight"].tolist())
            for clip, label, score, prob, weight in per_clip:
                truth = candidates.index(label)
                weighted_nll -= weight * score[truth]
                weighted_tokens += weight * answer_tokens[truth]
                rows.append(
                    {
                        "clip": clip,
                        "label": label,
                        "prediction": candidates[max(range(len(prob)), key=prob.__getitem__)],
                        "p_mw": prob[POSITIVE],
                    }
                )
        parts = dist_utils.all_gather_object((rows, weighted_nll, weighted_tokens))
        rows = sorted((row for part, _, _ in parts for row in part), key=lambda row: row["clip"])
        metrics = binary_classification_metrics(
            [r["label"] for r in rows], [r["prediction"] for r in rows], [r["p_mw"] for r in rows],
            positive_label=candidates[POSITIVE], labels=candidates,
        )
        metrics["loss"] = sum(nll for _, nll, _ in parts) / sum(tokens for _, _, tokens in parts)
        return EvalResult(metrics=metrics, predictions=rows)
