"""k-fold LoRA fine-tuning through ``train.main`` on the tiny model (SPEC section 8).

One short two-fold reference run (2 epochs of 2 steps, TensorBoard on) is shared by the
tests of its outputs; the resume test repeats it with interruptions and compares files.
Bad configurations must fail before any training step and before any checkpoint is written.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from minigpt4.common import atomic_io
from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.common.config import Config, ConfigError
from minigpt4.common.registry import registry
from minigpt4.datasets.errors import DataError
from minigpt4.models.minigpt_v2 import MiniGPTv2
from minigpt4.runners.common import row_loader
from minigpt4.runners.runner_base import RunnerBase

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CFG = REPO_ROOT / "train_configs" / "demo.yaml"
FOLDS = [0, 1]
EPOCHS = 2
STEPS = 2
SHORT = [f"run.folds=[{','.join(map(str, FOLDS))}]", f"run.max_epoch={EPOCHS}", f"run.iters_per_epoch={STEPS}",
         "run.tensorboard=false", "run.log_level=WARNING"]
MW, NON_MW = "mind wandering", "non-mind wandering"
FOLD_FILES = ("checkpoint_last.pth", "checkpoint_best.pth", "metrics.json", "predictions.csv")


def _load_train_script():
    spec = importlib.util.spec_from_file_location("train_script", REPO_ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_script = _load_train_script()


def demo_env(assets: dict) -> dict[str, str]:
    root = Path(assets["llama_dir"]).parent
    return {"TINY_ASSETS": str(root), "DEMO_FEATURES": str(assets["hcmw_feature_root"]), "DEMO_OUT": str(root / "unused")}


def train(assets: dict, out_dir: Path, *options: str) -> dict:
    """``train.py --cfg-path train_configs/demo.yaml --options SHORT... options...`` in process.

    The runner configures the root logger; its handlers and level are put back afterwards.
    """
    argv = ["--cfg-path", str(DEMO_CFG), "--options", *SHORT, f"run.output_dir={out_dir}", *options]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in demo_env(assets).items():
                mp.setenv(name, value)
            return train_script.main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def demo_config(assets: dict, *options: str) -> Config:
    """The merged demo config with its environment variables resolved (they are unset afterwards)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in demo_env(assets).items():
            mp.setenv(name, value)
        cfg = Config(argparse.Namespace(cfg_path=str(DEMO_CFG), options=[*SHORT, *options]), default_runner="runner_base")
        OmegaConf.resolve(cfg.config)
        return cfg


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # plain data only


def read_predictions(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def fold_clips(assets: dict, fold: int) -> dict[str, str]:
    """clip -> answer text of the eval rows of ``fold`` in the annotation CSV."""
    answers = {"MW": MW, "NonMW": NON_MW}
    with open(assets["hcmw_csv"], newline="") as handle:
        return {row["uuid"].removesuffix(".mp4"): answers[row["mw_label"]]
                for row in csv.DictReader(handle) if int(row["test_fold_num"]) == fold}


def released_name(name: str) -> str:
    """peft's current LoRA names carry the adapter (``lora_A.default.weight``); released files do not."""
    return name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_same_optimizer(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index in a["state"]:
        assert_same_tensors(a["state"][index], b["state"][index])


# --------------------------------------------------------------------------- the reference run


@pytest.fixture(scope="module")
def reference(tiny_assets, tmp_path_factory):
    """Two folds, 2 epochs of 2 steps, TensorBoard on; records the trainables at each fold's start,
    the training mode of the ViT in every training forward and every file written atomically."""
    out = tmp_path_factory.mktemp("reference") / "train"
    starts = []  # the trainables, RNG and optimizer state at the start of each fold
    scores = {}  # (fold, epoch) -> clip -> candidate log-likelihoods [C] of that epoch's validation
    vit_training = []  # per training forward: does any ViT module run in training mode?
    atomic_writes = []  # paths written through the atomic writer
    current = {}
    train_epoch, score_candidates = RunnerBase._train_epoch, MiniGPTv2.score_candidates
    forward, write_through_tmp = MiniGPTv2.forward, atomic_io.write_through_tmp

    def recording_epoch(self, net, optimizer, scheduler, scaler, train_set, fold, epoch, steps, tracker):
        if epoch == 0:
            starts.append({
                "fold": fold,
                "params": {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad},
                "rng": torch.get_rng_state(),
                "optimizer_state": len(optimizer.state),
            })
        current["key"] = (fold, epoch)  # the validation that follows belongs to this epoch
        return train_epoch(self, net, optimizer, scheduler, scaler, train_set, fold, epoch, steps, tracker)

    def recording_scores(self, samples, candidates):
        result = score_candidates(self, samples, candidates)
        scores.setdefault(current["key"], {}).update(zip(samples["video_id"], result.clone()))
        return result

    def recording_forward(self, samples):
        if torch.is_grad_enabled():
            vit_training.append(any(m.training for m in self.visual_encoder.modules()))
        return forward(self, samples)

    def recording_write(path, write):
        atomic_writes.append(Path(path))
        return write_through_tmp(path, write)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunnerBase, "_train_epoch", recording_epoch)
        mp.setattr(MiniGPTv2, "score_candidates", recording_scores)
        mp.setattr(MiniGPTv2, "forward", recording_forward)
        mp.setattr(atomic_io, "write_through_tmp", recording_write)
        summary = train(tiny_assets, out, "run.tensorboard=true")
    return {"out": out, "summary": summary, "starts": starts, "scores": scores, "vit_training": vit_training,
            "atomic_writes": atomic_writes}


def test_run_writes_every_file_per_fold_and_a_summary(reference, tiny_assets):
    out = reference["out"]
    for fold in FOLDS:
        for name in FOLD_FILES:
            assert (out / f"fold_{fold}" / name).is_file(), name
        metrics = json.loads((out / f"fold_{fold}" / "metrics.json").read_text())
        assert metrics["fold"] == fold and metrics["best_metric"] == metrics["selected_by"] == "balanced_accuracy"
        assert metrics["best"]["single_class"] is False  # both classes in every held-out fold of the assets
        assert [h["epoch"] for h in metrics["history"]] == list(range(EPOCHS))
        values = [h["metrics"]["balanced_accuracy"] for h in metrics["history"]]
        assert metrics["best_epoch"] == int(np.argmax(values))  # first epoch of the maximum
        assert metrics["best"] == metrics["history"][metrics["best_epoch"]]["metrics"]
        best = load(out / f"fold_{fold}" / "checkpoint_best.pth")
        assert best["epoch"] == metrics["best_epoch"] and best["metrics"] == metrics["best"]
        last = load(out / f"fold_{fold}" / "checkpoint_last.pth")
        assert last["epoch"] == EPOCHS - 1 and last["fold"] == fold
        assert {"model", "optimizer", "scaler", "lr_sched", "history", "best", "rng", "config"} <= last.keys()

        rows = read_predictions(out / f"fold_{fold}" / "predictions.csv")
        assert list(rows[0]) == ["clip", "label", "prediction", "p_mw"]
        assert {r["clip"]: r["label"] for r in rows} == fold_clips(tiny_assets, fold)
        assert {r["prediction"] for r in rows} <= {MW, NON_MW}
        assert all(0.0 <= float(r["p_mw"]) <= 1.0 for r in rows)


def test_frozen_vit_runs_in_eval_mode_in_every_training_step(reference):
    """``net.train()`` alone would switch the frozen ViT's drop-path on; the original kept it off."""
    assert len(reference["vit_training"]) == len(FOLDS) * EPOCHS * STEPS
    assert not any(reference["vit_training"])


def test_every_result_file_is_written_through_the_atomic_writer(reference):
    out = reference["out"]
    written = {path.relative_to(out).as_posix() for path in reference["atomic_writes"]}
    expected = {f"fold_{fold}/{name}" for fold in FOLDS for name in FOLD_FILES} | {"summary.json"}
    assert expected <= written
    assert not list(out.rglob("*.tmp"))


def test_summary_is_mean_and_population_std_of_the_fold_bests(reference):
    out = reference["out"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(reference["summary"]))  # what main() returns is what it wrote
    bests = [json.loads((out / f"fold_{fold}" / "metrics.json").read_text())["best"] for fold in FOLDS]
    assert summary["folds"] == {str(fold): best for fold, best in zip(FOLDS, bests)}
    for name in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "macro_f1", "n"):
        values = [best[name] for best in bests]
        assert summary["summary"][name]["mean"] == pytest.approx(np.mean(values))
        assert summary["summary"][name]["std"] == pytest.approx(np.std(values))


def test_metrics_json_equals_sklearn_on_the_predictions_csv(reference):
    for fold in FOLDS:
        fold_dir = reference["out"] / f"fold_{fold}"
        best = json.loads((fold_dir / "metrics.json").read_text())["best"]
        rows = read_predictions(fold_dir / "predictions.csv")
        y_true = [r["label"] for r in rows]
        y_pred = [r["prediction"] for r in rows]
        p_mw = [float(r["p_mw"]) for r in rows]
        assert best["n"] == len(rows)
        assert best["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
        assert best["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
        assert best["precision"] == pytest.approx(precision_score(y_true, y_pred, pos_label=MW, zero_division=0))
        assert best["recall"] == pytest.approx(recall_score(y_true, y_pred, pos_label=MW, zero_division=0))
        assert best["f1"] == pytest.approx(f1_score(y_true, y_pred, pos_label=MW, zero_division=0))
        assert best["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
        assert best["roc_auc"] == pytest.approx(roc_auc_score([y == MW for y in y_true], p_mw))
        assert best["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=[MW, NON_MW]).tolist()


def test_tensorboard_gets_train_and_validation_scalars_of_every_fold(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((reference["out"] / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(reference["out"] / "tensorboard"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    for fold in FOLDS:
        assert {f"fold_{fold}/train/loss", f"fold_{fold}/train/lr", f"fold_{fold}/val/balanced_accuracy"} <= tags
        assert len(accumulator.Scalars(f"fold_{fold}/train/loss")) == EPOCHS * STEPS
        assert [s.step for s in accumulator.Scalars(f"fold_{fold}/val/roc_auc")] == list(range(EPOCHS))


def test_each_fold_starts_from_the_same_initial_weights(reference):
    starts = reference["starts"]
    assert [s["fold"] for s in starts] == FOLDS
    first, second = starts
    assert_same_tensors(first["params"], second["params"])
    assert torch.equal(first["rng"], second["rng"])  # same dropout draws too
    assert first["optimizer_state"] == second["optimizer_state"] == 0  # a fresh optimizer
    # ...and not merely unchanged: fold 0's training moved the weights that fold 1 starts from again
    trained = load(reference["out"] / "fold_0" / "checkpoint_last.pth")["model"]
    start = {released_name(n): t for n, t in second["params"].items()}
    assert all(not torch.equal(trained[name], start[name]) for name in trained)


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def reloaded(reference, tiny_assets):
    """A fresh model from the config with ``model.ckpt`` = fold 0's best checkpoint, and its config."""
    ckpt = reference["out"] / "fold_0" / "checkpoint_best.pth"
    cfg = demo_config(tiny_assets, f"model.ckpt={ckpt}")
    task = registry.get("task", cfg.run_cfg.task).setup_task(cfg.run_cfg)
    model = task.build_model(cfg.model_cfg).eval()
    return {"cfg": cfg, "task": task, "model": model}


@pytest.mark.parametrize("name", ["checkpoint_last.pth", "checkpoint_best.pth"])
def test_checkpoints_hold_exactly_the_trainable_tensors_in_released_layout(reference, reloaded, name):
    model = reloaded["model"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    state = load(reference["out"] / "fold_0" / name)["model"]
    assert set(state) == {released_name(n) for n in trainable}
    assert not [key for key in state if ".default." in key]
    assert "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in state
    streams = {f"feats_llama_proj{k + 1}.weight" for k in range(model.num_video_streams)}
    assert {"llama_proj.weight", "cls_tk_llama_proj.weight", *streams} <= set(state)
    unused = [f"feats_llama_proj{k + 1}." for k in range(model.num_video_streams, 3)]  # frozen projectors
    assert not [key for key in state if key.startswith(("visual_encoder.", "ln_vision.", *unused))]
    frozen = {released_name(n) for n, p in model.named_parameters() if not p.requires_grad}
    assert not frozen & set(state)


def test_best_checkpoint_through_model_ckpt_reproduces_its_validation(reference, reloaded):
    fold_dir = reference["out"] / "fold_0"
    saved = load(fold_dir / "checkpoint_best.pth")
    model, cfg, task = reloaded["model"], reloaded["cfg"], reloaded["task"]
    own = {released_name(n): p for n, p in model.named_parameters() if p.requires_grad}
    assert_same_tensors({k: own[k].detach() for k in saved["model"]}, saved["model"])

    builder = registry.get("builder", "hcmw_caption")(cfg.datasets_cfg.hcmw_caption)
    eval_set = builder.build("eval", 0)
    loader = row_loader(eval_set, range(len(eval_set)), cfg.run_cfg.batch_size_eval, 0)
    # The tiny model's P(MW) saturates near 1 after so few steps, so the raw log-likelihoods of
    # the saved epoch's validation are the sharp comparison; metrics and the CSV must match too.
    recorded = reference["scores"][(0, saved["epoch"])]
    for samples in loader:
        scores = model.score_candidates(samples, eval_set.candidate_answers)
        for clip, row in zip(samples["video_id"], scores):
            assert torch.allclose(row, recorded[clip], rtol=1e-6, atol=1e-5), clip
    result = task.evaluation(model, loader, eval_set.candidate_answers)

    loss = result.metrics.pop("loss")
    assert loss == pytest.approx(saved["metrics"].pop("loss"), rel=1e-5)
    assert result.metrics == saved["metrics"]
    # the validation loss is the training loss on the held-out clips: the model's own forward
    weighted, weights = 0.0, 0.0
    with torch.no_grad():
        for samples in loader:
            output = model(samples)
            weighted += float(output.loss) * float(output.token_weight.sum())
            weights += float(output.token_weight.sum())
    assert loss == pytest.approx(weighted / weights, rel=1e-4)
    expected = read_predictions(fold_dir / "predictions.csv")
    assert [(r["clip"], r["label"], r["prediction"]) for r in result.predictions] == [
        (r["clip"], r["label"], r["prediction"]) for r in expected
    ]
    assert [r["p_mw"] for r in result.predictions] == pytest.approx([float(r["p_mw"]) for r in expected], abs=1e-6)


# --------------------------------------------------------------------------- resume


class Killed(Exception):
    pass


def kill_after_saves(monkeypatch, count: int) -> dict:
    """Make the ``count``-th ``checkpoint_last.pth`` save the last thing the run does."""
    original = RunnerBase._save_last
    calls = {"n": 0, "kill_at": count}

    def save_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            raise Killed

    monkeypatch.setattr(RunnerBase, "_save_last", save_then_die)
    return calls


def test_killed_and_resumed_run_ends_exactly_like_the_uninterrupted_one(reference, tiny_assets, tmp_path, monkeypatch):
    """Killed after fold 0 epoch 0, resumed; killed again after fold 1 epoch 0, resumed.

    The first resume continues inside fold 0 and then trains fold 1 from the initial weights;
    the second skips the finished fold 0 (its metrics are read back) and finishes fold 1.
    """
    calls = kill_after_saves(monkeypatch, 1)  # the checkpoint is on disk, then the process "dies"
    with pytest.raises(Killed):
        train(tiny_assets, tmp_path)
    assert load(tmp_path / "fold_0" / "checkpoint_last.pth")["epoch"] == 0

    calls.update(n=0, kill_at=2)  # fold 0 epoch 1, then fold 1 epoch 0
    with pytest.raises(Killed):
        train(tiny_assets, tmp_path, f"run.resume_ckpt_path={tmp_path / 'fold_0' / 'checkpoint_last.pth'}")
    assert load(tmp_path / "fold_1" / "checkpoint_last.pth")["epoch"] == 0

    calls.update(n=0, kill_at=-1)
    summary = train(tiny_assets, tmp_path, f"run.resume_ckpt_path={tmp_path / 'fold_1' / 'checkpoint_last.pth'}")

    ref = reference["out"]
    assert not (tmp_path / "tensorboard").exists()  # run.tensorboard=false here
    assert summary == reference["summary"]
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads((ref / "summary.json").read_text())
    for fold in FOLDS:
        ours, theirs = tmp_path / f"fold_{fold}", ref / f"fold_{fold}"
        assert json.loads((ours / "metrics.json").read_text()) == json.loads((theirs / "metrics.json").read_text())
        assert (ours / "predictions.csv").read_text() == (theirs / "predictions.csv").read_text()
        last, ref_last = load(ours / "checkpoint_last.pth"), load(theirs / "checkpoint_last.pth")
        assert_same_tensors(last["model"], ref_last["model"])
        assert_same_optimizer(last["optimizer"], ref_last["optimizer"])
        assert last["lr_sched"] == ref_last["lr_sched"]
        assert last["history"] == ref_last["history"] and last["best"] == ref_last["best"]
        assert torch.equal(last["rng"][0]["torch"], ref_last["rng"][0]["torch"])
        assert_same_tensors(load(ours / "checkpoint_best.pth")["model"], load(theirs / "checkpoint_best.pth")["model"])


def test_resumed_run_writes_the_bytes_of_an_uninterrupted_one(tiny_assets, tmp_path, monkeypatch):
    """Same output_dir, same options: killed after fold 0 epoch 0 and resumed, every file ends
    byte-identical to the uninterrupted run's (the checkpoints' pickles included)."""
    out, uninterrupted = tmp_path / "run", tmp_path / "uninterrupted"
    train(tiny_assets, out, "run.folds=[0]")
    out.rename(uninterrupted)
    calls = kill_after_saves(monkeypatch, 1)
    with pytest.raises(Killed):
        train(tiny_assets, out, "run.folds=[0]")
    calls.update(n=0, kill_at=-1)
    train(tiny_assets, out, "run.folds=[0]", f"run.resume_ckpt_path={out / 'fold_0' / 'checkpoint_last.pth'}")
    files = sorted(p.relative_to(uninterrupted) for p in uninterrupted.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for name in files:
        assert (out / name).read_bytes() == (uninterrupted / name).read_bytes(), name


def test_resume_follows_the_order_of_run_folds(reference, tiny_assets, tmp_path, monkeypatch):
    """folds [1, 0] killed in fold 0: the resume finishes fold 0 and reads fold 1 back, never retrains it.

    Each fold starts from the same weights and seeds, so both folds end as in the reference run."""
    calls = kill_after_saves(monkeypatch, EPOCHS + 1)  # fold 1 complete, fold 0 after epoch 0
    with pytest.raises(Killed):
        train(tiny_assets, tmp_path, "run.folds=[1,0]")
    fold_1_files = {p: p.stat().st_mtime_ns for p in (tmp_path / "fold_1").iterdir()}

    trained = []
    train_fold = RunnerBase._train_fold

    def recording_train_fold(self, model, fold, *args):
        trained.append(fold)
        return train_fold(self, model, fold, *args)

    monkeypatch.setattr(RunnerBase, "_train_fold", recording_train_fold)
    calls.update(n=0, kill_at=-1)
    summary = train(tiny_assets, tmp_path, "run.folds=[1,0]", f"run.resume_ckpt_path={tmp_path / 'fold_0' / 'checkpoint_last.pth'}")
    assert trained == [0]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "fold_1").iterdir()} == fold_1_files
    assert list(summary["folds"]) == ["1", "0"]
    for fold in FOLDS:
        ours, theirs = tmp_path / f"fold_{fold}" / "metrics.json", reference["out"] / f"fold_{fold}" / "metrics.json"
        assert json.loads(ours.read_text()) == json.loads(theirs.read_text())


def test_overwrite_removes_the_earlier_runs_fold_folders(tiny_assets, tmp_path, monkeypatch):
    for fold in (0, 1, 7):
        (tmp_path / f"fold_{fold}").mkdir()
        (tmp_path / f"fold_{fold}" / "checkpoint_last.pth").write_bytes(b"earlier run")
        (tmp_path / f"fold_{fold}" / "metrics.json").write_text("{}")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "notes").mkdir()  # not the run's: left alone
    kill_after_saves(monkeypatch, 1)
    with pytest.raises(Killed):
        train(tiny_assets, tmp_path, "run.folds=[1]", "run.overwrite=true")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold_1", "notes"]
    assert sorted(p.name for p in (tmp_path / "fold_1").iterdir()) == ["checkpoint_best.pth", "checkpoint_last.pth", "predictions.csv"]
    assert load(tmp_path / "fold_1" / "checkpoint_last.pth")["epoch"] == 0


@pytest.mark.parametrize("option, key", [("run.max_epoch=3", "run.max_epoch"), ("run.init_lr=0.5", "run.init_lr")])
def test_resume_with_another_schedule_is_refused(reference, tiny_assets, tmp_path, option, key):
    """The lr schedule is part of the resumed state: a changed max_epoch would be silently ignored
    (the saved cosine would go on, and past its end climb back to init_lr), so it is an error."""
    resume = reference["out"] / "fold_0" / "checkpoint_last.pth"
    with pytest.raises(ConfigError, match=rf"{key}: file .* vs config"):
        train(tiny_assets, tmp_path, option, f"run.resume_ckpt_path={resume}")
    assert not list(tmp_path.rglob("*.pth"))


# --------------------------------------------------------------------------- bad configurations


@pytest.fixture
def no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a training step ran before the configuration error was raised")

    monkeypatch.setattr(RunnerBase, "_train_epoch", fail)


def test_fold_without_rows_is_an_error_before_training(tiny_assets, tmp_path, no_training):
    with pytest.raises(DataError, match="fold 7 has no eval rows"):
        train(tiny_assets, tmp_path, "run.folds=[0,7]")
    assert not list(tmp_path.rglob("*.pth"))


def test_single_class_training_split_is_an_error_before_training(tiny_assets, tmp_path, no_training):
    # every NonMW clip in fold 0: the train rows of fold 0 are all MW
    with open(tiny_assets["hcmw_csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    annotation = tmp_path / "one_class.csv"
    with open(annotation, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "test_fold_num": "0" if r["mw_label"] == "NonMW" else r["test_fold_num"]} for r in rows)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"train rows of fold 0 hold only MW clips; training needs every class"):
        train(tiny_assets, out, "run.folds=[0]", f"datasets.hcmw_caption.build_info.annotation={annotation}")
    assert not out.exists() or not list(out.rglob("*.pth"))


def test_no_epochs_is_an_error_before_training(tiny_assets, tmp_path, no_training):
    with pytest.raises(ConfigError, match="run.max_epoch: must be at least 1, got 0"):
        train(tiny_assets, tmp_path, "run.max_epoch=0")
    assert not tmp_path.exists() or not list(tmp_path.rglob("*"))


def test_unknown_best_metric_lists_the_choices(tiny_assets, tmp_path, no_training):
    with pytest.raises(ConfigError, match=r"run.best_metric: 'auc' .*accuracy, balanced_accuracy, .*roc_auc"):
        train(tiny_assets, tmp_path, "run.best_metric=auc")
    assert not list(tmp_path.rglob("*.pth"))


@pytest.mark.parametrize("key", ["lora_r", "num_video_streams"])
def test_resume_file_of_another_model_is_refused(reference, tiny_assets, tmp_path, no_training, key):
    resume = reference["out"] / "fold_0" / "checkpoint_last.pth"
    saved = load(resume)["config"]["model"][key]
    option = f"model.{key}={4 if key == 'lora_r' else 5 - saved}"  # another rank; 2 <-> 3 streams
    with pytest.raises(CheckpointError, match=rf"comes from a different model \({key}: file"):
        train(tiny_assets, tmp_path, option, f"run.resume_ckpt_path={resume}")
    assert not list(tmp_path.rglob("*.pth"))


def test_resume_file_missing_tensors_of_the_model_is_refused(reference, tiny_assets, tmp_path, no_training):
    """Same config keys, deeper LLM (another llama folder): the file lacks the extra layer's LoRA."""
    llama = tmp_path / "llama3"
    shutil.copytree(tiny_assets["llama_dir"], llama)
    config = json.loads((llama / "config.json").read_text())
    config["num_hidden_layers"] += 1  # the new layer gets random weights when loaded
    (llama / "config.json").write_text(json.dumps(config))
    resume = reference["out"] / "fold_0" / "checkpoint_last.pth"
    out = tmp_path / "out"
    layer = config["num_hidden_layers"] - 1
    with pytest.raises(CheckpointError, match=rf"run.resume_ckpt_path .*missing from the file: .*layers\.{layer}\."):
        train(tiny_assets, out, f"model.llama_model={llama}", f"run.resume_ckpt_path={resume}")
    assert not list(out.rglob("*.pth"))


def test_output_dir_with_an_earlier_run_is_refused_and_left_alone(reference, tiny_assets, no_training):
    out = reference["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"holds an earlier run .*run.resume_ckpt_path.*run.overwrite: true"):
        train(tiny_assets, out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_shipped_training_configs_leave_llm_gradient_checkpointing_off():
    """The original never checkpointed LLaMA's activations (its peft only did for 8-bit loading);
    on means about 1.3x slower steps, so the configs leave it to memory-bound GPUs."""
    configs = sorted((REPO_ROOT / "train_configs").glob("*.yaml"))
    assert configs
    for path in configs:
        model = OmegaConf.load(path).model
        assert model.get("llm_grad_checkpoint", False) is False, path.name
    mw_path = REPO_ROOT / "train_configs" / "Emotion-LLaMA-MW-tuning.yaml"
    text = mw_path.read_text()
    comment = text[: text.index("llm_grad_checkpoint:")].splitlines()[-3:]  # says when to turn it on
    assert any("memory" in line for line in comment)
    mw = OmegaConf.load(mw_path)
    assert (mw.run.accum_grad_iters, mw.run.max_grad_norm) == (4, 1.0)  # cases of test_train_steps.py
