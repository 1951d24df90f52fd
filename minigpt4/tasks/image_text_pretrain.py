"""Generic instruction tuning: the loss of the answer tokens, validation by mean loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from minigpt4.common import dist_utils
from minigpt4.common.registry import registry
from minigpt4.tasks.base_task import BaseTask


@dataclass
class EvalResult:
    metrics: dict  # scalar metrics (and plain-data extras such as a confusion matrix)
    predictions: list[dict] = field(default_factory=list)  # one row per clip, for a CSV


@registry.register_task("image_text_pretrain")
class ImageTextPretrainTask(BaseTask):
    # metric name -> True when larger is better; run.best_metric must be one of these
    METRICS = {"loss": False}

    @staticmethod
    def train_step(model, samples: dict) -> torch.Tensor:
        return model(samples).loss

    @torch.no_grad()
    def evaluation(self, model, loader, candidates) -> EvalResult:
        total, count = 0.0, 0
        for samples in loader:
            output = model(samples)
            weight = float(output.token_weight.sum())
            total += float(output.loss) * weight
            count += weight
        gathered = dist_utils.all_gather_object((total, count))
        total, count = sum(t for t, _ in gathered), sum(c for _, c in gathered)
        return EvalResult(metrics={"loss": total / max(count, 1e-12)})
