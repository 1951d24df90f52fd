"""What every task shares: building the model and datasets named in the config.

The runner owns the loop; a task owns what happens to one batch and what is written at
the end."""

from __future__ import annotations

import logging

from minigpt4.common.registry import registry

logger = logging.getLogger(__name__)


class BaseTask:
    def __init__(self, run_cfg):
        self.run_cfg = run_cfg

    @classmethod
    def setup_task(cls, run_cfg) -> "BaseTask":
        return cls(run_cfg)

    @staticmethod
    def build_model(model_cfg):
        return registry.get("model", model_cfg.arch).from_config(model_cfg)

    @staticmethod
    def build_dataset(name: str, dataset_cfg, split: str, fold: int | None = None):
        builder = registry.get("builder", name)(dataset_cfg)
        return builder.build(split, fold)
