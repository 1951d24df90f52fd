"""Fine-tuning on MER-format clips through ``train.py`` (``image_text_pretrain``), and the
train/validation split of the MER builders (a split file or a seeded held-out share)."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import minigpt4.datasets  # noqa: F401  (registers the builders)
from minigpt4.common.config import Config
from minigpt4.common.registry import registry
from minigpt4.datasets.datasets import mer_dataset
from minigpt4.datasets.errors import DataError
from minigpt4.runners.runner_base import RunnerBase

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_MER_CFG = REPO_ROOT / "train_configs" / "demo_mer.yaml"
MER_BUILDERS = ("feature_face_caption", "mer2024_caption")


def _load_train_script():
    spec = importlib.util.spec_from_file_location("train_script_mer", REPO_ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_script = _load_train_script()


def section(assets: dict, **split) -> dict:
    return {
        "build_info": {"annotation": str(assets["mer_annotation"]), "video_root": str(assets["mer_video_root"]),
                       "transcript": str(assets["mer_transcript"])},
        "feature_dim": 64,
        "split": split,
        "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 224},
                          "eval": {"name": "blip2_image_eval", "image_size": 224}},
    }


def all_clips(assets: dict) -> list[str]:
    return [line.split()[0] for line in Path(assets["mer_annotation"]).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", MER_BUILDERS)
def test_held_out_share_splits_the_clips_once_and_by_seed(tiny_assets, name):
    builder = registry.get("builder", name)(section(tiny_assets, eval_share=0.25, seed=3))
    train, evaluation = builder.build("train", 0).names, builder.build("eval", 0).names
    clips = all_clips(tiny_assets)
    assert len(evaluation) == round(0.25 * len(clips)) and not set(train) & set(evaluation)
    assert sorted(train + evaluation) == sorted(clips)
    assert sorted(builder.build("all").names) == sorted(clips)  # eval_emotion.py: every clip
    again = registry.get("builder", name)(section(tiny_assets, eval_share=0.25, seed=3)).build("eval", 0).names
    other = registry.get("builder", name)(section(tiny_assets, eval_share=0.25, seed=4)).build("eval", 0).names
    assert again == evaluation and set(other) != set(evaluation)


def test_split_file_names_the_validation_clips(tiny_assets, tmp_path):
    clips = all_clips(tiny_assets)
    split_file = tmp_path / "validation.txt"
    split_file.write_text(f"{clips[5]}\n\n{clips[0]}\n")
    builder = registry.get("builder", "feature_face_caption")(section(tiny_assets, file=str(split_file)))
    assert sorted(builder.build("eval", 0).names) == sorted([clips[0], clips[5]])
    assert len(builder.build("train", 0)) == len(clips) - 2


def test_split_file_with_an_unknown_clip_is_an_error_naming_the_file(tiny_assets, tmp_path):
    split_file = tmp_path / "validation.txt"
    split_file.write_text("no_such_clip\n")
    builder = registry.get("builder", "feature_face_caption")(section(tiny_assets, file=str(split_file)))
    with pytest.raises(DataError, match=rf"{split_file}: clip\(s\) not in the annotation: no_such_clip"):
        builder.build("train", 0)


def test_no_validation_clips_is_an_error(tiny_assets):
    builder = registry.get("builder", "feature_face_caption")(section(tiny_assets, eval_share=0.0))
    with pytest.raises(DataError, match="no eval clips; list validation clips in split_file or set eval_share"):
        builder.build("eval", 0)


def test_annotation_is_read_and_checked_once_for_both_sides_of_the_split(tiny_assets, tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_ASSETS", str(Path(tiny_assets["llama_dir"]).parent))
    reads, checked = [], []
    read_annotation, validate = mer_dataset.read_annotation, mer_dataset.MERDataset.validate
    monkeypatch.setattr(mer_dataset, "read_annotation", lambda path: reads.append(path) or read_annotation(path))
    monkeypatch.setattr(mer_dataset.MERDataset, "validate", lambda self: checked.append(len(self.rows)) or validate(self))
    cfg = Config(Namespace(cfg_path=str(DEMO_MER_CFG), options=[f"run.output_dir={tmp_path}"]))
    train, evaluation, _ = RunnerBase(cfg)._build_fold_datasets(0)
    clips = all_clips(tiny_assets)
    assert len(reads) == 1 and checked == [len(clips)]  # one pass over every clip, not one per side
    # the sides still split the clips as configured: eval_share 0.25 of the 12
    assert len(evaluation) == round(0.25 * len(clips)) and not set(train.names) & set(evaluation.names)
    assert sorted(train.names + evaluation.names) == sorted(clips)


def test_demo_mer_config_trains_an_epoch_and_validates_by_loss(tiny_assets, tmp_path, monkeypatch):
    """train_configs/demo_mer.yaml as the demo runs it, two epochs: image_text_pretrain on MER clips."""
    monkeypatch.setenv("TINY_ASSETS", str(Path(tiny_assets["llama_dir"]).parent))
    steps = []
    original = RunnerBase._train_epoch

    def counting_epoch(self, net, optimizer, scheduler, scaler, train_set, fold, epoch, micro_batches, tracker):
        steps.append((len(train_set), micro_batches))
        return original(self, net, optimizer, scheduler, scaler, train_set, fold, epoch, micro_batches, tracker)

    monkeypatch.setattr(RunnerBase, "_train_epoch", counting_epoch)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        summary = train_script.main(["--cfg-path", str(DEMO_MER_CFG), "--options", f"run.output_dir={tmp_path}"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    config = OmegaConf.load(DEMO_MER_CFG)
    assert steps == [(9, 3)] * config.run.max_epoch  # 9 training clips in batches of 4
    metrics = json.loads((tmp_path / "fold_0" / "metrics.json").read_text())
    losses = [h["metrics"]["loss"] for h in metrics["history"]]
    assert len(losses) == config.run.max_epoch and all(math.isfinite(v) and v > 0 for v in losses)
    assert metrics["best_metric"] == "loss" and metrics["best_epoch"] == losses.index(min(losses))
    assert summary["folds"]["0"]["loss"] == min(losses)
    last = torch.load(tmp_path / "fold_0" / "checkpoint_last.pth", weights_only=True)
    # 3 micro-batches per epoch in groups of accum_grad_iters=2: optimizer steps 2 per epoch
    assert {int(s["step"]) for s in last["optimizer"]["state"].values()} == {2 * config.run.max_epoch}
