"""MER-style emotion clips (MERR / MER2023 / MER2024, SPEC section 6).

The annotation is a text file with one clip per line, ``<name> <n_frames> <emotion> ...``.
Per clip: the first frame of ``<video_root>/<name>.mp4`` (or ``.avi``) is the image, three
vectors ``<feature_root>/<dir>/<name>.npy`` (FaceMAE, VideoMAE, audio) are the feature
streams, and the transcript CSV gives what the person says, quoted in the instruction.
Names are compared in Unicode normal form C, as ``hcmw_caption`` and the encoder commands
do, so a name written composed finds a file stored decomposed (as macOS writes names).

For fine-tuning with ``train.py`` the clips are split once into training and validation
clips, by a split file or a seeded held-out share (:func:`held_out_clips`); evaluation
with ``eval_emotion.py`` reads every clip.  The files are checked once, for every clip;
:meth:`MERDataset.select` takes either side of the split without checking them again.
"""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np
import torch

from minigpt4.datasets.datasets.base_dataset import SPLITS, ClipDataset, check_files, check_unique, read_annotation_text
from minigpt4.datasets.datasets.clip_inputs import find_nfc, nfc, read_vector
from minigpt4.datasets.errors import BadClip, DataError
from minigpt4.datasets.frames import ClipReadError, read_first_frame

# The original's format, kept character for character: the line ends with a space and the
# format adds another, so two spaces stand before "[emotion]" (LLaMA-2 keeps both: one more
# token, which the released model was trained with).
INSTRUCTION = "<video><VideoHere></video> <feature><FeatureHere></feature> {} [{}] {} "
TRANSCRIPT_LINE = "The person in video says: {sentence}. "
TASK = "emotion"
SENTENCE_COLUMNS = ("sentence", "sentence_en")  # the first one the transcript has is used
VIDEO_SUFFIXES = (".mp4", ".avi")  # tried in this order


def held_out_clips(clips: Sequence[str], split_file: str | Path, eval_share: float, seed: int) -> set[str]:
    """The validation clips: the names listed in ``split_file`` (one per line), or else
    ``round(eval_share * len(clips))`` of them drawn with ``seed``.

    The draw sorts the names first, so it depends on the set of clips and the seed only,
    not on the annotation's line order.
    """
    if split_file:
        path = Path(split_file).expanduser()
        listed = {nfc(line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
        unknown = sorted(listed - set(clips))
        if unknown:
            raise DataError(f"{path}: clip(s) not in the annotation: {', '.join(unknown[:20])}")
        return listed
    if not 0.0 <= eval_share < 1.0:
        raise DataError(f"eval_share must be in [0, 1), got {eval_share}")
    count = round(eval_share * len(clips))
    order = np.random.default_rng(seed).permutation(len(clips))
    ordered = sorted(clips)
    return {ordered[i] for i in order[:count]}


@dataclass(frozen=True)
class MERRow:
    clip: str
    label: str  # the emotion as written; checked by validate(), not here


def read_annotation(path: Path) -> list[MERRow]:
    rows = []
    for number, line in enumerate(read_annotation_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3:
            raise DataError(f"{path} line {number}: expected '<name> <n_frames> <emotion> ...', got {line!r}")
        rows.append(MERRow(nfc(fields[0]), fields[2]))
    check_unique([row.clip for row in rows], path)
    return rows


def read_transcript(path: Path) -> dict[str, str]:
    """clip name -> what the person says."""
    with io.StringIO(read_annotation_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        found = ", ".join(columns) or "(none)"
        if "name" not in columns:
            raise DataError(f"{path}: no column 'name'; columns found: {found}")
        sentence = next((column for column in SENTENCE_COLUMNS if column in columns), None)
        if sentence is None:
            raise DataError(f"{path}: no column {' or '.join(map(repr, SENTENCE_COLUMNS))}; columns found: {found}")
        return {nfc((record["name"] or "").strip()): (record[sentence] or "").strip() for record in reader}


class MERDataset(ClipDataset):
    """Every usable clip of the annotation (split ``all``); :meth:`select` gives the ``train`` /
    ``eval`` side of the held-out split without checking the files again.

    Items: ``image`` [3, S, S], ``video_features`` float32 [3, D] (FaceMAE, VideoMAE, audio),
    ``instruction_input``, ``answer`` = ``label`` = the emotion, ``class_weight`` 1.0 (the
    emotion sets are used unweighted, as upstream), ``video_id`` = ``image_id`` = the name.
    """

    def __init__(
        self,
        vis_processor: Callable,
        annotation: str | Path,
        video_root: str | Path,
        transcript: str | Path,
        feature_root: str | Path,
        *,
        facemae_dir: str,
        videomae_dir: str,
        audio_dir: str,
        feature_dim: int,
        labels: Sequence[str],
        question: str,
        on_error: str = "raise",
    ):
        super().__init__(vis_processor, annotation, on_error)
        self.video_root = Path(video_root).expanduser()
        self.transcript = Path(transcript).expanduser()
        # feature folders sit beside the annotation unless a root is given
        feature_root = Path(feature_root).expanduser() if feature_root else self.annotation.parent
        self.vector_dirs = [feature_root / facemae_dir, feature_root / videomae_dir, feature_root / audio_dir]
        self.feature_dim = feature_dim
        self.label_set = list(labels)
        self.question = question

        self.sentences = read_transcript(self.transcript)
        self.rows = read_annotation(self.annotation)
        # the held-out split is drawn from every annotated clip, so skipping a bad clip moves no other
        self.annotated_clips = [row.clip for row in self.rows]
        self._drop_bad_rows()
        if not self.rows:
            raise DataError(f"{self.annotation}: no usable clips")
        self.split = "all"

    def select(self, split: str, held_out: Collection[str], vis_processor: Callable) -> "MERDataset":
        """The ``train`` clips (not ``held_out``), the ``eval`` clips (``held_out``) or ``all`` clips of
        this ``all`` dataset, read through ``vis_processor``, without checking any file again."""
        if self.split != "all":
            raise ValueError(f"select() takes splits of an 'all' dataset, not of a {self.split!r} one")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        subset = copy.copy(self)
        subset.vis_processor = vis_processor
        subset.split = split
        if split != "all":
            subset.rows = [row for row in self.rows if (row.clip in held_out) == (split == "eval")]
            if not subset.rows:
                raise DataError(
                    f"{self.annotation}: no {split} clips; list validation clips in split_file or set eval_share "
                    "so that both sides of the split hold clips"
                )
        return subset

    def video_file(self, clip: str) -> Path | None:
        """``<clip>.mp4``, else ``<clip>.avi``, else None."""
        candidates = (find_nfc(self.video_root / f"{clip}{suffix}") for suffix in VIDEO_SUFFIXES)
        return next((path for path in candidates if path.is_file()), None)

    def vector_files(self, clip: str) -> list[Path]:
        return [find_nfc(folder / f"{clip}.npy") for folder in self.vector_dirs]

    def check_row(self, row: MERRow) -> list[BadClip]:
        bad = []
        if row.label not in self.label_set:
            bad.append(
                BadClip(row.clip, str(self.annotation), f"label {row.label!r} is not one of {' '.join(self.label_set)}")
            )
        if row.clip not in self.sentences:
            bad.append(BadClip(row.clip, str(self.transcript), "no transcript line for this clip"))
        video = self.video_file(row.clip)
        if video is None:
            names = " or ".join(f"{row.clip}{suffix}" for suffix in VIDEO_SUFFIXES)
            bad.append(BadClip(row.clip, str(self.video_root / f"{row.clip}.mp4"), f"missing video (no {names})"))
        else:
            try:
                read_first_frame(video)
            except ClipReadError as exc:
                bad.append(BadClip(row.clip, exc.path, f"unreadable first frame: {exc.problem}"))
        checks = [(path, partial(read_vector, dim=self.feature_dim)) for path in self.vector_files(row.clip)]
        return bad + check_files(row.clip, checks)

    def instruction(self, clip: str) -> str:
        line = TRANSCRIPT_LINE.format(sentence=self.sentences[clip])
        return INSTRUCTION.format(line, TASK, self.question)

    @property
    def labels(self) -> list[str]:
        """Each clip's emotion, in row order."""
        return [row.label for row in self.rows]

    @property
    def candidate_answers(self) -> list[str]:
        return list(self.label_set)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        vectors = [read_vector(path, self.feature_dim) for path in self.vector_files(row.clip)]
        return {
            "image": self.vis_processor(read_first_frame(self.video_file(row.clip))),
            "video_features": torch.from_numpy(np.stack(vectors)),  # [3, D]
            "instruction_input": self.instruction(row.clip),
            "answer": row.label,
            "label": row.label,
            "class_weight": 1.0,
            "video_id": row.clip,
            "image_id": row.clip,
        }
