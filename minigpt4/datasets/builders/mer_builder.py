"""Builders of the MER-style emotion sets: ``feature_face_caption`` (MERR / MER2023) and
``mer2024_caption``.  Both read the same layout; only their defaults differ."""

from __future__ import annotations

from functools import cached_property

from minigpt4.common.registry import registry
from minigpt4.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt4.datasets.datasets.mer_dataset import MERDataset, held_out_clips


class MERBuilder(BaseDatasetBuilder):
    REQUIRED_PATHS = ("build_info.annotation", "build_info.video_root", "build_info.transcript")
    EVAL_TASK = "emotion_eval"  # what eval_emotion.py does with these datasets

    def build(self, split: str, fold: int | None = None) -> MERDataset:
        """One side of the train/validation split (``train``, ``eval``) with ``fold`` 0, else every clip.

        MER sets have one split and no folds: ``train.py`` names it fold 0 (``run.folds: [0]``).
        Without a fold (``eval_emotion.py``) every clip is read and ``split`` only picks the
        image processor.
        """
        if fold not in (None, -1, 0):
            raise ValueError(f"{self.name} has one train/validation split, fold 0; got fold {fold}")
        processor = self.vis_processor(split)
        if fold != 0:
            return self.validated.select("all", (), processor)
        return self.validated.select(split, self.held_out, processor)

    @cached_property
    def held_out(self) -> set[str]:
        """The validation clips of fold 0, drawn (or read from the split file) once per builder."""
        split = self.config.split
        return held_out_clips(self.validated.annotated_clips, split.file, split.eval_share, split.seed)

    @cached_property
    def validated(self) -> MERDataset:
        """Every usable clip, its files checked once per builder, whatever sides of the split are taken."""
        cfg, info = self.config, self.config.build_info
        return MERDataset(
            self.vis_processor("all"),
            info.annotation,
            info.video_root,
            info.transcript,
            info.feature_root,
            facemae_dir=info.facemae_dir,
            videomae_dir=info.videomae_dir,
            audio_dir=info.audio_dir,
            feature_dim=cfg.feature_dim,
            labels=list(cfg.labels),
            question=cfg.question,
            on_error=cfg.on_error,
        )


@registry.register_builder("feature_face_caption")
class FeatureFaceBuilder(MERBuilder):
    DATASET_CONFIG_DICT = {"default": "configs/datasets/mer/feature_face_caption.yaml"}


@registry.register_builder("mer2024_caption")
class MER2024Builder(MERBuilder):
    DATASET_CONFIG_DICT = {"default": "configs/datasets/mer/mer2024.yaml"}
