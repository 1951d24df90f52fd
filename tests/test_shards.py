"""WebDataset shards of the hcmw clips (SPEC section 14): packing, reading, streaming, bad input.

The folder layout of the tiny assets is the reference: a shard sample must hold its files'
bytes, and ``hcmw_caption`` read from shards must give the items the folders give.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

import minigpt4.datasets  # noqa: F401  (registers the builders)
from minigpt4.common.registry import registry
from minigpt4.datasets.errors import DataError
from minigpt4.datasets.shards import hcmw_shards, pack, sources
from minigpt4.datasets.shards.hcmw_shards import HCMWShardStream
from minigpt4.datasets.shards.layout import sample_key
from minigpt4.datasets.shards.sources import ShardError

SHARD_SIZE = 5  # the tiny assets' 24 clips -> 5 shards, the last one of 4
N_CLIPS, N_SHARDS, DIM = 24, 5, 64
PATTERN = "hcmw-{000000..000004}.tar"
SMALL_IMAGES = {"train": {"image_size": 16}, "eval": {"image_size": 16}}


def pack_folders(assets: dict, output: Path, **options) -> dict:
    return pack.pack_hcmw(
        assets["hcmw_csv"], assets["hcmw_image_root"], assets["hcmw_feature_root"], output,
        facemae_dir="mae_340_UTT", videomae_dir="maeV_199_UTT", shard_size=SHARD_SIZE, **options,
    )


@pytest.fixture(scope="module")
def shards(tiny_assets, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("shards")
    pack_folders(tiny_assets, output)
    return output


def builder(**section):
    section = {"feature_dim": DIM, "vis_processor": SMALL_IMAGES, **section}
    return registry.get("builder", "hcmw_caption")(section)


def folder_builder(assets: dict, **section):
    info = {"annotation": str(assets["hcmw_csv"]), "image_root": str(assets["hcmw_image_root"]),
            "feature_root": str(assets["hcmw_feature_root"])}
    return builder(build_info=info, **section)


def shard_builder(folder: Path, pattern: str = PATTERN, **section):
    return builder(build_info={"shards": str(folder / pattern)}, **section)


def assert_same_item(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


# ------------------------------------------------------------------------------ packing

def test_a_sample_holds_the_files_bytes_as_read_and_its_clip_label_and_fold(shards, tiny_assets):
    with tarfile.open(shards / "hcmw-000001.tar") as tar:
        members = tar.getmembers()
        first = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in members if m.name.startswith("00000005.")}
    assert [m.name for m in members[:5]] == [
        "00000005.json", "00000005.png", "00000005.facemae.npy", "00000005.videomae.npy", "00000006.json"
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o444)}
    clip = "clip_005"
    assert first["png"] == (tiny_assets["hcmw_image_root"] / clip / f"{clip}_peak_frame.png").read_bytes()
    assert first["facemae.npy"] == (tiny_assets["hcmw_feature_root"] / "mae_340_UTT" / f"{clip}.npy").read_bytes()
    assert first["videomae.npy"] == (tiny_assets["hcmw_feature_root"] / "maeV_199_UTT" / f"{clip}.npy").read_bytes()
    (_, label, fold), = [r.split(",") for r in tiny_assets["hcmw_csv"].read_text().splitlines() if r.startswith(clip)]
    assert json.loads(first["json"]) == {"clip": clip, "label": label, "fold": int(fold)}


def test_the_index_lists_each_shards_clips_and_the_counts(shards, tiny_assets):
    index = json.loads((shards / "index.json").read_text())
    rows = [line.split(",") for line in tiny_assets["hcmw_csv"].read_text().splitlines()[1:]]
    clips = [uuid.removesuffix(".mp4") for uuid, _, _ in rows]
    assert [entry["name"] for entry in index["shards"]] == [f"hcmw-{i:06d}.tar" for i in range(N_SHARDS)]
    assert [clip for entry in index["shards"] for clip in entry["clips"]] == clips
    assert index["shards"][4]["counts"]["clips"] == 4
    assert index["counts"]["label"] == {label: sum(r[1] == label for r in rows) for label in ("MW", "NonMW")}
    assert index["counts"]["fold"] == {fold: sum(r[2] == fold for r in rows) for fold in sorted({r[2] for r in rows})}
    assert index["pattern"] == PATTERN and index["audio"] is False


def test_packing_twice_gives_byte_identical_shards(shards, tiny_assets, tmp_path):
    pack_folders(tiny_assets, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in shards.iterdir())
    for path in shards.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_webdataset_reads_the_shards_as_written(shards):
    samples = list(wds.WebDataset(str(shards / PATTERN), shardshuffle=False))
    assert len(samples) == N_CLIPS
    assert {key for key in samples[0] if not key.startswith("__")} == {"json", "png", "facemae.npy", "videomae.npy"}
    assert np.load(io.BytesIO(samples[3]["facemae.npy"])).shape == (DIM,)


def test_the_command_line_packs_what_a_run_config_names(tiny_assets, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "evaluation_datasets:\n  hcmw_caption:\n    build_info:\n"
        f"      annotation: {tiny_assets['hcmw_csv']}\n      image_root: {tiny_assets['hcmw_image_root']}\n"
        f"      feature_root: {tiny_assets['hcmw_feature_root']}\n"
    )
    assert pack.main(["--cfg-path", str(config), "--output", str(tmp_path / "out"), "--shard_size", "10"]) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [entry["counts"]["clips"] for entry in index["shards"]] == [10, 10, 4]
    with pytest.raises(SystemExit, match="already holds shards"):
        pack.main(["--cfg-path", str(config), "--output", str(tmp_path / "out")])


def test_a_missing_file_stops_the_pack_before_anything_is_written(tiny_assets, tmp_path):
    features = tmp_path / "features"
    shutil.copytree(tiny_assets["hcmw_feature_root"], features)
    (features / "maeV_199_UTT" / "clip_007.npy").unlink()
    with pytest.raises(DataError, match=r"clip_007: .*maeV_199_UTT/clip_007.npy: missing"):
        pack.pack_hcmw(tiny_assets["hcmw_csv"], tiny_assets["hcmw_image_root"], features, tmp_path / "out",
                       facemae_dir="mae_340_UTT", videomae_dir="maeV_199_UTT")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ reading

def test_shards_give_the_items_and_rows_of_the_folders(shards, tiny_assets):
    folders, from_shards = folder_builder(tiny_assets).build("all"), shard_builder(shards).build("all")
    assert from_shards.names == folders.names
    for row in [0, 7, 3, 23, 12]:  # backwards too: the cursor reopens the shard
        assert_same_item(from_shards[row], folders[row])
    eval_folders, eval_shards = folder_builder(tiny_assets).build("eval", 1), shard_builder(shards).build("eval", 1)
    assert eval_shards.names == eval_folders.names and eval_shards.class_weights == eval_folders.class_weights


def test_a_dump_rank_takes_contiguous_whole_batches(shards):
    dataset = shard_builder(shards).build("all")
    ranks = [dataset.rows_of_rank(rank, 2, batch_size=8) for rank in range(2)]
    assert ranks == [list(range(0, 8)), list(range(8, 24))]  # 3 batches: 1 + 2
    assert dataset.rows_of_rank(0, 1, batch_size=8) == list(range(N_CLIPS))


def test_a_dump_rank_opens_only_the_shards_holding_its_rows_each_once(shards, monkeypatch):
    dataset = shard_builder(shards).build("all")
    opened = []

    def recording(url):
        opened.append(Path(url).name)
        return sources.iter_samples(url)

    monkeypatch.setattr(hcmw_shards, "iter_samples", recording)
    for row in dataset.rows_of_rank(0, 2, batch_size=8):  # clips 0-7: shards 0 and 1
        dataset[row]
    assert opened == ["hcmw-000000.tar", "hcmw-000001.tar"]


def test_training_streams_the_train_rows_of_the_fold_in_index_order_without_shuffling(shards, tiny_assets):
    stream = shard_builder(shards, shuffle_buffer=0).build("train", 1)
    folders = folder_builder(tiny_assets).build("train", 1)
    assert isinstance(stream, HCMWShardStream) and len(stream) == len(folders)
    items = list(stream.for_epoch(5))
    assert [item["video_id"] for item in items] == folders.names  # the folders' rows, in CSV order
    for item, row in zip(items, range(len(folders))):
        assert_same_item(item, folders[row])


def test_a_shuffled_stream_depends_only_on_its_seed_and_serves_every_train_row_once(shards):
    stream = shard_builder(shards, shuffle_buffer=6).build("train", 2)
    first, again, other = ([item["video_id"] for item in stream.for_epoch(seed)] for seed in (11, 11, 12))
    assert first == again
    assert first != other
    assert sorted(first) == sorted(stream.dataset.names) and len(first) == len(set(first))
    assert first != stream.dataset.names


def test_two_nodes_stream_disjoint_shards_and_the_same_number_of_samples(shards, monkeypatch):
    stream = shard_builder(shards, shuffle_buffer=0).build("train", 0)  # 16 train rows in shards 1..4
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append([item["video_id"] for item in stream.for_epoch(3)])
    assert [len(s) for s in seen] == [8, 8]  # ceil(16 / 2) each: every rank takes the same steps
    # folds 0, 1, 2 are clips 0-7, 8-15, 16-23; rank 0 reads shards 0, 2, 4 (clips 0-4, 10-14,
    # 20-23), rank 1 shards 1 and 3 (clips 5-9, 15-19) and starts over to fill its 8
    clips = [[10, 11, 12, 13, 14, 20, 21, 22], [8, 9, 15, 16, 17, 18, 19, 8]]
    assert seen == [[f"clip_{i:03d}" for i in rank] for rank in clips]


# ------------------------------------------------------------------------------ bad input

def rewrite_shard(path: Path, change) -> None:
    """Rewrite the tar at ``path`` with ``change(name, data)`` -> new bytes, or None to drop the member."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            data = change(name, data)
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def broken_copy(shards, tmp_path) -> Path:
    folder = tmp_path / "shards"
    shutil.copytree(shards, folder)
    return folder


BREAKERS = {
    # shard, what is done to it, (clip, file named in the problem, problem)
    "truncated": ("hcmw-000002.tar", truncate, ("clip_014", r"hcmw-000002.tar key 00000014", "not read: .*truncated")),
    "missing vector": (
        "hcmw-000001.tar",
        lambda path: rewrite_shard(path, lambda name, data: None if name == "00000006.videomae.npy" else data),
        ("clip_006", r"hcmw-000001.tar key 00000006.videomae.npy", "missing"),
    ),
    "malformed json": (
        "hcmw-000003.tar",
        lambda path: rewrite_shard(path, lambda name, data: b'{"clip": "clip_' if name == "00000016.json" else data),
        ("clip_016", r"hcmw-000003.tar key 00000016.json", "malformed JSON"),
    ),
}


@pytest.mark.parametrize("breaker", BREAKERS)
def test_a_bad_sample_stops_the_build_naming_shard_and_key(broken_copy, breaker):
    shard, damage, (clip, where, problem) = BREAKERS[breaker]
    damage(broken_copy / shard)
    with pytest.raises(DataError, match=rf"{clip}: .*{where}: {problem}") as error:
        shard_builder(broken_copy).build("all")
    assert "on_error: skip" in str(error.value)


@pytest.mark.parametrize("breaker", BREAKERS)
def test_skip_leaves_the_bad_sample_out_and_reports_shard_and_key(broken_copy, breaker, shards):
    shard, damage, (clip, where, problem) = BREAKERS[breaker]
    damage(broken_copy / shard)
    dataset = shard_builder(broken_copy, on_error="skip").build("all")
    clean = shard_builder(shards).build("all")
    skipped = {bad.clip for bad in dataset.skipped}
    assert clip in skipped
    assert any(re.search(where, bad.file) and re.search(problem, bad.problem) for bad in dataset.skipped)
    assert dataset.names == [name for name in clean.names if name not in skipped]
    item, clean_item = dataset[dataset.names.index("clip_023")], clean[clean.names.index("clip_023")]
    for key in ("image", "video_features"):  # the class weights count the clips left
        assert torch.equal(item[key], clean_item[key]), key


def test_a_pattern_matching_nothing_is_a_named_error(shards):
    with pytest.raises(ShardError, match=r"build_info.shards: '.*hcmw-\{000007..000009\}.tar' matches no file"):
        shard_builder(shards, pattern="hcmw-{000007..000009}.tar").build("all")


def test_a_shard_the_index_does_not_list_is_a_named_error(broken_copy):
    (broken_copy / "hcmw-000004.tar").rename(broken_copy / "other-000004.tar")
    with pytest.raises(ShardError, match="shard 'other-000004.tar' is not listed in .*index.json"):
        shard_builder(broken_copy, pattern="{hcmw-000000,other-000004}.tar").build("all")


def test_audio_vectors_are_packed_and_read_when_audio_dir_is_set(tiny_assets, shards, tmp_path):
    features = tmp_path / "features"
    shutil.copytree(tiny_assets["hcmw_feature_root"], features)
    shutil.copytree(features / "mae_340_UTT", features / "audio")  # any (D,) vectors serve
    np.save(features / "audio" / "clip_003.npy", np.arange(DIM, dtype=np.float32))
    pack.pack_hcmw(tiny_assets["hcmw_csv"], tiny_assets["hcmw_image_root"], features, tmp_path / "out",
                   facemae_dir="mae_340_UTT", videomae_dir="maeV_199_UTT", audio_dir="audio", shard_size=SHARD_SIZE)
    assert json.loads((tmp_path / "out" / "index.json").read_text())["audio"] is True
    with_audio = builder(build_info={"shards": str(tmp_path / "out" / PATTERN), "audio_dir": "audio"}).build("all")
    assert torch.equal(with_audio[3]["video_features"][2], torch.arange(DIM, dtype=torch.float32))
    without = shard_builder(tmp_path / "out").build("all")  # audio_dir empty: zeros, as with the folders
    assert not without[3]["video_features"][2].any()
    with pytest.raises(ShardError, match="audio_dir is set but the shards hold no audio vectors"):
        builder(build_info={"shards": str(shards / PATTERN), "audio_dir": "audio"}).build("all")


def test_shards_stream_through_pipe_commands_with_the_index_named_by_shard_index(shards, tmp_path):
    index = tmp_path / "elsewhere" / "index.json"
    index.parent.mkdir()
    shutil.copy(shards / "index.json", index)
    piped = builder(build_info={"shards": f"pipe:cat {shards}/{PATTERN}", "shard_index": str(index)}).build("all")
    local = shard_builder(shards).build("all")
    assert piped.names == local.names
    assert_same_item(piped[9], local[9])
    with pytest.raises(ShardError, match="shard_index: must be set when the shards are read through pipe:"):
        builder(build_info={"shards": f"pipe:cat {shards}/{PATTERN}"}).build("all")


def test_shards_carry_who_and_when_so_training_from_them_checks_the_folds(tiny_assets, tmp_path):
    """An annotation with participants and times: the samples' JSON holds them, the shard rows
    read them back, and a participant in two folds stops a training split as with the folders."""
    with open(tiny_assets["hcmw_csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    for k, row in enumerate(rows):
        row.update(participant=f"p{row['test_fold_num']}", video=f"v{k % 3}.mp4", start_s=str(2.0 * k), end_s=str(2.0 * k + 1))
    other = next(row for row in rows if row["test_fold_num"] != rows[0]["test_fold_num"])
    rows[0]["participant"] = other["participant"]  # now in two folds
    annotation = tmp_path / "people.csv"
    with annotation.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pack.pack_hcmw(annotation, tiny_assets["hcmw_image_root"], tiny_assets["hcmw_feature_root"], tmp_path / "shards",
                   facemae_dir="mae_340_UTT", videomae_dir="maeV_199_UTT", shard_size=SHARD_SIZE)
    with tarfile.open(tmp_path / "shards" / "hcmw-000000.tar") as tar:
        meta = json.loads(tar.extractfile(f"{sample_key(1)}.json").read())
    assert meta == {"clip": rows[1]["uuid"].removesuffix(".mp4"), "label": rows[1]["mw_label"], "fold": int(rows[1]["test_fold_num"]),
                    "participant": rows[1]["participant"], "video": "v1.mp4", "start_s": 2.0, "end_s": 3.0}
    made = shard_builder(tmp_path / "shards")
    assert [(r.participant, r.start_s) for r in made.validated.rows[:2]] == [(rows[0]["participant"], 0.0), (rows[1]["participant"], 2.0)]
    with pytest.raises(DataError, match=rf"1 participant\(s\) have clips in more than one fold \({other['participant']} in folds"):
        made.build("train", int(rows[0]["test_fold_num"]))
