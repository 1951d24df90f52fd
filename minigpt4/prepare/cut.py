"""Which clips to prepare: a folder of clip videos, or session videos cut by a segments CSV.

A segments CSV has the columns ``video, clip, start_s, end_s`` (``video`` relative to the
videos folder) and optionally ``mw_label, test_fold_num`` and ``participant`` (default: the
video's file stem), copied into the annotation CSV.  A labels CSV (for a folder of clips) has
``clip`` and optionally the same three.  Both are read as the hcmw reader reads an annotation
(UTF-8 with or without BOM, or UTF-16 with BOM; anything else is refused naming the file).
Every row is checked before anything is written: a clip id used twice, ``end_s <= start_s``,
a label or fold the hcmw dataset would refuse and (once the video is opened) a window outside
the video are errors naming the row.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minigpt4.datasets.datasets.base_dataset import read_annotation_text
from minigpt4.datasets.datasets.hcmw_dataset import LABELS, parse_fold
from minigpt4.datasets.frames import VIDEO_SUFFIXES

SEGMENT_COLUMNS = ("video", "clip", "start_s", "end_s")
LABEL_COLUMNS = ("mw_label", "test_fold_num")
PARTICIPANT = "participant"
# Decoders report times in float32 (4.2 s comes back as 4.1999998): comparisons allow this
# much, far below any frame interval.
TIME_TOLERANCE_S = 1e-4


class SegmentError(ValueError):
    """A segments or labels CSV cannot be used; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class ClipPlan:
    """One clip to prepare: its id, its video and the time window (None: the whole video)."""

    clip: str
    video: Path
    start_s: float | None = None
    end_s: float | None = None
    labels: dict[str, str] = field(default_factory=dict)  # mw_label, test_fold_num when given
    participant: str | None = None  # who the clip shows, when known
    video_name: str = ""  # the video as the input names it (segments: its `video` cell; clips: the file name)

    def annotation_row(self) -> dict[str, str]:
        """The clip's row of annotations.csv (write.ANNOTATION_COLUMNS; a missing value stays empty)."""
        row = {"uuid": self.clip, **self.labels, "video": self.video_name}
        if self.participant is not None:
            row[PARTICIPANT] = self.participant
        for key, value in (("start_s", self.start_s), ("end_s", self.end_s)):
            row[key] = "" if value is None else repr(value)
        return row


def _check_clip_id(clip: str, where: str) -> None:
    if not clip or clip.startswith(".") or any(sep in clip for sep in ("/", "\\", os.sep)):
        raise SegmentError(f"{where}: clip id {clip!r} cannot be a file name (empty, hidden or with a path separator)")


def _read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise SegmentError(f"{path}: no such CSV file")
    with io.StringIO(read_annotation_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise SegmentError(f"{path}: missing column(s) {', '.join(missing)}; it has {', '.join(columns) or 'none'}")
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def _labels(row: dict[str, str], where: str) -> dict[str, str]:
    """The row's mw_label and test_fold_num (those its CSV has), checked by the hcmw dataset's rules."""
    labels = {c: row[c] for c in LABEL_COLUMNS if c in row}
    clip = row["clip"]
    if "mw_label" in labels and labels["mw_label"] not in LABELS:
        raise SegmentError(f"{where}: mw_label {labels['mw_label']!r} of clip {clip!r} is not one of {', '.join(LABELS)}")
    if "test_fold_num" in labels:
        try:
            parse_fold(labels["test_fold_num"])
        except ValueError:
            raise SegmentError(
                f"{where}: test_fold_num {labels['test_fold_num']!r} of clip {clip!r} is not an integer"
            ) from None
    return labels


def _check_unique(clip: str, number: int, first_row: dict[str, int], where: str) -> None:
    if clip in first_row:
        raise SegmentError(f"{where}: clip id {clip!r} is already used by row {first_row[clip]}; ids must be unique")
    first_row[clip] = number


def read_segments(path: str | os.PathLike, videos_dir: str | os.PathLike) -> list[ClipPlan]:
    """The segments of ``path``, checked row by row (windows against the videos: ``check_window``)."""
    path, videos_dir = Path(path), Path(videos_dir)
    rows = _read_rows(path, SEGMENT_COLUMNS)
    plans, first_row = [], {}
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{path} row {number}"
        clip = row["clip"]
        _check_clip_id(clip, where)
        _check_unique(clip, number, first_row, where)
        try:
            start_s, end_s = float(row["start_s"]), float(row["end_s"])
        except ValueError:
            raise SegmentError(f"{where}: start_s {row['start_s']!r} / end_s {row['end_s']!r} are not numbers") from None
        if not (math.isfinite(start_s) and math.isfinite(end_s)) or start_s < 0:
            raise SegmentError(f"{where}: clip {clip!r} needs finite times with start_s >= 0")
        if end_s <= start_s:
            raise SegmentError(f"{where}: clip {clip!r} has end_s {end_s} <= start_s {start_s}")
        participant = row.get(PARTICIPANT) or Path(row["video"]).stem
        video = videos_dir / row["video"]
        plans.append(ClipPlan(clip, video, start_s, end_s, _labels(row, where), participant, row["video"]))
    if not plans:
        raise SegmentError(f"{path}: no segments")
    return plans


def check_window(plan: ClipPlan, duration: float, segments_path: str | os.PathLike) -> None:
    """A segment must lie inside its video (the end may reach the last frame's end)."""
    if plan.end_s is not None and plan.end_s > duration + TIME_TOLERANCE_S:
        raise SegmentError(
            f"{segments_path}: clip {plan.clip!r} ends at {plan.end_s} s but {plan.video} lasts {duration:.3f} s"
        )


def list_clip_videos(videos_dir: str | os.PathLike, labels_path: str | os.PathLike | None = None) -> list[ClipPlan]:
    """Every video in ``videos_dir`` (name order) as a whole clip, labelled from ``labels_path``."""
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise SegmentError(f"input.videos {videos_dir}: no such folder")
    videos = [p for p in sorted(videos_dir.iterdir()) if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    labels: dict[str, dict[str, str]] = {}
    participants: dict[str, str | None] = {}
    if labels_path is not None:
        first_row: dict[str, int] = {}
        for number, row in enumerate(_read_rows(Path(labels_path), ("clip",)), start=2):
            where = f"{labels_path} row {number}"
            _check_unique(row["clip"], number, first_row, where)
            labels[row["clip"]] = _labels(row, where)
            participants[row["clip"]] = row.get(PARTICIPANT) or None
    plans = []
    for video in videos:
        _check_clip_id(video.stem, str(video))
        plans.append(
            ClipPlan(
                video.stem,
                video,
                labels=labels.get(video.stem, {}),
                participant=participants.get(video.stem),
                video_name=video.name,
            )
        )
    if labels_path is not None:
        unlabelled = [p.clip for p in plans if p.clip not in labels]
        if unlabelled:
            raise SegmentError(f"{labels_path}: no row for clip(s) {', '.join(unlabelled[:10])}")
    seen: dict[str, Path] = {}
    for plan in plans:
        if plan.clip in seen:
            raise SegmentError(f"{seen[plan.clip]} and {plan.video} would both be clip {plan.clip!r}")
        seen[plan.clip] = plan.video
    if not plans:
        raise SegmentError(f"input.videos {videos_dir}: no videos ({', '.join(VIDEO_SUFFIXES)})")
    return plans


def select_frames(timestamps: np.ndarray, start_s: float | None, end_s: float | None, fps: float | None) -> np.ndarray:
    """Indices of the frames of a window, every one or ``fps`` per second.

    A frame belongs to [start_s, end_s) by its presentation time.  With ``fps``, the first
    frame at or after each tick start_s + k / fps is kept (each frame once), so a
    variable-frame-rate video is sampled evenly in time.
    """
    start = timestamps[0] if start_s is None else start_s
    end_limit = np.inf if end_s is None else end_s - TIME_TOLERANCE_S
    inside = (timestamps >= start - TIME_TOLERANCE_S) & (timestamps < end_limit)
    indices = np.flatnonzero(inside)
    if fps is None or indices.size == 0:
        return indices
    end = timestamps[indices[-1]]
    ticks = start + np.arange(int(math.floor((end - start) * fps + 1e-9)) + 1) / fps
    picks = np.searchsorted(timestamps[indices], ticks - TIME_TOLERANCE_S, side="left")
    return np.unique(indices[picks[picks < indices.size]])
