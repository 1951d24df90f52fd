"""Folds a study can trust: one participant never in two folds (SPEC section 12).

A detector of mind wandering is judged by how well it finds it in a person it never saw, so a
held-out fold must not share a person with the training folds.  ``check_participant_folds``
finds participants whose clips lie in more than one fold (the one check every command that
reads folds runs); ``build_folds`` assigns new folds, stratified by label and grouped by
participant (scikit-learn's ``StratifiedGroupKFold``, seeded), and
``python -m minigpt4.datasets.assign_folds`` writes them as a new annotation file, never over
its input.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from minigpt4.common.atomic_io import write_text_atomic
from minigpt4.datasets.datasets.base_dataset import read_annotation_text
from minigpt4.datasets.datasets.hcmw_dataset import LABELS, HCMWRow
from minigpt4.datasets.errors import SHOWN_IN_MESSAGE, DataError

FOLD_COLUMN = "test_fold_num"
SEED_ATTEMPTS = 200  # seeds tried (seed, seed+1, ...) for folds that each hold both labels


def split_participants(rows: Sequence[HCMWRow]) -> dict[str, list[int]]:
    """Participants whose clips lie in more than one fold -> their folds (sorted)."""
    folds: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        if row.participant is not None:
            folds[row.participant].add(row.fold)
    return {person: sorted(found) for person, found in folds.items() if len(found) > 1}


def check_participant_folds(rows: Sequence[HCMWRow], source: str | Path, allow_key: str, allow: bool = False) -> str | None:
    """Refuse folds that split a participant, in one line naming them; with ``allow`` the same
    line comes back as a warning for the caller's report.  None when every participant sits in
    one fold, or when the annotation names no participants."""
    split = split_participants(rows)
    if not split:
        return None
    shown = [f"{person} in folds {', '.join(map(str, folds))}" for person, folds in list(split.items())[:SHOWN_IN_MESSAGE]]
    more = f" and {len(split) - SHOWN_IN_MESSAGE} more" if len(split) > SHOWN_IN_MESSAGE else ""
    line = (
        f"{source}: {len(split)} participant(s) have clips in more than one fold ({'; '.join(shown)}{more}), so a "
        "held-out fold shares people with the training folds"
    )
    if allow:
        return line + f" ({allow_key}: true)"
    raise DataError(
        f"{line}; rebuild the folds with `python -m minigpt4.datasets.assign_folds`, or set {allow_key}: true to go on anyway"
    )


def build_folds(rows: Sequence[HCMWRow], n_folds: int, seed: int, source: str | Path = "annotation") -> dict[str, int]:
    """clip -> fold in 0..n_folds-1: stratified by label, every participant in one fold.

    ``StratifiedGroupKFold`` balances the labels greedily; when a fold it makes holds one
    class while another seed gives every fold both, the first such seed (seed, seed+1, ...) is
    taken, so the result is deterministic for a given ``seed``.
    """
    from sklearn.model_selection import StratifiedGroupKFold  # here: every command imports this module, few build folds

    if n_folds < 2:
        raise DataError(f"--folds: a held-out evaluation needs 2 or more folds, got {n_folds}")
    unlabelled = [f"{row.clip} ({row.label!r})" for row in rows if row.label not in LABELS]
    if unlabelled:
        raise DataError(f"{source}: mw_label must be {' or '.join(LABELS)}; not so for {', '.join(unlabelled[:SHOWN_IN_MESSAGE])}")
    anonymous = [row.clip for row in rows if row.participant is None]
    if anonymous:
        raise DataError(
            f"{source}: folds are grouped by participant, but {len(anonymous)} clip(s) have neither a participant nor a "
            f"video ({', '.join(anonymous[:SHOWN_IN_MESSAGE])}); add a participant column"
        )
    people = sorted({row.participant for row in rows})
    if len(people) < n_folds:
        raise DataError(f"{source}: {len(people)} participant(s) cannot fill {n_folds} folds (one participant per fold at least)")
    y = np.array([LABELS.index(row.label) for row in rows])
    groups = np.array([people.index(row.participant) for row in rows])
    first = None
    for attempt in range(SEED_ATTEMPTS):
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed + attempt)
        assignment = np.empty(len(rows), dtype=np.int64)
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(rows)), y, groups)):
            assignment[held_out] = fold
        if first is None:
            first = assignment
        if all(len(set(y[assignment == fold])) == len(LABELS) for fold in range(n_folds)):
            first = assignment
            break
    return {row.clip: int(fold) for row, fold in zip(rows, first)}


def fold_table(rows: Sequence[HCMWRow], folds: dict[str, int]) -> str:
    """Per fold: participants, clips and clips of each label, as text lines."""
    lines = []
    for fold in sorted(set(folds.values())):
        members = [row for row in rows if folds[row.clip] == fold]
        labels = Counter(row.label for row in members)
        people = len({row.participant for row in members})
        counts = ", ".join(f"{label} {labels.get(label, 0)}" for label in LABELS)
        lines.append(f"fold {fold}: {people} participant(s), {len(members)} clips ({counts})")
    return "\n".join(lines)


def write_with_folds(source: Path, output: Path, rows: Sequence[HCMWRow], folds: dict[str, int]) -> None:
    """``source`` (read as ``rows``) with its ``test_fold_num`` replaced (added when absent),
    every other column and the row order kept, written to ``output`` (UTF-8)."""
    reader = csv.DictReader(io.StringIO(read_annotation_text(source), newline=""))
    columns = list(reader.fieldnames or [])
    if FOLD_COLUMN not in columns:
        columns.append(FOLD_COLUMN)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record, row in zip(reader, rows, strict=True):
        writer.writerow({**{c: record.get(c) or "" for c in columns}, FOLD_COLUMN: folds[row.clip]})
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, buffer.getvalue())
