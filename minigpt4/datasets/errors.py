"""How datasets report bad input: one ``BadClip`` per problem, gathered into one ``DataError``,
or, when the user asked to skip bad clips, written to ``skipped.tsv``.

Datasets check every clip before anything uses it, so a run fails (or skips, when asked)
before any output is written, and the message lists every bad clip at once instead of the
first one a loader happens to trip over.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from minigpt4.common.atomic_io import write_text_atomic

SHOWN_IN_MESSAGE = 20  # problems listed one by one; the rest are counted


class BadClip(NamedTuple):
    """One problem with one clip: which clip, which file, what is wrong."""

    clip: str
    file: str
    problem: str


class DataError(ValueError):
    """An annotation or the files it points to cannot be used as they are."""

    @classmethod
    def for_clips(cls, bad: Sequence[BadClip], source: str) -> "DataError":
        clips = len({b.clip for b in bad})
        lines = [f"  {b.clip}: {b.file}: {b.problem}" for b in bad[:SHOWN_IN_MESSAGE]]
        if len(bad) > SHOWN_IN_MESSAGE:
            lines.append(f"  ... and {len(bad) - SHOWN_IN_MESSAGE} more problem(s)")
        return cls(
            f"{source}: {clips} bad clip(s), {len(bad)} problem(s):\n" + "\n".join(lines) + "\n"
            "Fix these files, or set on_error: skip in the dataset config to leave the clips out."
        )


SKIPPED_REPORT = "skipped.tsv"
SKIPPED_COLUMNS = ("clip", "file", "problem")


def write_skipped_report(out_dir: str | os.PathLike, skipped: Iterable) -> None:
    """``<out_dir>/skipped.tsv``: one line per problem of a clip left out (``SKIPPED_COLUMNS``;
    each item has ``clip``, ``file`` and ``problem``, a :class:`BadClip` say), written
    atomically; every command that skips clips writes it through here."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(SKIPPED_COLUMNS)
    writer.writerows((bad.clip, bad.file, bad.problem) for bad in skipped)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(out_dir) / SKIPPED_REPORT, buffer.getvalue())
