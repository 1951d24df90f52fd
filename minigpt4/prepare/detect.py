"""Face detection behind one small interface, so a detector can be swapped.

A detector takes a batch of RGB frames and returns, per frame, the boxes, five landmarks
(left eye, right eye, nose tip, left and right mouth corner, as seen in the image) and
confidences of the faces in it.  The default is MTCNN from facenet-pytorch, whose weights
ship inside its wheel: nothing is downloaded at run time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from minigpt4.prepare.config import DetectorConfig


@dataclass
class FaceDetections:
    """The faces of one frame, in frame pixels."""

    boxes: np.ndarray  # (k, 4) x1, y1, x2, y2
    landmarks: np.ndarray  # (k, 5, 2) x, y
    scores: np.ndarray  # (k,)

    @classmethod
    def empty(cls) -> "FaceDetections":
        return cls(np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros(0))

    def __len__(self) -> int:
        return len(self.scores)


class FaceDetector(ABC):
    @abstractmethod
    def detect(self, frames: np.ndarray) -> list[FaceDetections]:
        """uint8 RGB frames [n, H, W, 3] -> one FaceDetections per frame."""


class MTCNNDetector(FaceDetector):
    """facenet-pytorch's MTCNN; frames may be shrunk to ``max_side`` for detection only."""

    def __init__(self, min_face_size: int, min_score: float, max_side: int | None, device: str):
        from facenet_pytorch import MTCNN  # here: only this detector needs the package

        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=device)
        self.min_score, self.max_side, self.device = min_score, max_side, device

    def detect(self, frames: np.ndarray) -> list[FaceDetections]:
        height, width = frames.shape[1:3]
        scale = 1.0
        pixels = torch.from_numpy(frames)
        if self.max_side is not None and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            size = (round(height * scale), round(width * scale))
            small = F.interpolate(pixels.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", antialias=True)
            pixels = small.round().clamp(0, 255).permute(0, 2, 3, 1)
        # MTCNN batches equal-size frames through each pyramid level together
        boxes, scores, landmarks = self.mtcnn.detect(pixels.to(self.device).float(), landmarks=True)
        found = []
        for frame_boxes, frame_scores, frame_landmarks in zip(boxes, scores, landmarks):
            if frame_boxes is None:
                found.append(FaceDetections.empty())
                continue
            keep = np.asarray(frame_scores, dtype=np.float64) >= self.min_score
            found.append(
                FaceDetections(
                    np.asarray(frame_boxes, dtype=np.float64)[keep] / scale,
                    np.asarray(frame_landmarks, dtype=np.float64)[keep] / scale,
                    np.asarray(frame_scores, dtype=np.float64)[keep],
                )
            )
        return found


DETECTORS = {"mtcnn": MTCNNDetector}


def build_detector(cfg: DetectorConfig) -> FaceDetector:
    if cfg.name not in DETECTORS:
        raise ValueError(f"detector.name {cfg.name!r} is unknown; choose one of: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[cfg.name](cfg.min_face_size, cfg.min_score, cfg.max_side, cfg.device)
