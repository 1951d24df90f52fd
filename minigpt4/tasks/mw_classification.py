"""Mind-wandering classification: trained as answer generation, validated by scoring.

Validation asks the model for the log-likelihood of every candidate answer (the dataset's
``answers``) after the clip's prompt; the argmax is the prediction and the softmax over
candidates gives the probability of the positive class for ROC AUC.  The first candidate is
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
    }

    @torch.no_grad()
    def evaluation(self, model, loader, candidates) -> EvalResult:
        """``candidates``: every answer text, the positive class's first."""
        rows = []
        for samples in loader:
            scores = model.score_candidates(samples, candidates)  # [B, C] log-likelihoods
            probs = scores.float().softmax(dim=-1)
            for clip, label, prob in zip(samples["video_id"], samples["label"], probs.tolist()):
                rows.append(
                    {
                        "clip": clip,
                        "label": label,
                        "prediction": candidates[max(range(len(prob)), key=prob.__getitem__)],
                        "p_mw": prob[POSITIVE],
                    }
                )
        rows = [row for part in dist_utils.all_gather_object(rows) for row in part]
        rows.sort(key=lambda row: row["clip"])
        metrics = binary_classification_metrics(
            [r["label"] for r in rows], [r["prediction"] for r in rows], [r["p_mw"] for r in rows],
            positive_label=candidates[POSITIVE], labels=candidates,
        )
        return EvalResult(metrics=metrics, predictions=rows)
