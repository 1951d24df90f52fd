"""Config values that change what a training run does: the answer wording and positive class,
``run.device: cpu`` on a machine with CUDA, and one check of the annotation per run."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from minigpt4.common.config import Config
from minigpt4.datasets.datasets import hcmw_dataset
from minigpt4.runners.runner_base import RunnerBase
from minigpt4.tasks.base_task import BaseTask
from minigpt4.tasks.mw_classification import MWClassificationTask

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CFG = REPO_ROOT / "train_configs" / "demo.yaml"
ONE_STEP = ["run.folds=[0]", "run.max_epoch=1", "run.iters_per_epoch=1", "run.batch_size_train=2",
            "run.tensorboard=false", "run.log_level=WARNING"]


def load_train_script():
    spec = importlib.util.spec_from_file_location("train_script_effects", REPO_ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def demo_env(tiny_assets, monkeypatch, tmp_path):
    monkeypatch.setenv("TINY_ASSETS", str(Path(tiny_assets["llama_dir"]).parent))
    monkeypatch.setenv("DEMO_FEATURES", str(tiny_assets["hcmw_feature_root"]))
    monkeypatch.setenv("DEMO_OUT", str(tmp_path / "demo_out"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield tmp_path
    root.handlers[:] = handlers
    root.setLevel(level)


def test_answer_wording_and_positive_class_come_from_the_config(demo_env, monkeypatch):
    """Other answer texts train, validate and score; the positive class is the configured one."""
    seen_answers = set()
    train_step = MWClassificationTask.train_step

    def recording_step(model, samples):
        seen_answers.update(samples["answer"])
        return train_step(model, samples)

    monkeypatch.setattr(MWClassificationTask, "train_step", staticmethod(recording_step))
    out = demo_env / "run"
    load_train_script().main([
        "--cfg-path", str(DEMO_CFG), "--options", *ONE_STEP, f"run.output_dir={out}",
        "datasets.hcmw_caption.answers.MW=drifting off", "datasets.hcmw_caption.answers.NonMW=on task",
        "datasets.hcmw_caption.positive_label=NonMW",
    ])
    assert seen_answers <= {"drifting off", "on task"} and seen_answers
    metrics = json.loads((out / "fold_0" / "metrics.json").read_text())["best"]
    assert metrics["positive_label"] == "on task"
    assert metrics["confusion_labels"] == ["on task", "drifting off"]
    with open(out / "fold_0" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["label"] for row in rows} == {"drifting off", "on task"}
    assert {row["prediction"] for row in rows} <= {"drifting off", "on task"}
    # recall of the positive class, recomputed from the predictions
    positives = [row for row in rows if row["label"] == "on task"]
    assert metrics["recall"] == pytest.approx(sum(row["prediction"] == "on task" for row in positives) / len(positives))


class Built(Exception):
    """Stops the run once the model exists."""


def test_cpu_device_runs_fp32_even_where_cuda_is_available(demo_env, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, run on its CPU
    models = []
    build_model = BaseTask.build_model

    def build_and_stop(model_cfg):
        models.append(build_model(model_cfg))
        raise Built

    monkeypatch.setattr(BaseTask, "build_model", staticmethod(build_and_stop))
    with pytest.raises(Built):
        load_train_script().main([
            "--cfg-path", str(DEMO_CFG), "--options", *ONE_STEP, f"run.output_dir={demo_env / 'run'}",
            "run.device=cpu", "model.precision=bf16",
        ])
    (model,) = models
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.to("cpu").compute_dtype == torch.float32


def test_annotation_is_checked_once_per_run_not_per_fold_and_split(demo_env, monkeypatch):
    reads, checks = [], []
    read_annotation, validate = hcmw_dataset.read_annotation, hcmw_dataset.HCMWDataset.validate
    monkeypatch.setattr(hcmw_dataset, "read_annotation", lambda path: reads.append(path) or read_annotation(path))
    monkeypatch.setattr(hcmw_dataset.HCMWDataset, "validate", lambda self: checks.append(1) or validate(self))
    cfg = Config(Namespace(cfg_path=str(DEMO_CFG), options=[f"run.output_dir={demo_env / 'run'}"]))
    runner = RunnerBase(cfg)
    splits = {fold: runner._build_fold_datasets(fold) for fold in (0, 1, 2)}
    assert len(reads) == 1 and len(checks) == 1
    # the splits still partition the clips by fold
    for fold, (train, evaluation, _) in splits.items():
        assert not set(train.names) & set(evaluation.names)
        assert all(row.fold == fold for row in evaluation.rows)
        assert all(row.fold != fold for row in train.rows)
