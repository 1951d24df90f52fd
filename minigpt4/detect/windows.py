"""Where a recording's windows lie: every ``hop_s`` a window of ``length_s``, or a segments CSV.

Windows are times on the recording's own timeline (the first frame's presentation time is
the start).  The last window may be shorter than ``length_s`` (the recording ends inside it):
``short_last: keep`` keeps it (marked ``short``), ``drop`` leaves it out; either way the run's
summary says so.  With a segments CSV (the same file minigpt4.prepare cuts clips by) each
segment of the recording is a window, so detect scores exactly the clips a study prepared.
"""

from __future__ import annotations

from dataclasses import dataclass

from minigpt4.prepare.cut import TIME_TOLERANCE_S, ClipPlan


@dataclass(frozen=True)
class Window:
    index: int
    start_s: float
    end_s: float
    short: bool = False  # shorter than the configured length (the recording ended inside it)
    clip: str | None = None  # the segment's clip id, when windows come from a segments CSV


def regular_windows(first_s: float, end_s: float, length_s: float, hop_s: float, keep_short: bool) -> tuple[list[Window], list[Window]]:
    """(windows, short last windows left out) over a recording from ``first_s`` to ``end_s``."""
    windows, dropped = [], []
    k = 0
    while True:
        start = first_s + k * hop_s
        if start >= end_s - TIME_TOLERANCE_S:
            break
        end = start + length_s
        if end <= end_s + TIME_TOLERANCE_S:
            windows.append(Window(len(windows), start, end))
        else:
            short = Window(len(windows), start, end_s, short=True)
            (windows if keep_short else dropped).append(short)
            break
        k += 1
    return windows, dropped


def segment_windows(plans: list[ClipPlan]) -> list[Window]:
    """One window per segment of a recording, in time order."""
    ordered = sorted(plans, key=lambda plan: plan.start_s)
    return [Window(i, plan.start_s, plan.end_s, clip=plan.clip) for i, plan in enumerate(ordered)]
