"""Builder of ``hcmw_caption``, the mind-wandering clips."""

from __future__ import annotations

import logging
from functools import cached_property

from minigpt4.common.registry import registry
from minigpt4.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt4.datasets.datasets.hcmw_dataset import NO_FOLD, HCMWDataset
from minigpt4.datasets.folds import check_participant_folds
from minigpt4.datasets.shards.hcmw_shards import HCMWShardDataset, HCMWShardStream

logger = logging.getLogger(__name__)


@registry.register_builder("hcmw_caption")
class HCMWBuilder(BaseDatasetBuilder):
    DATASET_CONFIG_DICT = {"default": "configs/datasets/hcmw/default.yaml"}
    REQUIRED_PATHS = ("build_info.annotation", "build_info.image_root", "build_info.feature_root")
    EVAL_TASK = "feature_dump"  # what eval_emotion.py does with this dataset

    @classmethod
    def required_paths(cls, section) -> tuple[str, ...]:
        # shards replace the folders; their pattern is checked when the dataset is built
        return () if (section.get("build_info") or {}).get("shards") else cls.REQUIRED_PATHS

    def build(self, split: str, fold: int | None = None) -> HCMWDataset:
        """``train`` / ``eval`` rows of ``fold`` (default: the config's ``fold``), or ``all`` rows.

        ``all`` ignores the config's ``fold``, which names the held-out fold of training runs.
        """
        if fold is None:
            fold = NO_FOLD if split == "all" else self.config.fold
        if fold != NO_FOLD:
            _ = self.fold_warning  # folds are read: the participant check runs (once per builder)
        dataset = self.validated.select(split, fold, self.vis_processor(split))
        if split == "train" and self.config.build_info.shards:  # training streams shards (WebDataset)
            return HCMWShardStream(dataset, self.config.shuffle_buffer)
        return dataset

    @cached_property
    def fold_warning(self) -> str | None:
        """A participant whose clips lie in two folds stops the run (one line naming them)
        unless ``allow_split_participants``; then that line, logged, is for the run's report."""
        warning = check_participant_folds(
            self.validated.rows, self.validated.annotation, "allow_split_participants",
            self.config.allow_split_participants,
        )
        if warning:
            logger.warning("%s", warning)
        return warning

    @cached_property
    def validated(self) -> HCMWDataset:
        """Every usable row, its files checked once per builder, whatever splits are taken."""
        cfg, info = self.config, self.config.build_info
        if info.shards:
            return HCMWShardDataset(
                self.vis_processor("all"),
                info.shards,
                info.shard_index,
                audio=bool(info.audio_dir),  # as with the folders: empty = no audio stream
                shard_subset=info.shard_subset,
                feature_dim=cfg.feature_dim,
                instruction=cfg.instruction,
                answers=dict(cfg.answers),
                positive_label=cfg.positive_label,
                on_error=cfg.on_error,
            )
        return HCMWDataset(
            self.vis_processor("all"),
            info.annotation,
            info.image_root,
            info.feature_root,
            facemae_dir=info.facemae_dir,
            videomae_dir=info.videomae_dir,
            audio_dir=info.audio_dir,
            feature_dim=cfg.feature_dim,
            instruction=cfg.instruction,
            answers=dict(cfg.answers),
            positive_label=cfg.positive_label,
            on_error=cfg.on_error,
        )
