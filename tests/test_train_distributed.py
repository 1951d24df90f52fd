"""``train.py`` as users launch it: under ``torchrun`` (two CPU processes, gloo) and the demo
config as is (SPEC sections 8 and 11)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def demo_env(assets: dict, out: Path) -> dict[str, str]:
    root = Path(assets["llama_dir"]).parent
    return {
        **os.environ,
        "TINY_ASSETS": str(root),
        "DEMO_FEATURES": str(assets["hcmw_feature_root"]),
        "DEMO_OUT": str(out),
        "OMP_NUM_THREADS": "1",  # two processes on a small machine
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_trains_and_validates_every_clip(tiny_assets, tmp_path):
    """DDP with find_unused_parameters=False fails on the 2nd step if a trainable tensor gets no
    gradient; validation splits the clips over the ranks and gathers them back; the ranks draw
    different dropout masks."""
    out = tmp_path / "train"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "train.py", "--cfg-path", "train_configs/demo.yaml", "--options",
        "run.folds=[1]", "run.max_epoch=1", "run.iters_per_epoch=3", "run.batch_size_eval=3",
        "run.tensorboard=false", f"run.output_dir={out}",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, env=demo_env(tiny_assets, tmp_path), capture_output=True,
                          text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "[rank 1]" in log, log[-2000:]  # the second process ran the run too
    assert "unused parameters" not in log.lower()
    for name in ("checkpoint_last.pth", "checkpoint_best.pth", "metrics.json", "predictions.csv"):
        assert (out / "fold_1" / name).is_file(), name
    with open(tiny_assets["hcmw_csv"], newline="") as handle:
        fold_clips = sorted(r["uuid"].removesuffix(".mp4") for r in csv.DictReader(handle) if r["test_fold_num"] == "1")
    with open(out / "fold_1" / "predictions.csv", newline="") as handle:
        assert sorted(r["clip"] for r in csv.DictReader(handle)) == fold_clips  # each clip once, from both ranks
    metrics = json.loads((out / "fold_1" / "metrics.json").read_text())
    assert metrics["best"]["n"] == len(fold_clips)
    # each process seeds run.seed + rank: distinct dropout draws, both saved for an exact resume
    rng = torch.load(out / "fold_1" / "checkpoint_last.pth", weights_only=True)["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])
    assert json.loads((out / "summary.json").read_text())["folds"]["1"] == metrics["best"]


@pytest.mark.slow  # about 25 s on 2 idle CPU cores
def test_demo_config_as_is_learns_every_fold(tiny_assets, tmp_path):
    command = [sys.executable, "train.py", "--cfg-path", "train_configs/demo.yaml", "--options", "run.tensorboard=false"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=demo_env(tiny_assets, tmp_path), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    assert sorted(summary["folds"]) == ["0", "1", "2"]
    for fold, best in summary["folds"].items():
        assert best["balanced_accuracy"] >= 0.9, (fold, best)
