"""Synthetic sessions whose mind-wandering signal lies only in time (for the probe's tests).

Each participant has one session video of ``clips`` consecutive probe windows (every 10 s,
5 s long); labels come in runs of 4 to 8 windows.  A clip's features are the session's own
baseline (large, random) plus a level ``s`` along one direction plus noise.  With
``signal="change"``, ``s`` rises by one step from each MW clip to the next and falls during
NonMW runs: the label shows in the change across consecutive clips, while a clip alone is a
baseline plus a sawtooth level that says nothing about its label.  With ``signal="none"``,
``s`` is a random walk unrelated to the labels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CLIP_EVERY_S, CLIP_LENGTH_S = 10.0, 5.0


def temporal_sessions(participants: int = 12, clips: int = 30, dim: int = 16, folds: int = 4, signal: str = "change", seed: int = 0):
    """(rows, features [N, dim]); rows are dicts of the annotation's columns, folds grouped by participant."""
    rng = np.random.default_rng(seed)
    direction = np.zeros(dim)
    direction[:4] = 0.5  # unit length
    rows, features = [], []
    for person in range(participants):
        labels = []
        state = rng.integers(2)
        while len(labels) < clips:
            labels += [state] * int(rng.integers(4, 9))
            state = 1 - state
        labels = np.array(labels[:clips])
        if signal == "change":
            steps = np.where(labels == 1, 1.0, -1.0)
        else:
            steps = rng.choice([-1.0, 1.0], size=clips)
        level = np.cumsum(steps)
        baseline = rng.normal(0.0, 5.0, size=dim)
        noise = rng.normal(0.0, 0.3, size=(clips, dim))
        features.append(baseline + level[:, None] * direction + noise)
        for k in range(clips):
            rows.append(
                {
                    "uuid": f"p{person:02d}_clip{k:03d}",
                    "mw_label": "MW" if labels[k] else "NonMW",
                    "test_fold_num": person % folds,
                    "participant": f"p{person:02d}",
                    "video": f"p{person:02d}_session.mp4",
                    "start_s": k * CLIP_EVERY_S,
                    "end_s": k * CLIP_EVERY_S + CLIP_LENGTH_S,
                }
            )
    return rows, np.concatenate(features)


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
