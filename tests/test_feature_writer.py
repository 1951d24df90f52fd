"""FeatureWriter on small arrays: layouts, resume, fingerprint refusal, overwrite (SPEC section 7).

Memory stays flat by construction (rows go straight into memory-mapped files); these tests
pin the bookkeeping around that: which rows are done, what a rerun may touch, what is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from minigpt4.common import dist_utils
from minigpt4.features.writer import MANIFEST, NAMES, PROGRESS, FeatureOutputError, FeatureWriter

NAMES_LIST = [f"clip_{i}" for i in range(5)]
ROW_SHAPES = {"vectors": (3,), "tokens": (2, 3)}
FINGERPRINT = {"model": {"positions": [6, 7], "lora_r": 8}, "dataset": {"annotation": "labels.csv"}}


def rows_of(rows) -> dict[str, np.ndarray]:
    """Deterministic float32 data for ``rows``: every value tells its row and place."""
    rows = np.asarray(rows, dtype=np.float32)
    return {
        "vectors": rows[:, None] + np.arange(3, dtype=np.float32) / 8,
        "tokens": rows[:, None, None] * 10 + np.arange(6, dtype=np.float32).reshape(2, 3) / 8,
    }


def make_writer(out_dir, names=NAMES_LIST, fingerprint=FINGERPRINT, **kwargs) -> FeatureWriter:
    return FeatureWriter(out_dir, names, ROW_SHAPES, {"fingerprint": fingerprint, "note": "test"}, **kwargs)


def write_batches(writer: FeatureWriter, rows, batch: int = 2) -> None:
    rows = list(rows)
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        writer.write(chunk, rows_of(chunk))


def full_run(out_dir, **kwargs) -> dict:
    writer = make_writer(out_dir, **kwargs)
    write_batches(writer, writer.open())
    return writer.finish()


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ stacked


def test_stacked_files_hold_every_row_in_names_order(tmp_path):
    manifest = full_run(tmp_path, dtype="float32")

    expected = rows_of(range(len(NAMES_LIST)))
    for kind, shape in ROW_SHAPES.items():
        array = np.load(tmp_path / f"{kind}.npy")
        assert array.dtype == np.float32 and array.shape == (len(NAMES_LIST), *shape)
        np.testing.assert_array_equal(array, expected[kind])
    assert (tmp_path / NAMES).read_text().splitlines() == NAMES_LIST
    assert not (tmp_path / PROGRESS).exists()  # removed once every row is on disk
    assert manifest["complete"] and manifest["rows"] == len(NAMES_LIST) and manifest["note"] == "test"
    assert manifest["files"]["tokens"] == {"path": "tokens.npy", "shape": [5, 2, 3]}
    assert json.loads((tmp_path / MANIFEST).read_text()) == manifest


def test_rows_may_arrive_in_any_order(tmp_path):
    writer = make_writer(tmp_path, dtype="float32")
    assert writer.open() == [0, 1, 2, 3, 4]
    for chunk in ([4, 1], [0], [3, 2]):
        writer.write(chunk, rows_of(chunk))
    writer.finish()
    np.testing.assert_array_equal(np.load(tmp_path / "tokens.npy"), rows_of(range(5))["tokens"])


def test_float16_files_are_the_float32_rows_cast(tmp_path):
    full_run(tmp_path / "f32", dtype="float32")
    manifest = full_run(tmp_path / "f16")  # the default

    assert manifest["dtype"] == "float16"
    for kind in ROW_SHAPES:
        half = np.load(tmp_path / "f16" / f"{kind}.npy")
        assert half.dtype == np.float16
        np.testing.assert_array_equal(half, np.load(tmp_path / "f32" / f"{kind}.npy").astype(np.float16))


def test_interrupted_run_resumes_the_missing_rows_and_ends_identical(tmp_path):
    full_run(tmp_path / "reference")

    first = make_writer(tmp_path / "run")
    assert first.open() == [0, 1, 2, 3, 4]
    first.write([0, 1], rows_of([0, 1]))
    first.write([2], rows_of([2]))
    del first  # killed: no finish()

    manifest = json.loads((tmp_path / "run" / MANIFEST).read_text())
    assert manifest["complete"] is False
    assert np.load(tmp_path / "run" / PROGRESS).tolist() == [1, 1, 1, 0, 0]

    second = make_writer(tmp_path / "run")
    rows = second.open()
    assert rows == [3, 4]
    write_batches(second, rows)
    second.finish()
    assert folder_bytes(tmp_path / "run") == folder_bytes(tmp_path / "reference")


def test_finish_with_missing_rows_names_the_first_and_keeps_the_progress(tmp_path):
    writer = make_writer(tmp_path)
    writer.open()
    writer.write([0, 2], rows_of([0, 2]))
    with pytest.raises(FeatureOutputError, match=r"3 rows were not written \(first: clip_1\)"):
        writer.finish()
    assert (tmp_path / PROGRESS).exists()
    assert make_writer(tmp_path).open() == [1, 3, 4]


def test_rerun_of_a_complete_folder_does_nothing(tmp_path):
    full_run(tmp_path)
    before = folder_bytes(tmp_path)

    writer = make_writer(tmp_path)
    assert writer.open() == []
    writer.finish()
    assert folder_bytes(tmp_path) == before


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from Linux's /proc")
def test_written_rows_do_not_stay_in_resident_memory(tmp_path):
    """64 MiB written in 32 batches: the process keeps no mapping of what is already on disk."""
    shape, rows, batch = (256, 1024), 128, 4  # float16 rows of 512 KiB
    writer = FeatureWriter(tmp_path, [f"clip_{i}" for i in range(rows)], {"image": shape}, {})
    writer.open()
    block = np.ones((batch, *shape), dtype=np.float32)
    before = resident_mib()
    for start in range(0, rows, batch):
        writer.write(range(start, start + batch), {"image": block})
    grown = resident_mib() - before
    writer.finish()
    assert grown < 16, f"resident memory grew by {grown:.0f} MiB while writing 64 MiB"


def test_batch_of_the_wrong_shape_is_refused(tmp_path):
    writer = make_writer(tmp_path)
    writer.open()
    arrays = rows_of([0, 1])
    arrays["tokens"] = arrays["tokens"][:, :1]
    with pytest.raises(ValueError, match=r"tokens: expected rows of shape \(2, 3\), got a batch of \(2, 1, 3\)"):
        writer.write([0, 1], arrays)


# ------------------------------------------------------------------------------ fingerprint


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"fingerprint": {**FINGERPRINT, "model": {"positions": [5, 6], "lora_r": 8}}}, "model.positions"),
        ({"fingerprint": {**FINGERPRINT, "model": {"positions": [6, 7], "lora_r": 16}}}, "model.lora_r"),
        ({"fingerprint": {**FINGERPRINT, "seed": 1}}, "seed"),
        ({"dtype": "float32"}, "dtype"),
        ({"layout": "per_clip"}, "layout"),
        ({"names": NAMES_LIST[:4]}, "names_sha256"),
    ],
    ids=["positions", "model-setting", "new-key", "dtype", "layout", "names"],
)
def test_rerun_with_another_fingerprint_is_refused_naming_what_differs(tmp_path, change, named):
    full_run(tmp_path)
    before = folder_bytes(tmp_path)

    with pytest.raises(FeatureOutputError, match=rf"differs in: {named}\).*--overwrite"):
        make_writer(tmp_path, **change).open()
    assert folder_bytes(tmp_path) == before  # nothing touched


def test_refusal_lists_only_the_settings_that_differ(tmp_path):
    full_run(tmp_path)
    other = {"model": {"positions": [1], "lora_r": 4}, "dataset": {"annotation": "labels.csv"}}
    with pytest.raises(FeatureOutputError, match=r"differs in: model\.lora_r, model\.positions\)"):
        make_writer(tmp_path, fingerprint=other).open()


def test_interrupted_run_is_not_resumed_under_another_fingerprint(tmp_path):
    writer = make_writer(tmp_path)
    writer.open()
    writer.write([0], rows_of([0]))
    del writer

    with pytest.raises(FeatureOutputError, match="differs in: dtype"):
        make_writer(tmp_path, dtype="float32").open()


def test_settings_given_as_tuples_match_their_json_form(tmp_path):
    """manifest.json turns tuples into lists; the same settings must still resume."""
    full_run(tmp_path, fingerprint={"model": {"positions": (6, 7)}})
    assert make_writer(tmp_path, fingerprint={"model": {"positions": (6, 7)}}).open() == []


def test_overwrite_replaces_files_of_another_fingerprint(tmp_path):
    full_run(tmp_path / "reference", names=NAMES_LIST[:3], dtype="float32")
    full_run(tmp_path / "run", dtype="float16")

    manifest = full_run(tmp_path / "run", names=NAMES_LIST[:3], dtype="float32", overwrite=True)
    assert manifest["rows"] == 3 and manifest["dtype"] == "float32"
    assert folder_bytes(tmp_path / "run") == folder_bytes(tmp_path / "reference")


def test_overwrite_restarts_an_interrupted_run_of_another_fingerprint(tmp_path):
    writer = make_writer(tmp_path, dtype="float32")
    writer.open()
    writer.write([0, 1], rows_of([0, 1]))
    del writer

    writer = make_writer(tmp_path, overwrite=True)
    assert writer.open() == [0, 1, 2, 3, 4]  # nothing of the float32 run is kept
    assert np.load(tmp_path / "vectors.npy").dtype == np.float16


def test_overwrite_of_the_same_fingerprint_keeps_finished_rows(tmp_path):
    writer = make_writer(tmp_path)
    writer.open()
    writer.write([0, 1], rows_of([0, 1]))
    del writer

    assert make_writer(tmp_path, overwrite=True).open() == [2, 3, 4]


def test_overwrite_leaves_unrelated_files_alone(tmp_path):
    full_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    full_run(tmp_path, dtype="float32", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------ per-clip layout


def test_per_clip_files_equal_the_stacked_rows(tmp_path):
    full_run(tmp_path / "stacked")
    manifest = full_run(tmp_path / "per_clip", layout="per_clip")

    assert manifest["files"]["tokens"] == {"path": "tokens/<clip>.npy", "shape": [2, 3]}
    for kind in ROW_SHAPES:
        stacked = np.load(tmp_path / "stacked" / f"{kind}.npy")
        files = sorted(p.name for p in (tmp_path / "per_clip" / kind).iterdir())
        assert files == [f"{name}.npy" for name in NAMES_LIST]
        for row, name in enumerate(NAMES_LIST):
            clip_array = np.load(tmp_path / "per_clip" / kind / f"{name}.npy")
            assert clip_array.dtype == np.float16
            np.testing.assert_array_equal(clip_array, stacked[row])
    assert not (tmp_path / "per_clip" / PROGRESS).exists()


def test_per_clip_resume_redoes_clips_with_a_missing_file(tmp_path):
    full_run(tmp_path / "reference", layout="per_clip")

    writer = make_writer(tmp_path / "run", layout="per_clip")
    writer.open()
    writer.write([0, 1, 2], rows_of([0, 1, 2]))
    del writer
    (tmp_path / "run" / "tokens" / "clip_1.npy").unlink()  # killed between two files of clip_1

    writer = make_writer(tmp_path / "run", layout="per_clip")
    rows = writer.open()
    assert rows == [1, 3, 4]
    write_batches(writer, rows)
    writer.finish()
    assert folder_bytes(tmp_path / "run") == folder_bytes(tmp_path / "reference")


def test_per_clip_overwrite_removes_the_old_clip_files(tmp_path):
    full_run(tmp_path, layout="per_clip")
    full_run(tmp_path, names=NAMES_LIST[:2], layout="per_clip", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "vectors").iterdir()) == ["clip_0.npy", "clip_1.npy"]


# ------------------------------------------------------------------------------ options and ranks


@pytest.mark.parametrize(
    ("option", "message"), [({"layout": "ragged"}, "run.feature_layout"), ({"dtype": "int8"}, "run.feature_dtype")]
)
def test_unknown_layout_or_dtype_is_refused(tmp_path, option, message):
    with pytest.raises(ValueError, match=message):
        make_writer(tmp_path, **option)
    assert not tmp_path.joinpath(MANIFEST).exists()


def test_processes_take_disjoint_rows_of_the_same_files(tmp_path, monkeypatch):
    """Under torchrun rank r of K writes rows r, r+K, ...; together they fill the files."""
    full_run(tmp_path / "reference")
    monkeypatch.setattr(dist_utils, "get_world_size", lambda: 2)
    writers, rows = {}, {}
    for rank in (0, 1):  # rank 0 prepares the folder, rank 1 only opens it
        monkeypatch.setattr(dist_utils, "get_rank", lambda rank=rank: rank)
        writers[rank] = make_writer(tmp_path / "run")
        rows[rank] = writers[rank].open()
    assert rows == {0: [0, 2, 4], 1: [1, 3]}

    for rank in (1, 0):  # rank 0 finishes last: it seals the folder
        monkeypatch.setattr(dist_utils, "get_rank", lambda rank=rank: rank)
        write_batches(writers[rank], rows[rank])
        writers[rank].finish()
    assert folder_bytes(tmp_path / "run") == folder_bytes(tmp_path / "reference")


# ------------------------------------------------------------------------------ values and batches


def test_value_beyond_float16_names_its_clip_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "f16"
    writer = make_writer(out)
    writer.open()
    huge = rows_of([0, 1])
    huge["vectors"][1, 2] = 1e6  # finite, but float16 tops out at 65504
    huge["tokens"][1, 0, 0] = -7e5
    with pytest.raises(FeatureOutputError) as err:
        writer.write([0, 1], huge)
    assert str(err.value) == (
        f"{out}: vectors of clip_1: a value of 1e+06 does not fit float16 (largest 65504); "
        "tokens of clip_1: a value of 700000 does not fit float16 (largest 65504); set run.feature_dtype: float32"
    )
    assert not out.exists()  # no zero-filled arrays, no manifest: the float32 rerun needs no --overwrite
    writer32 = make_writer(out, dtype="float32")
    write_batches(writer32, writer32.open())
    writer32.write([0, 1], huge)
    assert np.load(out / "vectors.npy")[1, 2] == 1e6


def test_value_beyond_float16_after_written_rows_keeps_them_and_asks_for_overwrite(tmp_path):
    writer = make_writer(tmp_path, batch_size=2)
    writer.open()
    writer.write([0, 1], rows_of([0, 1]))
    before = folder_bytes(tmp_path)
    huge = rows_of([2, 3])
    huge["vectors"][0, 0] = 1e5
    with pytest.raises(FeatureOutputError) as err:
        writer.write([2, 3], huge)
    assert str(err.value) == (
        f"{tmp_path}: vectors of clip_2: a value of 100000 does not fit float16 (largest 65504); "
        "set run.feature_dtype: float32 and pass --overwrite (this folder keeps the dump's float16 files and rows written)"
    )
    assert folder_bytes(tmp_path) == before  # the written rows and their progress are kept
    with pytest.raises(FeatureOutputError, match="differs in: dtype"):
        make_writer(tmp_path, dtype="float32", batch_size=2).open()


@pytest.mark.parametrize("layout", ["stacked", "per_clip"])
def test_resume_redoes_whole_batches_of_the_first_run(tmp_path, layout):
    # batches of 2 over 5 rows: [0, 1], [2, 3], [4]; the run dies inside batch [2, 3]
    writer = make_writer(tmp_path, layout=layout, batch_size=2)
    assert writer.open() == [0, 1, 2, 3, 4]
    writer.write([0, 1], rows_of([0, 1]))
    if layout == "per_clip":
        writer.write([2], rows_of([2]))  # clip 2 of the batch reached the disk, clip 3 did not
    resumed = make_writer(tmp_path, layout=layout, batch_size=2)
    assert resumed.open() == [2, 3, 4]  # batch [2, 3] again as a whole, so it rounds as before


def test_batch_size_is_part_of_the_fingerprint(tmp_path):
    writer = make_writer(tmp_path, batch_size=2)
    writer.open()
    with pytest.raises(FeatureOutputError, match=r"differs in: batch_size"):
        make_writer(tmp_path, batch_size=3).open()


def test_resumed_and_finished_runs_say_so(tmp_path, caplog):
    writer = make_writer(tmp_path, batch_size=2)
    writer.open()
    writer.write([0, 1], rows_of([0, 1]))
    with caplog.at_level("INFO", logger="minigpt4.features.writer"):
        rest = make_writer(tmp_path, batch_size=2)
        write_batches(rest, rest.open())
        rest.finish()
        make_writer(tmp_path, batch_size=2).open()
    assert "resuming, 3 of 5 rows still to do" in caplog.text
    assert "already complete (5 rows)" in caplog.text
