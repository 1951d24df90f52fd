"""Bad input to the shards: a member changed since packing, a pattern naming only some of the
indexed shards, an index without checksums, ``pack --output`` on a file.  Each is a one-line
error naming the shard, clip or path, or a line of the skip report."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import minigpt4.datasets  # noqa: F401  (registers the builders)
from minigpt4.common.registry import registry
from minigpt4.datasets.errors import DataError
from minigpt4.datasets.shards import pack
from minigpt4.datasets.shards.sources import ShardError

ROOT = Path(__file__).resolve().parents[1]
DIM, PATTERN = 64, "hcmw-{000000..000004}.tar"  # the tiny assets' 24 clips in shards of 5
SMALL_IMAGES = {"train": {"image_size": 16}, "eval": {"image_size": 16}}


@pytest.fixture(scope="module")
def shards(tiny_assets, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("shards")
    pack.pack_hcmw(tiny_assets["hcmw_csv"], tiny_assets["hcmw_image_root"], tiny_assets["hcmw_feature_root"], output,
                   facemae_dir="mae_340_UTT", videomae_dir="maeV_199_UTT", shard_size=5)
    return output


@pytest.fixture
def copy(shards, tmp_path) -> Path:
    folder = tmp_path / "shards"
    shutil.copytree(shards, folder)
    return folder


def build(folder: Path, pattern: str = PATTERN, **section):
    info = {"shards": str(folder / pattern), **section.pop("build_info", {})}
    section = {"feature_dim": DIM, "vis_processor": SMALL_IMAGES, "build_info": info, **section}
    return registry.get("builder", "hcmw_caption")(section).build("all")


def members_of(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def replace_member(path: Path, name: str, data: bytes) -> None:
    """Rewrite the tar at ``path`` with member ``name`` holding ``data``."""
    members = members_of(path) | {name: data}
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, content in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# ------------------------------------------------------------------------------ checksums


def test_the_index_holds_the_sha256_of_every_member(shards):
    index = json.loads((shards / "index.json").read_text())
    assert index["format"] == "hcmw-shards/2"
    for entry in index["shards"]:
        members = members_of(shards / entry["name"])
        expected = [
            {name.split(".", 1)[1]: hashlib.sha256(data).hexdigest() for name, data in members.items()
             if name.startswith(f"{key}.")}
            for key in entry["keys"]
        ]
        assert entry["sha256"] == expected


@pytest.fixture
def changed_vector(copy) -> Path:
    """clip_007's FaceMAE vector replaced by another valid (64,) vector: only its checksum tells."""
    replace_member(copy / "hcmw-000001.tar", "00000007.facemae.npy", npy_bytes(np.ones(DIM, dtype=np.float32)))
    return copy


def test_a_member_changed_since_packing_is_named(changed_vector):
    with pytest.raises(DataError) as err:
        build(changed_vector)
    shard = changed_vector / "hcmw-000001.tar"
    assert f"clip_007: {shard} key 00000007.facemae.npy: SHA-256 differs from the index: changed since packing; " \
           "restore or repack the shard" in str(err.value)
    assert str(err.value).startswith(f"{changed_vector / 'index.json'}: 1 bad clip(s), 1 problem(s):")


def test_a_member_changed_since_packing_is_skipped_with_its_reason(changed_vector):
    dataset = build(changed_vector, on_error="skip")
    assert "clip_007" not in dataset.names and len(dataset.names) == 23
    (bad,) = dataset.skipped
    assert (bad.clip, bad.file) == ("clip_007", f"{changed_vector / 'hcmw-000001.tar'} key 00000007.facemae.npy")
    assert bad.problem.startswith("SHA-256 differs from the index")


def test_an_index_without_checksums_is_refused_naming_it(copy):
    index = json.loads((copy / "index.json").read_text())
    index["format"] = "hcmw-shards/1"
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError) as err:
        build(copy)
    assert str(err.value) == (
        f"{copy / 'index.json'}: written by an earlier pack, without the members' SHA-256 checksums a reader "
        "verifies; pack the shards again (python -m minigpt4.datasets.shards.pack ... --overwrite)"
    )


# ------------------------------------------------------------------------------ a pattern naming some shards


def test_a_pattern_leaving_out_indexed_shards_is_an_error_naming_them(shards):
    with pytest.raises(ShardError) as err:
        build(shards, "hcmw-{000000..000002}.tar")
    assert str(err.value) == (
        f"build_info.shards: '{shards}/hcmw-{{000000..000002}}.tar' names 3 of the 5 shards in {shards / 'index.json'}; "
        f"missing hcmw-000003.tar, hcmw-000004.tar; name them all (the index's pattern is {PATTERN}), "
        "or set build_info.shard_subset: true to read only these"
    )


def test_shard_subset_reads_the_named_shards_only(shards):
    dataset = build(shards, "hcmw-{000001,000003}.tar", build_info={"shard_subset": True})
    assert dataset.names == [f"clip_{i:03d}" for i in (*range(5, 10), *range(15, 20))]


# ------------------------------------------------------------------------------ pack --output


def test_pack_onto_a_file_is_a_named_error(tiny_assets, tmp_path):
    output = tmp_path / "shards.tar"
    output.write_bytes(b"not a folder")
    with pytest.raises(DataError) as err:
        pack.pack_hcmw(tiny_assets["hcmw_csv"], tiny_assets["hcmw_image_root"], tiny_assets["hcmw_feature_root"],
                       output, facemae_dir="mae_340_UTT", videomae_dir="maeV_199_UTT")
    assert str(err.value) == f"--output {output}: is a file, not a folder; name a folder for the shards and index.json"
    assert output.read_bytes() == b"not a folder"


def test_pack_onto_a_file_is_one_line_from_the_command_line(tiny_assets, tmp_path):
    output = tmp_path / "shards.tar"
    output.write_bytes(b"not a folder")
    result = subprocess.run(
        [sys.executable, "-m", "minigpt4.datasets.shards.pack", "--annotation", str(tiny_assets["hcmw_csv"]),
         "--image_root", str(tiny_assets["hcmw_image_root"]), "--feature_root", str(tiny_assets["hcmw_feature_root"]),
         "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: --output {output}: is a file, not a folder; name a folder for the shards and index.json"
    )
    assert "Traceback" not in result.stderr and output.read_bytes() == b"not a folder"


def test_pack_below_a_file_is_a_named_error(tiny_assets, tmp_path):
    (tmp_path / "file").write_bytes(b"")
    output = tmp_path / "file" / "shards"
    with pytest.raises(DataError) as err:
        pack.pack_hcmw(tiny_assets["hcmw_csv"], tiny_assets["hcmw_image_root"], tiny_assets["hcmw_feature_root"],
                       output, facemae_dir="mae_340_UTT", videomae_dir="maeV_199_UTT")
    assert str(err.value) == f"--output {output}: cannot create the folder: Not a directory"
