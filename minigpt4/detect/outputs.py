"""What detect writes per recording: ``timeline.csv``, ``timeline.png`` and ``summary.json``.

``timeline.csv`` has one row per window: video, window, start_s, end_s, p_mw, p_mw_calibrated,
mw, coverage, status.  A window without enough face has status ``no_face`` (one without sound,
for a set that reads audio, ``no_sound``) and empty probability columns: never a made-up value.  Rows are written whole (a live run appends and
flushes each line as its window is done, so the file is always parseable).  ``summary.json``
is written last and marks the recording done.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from minigpt4.common.atomic_io import write_text_atomic
from minigpt4.probe.plots import save_png

COLUMNS = ("video", "window", "start_s", "end_s", "p_mw", "p_mw_calibrated", "mw", "coverage", "status")
TIMELINE_CSV, TIMELINE_PNG, SUMMARY_JSON = "timeline.csv", "timeline.png", "summary.json"
STAGES = ("decode", "faces", "encoders", "model", "detector")
OK, NO_FACE, NO_SOUND = "ok", "no_face", "no_sound"  # no_sound: the set reads audio and the window holds none


@dataclass
class WindowRow:
    video: str
    window: int
    start_s: float
    end_s: float
    p_mw: float | None
    p_mw_calibrated: float | None
    mw: bool | None
    coverage: float
    status: str

    def csv_cells(self) -> list:
        def number(value, digits=6):
            return "" if value is None else f"{value:.{digits}f}"

        return [self.video, self.window, number(self.start_s, 4), number(self.end_s, 4), number(self.p_mw, 8),
                number(self.p_mw_calibrated, 8), "" if self.mw is None else int(self.mw), number(self.coverage, 4),
                self.status]


@dataclass
class RecordingSummary:
    video: str
    windows: int = 0
    windows_with_estimate: int = 0
    windows_without_face: int = 0
    windows_without_sound: int = 0
    share_mw: float | None = None  # of the windows with an estimate
    short_windows_dropped: int = 0
    short_windows_kept: int = 0
    dropped_behind: list[int] = field(default_factory=list)  # live: windows skipped to keep up
    recording_s: float = 0.0
    seconds: dict = field(default_factory=lambda: {stage: 0.0 for stage in STAGES})
    latency_s: dict | None = None  # live: p50 / p95 of the per-window latency

    def add(self, row: WindowRow) -> None:
        self.windows += 1
        if row.status == OK:
            self.windows_with_estimate += 1
        elif row.status == NO_SOUND:
            self.windows_without_sound += 1
        else:
            self.windows_without_face += 1

    def finish(self, rows: list[WindowRow]) -> None:
        decided = [row.mw for row in rows if row.mw is not None]
        self.share_mw = float(np.mean(decided)) if decided else None

    @property
    def real_time_factor(self) -> float | None:
        """Processing time / recording time (< 1: faster than real time)."""
        return sum(self.seconds.values()) / self.recording_s if self.recording_s else None

    def as_json(self) -> str:
        data = asdict(self)
        data["seconds"] = {stage: round(value, 4) for stage, value in self.seconds.items()}
        data["real_time_factor"] = None if self.real_time_factor is None else round(self.real_time_factor, 4)
        return json.dumps(data, indent=1) + "\n"


def csv_text(rows: list[WindowRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(row.csv_cells() for row in rows)
    return buffer.getvalue()


class TimelineAppender:
    """``timeline.csv`` written a row at a time, each flushed to disk as it is done."""

    def __init__(self, path: Path):
        self.path = path
        self.handle: IO[str] = path.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.handle, lineterminator="\n")
        self._put(COLUMNS)

    def _put(self, cells) -> None:
        self.writer.writerow(cells)
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def append(self, row: WindowRow) -> None:
        self._put(row.csv_cells())

    def close(self) -> None:
        self.handle.close()


def write_recording(folder: Path, rows: list[WindowRow], summary: RecordingSummary, threshold: float) -> None:
    """The three files of a finished recording, each atomically, ``summary.json`` last."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / TIMELINE_CSV, csv_text(rows))
    plot_timeline(rows, folder / TIMELINE_PNG, threshold, summary.video)
    write_text_atomic(folder / SUMMARY_JSON, summary.as_json())


def plot_timeline(rows: list[WindowRow], path: Path, threshold: float, title: str) -> Path:
    """P(MW) (and its calibration) at each window's middle on a fixed 0..1 axis, the threshold,
    windows without a face shaded."""
    from matplotlib.figure import Figure  # here: the first estimate need not wait for matplotlib's import

    figure = Figure(figsize=(10, 3.6))
    axes = figure.add_subplot()
    shaded = False
    for row in rows:
        if row.status != OK:
            axes.axvspan(row.start_s, row.end_s, color="grey", alpha=0.25, linewidth=0,
                         label=None if shaded else "no face or sound (no estimate)")
            shaded = True
    scored = [row for row in rows if row.status == OK]
    middles = [(row.start_s + row.end_s) / 2 for row in scored]
    axes.plot(middles, [row.p_mw for row in scored], "o-", markersize=3, label="P(MW)")
    axes.plot(middles, [row.p_mw_calibrated for row in scored], "s--", markersize=3, label="calibrated P(MW)")
    axes.axhline(threshold, color="tab:red", linestyle=":", linewidth=1.2, label=f"threshold {threshold:.3f}")
    end = max((row.end_s for row in rows), default=1.0)
    axes.set(xlim=(min((row.start_s for row in rows), default=0.0), end), ylim=(0, 1),
             xlabel="time in the recording (s)", ylabel="P(mind wandering)",
             title=f"{title}: {len(scored)} of {len(rows)} windows with a face")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    save_png(figure, path)
    return path
