"""The feature dump and training read from shards (SPEC section 14), against the same runs on
the folder layout, in one process and as two ``torchrun`` nodes on this machine."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt4.datasets.errors import DataError
from minigpt4.datasets.shards.pack import pack_hcmw
from minigpt4.runners.runner_base import RunnerBase
from minigpt4.tasks.feature_dump import FeatureDumpTask

from killed_dump import Killed, die_after_batches

ROOT = Path(__file__).resolve().parents[1]
EVAL_CFG, TRAIN_CFG = ROOT / "eval_configs" / "demo.yaml", ROOT / "train_configs" / "demo.yaml"
PATTERN = "hcmw-{000000..000004}.tar"  # 24 clips in shards of 5
DUMP = "evaluation_datasets.hcmw_caption"
TRAIN = "datasets.hcmw_caption"
# The shards are packed without audio, and both sides run the model on FaceMAE and VideoMAE.
NO_AUDIO = ("model.num_video_streams=2",)
DUMP_OPTIONS = ("run.feature_dtype=float32", f"{DUMP}.build_info.audio_dir=", *NO_AUDIO)
TRAIN_OPTIONS = ("run.folds=[1]", "run.iters_per_epoch=0", "run.tensorboard=false", f"{TRAIN}.build_info.audio_dir=",
                 *NO_AUDIO)
OUTPUTS = ("names.txt", "facemae_projected_features.npy", "videomae_projected_features.npy",
           "image_projected_features.npy", "llama_features.npy")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


eval_emotion, train_script = load_script("eval_emotion"), load_script("train")


def env_of(assets: dict) -> dict[str, str]:
    return {"TINY_ASSETS": str(assets["llama_dir"].parent), "DEMO_FEATURES": str(assets["hcmw_feature_root"])}


@pytest.fixture(scope="module")
def assets(tiny_assets):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env_of(tiny_assets).items():
            patch.setenv(name, value)
        patch.delenv("DEMO_CKPT", raising=False)
        yield tiny_assets


@pytest.fixture(scope="module")
def shards(assets, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    pack_hcmw(assets["hcmw_csv"], assets["hcmw_image_root"], assets["hcmw_feature_root"], folder,
              facemae_dir="mae_340_UTT", videomae_dir="maeV_199_UTT", shard_size=5)
    return folder


def in_process(main, argv: list[str]):
    """Run an entry point here; the runner configures the root logger, which is put back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def dump(out: Path, *options: str):
    argv = ["--cfg-path", str(EVAL_CFG), "--dataset", "hcmw_caption", "--options", f"run.output_dir={out}",
            *DUMP_OPTIONS, *options]
    return in_process(eval_emotion.main, argv)


def train(out: Path, *options: str):
    return in_process(train_script.main, ["--cfg-path", str(TRAIN_CFG), "--options", f"run.output_dir={out}",
                                          *TRAIN_OPTIONS, *options])


def from_shards(folder: Path, section: str) -> str:
    return f"{section}.build_info.shards={folder / PATTERN}"


def outputs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def folder_dump(assets, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folders") / "features"
    dump(out)
    return out


# ------------------------------------------------------------------------------ feature dump

def test_dump_from_shards_equals_the_folder_dump_byte_for_byte(folder_dump, shards, tmp_path):
    out = tmp_path / "features"
    dump(out, from_shards(shards, DUMP))
    assert outputs(out) == outputs(folder_dump)


def test_a_killed_dump_from_shards_resumes_and_ends_identical(folder_dump, shards, tmp_path, monkeypatch):
    out, step = tmp_path / "features", FeatureDumpTask.step
    die_after_batches(monkeypatch, 2)
    with pytest.raises(Killed):
        dump(out, from_shards(shards, DUMP))
    monkeypatch.setattr(FeatureDumpTask, "step", staticmethod(step))
    dump(out, from_shards(shards, DUMP))
    assert outputs(out) == outputs(folder_dump)


def test_a_bad_shard_stops_the_dump_before_any_output(shards, tmp_path, assets):
    broken = tmp_path / "shards"
    broken.mkdir()
    for path in shards.iterdir():
        data = path.read_bytes()
        (broken / path.name).write_bytes(data[: len(data) // 2] if path.name == "hcmw-000003.tar" else data)
    out = tmp_path / "features"
    with pytest.raises(DataError, match=r"clip_019: .*hcmw-000003.tar key 00000019: not read"):
        dump(out, from_shards(broken, DUMP))
    assert not out.exists()


# ------------------------------------------------------------------------------ training

def trainable(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "fold_1" / "checkpoint_last.pth", weights_only=True)["model"]


def test_training_from_shards_in_index_order_matches_training_from_folders(shards, tmp_path, assets):
    """One batch holds every train row of the fold, so the folders' shuffle cannot change what
    a step sees; only the order of the sum over the batch differs."""
    options = ("run.max_epoch=1", "run.batch_size_train=16", f"{TRAIN}.shuffle_buffer=0")
    train(tmp_path / "folders", *options)
    train(tmp_path / "shards", *options, from_shards(shards, TRAIN))
    folders, from_shards_ = (json.loads((tmp_path / side / "fold_1" / "metrics.json").read_text())
                             for side in ("folders", "shards"))
    # the validation loss follows the weights, which differ in the last bits (the sum's order)
    assert from_shards_["best"].pop("loss") == pytest.approx(folders["best"].pop("loss"), rel=1e-4)
    assert from_shards_["best"] == folders["best"]
    # the loss of the epoch's one step: the same clips, images, vectors, answers and weights
    assert from_shards_["history"][0]["train_loss"] == pytest.approx(folders["history"][0]["train_loss"], rel=1e-6)


def test_shuffled_training_from_shards_repeats_and_resumes_exactly_at_an_epoch_boundary(
    shards, tmp_path, assets, monkeypatch
):
    """The same seed gives the same run; killed after epoch 0 and resumed, it ends the same too:
    each epoch's stream depends only on (seed, fold, epoch)."""
    options = ("run.max_epoch=2", "run.batch_size_train=4", f"{TRAIN}.shuffle_buffer=6", from_shards(shards, TRAIN))
    train(tmp_path / "a", *options)

    save_last = RunnerBase._save_last

    def save_then_die(self, *args, **kwargs):
        save_last(self, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(RunnerBase, "_save_last", save_then_die)
    with pytest.raises(Killed):
        train(tmp_path / "b", *options)
    monkeypatch.setattr(RunnerBase, "_save_last", save_last)
    train(tmp_path / "b", *options, f"run.resume_ckpt_path={tmp_path / 'b' / 'fold_1' / 'checkpoint_last.pth'}")

    histories = [json.loads((tmp_path / side / "fold_1" / "metrics.json").read_text())["history"] for side in "ab"]
    assert histories[0] == histories[1] and len(histories[0]) == 2
    weights = [trainable(tmp_path / side) for side in "ab"]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


# ------------------------------------------------------------------------------ two nodes

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_nodes(assets: dict, script: str, *args: str) -> None:
    """``torchrun --nnodes 2 --nproc_per_node 1`` twice on this machine: two nodes of one process
    each meeting at a c10d rendezvous on localhost, talking over gloo."""
    endpoint = f"127.0.0.1:{free_port()}"
    env = {**os.environ, **env_of(assets), "OMP_NUM_THREADS": "1"}
    env.pop("DEMO_CKPT", None)
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
             "--node_rank", str(rank), "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "shards",
             str(ROOT / script), *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(2)
    ]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    # --nnodes 2 (min = max = 2): the rendezvous completes only with both nodes, so each ran a rank
    for rank, (node, log) in enumerate(zip(nodes, logs)):
        assert node.returncode == 0, f"node {rank}:\n{log[-4000:]}"


@pytest.mark.slow  # two torchrun launches, about 20 s each on 2 cores
def test_two_nodes_dump_the_one_process_files_and_train_an_epoch(folder_dump, shards, tmp_path, assets):
    out = tmp_path / "features"
    two_nodes(assets, "eval_emotion.py", "--cfg-path", str(EVAL_CFG), "--dataset", "hcmw_caption",
              "--options", f"run.output_dir={out}", *DUMP_OPTIONS, from_shards(shards, DUMP))
    assert outputs(out) == outputs(folder_dump)

    two_nodes(assets, "train.py", "--cfg-path", str(TRAIN_CFG), "--options", f"run.output_dir={tmp_path / 'train'}",
              *TRAIN_OPTIONS, "run.max_epoch=1", "run.batch_size_train=4", from_shards(shards, TRAIN))
    metrics = json.loads((tmp_path / "train" / "fold_1" / "metrics.json").read_text())
    assert metrics["best"]["n"] == 8  # every held-out clip of fold 1, validated across both nodes
    assert [h["epoch"] for h in metrics["history"]] == [0]
