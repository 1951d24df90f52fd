"""The part every clip dataset shares: rows from an annotation, checked before any is used."""

from __future__ import annotations

import codecs
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from torch.utils.data import Dataset

from minigpt4.datasets.datasets.clip_inputs import UnusableFile
from minigpt4.datasets.errors import BadClip, DataError

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "skip")
SPLITS = ("train", "eval", "all")  # "all": every row, e.g. for feature extraction


class ClipDataset(Dataset):
    """Rows of one annotation; subclasses read ``rows`` and say in ``check_row`` what is wrong.

    ``on_error`` decides what happens to bad rows: ``raise`` stops with a :class:`DataError`
    listing every bad clip, ``skip`` drops them and keeps their problems in ``skipped`` for
    the caller's report.
    """

    rows: list[Any]  # each row has a ``clip`` attribute, the clip's name

    def __init__(self, vis_processor: Callable, annotation: str | Path, on_error: str):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}, got {on_error!r}")
        self.vis_processor = vis_processor
        self.annotation = Path(annotation).expanduser()
        self.on_error = on_error
        self.skipped: list[BadClip] = []

    def check_row(self, row: Any) -> list[BadClip]:
        raise NotImplementedError(f"{type(self).__name__} must implement check_row")

    def validate(self) -> list[BadClip]:
        """Every problem of every row: missing or broken files, labels outside the label set."""
        return [bad for row in self.rows for bad in self.check_row(row)]

    def _drop_bad_rows(self) -> None:
        """Apply ``on_error`` to what :meth:`validate` finds."""
        bad = self.validate()
        if not bad:
            return
        if self.on_error == "raise":
            raise DataError.for_clips(bad, str(self.annotation))
        bad_clips = {b.clip for b in bad}
        self.rows = [row for row in self.rows if row.clip not in bad_clips]
        self.skipped = bad
        logger.warning(
            "%s: skipped %d bad clip(s) (%d problem(s)); %d clip(s) left",
            self.annotation, len(bad_clips), len(bad), len(self.rows),
        )

    @property
    def names(self) -> list[str]:
        """Clip names in row order."""
        return [row.clip for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)


def check_files(clip: str, checks: Iterable[tuple[Path, Callable[[Path], Any]]]) -> list[BadClip]:
    """Run each ``check(path)``; every :class:`UnusableFile` becomes a ``BadClip``."""
    bad = []
    for path, check in checks:
        try:
            check(path)
        except UnusableFile as exc:
            bad.append(BadClip(clip, str(path), str(exc)))
    return bad


def read_annotation_text(path: Path) -> str:
    """The text of an annotation: UTF-8 (with or without the BOM spreadsheets write), or
    UTF-16 with its BOM.  Other encodings (Latin-1, Windows code pages) cannot be told apart
    from each other reliably, so they are a :class:`DataError` naming the file, not a guess."""
    data = path.read_bytes()
    encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} text (byte {data[exc.start]:#04x} at "
            f"offset {exc.start}); save it as UTF-8"
        ) from None


def check_unique(clips: Sequence[str], annotation: Path) -> None:
    """Two rows for one clip would give it two results; refuse the annotation."""
    repeated = [clip for clip, count in Counter(clips).items() if count > 1]
    if repeated:
        raise DataError(f"{annotation}: clip(s) listed more than once: {', '.join(repeated[:20])}")
