"""Temporal context: a clip summarised together with the clips just before it.

Mind wandering lasts; a thought probe asks about "just now".  A context window of K holds a
clip and its K-1 predecessors in the same video, ordered by ``start_s``.  Windows never cross
a video and never reach into another fold (a fold is the unit a probe holds out, so a
held-out clip's window holds only held-out clips); the first clips of a video have shorter
windows, made of what exists, and :func:`short_windows` counts them for the report.

A window is summarised per feature dimension by a statistic:

* ``mean``: the mean over the window's clips;
* ``std``: their standard deviation (population, 0 for a window of one);
* ``slope``: the least-squares slope of the values against the clips' times (``start_s``,
  seconds), in units per second (0 for a window of one).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

STATS = ("mean", "std", "slope")
PAD = -1  # an empty place in a window (before the video's first clip)


def context_windows(videos: np.ndarray, folds: np.ndarray, times: np.ndarray, size: int) -> np.ndarray:
    """Row indices [N, size] of each row's window, oldest first, the row itself last; windows
    shorter than ``size`` are padded on the left with ``PAD``.

    Rows are grouped by (video, fold) and ordered by time within a group (ties keep the
    rows' order).
    """
    if size < 1:
        raise ValueError(f"a context window holds at least one clip, got {size}")
    windows = np.full((len(videos), size), PAD, dtype=np.int64)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for row, key in enumerate(zip(videos.tolist(), folds.tolist())):
        groups[key].append(row)
    for rows in groups.values():
        ordered = np.asarray(rows)[np.argsort(times[rows], kind="stable")]
        for position, row in enumerate(ordered):
            members = ordered[max(0, position - size + 1) : position + 1]
            windows[row, size - len(members) :] = members
    return windows


def short_windows(windows: np.ndarray) -> int:
    """Rows whose window holds fewer clips than its size."""
    return int((windows == PAD).any(axis=1).sum())


def summarise(features: np.ndarray, windows: np.ndarray, times: np.ndarray, stat: str) -> np.ndarray:
    """features [N, D] -> [N, D]: ``stat`` of each row's window (float32)."""
    if stat not in STATS:
        raise ValueError(f"unknown context statistic {stat!r}; choose from {', '.join(STATS)}")
    present = windows != PAD  # [N, K]
    counts = present.sum(axis=1, keepdims=True).astype(np.float64)  # [N, 1], >= 1
    weights = present / counts  # each present clip 1/n
    stacked = features[np.where(present, windows, 0)].astype(np.float64)  # [N, K, D]
    mean = np.einsum("nk,nkd->nd", weights, stacked)
    if stat == "mean":
        return mean.astype(np.float32)
    if stat == "std":
        spread = np.einsum("nk,nkd->nd", weights, (stacked - mean[:, None]) ** 2)
        return np.sqrt(spread).astype(np.float32)
    clip_times = np.where(present, times[np.where(present, windows, 0)], 0.0)  # [N, K]
    centred = np.where(present, clip_times - (weights * clip_times).sum(axis=1, keepdims=True), 0.0)
    variance = (centred**2).sum(axis=1)  # [N]; 0 for a window of one clip (or clips at one time)
    covariance = np.einsum("nk,nkd->nd", centred, stacked - mean[:, None])
    slope = np.divide(covariance, variance[:, None], out=np.zeros_like(covariance), where=variance[:, None] > 0)
    return slope.astype(np.float32)
