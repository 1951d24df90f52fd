"""Participant-safe folds (SPEC section 12): the check every fold reader runs and the builder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from minigpt4.datasets.datasets.hcmw_dataset import read_annotation
from minigpt4.datasets.errors import DataError
from minigpt4.datasets.assign_folds import main
from minigpt4.datasets.folds import build_folds, check_participant_folds
from temporal_sessions import write_rows
from test_train import no_training, train  # noqa: F401 (no_training is a fixture)

ROOT = Path(__file__).resolve().parents[1]


def study(participants: int = 10, seed: int = 0) -> list[dict]:
    """Participants with 3 to 9 clips each; some show one label only."""
    rng = np.random.default_rng(seed)
    rows = []
    for person in range(participants):
        share = [0.0, 1.0, 0.3, 0.6][person % 4]
        for k in range(int(rng.integers(3, 10))):
            rows.append({"uuid": f"p{person}_c{k}", "mw_label": "MW" if rng.random() < share else "NonMW",
                         "participant": f"p{person}", "video": f"p{person}.mp4", "start_s": 10 * k, "end_s": 10 * k + 5,
                         "note": f"kept {person}-{k}"})
    return rows


def test_built_folds_never_split_a_participant_and_hold_both_labels(tmp_path):
    rows = read_annotation(write_rows(tmp_path / "a.csv", study()), folds_required=False)
    folds = build_folds(rows, 3, seed=0)
    by_person: dict[str, set] = {}
    for row in rows:
        by_person.setdefault(row.participant, set()).add(folds[row.clip])
    assert all(len(f) == 1 for f in by_person.values())
    assert sorted(set(folds.values())) == [0, 1, 2]
    for fold in range(3):
        assert {row.label for row in rows if folds[row.clip] == fold} == {"MW", "NonMW"}
    assert build_folds(rows, 3, seed=0) == folds  # seeded
    # where scikit-learn's first split already holds both labels everywhere, it is taken as is
    y = [row.label == "MW" for row in rows]
    groups = [row.participant for row in rows]
    first = StratifiedGroupKFold(3, shuffle=True, random_state=0).split(np.zeros(len(rows)), y, groups)
    reference = {rows[i].clip: fold for fold, (_, held) in enumerate(first) for i in held}
    if all({rows[i].label for i in range(len(rows)) if reference[rows[i].clip] == f} == {"MW", "NonMW"} for f in range(3)):
        assert folds == reference


def test_folds_command_writes_a_new_file_keeping_every_column(tmp_path, capsys):
    source = write_rows(tmp_path / "a.csv", study())
    before = source.read_bytes()
    printed = main(["--annotation", str(source), "--output", str(tmp_path / "folds.csv"), "--folds", "4", "--seed", "1"])
    assert source.read_bytes() == before
    with (tmp_path / "folds.csv").open(newline="") as handle:
        written = list(csv.DictReader(handle))
    with source.open(newline="") as handle:
        original = list(csv.DictReader(handle))
    assert list(written[0]) == [*original[0], "test_fold_num"]
    assert [{k: v for k, v in r.items() if k != "test_fold_num"} for r in written] == original
    rows = read_annotation(tmp_path / "folds.csv")
    assert check_participant_folds(rows, "folds.csv", "x") is None
    assert printed.splitlines()[0].endswith(f"in 4 folds -> {tmp_path / 'folds.csv'}")
    assert len(printed.splitlines()) == 1 + 4


REFUSALS = [
    (["--output", "{src}"], "--output {src}: is the input annotation; folds are written to a new file"),
    (["--output", "{out}"], "--output {out}: exists; pass --overwrite to replace it"),
    (["--output", "{new}", "--folds", "1"], "--folds: a held-out evaluation needs 2 or more folds, got 1"),
    (["--output", "{new}", "--folds", "40"], "{src}: 10 participant(s) cannot fill 40 folds (one participant per fold at least)"),
]


def refusal_case(tmp_path: Path, arguments: list[str], message: str) -> tuple[list[str], str]:
    """The command's arguments and its expected error, with an existing ``out.csv`` that must survive."""
    source = write_rows(tmp_path / "a.csv", study())
    (tmp_path / "out.csv").write_text("keep me")
    paths = {"src": source, "out": tmp_path / "out.csv", "new": tmp_path / "new.csv"}
    return ["--annotation", str(source), *(a.format(**paths) for a in arguments)], message.format(**paths)


@pytest.mark.parametrize("arguments, message", REFUSALS)
def test_folds_command_refuses_and_writes_nothing(tmp_path, arguments, message):
    argv, expected = refusal_case(tmp_path, arguments, message)
    with pytest.raises(DataError) as caught:
        main(argv)
    assert str(caught.value) == expected
    assert (tmp_path / "out.csv").read_text() == "keep me" and not (tmp_path / "new.csv").exists()


def test_folds_command_line_refuses_in_one_line(tmp_path):
    argv, expected = refusal_case(tmp_path, *REFUSALS[3])
    done = subprocess.run([sys.executable, "-m", "minigpt4.datasets.assign_folds", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr == f"error: {expected}\n"
    assert not (tmp_path / "new.csv").exists()


def test_clips_without_a_person_cannot_be_grouped(tmp_path):
    rows = [{"uuid": f"c{i}", "mw_label": "MW" if i % 2 else "NonMW"} for i in range(6)]
    source = write_rows(tmp_path / "a.csv", rows)
    with pytest.raises(DataError, match=r"a.csv: folds are grouped by participant, but 6 clip\(s\) have neither a participant"):
        main(["--annotation", str(source), "--output", str(tmp_path / "b.csv")])


def test_training_stops_when_a_participant_spans_two_folds(tiny_assets, tmp_path, no_training):  # noqa: F811
    with open(tiny_assets["hcmw_csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    for i, row in enumerate(rows):  # two participants per fold
        row["participant"] = f"p{row['test_fold_num']}_{i % 2}"
    first_fold = int(rows[0]["test_fold_num"])
    other = next(int(r["test_fold_num"]) for r in rows if int(r["test_fold_num"]) != first_fold)
    rows[0]["participant"] = f"p{other}_0"  # p{other}_0 now also has a clip in the first row's fold
    annotation = write_rows(tmp_path / "people.csv", rows)
    out = tmp_path / "out"
    with pytest.raises(DataError) as caught:
        train(tiny_assets, out, f"datasets.hcmw_caption.build_info.annotation={annotation}")
    low, high = sorted((first_fold, other))
    assert str(caught.value) == (
        f"{annotation}: 1 participant(s) have clips in more than one fold (p{other}_0 in folds {low}, {high}), so a "
        "held-out fold shares people with the training folds; rebuild the folds with `python -m minigpt4.datasets.assign_folds`, "
        "or set allow_split_participants: true to go on anyway"
    )
    assert not out.exists() or not list(out.rglob("*.pth"))


def test_training_let_through_says_so_first(tiny_assets, tmp_path):
    with open(tiny_assets["hcmw_csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:  # one participant everywhere
        row["participant"] = "everyone"
    annotation = write_rows(tmp_path / "people.csv", rows)
    summary = train(tiny_assets, tmp_path / "out", f"datasets.hcmw_caption.build_info.annotation={annotation}",
                    "datasets.hcmw_caption.allow_split_participants=true", "run.max_epoch=1", "run.iters_per_epoch=1")
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(written)[0] == "warnings" and written["warnings"] == summary["warnings"]
    (warning,) = written["warnings"]
    assert warning.startswith(f"{annotation}: 1 participant(s) have clips in more than one fold (everyone in folds 0, 1, 2)")
    assert warning.endswith("(allow_split_participants: true)")
