"""A detector applied window by window along one recording.

Each window with a face gives the detector's base features (the leaf sets: ``facemae``,
``llama/L{l}/{position}``, ...; :mod:`minigpt4.detect.features`).  This module turns them
into the detector's own set exactly as the probe built it from a dump (concatenations side by
side; context sets through :func:`minigpt4.probe.context.summarise` over the window and its
K-1 predecessors with a face in the same recording; GRU sets over the same windows) and into
P(MW), its calibration and the decision.  Features pass through the dump's dtype first, so a
window gives the numbers its row in a dump would.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from minigpt4.probe.artifact import Detector
from minigpt4.probe.context import PAD, summarise
from minigpt4.probe.feature_sets import FeatureSet


@dataclass
class Estimate:
    p_mw: float
    p_mw_calibrated: float
    mw: bool


class RecordingState:
    """The windows of one recording seen so far (only as many as the detector's context needs)."""

    def __init__(self, detector: Detector):
        self.detector = detector
        self.target = detector.feature_set
        self.sets = detector.sets
        size = self.target.window or 1
        self.history: deque[tuple[float, dict[str, np.ndarray]]] = deque(maxlen=size)

    def set_vector(self, feature_set: FeatureSet, base: dict[str, np.ndarray]) -> np.ndarray:
        """A (non-temporal) set's row from the window's leaf features."""
        if feature_set.kind == "concat":
            return np.concatenate([self.set_vector(self.sets[part], base) for part in feature_set.parts])
        return base[feature_set.name]

    def estimate(self, start_s: float, base: dict[str, np.ndarray]) -> Estimate:
        """Add the window starting at ``start_s`` with leaf features ``base``; its estimate."""
        fs = self.target
        if fs.base is None:
            self.history.append((start_s, {}))
            p = self.detector.p_mw(self.set_vector(fs, base)[None])[0]
        else:
            self.history.append((start_s, {fs.base: self.set_vector(self.sets[fs.base], base)}))
            rows = np.stack([features[fs.base] for _, features in self.history])  # oldest first
            times = np.array([t for t, _ in self.history])
            windows = np.full((1, fs.window), PAD, dtype=np.int64)
            windows[0, fs.window - len(rows):] = np.arange(len(rows))
            if fs.is_sequence:
                p = self.detector.p_mw(rows, windows)[0]
            else:
                p = self.detector.p_mw(summarise(rows, windows, times, fs.stat))[0]
        p = float(p)
        return Estimate(p, float(self.detector.calibrated(np.array([p]))[0]), p >= self.detector.threshold)
