"""Labels and folds of a dump's rows, read from the hcmw annotation and checked against
``names.txt``: every dumped clip needs a label and a fold, every annotated clip a row."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from minigpt4.datasets.datasets.hcmw_dataset import LABELS, read_annotation
from minigpt4.datasets.errors import SHOWN_IN_MESSAGE
from minigpt4.datasets.folds import check_participant_folds
from minigpt4.features.writer import NAMES

MW = LABELS[0]  # the positive class


class ProbeInputError(ValueError):
    """The dump and the annotation cannot be probed together; the message lists why."""


@dataclass
class RowLabels:
    """Per dump row (``names.txt`` order): 1 = MW, 0 = NonMW, the clip's test fold, and who and
    when where the annotation says (``participant``, ``video``, ``start_s``, ``end_s``)."""

    y: np.ndarray  # [N] int
    folds: np.ndarray  # [N] int
    clips: list[str] = field(default_factory=list)
    participants: list[str | None] = field(default_factory=list)
    videos: list[str | None] = field(default_factory=list)
    start_s: np.ndarray | None = None  # [N] float, NaN where a row has none
    end_s: np.ndarray | None = None
    fold_warning: str | None = None  # the participant-fold check's line when the user let it through

    @property
    def timed(self) -> bool:
        """Whether every row has a video and a start time: context windows and timelines need both."""
        return all(v is not None for v in self.videos) and self.start_s is not None and bool(np.isfinite(self.start_s).all())


def listed(clips: Sequence[str]) -> str:
    """``a, b, c ... and 5 more``: the first SHOWN_IN_MESSAGE clips, the rest counted."""
    shown = ", ".join(clips[:SHOWN_IN_MESSAGE])
    return shown + (f" ... and {len(clips) - SHOWN_IN_MESSAGE} more" if len(clips) > SHOWN_IN_MESSAGE else "")


def align_labels(
    names: Sequence[str],
    annotation: str | Path,
    dump_dir: Path,
    left_out: Sequence[str] = (),
    allow_split_participants: bool = False,
) -> RowLabels:
    """The labels of ``names``; ``left_out`` are annotated clips the dump skipped on purpose
    (its ``skipped.tsv``), so their absence is not an error.  A participant whose clips lie in
    two folds stops here unless ``allow_split_participants``."""
    annotation = Path(annotation)
    if not annotation.is_file():
        raise ProbeInputError(f"probe.annotation: file not found: {annotation}")
    rows = {row.clip: row for row in read_annotation(annotation)}
    problems = []
    missing = [clip for clip in rows if clip not in set(names) and clip not in set(left_out)]
    if missing:
        problems.append(f"{len(missing)} annotated clip(s) have no row in {dump_dir / NAMES}: {listed(missing)}")
    extra = [name for name in names if name not in rows]
    if extra:
        problems.append(f"{len(extra)} dumped clip(s) are not in {annotation}: {listed(extra)}")
    no_fold = [name for name in names if name in rows and rows[name].fold < 0]
    if no_fold:
        problems.append(f"{len(no_fold)} clip(s) have no test fold (negative test_fold_num) in {annotation}: {listed(no_fold)}")
    bad_label = [f"{name} ({rows[name].label!r})" for name in names if name in rows and rows[name].label not in LABELS]
    if bad_label:
        problems.append(f"{len(bad_label)} clip(s) have an mw_label other than {' / '.join(LABELS)}: {listed(bad_label)}")
    if problems:
        raise ProbeInputError(
            f"the dump {dump_dir} and the annotation {annotation} disagree:\n  " + "\n  ".join(problems)
            + "\nProbe a dump made from this annotation (eval_emotion.py --dataset hcmw_caption with fold: -1)."
        )
    ordered = [rows[name] for name in names]
    warning = check_participant_folds(ordered, annotation, "probe.allow_split_participants", allow_split_participants)

    def seconds(values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    return RowLabels(
        y=np.array([row.label == MW for row in ordered], dtype=np.int64),
        folds=np.array([row.fold for row in ordered], dtype=np.int64),
        clips=list(names),
        participants=[row.participant for row in ordered],
        videos=[row.video for row in ordered],
        start_s=seconds(row.start_s for row in ordered),
        end_s=seconds(row.end_s for row in ordered),
        fold_warning=warning,
    )
