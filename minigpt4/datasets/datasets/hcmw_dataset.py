"""The mind-wandering clips (SPEC section 6): one CSV row per clip, k folds, two classes.

Per clip: the peak frame ``<image_root>/<clip>/<clip>_peak_frame.png`` and the vectors
``<feature_root>/<dir>/<clip>.npy`` for FaceMAE, VideoMAE and (optionally) audio.  The whole
annotation is validated before a split is taken, so the train and eval splits of a fold see
the same clean rows and the class weights count only clips that are used.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections import Counter
from dataclasses import KW_ONLY, dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from minigpt4.datasets.datasets.base_dataset import (
    SPLITS,
    ClipDataset,
    check_files,
    check_unique,
    read_annotation_text,
)
from minigpt4.datasets.datasets.clip_inputs import check_image, find_nfc, nfc, open_rgb, read_vector
from minigpt4.datasets.errors import BadClip, DataError

LABELS = ("MW", "NonMW")  # CSV codes, in the order candidate answers are listed
REQUIRED_COLUMNS = ("uuid", "mw_label", "test_fold_num")
# Who and when (SPEC section 12), written by minigpt4.prepare; optional: an annotation with
# only the required columns works everywhere, and only the probe's context sets, timelines
# and the participant-fold check read these.
TIME_COLUMNS = ("participant", "video", "start_s", "end_s")
NO_FOLD = -1


@dataclass(frozen=True)
class HCMWRow:
    clip: str
    label: str  # the CSV code; checked by validate(), not here
    fold: int
    _: KW_ONLY
    participant: str | None = None  # the person; the session video when only ``video`` is given
    video: str | None = None  # the recording the clip was cut from
    start_s: float | None = None  # the clip's window in that recording
    end_s: float | None = None


def parse_fold(text: str) -> int:
    """A ``test_fold_num`` cell as the annotation is read: an integer (ValueError otherwise)."""
    return int(text.strip())


def _seconds(record: Mapping[str, str], column: str, where: str) -> float | None:
    text = (record.get(column) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise DataError(f"{where}: {column} {text!r} is not a time in seconds (a finite number >= 0)")
    return value


def _time_fields(record: Mapping[str, str], columns: Sequence[str], where: str) -> dict:
    """The optional who-and-when columns of one record (absent or empty: None)."""
    text = {c: nfc((record.get(c) or "").strip()) or None for c in ("participant", "video") if c in columns}
    fields = {"participant": text.get("participant") or text.get("video"), "video": text.get("video")}
    fields["start_s"] = _seconds(record, "start_s", where) if "start_s" in columns else None
    fields["end_s"] = _seconds(record, "end_s", where) if "end_s" in columns else None
    if fields["start_s"] is not None and fields["end_s"] is not None and fields["end_s"] <= fields["start_s"]:
        raise DataError(f"{where}: end_s {fields['end_s']} is not after start_s {fields['start_s']}")
    return fields


def read_annotation(path: Path, folds_required: bool = True) -> list[HCMWRow]:
    """Every row of the CSV; a missing column, a non-integer fold or a time that is not a
    number stops here.  The optional ``TIME_COLUMNS`` are read when present.
    ``folds_required=False`` (the fold builder, which makes them) reads a missing or empty
    ``test_fold_num`` as ``NO_FOLD``."""
    with io.StringIO(read_annotation_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for column in REQUIRED_COLUMNS:
            if column not in columns and (folds_required or column != "test_fold_num"):
                raise DataError(
                    f"{path}: no column {column!r}; columns found: {', '.join(columns) or '(none)'}; "
                    f"an hcmw annotation needs {', '.join(REQUIRED_COLUMNS)}"
                )
        rows = []
        for record in reader:
            clip = nfc((record["uuid"] or "").strip().removesuffix(".mp4"))  # as file names are compared
            fold = (record.get("test_fold_num") or "").strip()
            if not clip:
                raise DataError(f"{path} line {reader.line_num}: empty uuid")
            try:
                fold = parse_fold(fold) if fold or folds_required else NO_FOLD
            except ValueError:
                raise DataError(
                    f"{path} line {reader.line_num}: test_fold_num {fold!r} of clip {clip!r} is not an integer"
                ) from None
            when = _time_fields(record, columns, f"{path} line {reader.line_num} (clip {clip!r})")
            rows.append(HCMWRow(clip, (record["mw_label"] or "").strip(), fold, **when))
    check_unique([row.clip for row in rows], path)
    return rows


class HCMWDataset(ClipDataset):
    """Every usable row of the annotation (split ``all``); :meth:`select` gives the ``train`` /
    ``eval`` rows of a fold without checking the files again.

    Items: ``image`` [3, S, S], ``video_features`` float32 [3, D] (FaceMAE, VideoMAE, audio
    or zeros when ``audio_dir`` is empty), ``instruction_input``, ``answer`` and ``label``
    (the answer text of the clip's class), ``class_weight``, ``video_id`` = ``image_id`` =
    the clip name.  ``class_weights`` maps each answer text to its weight, balanced over
    the train rows of the fold (every row for ``all``).
    """

    def __init__(
        self,
        vis_processor: Callable,
        annotation: str | Path,
        image_root: str | Path,
        feature_root: str | Path,
        *,
        facemae_dir: str,
        videomae_dir: str,
        audio_dir: str,
        feature_dim: int,
        instruction: str,
        answers: Mapping[str, str],
        positive_label: str,
        on_error: str = "raise",
    ):
        super().__init__(vis_processor, annotation, on_error)
        if positive_label not in LABELS:
            raise ValueError(f"positive_label: {positive_label!r} is not one of {', '.join(LABELS)}")
        self.image_root = Path(image_root).expanduser()
        feature_root = Path(feature_root).expanduser()
        # an empty audio_dir means "no audio": the third row of video_features is zeros
        self.vector_dirs = [feature_root / facemae_dir, feature_root / videomae_dir]
        self.audio_dir = feature_root / audio_dir if audio_dir else None
        self.feature_dim = feature_dim
        self.instruction = instruction
        # positive class first: validation reads the first candidate as the positive one
        codes = [positive_label] + [code for code in LABELS if code != positive_label]
        self.answers = {code: answers[code] for code in codes}

        self.rows = self._read_rows()
        self._drop_bad_rows()
        self.split = "all"
        self._take("all", NO_FOLD)

    def _read_rows(self) -> list[HCMWRow]:
        """Every row of the annotation, before any file is checked."""
        return read_annotation(self.annotation)

    def select(self, split: str, fold: int, vis_processor: Callable) -> "HCMWDataset":
        """The ``split`` rows of ``fold`` of this ``all`` dataset, without checking any file again
        (each fold of a run takes its splits from one validated dataset)."""
        if self.split != "all":
            raise ValueError(f"select() takes splits of an 'all' dataset, not of a {self.split!r} one")
        subset = copy.copy(self)
        subset.vis_processor = vis_processor
        subset._take(split, fold)
        return subset

    def _take(self, split: str, fold: int) -> None:
        """Keep the rows of ``split`` of ``fold``; the class weights count that fold's train rows."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        if (split == "all") != (fold == NO_FOLD):
            raise ValueError(
                f"split {split!r} with fold {fold}: 'all' takes every row (fold -1); "
                "'train' and 'eval' need the test_fold_num of the held-out fold"
            )
        train_rows, self.rows = self._split(split, fold)
        self.class_weights = self._balanced_weights(train_rows, fold)
        self.split = split

    def _split(self, split: str, fold: int) -> tuple[list[HCMWRow], list[HCMWRow]]:
        """(rows the class weights count, rows of this split)."""
        if split == "all":
            if not self.rows:
                raise DataError(f"{self.annotation}: no usable clips")
            return self.rows, self.rows
        eval_rows = [row for row in self.rows if row.fold == fold]
        train_rows = [row for row in self.rows if row.fold != fold]
        if not eval_rows:
            folds = sorted({row.fold for row in self.rows})
            raise DataError(
                f"{self.annotation}: fold {fold} has no eval rows (no usable row has test_fold_num {fold}); "
                f"folds present: {', '.join(map(str, folds)) or '(none)'}"
            )
        return train_rows, train_rows if split == "train" else eval_rows

    def _balanced_weights(self, rows: Sequence[HCMWRow], fold: int) -> dict[str, float]:
        """total / (n_classes * count_c) per class, keyed by answer text."""
        counts = Counter(row.label for row in rows)
        if fold != NO_FOLD and len(counts) < len(LABELS):
            raise DataError(
                f"{self.annotation}: the train rows of fold {fold} hold only {', '.join(counts) or 'no'} clips; "
                f"training needs every class ({', '.join(LABELS)})"
            )
        return {self.answers[code]: len(rows) / (len(counts) * n) for code, n in counts.items()}

    def peak_frame(self, clip: str) -> Path:
        return find_nfc(self.image_root / clip / f"{clip}_peak_frame.png")

    def vector_files(self, clip: str) -> list[Path]:
        dirs = self.vector_dirs + ([self.audio_dir] if self.audio_dir else [])
        return [find_nfc(folder / f"{clip}.npy") for folder in dirs]

    def check_row(self, row: HCMWRow) -> list[BadClip]:
        bad = []
        if row.label not in LABELS:
            bad.append(BadClip(row.clip, str(self.annotation), f"unknown mw_label {row.label!r}; expected MW or NonMW"))
        checks = [(self.peak_frame(row.clip), check_image)]
        checks += [(path, partial(read_vector, dim=self.feature_dim)) for path in self.vector_files(row.clip)]
        return bad + check_files(row.clip, checks)

    @property
    def labels(self) -> list[str]:
        """The answer text of each clip's class, in row order."""
        return [self.answers[row.label] for row in self.rows]

    @property
    def candidate_answers(self) -> list[str]:
        """Every answer text, the positive class's first: what validation scores each clip against."""
        return list(self.answers.values())

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        vectors = [read_vector(path, self.feature_dim) for path in self.vector_files(row.clip)]
        if self.audio_dir is None:
            vectors.append(np.zeros(self.feature_dim, dtype=np.float32))
        return self._item(row, open_rgb(self.peak_frame(row.clip)), vectors)

    def _item(self, row: HCMWRow, image: Image.Image, vectors: list[np.ndarray]) -> dict:
        """The item of ``row`` from its peak frame and its three (D,) vectors."""
        answer = self.answers[row.label]
        return {
            "image": self.vis_processor(image),
            "video_features": torch.from_numpy(np.stack(vectors)),  # [3, D]
            "instruction_input": self.instruction,
            "answer": answer,
            "label": answer,
            "class_weight": self.class_weights[answer],
            "video_id": row.clip,
            "image_id": row.clip,
        }
