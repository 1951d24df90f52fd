"""Which frame of a clip is its peak frame.

- ``openface``: the frame of highest total action-unit intensity (sum of the ``AU*_r``
  columns of an OpenFace 2 CSV, rows with ``success == 1``), the rule of the original data
  set; the CSV row is matched to the nearest prepared frame by its timestamp (seconds from
  the clip's start, as OpenFace writes when run on the clip).
- ``expression`` (default): the aligned face that differs most from the clip's median
  aligned face.  Alignment removes head motion, and over a clip the per-pixel median is close
  to the person's resting face, so the farthest frame is the one whose expression departs
  most from rest.  Faces are compared as grey 32x32 images, each standardised to zero mean
  and unit variance so a change of lighting alone does not count; distance is the mean
  squared difference.
- ``middle``: the middle prepared frame; ``first``: the first.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minigpt4.prepare.config import PeakRule

EXPRESSION_SIZE = 32  # side of the grey thumbnails the expression rule compares


class PeakError(ValueError):
    """The peak frame cannot be chosen (the OpenFace CSV is missing or unusable)."""


def expression_thumbnails(faces: np.ndarray) -> np.ndarray:
    """uint8 aligned faces [n, S, S, 3] -> standardised grey thumbnails [n, 32 * 32] (float32)."""
    grey = torch.from_numpy(faces).float().mean(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    small = F.interpolate(grey, size=(EXPRESSION_SIZE, EXPRESSION_SIZE), mode="area").flatten(1)
    small = (small - small.mean(dim=1, keepdim=True)) / (small.std(dim=1, keepdim=True) + 1e-6)
    return small.numpy()


def expression_peak(thumbnails: np.ndarray) -> int:
    """Index of the thumbnail farthest (mean squared difference) from the per-pixel median."""
    resting = np.median(thumbnails, axis=0)
    return int(np.argmax(((thumbnails - resting) ** 2).mean(axis=1)))


def openface_peak_time(csv_path: str | os.PathLike) -> float:
    """The timestamp (s) of the OpenFace row with the highest sum of AU*_r intensities."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise PeakError(f"no OpenFace CSV at {csv_path}")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(handle, skipinitialspace=True)]
    intensity_columns = [c for c in (rows[0] if rows else {}) if c.startswith("AU") and c.endswith("_r")]
    if not intensity_columns or "timestamp" not in rows[0]:
        raise PeakError(f"{csv_path}: an OpenFace CSV needs a timestamp column and AU*_r columns")
    tracked = [row for row in rows if row.get("success", "1").strip() in ("1", "1.0")]
    if not tracked:
        raise PeakError(f"{csv_path}: OpenFace tracked no face in any row (success is 0 everywhere)")
    best = max(tracked, key=lambda row: sum(float(row[c]) for c in intensity_columns))
    return float(best["timestamp"])


def choose_peak(rule: PeakRule, times: np.ndarray, thumbnails: np.ndarray | None, openface_csv: Path | None) -> int:
    """Index into the clip's prepared frames (``times``: seconds from the clip's start)."""
    if rule is PeakRule.FIRST:
        return 0
    if rule is PeakRule.MIDDLE:
        return len(times) // 2
    if rule is PeakRule.EXPRESSION:
        return expression_peak(thumbnails)
    return int(np.argmin(np.abs(times - openface_peak_time(openface_csv))))
