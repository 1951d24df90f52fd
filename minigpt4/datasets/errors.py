"""How datasets report bad input: one ``BadClip`` per problem, gathered into one ``DataError``.

Datasets check every clip before anything uses it, so a run fails (or skips, when asked)
before any output is written, and the message lists every bad clip at once instead of the
first one a loader happens to trip over.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

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
