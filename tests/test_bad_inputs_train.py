"""Bad input to ``train.py``: each ends as a one-line error before the model loads and before
any folder is made, as a line of ``skipped.tsv`` where the user asked to skip, or as a correct
result (a held-out fold of one class, a truncated shard under ``on_error: skip``)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minigpt4.common.config import ConfigError
from minigpt4.datasets.errors import DataError
from minigpt4.datasets.shards.pack import pack_hcmw
from minigpt4.tasks.base_task import BaseTask

from test_train import DEMO_CFG, REPO_ROOT, demo_env, load, train

TRAIN = "datasets.hcmw_caption"
ONE_STEP = ("run.folds=[0]", "run.max_epoch=1", "run.iters_per_epoch=1")
# the shards are packed without audio: both sides read FaceMAE and VideoMAE only
NO_AUDIO = (f"{TRAIN}.build_info.audio_dir=", "model.num_video_streams=2")


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the model is built: every error here must come before."""
    def fail(model_cfg):
        raise AssertionError("the model was built before the error")

    monkeypatch.setattr(BaseTask, "build_model", staticmethod(fail))


def rewrite_annotation(assets: dict, path: Path, change) -> Path:
    """The assets' annotation with ``change(row)`` applied to every row, written to ``path``."""
    with open(assets["hcmw_csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(change(dict(row)) for row in rows)
    return path


# ------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize(
    "options, message",
    [
        (["run.folds=[]"], "run.folds: empty; list the test_fold_num of each held-out fold, e.g. [0, 1, 2]"),
        (["run.folds=[1,0,1]"], "run.folds: fold 1 is listed more than once in [1, 0, 1]"),
        (["run.init_lr=.nan"], "run.init_lr: must be a finite number, got nan"),
        (["run.min_lr=.inf"], "run.min_lr: must be a finite number, got inf"),
    ],
    ids=["no folds", "a fold twice", "nan lr", "inf lr"],
)
def test_config_error_before_the_model_and_any_folder(tiny_assets, tmp_path, no_model, options, message):
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        train(tiny_assets, out, *options)
    assert str(err.value) == message
    assert not out.exists()


def test_config_error_is_one_line_from_the_command_line(tiny_assets, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "--cfg-path", str(DEMO_CFG), "--options", "run.folds=[]",
         f"run.output_dir={out}"],
        cwd=tmp_path, env={**os.environ, **demo_env(tiny_assets)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: run.folds: empty; list the test_fold_num of each held-out fold, e.g. [0, 1, 2]"
    )
    assert "Traceback" not in result.stderr and not out.exists()


# ------------------------------------------------------------------------------ resume on other data


@pytest.fixture(scope="module")
def finished_run(tiny_assets, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "train"
    train(tiny_assets, out, *ONE_STEP)
    return out


@pytest.mark.parametrize("key", ["annotation", "feature_root"])
def test_resume_on_other_data_is_refused_naming_the_key(finished_run, tiny_assets, tmp_path, no_model, key):
    """The folds before the resumed one were trained on the saved data: another annotation or
    vector folder would make summary.json average folds of two data sets."""
    resume = finished_run / "fold_0" / "checkpoint_last.pth"
    saved = load(resume)["config"]["datasets"]["hcmw_caption"]["build_info"][key]
    other = tmp_path / "copy"
    if key == "annotation":
        shutil.copy(saved, other)
    else:
        shutil.copytree(saved, other)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        train(tiny_assets, out, *ONE_STEP, f"{TRAIN}.build_info.{key}={other}", f"run.resume_ckpt_path={resume}")
    assert str(err.value) == (
        f"run.resume_ckpt_path: a resume trains on the saved run's data, but datasets.hcmw_caption.build_info.{key}: "
        f"file {saved!r} vs config {str(other)!r}; resume with the saved dataset settings, or start a new run "
        "from its weights with model.ckpt"
    )
    assert not out.exists()


# ------------------------------------------------------------------------------ a held-out fold of one class


def test_single_class_fold_is_flagged_and_its_best_epoch_is_the_lowest_validation_loss(tiny_assets, tmp_path):
    # fold 0 keeps only its MW clips (its NonMW clips move to fold 1): the held-out clips are all
    # MW, while its train rows (folds 1 and 2) still hold both classes
    annotation = rewrite_annotation(
        tiny_assets, tmp_path / "one_class_fold.csv",
        lambda row: {**row, "test_fold_num": "1"} if row["test_fold_num"] == "0" and row["mw_label"] == "NonMW" else row,
    )
    out = tmp_path / "out"
    train(tiny_assets, out, "run.folds=[0]", "run.max_epoch=3", f"{TRAIN}.build_info.annotation={annotation}")

    metrics = json.loads((out / "fold_0" / "metrics.json").read_text())
    losses = [epoch["metrics"]["loss"] for epoch in metrics["history"]]
    assert len(set(losses)) == len(losses)  # the epochs differ, so the choice below means something
    assert metrics["best_metric"] == "balanced_accuracy" and metrics["selected_by"] == "loss"
    assert metrics["best_epoch"] == int(np.argmin(losses))
    for epoch in metrics["history"]:  # never the degenerate 1.0 of one class's recall
        assert epoch["metrics"]["single_class"] is True
        assert epoch["metrics"]["balanced_accuracy"] is None and epoch["metrics"]["roc_auc"] is None
    assert torch.load(out / "fold_0" / "checkpoint_best.pth", weights_only=True)["epoch"] == metrics["best_epoch"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selected_by"] == {"0": "loss"}
    assert summary["summary"]["balanced_accuracy"] == {"mean": None, "std": None, "n_folds": 0}


# ------------------------------------------------------------------------------ on_error: skip


def test_clips_skipped_in_training_are_named_in_skipped_tsv(tiny_assets, tmp_path):
    features = tmp_path / "features"
    shutil.copytree(tiny_assets["hcmw_feature_root"], features)
    (features / "maeV_199_UTT" / "clip_005.npy").unlink()
    out = tmp_path / "out"
    train(tiny_assets, out, *ONE_STEP, f"{TRAIN}.build_info.feature_root={features}", f"{TRAIN}.on_error=skip")
    assert (out / "skipped.tsv").read_text() == (
        f"clip\tfile\tproblem\nclip_005\t{features / 'maeV_199_UTT' / 'clip_005.npy'}\tmissing feature vector\n"
    )
    predictions = (out / "fold_0" / "predictions.csv").read_text()
    assert "clip_005" not in predictions and (out / "summary.json").is_file()


# ------------------------------------------------------------------------------ a truncated shard


@pytest.fixture
def truncated_shards(tiny_assets, tmp_path) -> tuple[Path, dict]:
    """The 24 clips in shards of 5, the fourth (clips 15-19) cut in half; returns the folder and
    the index entry of the cut shard."""
    folder = tmp_path / "shards"
    pack_hcmw(tiny_assets["hcmw_csv"], tiny_assets["hcmw_image_root"], tiny_assets["hcmw_feature_root"], folder,
              facemae_dir="mae_340_UTT", videomae_dir="maeV_199_UTT", shard_size=5)
    shard = folder / "hcmw-000003.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    entry = json.loads((folder / "index.json").read_text())["shards"][3]
    return folder, entry


def test_a_truncated_shard_stops_training_before_the_model_loads(truncated_shards, tiny_assets, tmp_path, no_model):
    folder, entry = truncated_shards
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"clip_019: {folder / 'hcmw-000003.tar'} key 00000019: not read: .*truncated"):
        train(tiny_assets, out, *ONE_STEP, *NO_AUDIO, f"{TRAIN}.build_info.shards={folder}/hcmw-{{000000..000004}}.tar")
    assert not out.exists()


def test_a_truncated_shard_under_skip_trains_on_the_rest_and_reports_the_lost_clips(truncated_shards, tiny_assets, tmp_path):
    """Found by the check before training; the stream then reads the shard up to the break and
    goes on, instead of failing mid-epoch."""
    folder, entry = truncated_shards
    out = tmp_path / "out"
    train(tiny_assets, out, "run.folds=[1]", "run.max_epoch=1", "run.iters_per_epoch=0", "run.batch_size_train=4",
          *NO_AUDIO, f"{TRAIN}.build_info.shards={folder}/hcmw-{{000000..000004}}.tar", f"{TRAIN}.on_error=skip",
          f"{TRAIN}.shuffle_buffer=0")
    with open(out / "skipped.tsv", newline="") as handle:
        skipped = list(csv.DictReader(handle, delimiter="\t"))
    lost = [row["clip"] for row in skipped]
    assert lost and lost == entry["clips"][-len(lost):]  # the clips after the break, in shard order
    shard = folder / "hcmw-000003.tar"
    for row, key in zip(skipped, entry["keys"][-len(lost):]):
        assert row["file"] == f"{shard} key {key}" and row["problem"].startswith(f"not read: {shard}: unreadable")
    metrics = json.loads((out / "fold_1" / "metrics.json").read_text())
    assert len(metrics["history"]) == 1
