"""Bad input to the feature dump (``eval_emotion.py --dataset hcmw_caption``): a value float16
cannot hold, an empty ``--dataset``, shards changed since packing or named in part."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt4.common.config import ConfigError
from minigpt4.datasets.errors import DataError
from minigpt4.features.writer import FeatureOutputError
from minigpt4.tasks.base_task import BaseTask

from test_bad_inputs_shards import npy_bytes, replace_member
from test_feature_dump import DATASET as DUMP, DEMO_CFG, ROOT, demo_env, eval_emotion  # noqa: F401  (a fixture)
from test_shards_runs import assets, shards  # noqa: F401  (fixtures: the tiny assets' clips in 5 shards)

FACEMAE = "facemae_projected_features"


def dump(out: Path, *options: str, dataset: str = "hcmw_caption") -> dict:
    return eval_emotion.main(["--cfg-path", str(DEMO_CFG), "--dataset", dataset, "--options",
                              f"run.output_dir={out}", *options])


# ------------------------------------------------------------------------------ values beyond float16


@pytest.fixture
def huge_vectors(demo_env, tmp_path) -> Path:
    """The vector folders with clip_001's and clip_003's FaceMAE vectors scaled by 1e6: their
    projections leave float16's range; every other value of the dump stays inside."""
    features = tmp_path / "features"
    shutil.copytree(demo_env["hcmw_feature_root"], features)
    for clip in ("clip_001", "clip_003"):
        path = features / "mae_340_UTT" / f"{clip}.npy"
        np.save(path, np.load(path) * 1e6)
    return features


def test_a_value_beyond_float16_names_its_clips_and_the_float32_rerun_needs_no_overwrite(huge_vectors, tmp_path):
    out = tmp_path / "dump"
    source = f"{DUMP}.build_info.feature_root={huge_vectors}"
    with pytest.raises(FeatureOutputError) as err:
        dump(out, source)
    assert not out.exists()  # no zero-filled arrays, no manifest, no skip report

    dump(out, source, "run.feature_dtype=float32")  # the suggested remedy, same folder, no --overwrite
    names = (out / "names.txt").read_text().split()
    projected = np.load(out / f"{FACEMAE}.npy")
    magnitude = np.abs(projected).max(axis=1)
    assert [names[row] for row in np.flatnonzero(magnitude > 65504)] == ["clip_001", "clip_003"]
    assert str(err.value) == (
        f"{out}: {FACEMAE} of clip_001, clip_003: a value of {magnitude.max():.6g} does not fit float16 "
        "(largest 65504); set run.feature_dtype: float32"
    )
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_a_value_beyond_float16_is_one_line_from_the_command_line(huge_vectors, demo_env, tmp_path):
    out = tmp_path / "dump"
    result = subprocess.run(
        [sys.executable, str(ROOT / "eval_emotion.py"), "--cfg-path", str(DEMO_CFG), "--dataset", "hcmw_caption",
         "--options", f"run.output_dir={out}", f"{DUMP}.build_info.feature_root={huge_vectors}"],
        cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"error: {out}: {FACEMAE} of clip_001, clip_003: a value of ")
    assert last.endswith("does not fit float16 (largest 65504); set run.feature_dtype: float32")
    assert "Traceback" not in result.stderr and not out.exists()


# ------------------------------------------------------------------------------ --dataset ""


def test_an_empty_dataset_name_is_an_error_before_the_model_loads(demo_env, tmp_path, monkeypatch):
    def fail(model_cfg):
        raise AssertionError("the model was built before the error")

    monkeypatch.setattr(BaseTask, "build_model", staticmethod(fail))
    with pytest.raises(ConfigError) as err:
        dump(tmp_path / "dump", dataset="")
    assert str(err.value) == (
        f"--dataset: names no dataset; give one or more comma-separated names (configured in {DEMO_CFG}: hcmw_caption)"
    )
    with pytest.raises(ConfigError, match="--dataset: names no dataset"):
        dump(tmp_path / "dump", dataset=" , ")
    assert not (tmp_path / "dump").exists()


def test_an_empty_dataset_name_is_one_line_from_the_command_line(demo_env, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "eval_emotion.py"), "--cfg-path", str(DEMO_CFG), "--dataset", "",
         "--options", f"run.output_dir={tmp_path / 'dump'}"],
        cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: --dataset: names no dataset; give one or more comma-separated names (configured in {DEMO_CFG}: "
        "hcmw_caption)"
    )
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ from shards

# the shards hold no audio: the model reads FaceMAE and VideoMAE only
FROM_SHARDS = (f"{DUMP}.build_info.audio_dir=", "model.num_video_streams=2")


def test_a_vector_changed_in_a_shard_stops_the_dump_naming_it(shards, tmp_path):
    """The member is a valid vector of the right shape: only the index's checksum tells."""
    folder = tmp_path / "shards"
    shutil.copytree(shards, folder)
    replace_member(folder / "hcmw-000002.tar", "00000012.videomae.npy", npy_bytes(np.zeros(64, dtype=np.float32)))
    out = tmp_path / "dump"
    with pytest.raises(DataError, match=rf"clip_012: {folder / 'hcmw-000002.tar'} key 00000012.videomae.npy: "
                                        "SHA-256 differs from the index"):
        dump(out, *FROM_SHARDS, f"{DUMP}.build_info.shards={folder}/hcmw-{{000000..000004}}.tar")
    assert not out.exists()


def test_the_manifest_records_the_shards_read(shards, tmp_path):
    out = tmp_path / "dump"
    dump(out, *FROM_SHARDS, f"{DUMP}.build_info.shards={shards}/hcmw-{{000003,000004}}.tar",
         f"{DUMP}.build_info.shard_subset=true")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"] == {
        "index": str(shards / "index.json"),
        "read": [str(shards / "hcmw-000003.tar"), str(shards / "hcmw-000004.tar")],
    }
    assert (out / "names.txt").read_text().split() == [f"clip_{i:03d}" for i in range(15, 24)]
