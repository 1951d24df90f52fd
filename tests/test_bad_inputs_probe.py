"""The probe on a damaged dump (SPEC sections 7, 11, 12): one real dump of the tiny model per
layout, damaged one way per case; each damage is one line naming the file and the problem
before anything is written, or, for values that are not finite, a set reported as not probed
while the rest of the report completes."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt4.probe.__main__ import USER_ERRORS, main
from minigpt4.probe.config import ProbeConfigError, load_config
from minigpt4.probe.run import run_probe
from test_feature_dump import HIDDEN, N_CLIPS, ROOT, demo_env, dump  # noqa: F401  (demo_env: a fixture)

PROBE_CFG = ROOT / "eval_configs" / "demo_probe.yaml"
REMAKE = "remake the dump (rerun eval_emotion.py --dataset hcmw_caption into an empty run.output_dir)"
POSITIONS = 4  # demo.yaml's llama_feature_positions
NPY_HEADER = 128  # bytes before the data of every array numpy writes with a short header


@pytest.fixture(scope="module")
def real_dumps(demo_env, tmp_path_factory) -> dict[str, Path]:
    """``eval_emotion.py --dataset hcmw_caption`` with the demo config, once per layout."""
    root = tmp_path_factory.mktemp("intact")
    for layout in ("stacked", "per_clip"):
        dump(root / layout, f"run.feature_layout={layout}")
    return {layout: root / layout for layout in ("stacked", "per_clip")}


def options(dump_dir: Path, annotation: Path, out: Path, *more: str) -> list[str]:
    """``--options`` of the demo's probe config reading ``dump_dir``, quick (no permutations, no plots)."""
    return [f"probe.dump_dir={dump_dir}", f"probe.annotation={annotation}", f"probe.output_dir={out}",
            "probe.permutations=0", "probe.plots=false", *more]


def argv(*args, **kwargs) -> list[str]:
    return ["--cfg-path", str(PROBE_CFG), "--options", *options(*args, **kwargs)]


def first_clip(folder: Path) -> str:
    return (folder / "names.txt").read_text().splitlines()[0]


# ---- the damages: each changes the copy of a dump and returns the exact error it must give


def missing_npy(d: Path) -> str:
    (d / "llama_features.npy").unlink()
    return f"{d}/llama_features.npy: missing; {REMAKE}"


def missing_names(d: Path) -> str:
    (d / "names.txt").unlink()
    return f"{d}/names.txt: missing (it gives the clip of each row); {REMAKE}"


def manifest_not_json(d: Path) -> str:
    (d / "manifest.json").write_text("complete: true\n")
    return f"{d}/manifest.json: not JSON (Expecting value at line 1 column 1); {REMAKE}"


def truncated_array(d: Path) -> str:
    path = d / "llama_features.npy"
    whole = NPY_HEADER + N_CLIPS * POSITIONS * HIDDEN * 2  # float16
    assert path.stat().st_size == whole
    path.write_bytes(path.read_bytes()[:10_000])  # a copy cut off part way through
    return f"{path}: cut short: 10000 bytes, its float16 array of shape ({N_CLIPS}, {POSITIONS}, {HIDDEN}) needs {whole}; {REMAKE}"


def fewer_rows(d: Path) -> str:
    np.save(d / "facemae_projected_features.npy", np.zeros((20, HIDDEN), np.float16))
    return f"{d}/facemae_projected_features.npy: holds 20 rows, the manifest records {N_CLIPS}; {REMAKE}"


def other_width(d: Path) -> str:
    np.save(d / "facemae_projected_features.npy", np.zeros((N_CLIPS, 10), np.float16))
    return (
        f"{d}/facemae_projected_features.npy: holds an array of shape ({N_CLIPS}, 10), "
        f"the manifest records ({N_CLIPS}, {HIDDEN}); {REMAKE}"
    )


def zero_bytes(d: Path) -> str:
    (d / "videomae_projected_features.npy").write_bytes(b"")
    return f"{d}/videomae_projected_features.npy: empty (0 bytes); {REMAKE}"


def object_array(d: Path) -> str:
    np.save(d / "videomae_projected_features.npy", np.array([{"x": 1}] * N_CLIPS, dtype=object), allow_pickle=True)
    return f"{d}/videomae_projected_features.npy: an object array (Python objects, not numbers); {REMAKE}"


def other_dtype(d: Path) -> str:
    np.save(d / "audio_projected_features.npy", np.zeros((N_CLIPS, HIDDEN), np.float32))
    return f"{d}/audio_projected_features.npy: holds float32 values, the manifest records float16; {REMAKE}"


def not_an_npy(d: Path) -> str:
    (d / "audio_projected_features.npy").write_text("clip,value\n")
    return f"{d}/audio_projected_features.npy: no .npy header (another format?); {REMAKE}"


def two_damaged(d: Path) -> str:
    """The first in probe.kinds order is named, the other counted."""
    missing_npy(d)
    return zero_bytes(d).replace("; remake", " (and 1 more damaged file(s)); remake")


def names_swapped(d: Path) -> str:
    names = (d / "names.txt").read_text().splitlines()
    names[3], names[4] = names[4], names[3]
    (d / "names.txt").write_text("".join(f"{n}\n" for n in names))
    return (
        f"{d}/names.txt: not as the dump wrote it (lines reordered or edited: their SHA-256 differs from the manifest's "
        f"fingerprint.names_sha256), so rows would pair with the wrong clips and labels; restore the dump's names.txt or {REMAKE}"
    )


def per_clip_file_missing(d: Path) -> str:
    path = d / "llama_features" / f"{first_clip(d)}.npy"
    path.unlink()
    return f"{path}: missing; {REMAKE}"


def per_clip_file_of_other_shape(d: Path) -> str:
    path = d / "llama_features" / f"{first_clip(d)}.npy"
    np.save(path, np.zeros((POSITIONS - 1, HIDDEN), np.float16))
    return f"{path}: holds an array of shape ({POSITIONS - 1}, {HIDDEN}), the manifest records ({POSITIONS}, {HIDDEN}); {REMAKE}"


DAMAGES = {
    "stacked": [
        missing_npy, missing_names, manifest_not_json, truncated_array, fewer_rows, other_width, zero_bytes,
        object_array, other_dtype, not_an_npy, two_damaged, names_swapped,
    ],
    "per_clip": [per_clip_file_missing, per_clip_file_of_other_shape, names_swapped],
}
CASES = [pytest.param(layout, damage, id=f"{layout}-{damage.__name__}") for layout, damages in DAMAGES.items() for damage in damages]


def damaged_copy(real_dumps, layout: str, damage, tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "dump"
    shutil.copytree(real_dumps[layout], folder)
    return folder, damage(folder)


@pytest.mark.parametrize("layout, damage", CASES)
def test_a_damaged_dump_is_one_line_naming_the_file_before_anything_is_written(real_dumps, demo_env, tmp_path, layout, damage):
    folder, expected = damaged_copy(real_dumps, layout, damage, tmp_path)
    out = tmp_path / "probe"
    with pytest.raises(USER_ERRORS) as error:  # what the command prints as "error: ..."
        main(argv(folder, demo_env["hcmw_csv"], out))
    assert str(error.value) == expected
    assert not out.exists()


def test_the_intact_dumps_pass_the_checks(real_dumps, demo_env, tmp_path):
    """The checks refuse only damage: both layouts of the real dump probe as they are."""
    for layout, folder in real_dumps.items():
        only_facemae = ["probe.kinds=[facemae_projected_features]", "probe.concatenations=[]"]
        cfg = load_config(PROBE_CFG, options(folder, demo_env["hcmw_csv"], tmp_path / layout, *only_facemae))
        assert [s.feature_set.name for s in run_probe(cfg, progress=False).sets] == ["facemae"]


def test_the_command_prints_the_error_without_a_traceback(real_dumps, demo_env, tmp_path):
    """The real process (every damage above is the same error class, checked in this process)."""
    folder, expected = damaged_copy(real_dumps, "per_clip", names_swapped, tmp_path)
    command = [sys.executable, "-m", "minigpt4.probe", *argv(folder, demo_env["hcmw_csv"], tmp_path / "probe")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr == f"error: {expected}\n"
    assert not (tmp_path / "probe").exists()


# ---- values that are not finite: the set is not probed, the rest completes


def test_a_set_with_nan_or_inf_is_reported_as_not_probed_and_the_rest_completes(real_dumps, demo_env, tmp_path, capsys):
    folder = tmp_path / "dump"
    shutil.copytree(real_dumps["stacked"], folder)
    names = (folder / "names.txt").read_text().splitlines()
    face = np.load(folder / "facemae_projected_features.npy", mmap_mode="r+")
    face[3, 0], face[7, 5] = np.nan, np.inf
    face.flush()
    del face
    kinds = "probe.kinds=[facemae_projected_features,videomae_projected_features]"
    concat = "probe.concatenations=[[facemae,videomae]]"
    paths = main(argv(folder, demo_env["hcmw_csv"], tmp_path / "probe", kinds, concat))

    reason = f"NaN or infinite values in 2 clip(s): {names[3]}, {names[7]}"
    report = json.loads(paths["json"].read_text())
    assert report["not_probed"] == [
        {"name": "facemae", "kind": "facemae_projected_features", "layer": None, "position": None, "dim": HIDDEN, "reason": reason},
        {"name": "facemae+videomae", "kind": "concat", "layer": None, "position": None, "dim": 2 * HIDDEN, "reason": reason},
    ]
    (videomae,) = report["sets"]
    assert videomae["name"] == "videomae"
    # the set that was probed has the numbers of a probe of the intact dump
    only_videomae = ["probe.kinds=[videomae_projected_features]", "probe.concatenations=[]"]
    intact = load_config(PROBE_CFG, options(real_dumps["stacked"], demo_env["hcmw_csv"], tmp_path / "x", *only_videomae))
    (reference,) = run_probe(intact, progress=False).sets
    assert videomae["summary"] == reference.summary

    table = paths["markdown"].read_text()
    na = " | ".join(["n/a"] * 6)
    assert f"| - | facemae | {HIDDEN} | n/a | n/a | {na} | not probed: {reason} |" in table.splitlines()
    assert f"| - | facemae+videomae | {2 * HIDDEN} | n/a | n/a | {na} | not probed: {reason} |" in table.splitlines()
    assert table in capsys.readouterr().out
    with paths["csv"].open() as handle:
        rows = {row["feature_set"]: row for row in csv.DictReader(handle)}
    assert rows["videomae"]["not_probed"] == "" and rows["videomae"]["balanced_accuracy_mean"]
    assert rows["facemae"]["not_probed"] == reason and rows["facemae"]["balanced_accuracy_mean"] == ""


# ---- config errors: before anything runs


@pytest.mark.parametrize(
    "option, expected",
    [
        ("probe.n_jobs=0", "probe.n_jobs: 0 processes cannot fit anything; use 1 or more, or -1 for every core"),
        ("probe.output_dir={file}", "probe.output_dir: {file} is a file, not a folder; choose another output_dir"),
        ("probe.output_dir={file}/probe", "probe.output_dir: {file}/probe cannot be made: {file} is a file; choose another output_dir"),
    ],
)
def test_config_errors_stop_before_anything_runs(tmp_path, option, expected):
    file = tmp_path / "results.txt"
    file.write_text("an earlier result\n")
    config = tmp_path / "probe.yaml"
    config.write_text("probe:\n  dump_dir: nowhere\n  annotation: nowhere.csv\n")
    with pytest.raises(ProbeConfigError) as error:
        load_config(config, [option.format(file=file)])
    assert str(error.value) == expected.format(file=file)
    assert file.read_text() == "an earlier result\n"


def test_the_command_prints_a_config_error_without_a_traceback(tmp_path):
    config = tmp_path / "probe.yaml"
    config.write_text("probe:\n  dump_dir: nowhere\n  annotation: nowhere.csv\n  n_jobs: 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "minigpt4.probe", "--cfg-path", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert done.stderr == "error: probe.n_jobs: 0 processes cannot fit anything; use 1 or more, or -1 for every core\n"
