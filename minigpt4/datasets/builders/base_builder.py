"""What every dataset builder does: merge its defaults, build processors, hand out splits.

A builder is registered under the dataset's config name (``registry.register_builder``) and
points at its default YAML through ``DATASET_CONFIG_DICT``; that file holds
``datasets: {<name>: {...}}`` and lists every key a user may set.  ``REQUIRED_PATHS`` are
dotted keys of the section that must name existing files or folders (checked by
``minigpt4.common.config`` before a run builds anything).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

import minigpt4.processors  # noqa: F401  (registers the processors the configs name)
from minigpt4.common.config import check_against_defaults
from minigpt4.common.registry import registry
from minigpt4.datasets.datasets.base_dataset import SPLITS

PROCESSOR_SPLITS = ("train", "eval")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # minigpt4/, where configs/ lives


class BaseDatasetBuilder:
    DATASET_CONFIG_DICT: dict[str, str] = {}  # config type -> YAML path relative to minigpt4/
    REQUIRED_PATHS: tuple[str, ...] = ()
    EVAL_TASK = ""  # registry name of the task eval_emotion.py runs on this dataset; "" = none yet
    fold_warning: str | None = None  # what a fold check let through (hcmw: a participant in several folds)

    def __init__(self, cfg: Mapping[str, Any] | DictConfig | None = None):
        """``cfg`` is the dataset's section of the run config; keys it leaves out take the defaults."""
        defaults = OmegaConf.load(self.default_config_path())["datasets"]
        (self.name,) = defaults.keys()  # the default YAML holds exactly this dataset's section
        # resolved first: a section cut out of a run config loses the root its ${...} refer to
        given = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
        check_against_defaults(
            given,
            OmegaConf.to_container(defaults[self.name]),
            f"datasets.{self.name}",
        )
        self.config = OmegaConf.merge(defaults[self.name], given)
        self.vis_processors = {split: self._processor(self.config.vis_processor[split]) for split in PROCESSOR_SPLITS}

    @classmethod
    def required_paths(cls, section: Mapping[str, Any]) -> tuple[str, ...]:
        """Dotted keys of ``section`` (the dataset's resolved config) that must name existing paths."""
        return cls.REQUIRED_PATHS

    @classmethod
    def default_config_path(cls, config_type: str = "default") -> str:
        return str(PACKAGE_ROOT / cls.DATASET_CONFIG_DICT[config_type])

    @staticmethod
    def _processor(cfg: DictConfig) -> Callable:
        return registry.get("processor", cfg.name).from_config(cfg)

    def vis_processor(self, split: str) -> Callable:
        """The train processor for ``train``; the deterministic eval processor for ``eval`` and ``all``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        return self.vis_processors["train" if split == "train" else "eval"]

    def build(self, split: str, fold: int | None = None) -> Dataset:
        """The dataset of ``split`` (``train``, ``eval`` or ``all``), of fold ``fold`` where folds exist."""
        raise NotImplementedError(f"{type(self).__name__} must implement build")
