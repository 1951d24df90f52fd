"""Per-video timelines: the out-of-fold P(MW) of chosen sets at each clip's time.

For the sets of ``probe.timeline_sets`` (``best``: the set ranked first), every clip's
P(MW) comes from the fold that held it out, so a timeline shows what a detector trained on
other people says about this one.  ``timelines.csv`` holds one row per clip and set (video,
participant, uuid, start_s, end_s, fold, label, set, p_mw); ``timelines/<video>.png`` draws
each video: P(MW) on a fixed 0..1 axis, the 0.5 decision line, and the labelled clips as
bands (MW) and ticks (NonMW) along the time axis.  Both need the annotation's ``video`` and
``start_s`` columns (minigpt4.prepare writes them).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from itertools import cycle
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from minigpt4.common.atomic_io import write_text_atomic
from minigpt4.probe.config import BEST
from minigpt4.probe.labels import MW
from minigpt4.probe.plots import LINE_STYLES, MARKERS, save_png
from minigpt4.probe.run import ProbeResult, SetResult, ranked

logger = logging.getLogger(__name__)

CSV_NAME, FOLDER = "timelines.csv", "timelines"
COLUMNS = ("video", "participant", "uuid", "start_s", "end_s", "fold", "label", "set", "p_mw")


def chosen_sets(result: ProbeResult) -> list[SetResult]:
    """The sets of ``probe.timeline_sets`` that were scored, in the order named, once each."""
    by_name = {s.feature_set.name: s for s in result.sets}
    chosen = []
    for name in result.cfg.timeline_sets:
        s = ranked(result)[0] if name == BEST and result.sets else by_name.get(name)
        if s is not None and s not in chosen:
            chosen.append(s)
    return chosen


def timeline_rows(result: ProbeResult) -> list[dict]:
    """One row per clip and chosen set, by video and time."""
    labels = result.labels
    if not labels.timed:
        return []
    order = sorted(range(len(labels.y)), key=lambda i: (labels.videos[i], labels.start_s[i]))
    rows = []
    for s in chosen_sets(result):
        for i in order:
            end = labels.end_s[i]
            rows.append({
                "video": labels.videos[i],
                "participant": labels.participants[i],
                "uuid": labels.clips[i],
                "start_s": float(labels.start_s[i]),
                "end_s": None if np.isnan(end) else float(end),
                "fold": int(labels.folds[i]),
                "label": MW if labels.y[i] else "NonMW",
                "set": s.feature_set.name,
                "p_mw": None if np.isnan(s.out_of_fold[i]) else float(s.out_of_fold[i]),
            })
    return rows


def write_timeline_csv(result: ProbeResult, out: Path) -> Path | None:
    rows = timeline_rows(result)
    if not rows:
        if not result.labels.timed:
            logger.info("no timelines: the annotation has no video and start_s for every clip")
        return None
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / CSV_NAME, buffer.getvalue())
    return out / CSV_NAME


def png_name(video: str) -> str:
    """A file name for ``video`` (a path relative to the videos folder): separators and other
    characters a file name cannot hold become ``_``."""
    return re.sub(r"[^\w.-]+", "_", video).strip("._") + ".png"


def timeline_plots(result: ProbeResult, out: Path) -> list[Path]:
    rows = timeline_rows(result)
    paths = []
    for video in dict.fromkeys(row["video"] for row in rows):
        paths.append(_draw_video(video, [row for row in rows if row["video"] == video], out / FOLDER / png_name(video)))
    return paths


def _draw_video(video: str, rows: list[dict], path: Path) -> Path:
    figure = Figure(figsize=(10, 3.6))
    axes = figure.add_subplot()
    clips = {row["uuid"]: row for row in rows}.values()  # each clip once for its label
    for row in clips:
        end = row["end_s"] if row["end_s"] is not None else row["start_s"]
        if row["label"] == MW:
            axes.axvspan(row["start_s"], max(end, row["start_s"] + 1e-3), color="tab:red", alpha=0.12, linewidth=0)
        axes.plot([row["start_s"], end], [-0.04, -0.04] if row["label"] != MW else [1.04, 1.04],
                  color="tab:blue" if row["label"] != MW else "tab:red", linewidth=4, solid_capstyle="butt")
    styles = zip(cycle(LINE_STYLES), cycle(MARKERS))
    for name in dict.fromkeys(row["set"] for row in rows):
        points = [row for row in rows if row["set"] == name and row["p_mw"] is not None]
        times = [(r["start_s"] + (r["end_s"] if r["end_s"] is not None else r["start_s"])) / 2 for r in points]
        line, marker = next(styles)
        axes.plot(times, [r["p_mw"] for r in points], linestyle=line, marker=marker, markersize=4, label=name)
    axes.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="P(MW) = 0.5")
    participant = rows[0]["participant"]
    folds = sorted({row["fold"] for row in rows})
    axes.set(
        ylim=(-0.08, 1.08), xlabel="time in the recording (s)", ylabel="out-of-fold P(MW)",
        title=f"{video} (participant {participant}, held out in fold {', '.join(map(str, folds))}): "
        "red band = clip labelled MW, blue bar below = NonMW",
    )
    axes.title.set_fontsize("small")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    save_png(figure, path)
    return path
