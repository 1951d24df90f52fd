"""One clip's faces from any frame source: detect -> track -> re-detect -> align -> peak frame.

:func:`find_faces` is the per-clip face pipeline.  The prepare job calls it on a
:class:`~minigpt4.prepare.decode.VideoSource` with a sink that streams the crops into the
clip's files (memory stays flat on long clips); a caller holding a window's frames in memory
(:class:`~minigpt4.prepare.decode.ArrayFrames`) calls it without a sink and gets the crops
back as one array.  Both get the same crops and the same peak frame, byte for byte.

1. The kept frames: every frame in ``[start_s, end_s)``, or ``sampling.fps`` per second.
2. Detection on every ``detect_every``-th kept frame and the last (the scheduled frames).
3. One person tracked over them (track.py).  No face, or the person in fewer than
   ``track.min_coverage`` of the scheduled frames, ends here with an outcome, not an error.
4. Re-detection: between two scheduled frames where the person was found on one side only (the
   face went or came back), or on both sides more than ``track.max_gap_s`` apart, detection
   runs on every skipped frame, so a gap's edges are known to the frame; the person is
   tracked again over all detections.
5. The crops: the frames where the person was detected and the frames between two such
   detections at most ``max_gap_s`` apart (interpolated), aligned in batches.  A frame inside
   a longer gap gets no crop.
6. The peak frame, chosen by ``peak.rule`` among the detected frames only: an interpolated
   crop is never the peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

import numpy as np

from minigpt4.prepare.align import align_faces
from minigpt4.prepare.config import PeakImage, PeakRule, PrepareConfig
from minigpt4.prepare.cut import TIME_TOLERANCE_S, select_frames
from minigpt4.prepare.decode import FrameSource, read_in_chunks
from minigpt4.prepare.detect import FaceDetections, FaceDetector
from minigpt4.prepare.peak import choose_peak, expression_thumbnails
from minigpt4.prepare.track import FaceStatus, FaceTrack, follow_face


class FaceOutcome(str, Enum):
    FACE = "face"  # crops and a peak frame
    NO_FRAMES = "no_frames"  # the window holds no frame
    NO_FACE = "no_face"  # no face in any scheduled detection frame
    TOO_LITTLE_FACE = "too_little_face"  # the person shows in fewer than track.min_coverage of them


class FaceSink(Protocol):
    """Where the crops go as they are aligned."""

    def start(self, count: int) -> None:
        """Called once, before the first crop: how many crops will come."""

    def add(self, faces: np.ndarray) -> None:
        """The next uint8 crops [k, S, S, 3], in time order."""

    def face(self, index: int) -> np.ndarray:
        """Crop number ``index`` (already added), uint8 [S, S, 3]."""


class FaceArray:
    """A sink that keeps the crops in memory: ``faces`` uint8 [m, S, S, 3]."""

    def __init__(self) -> None:
        self.faces: np.ndarray | None = None
        self.count = 0

    def start(self, count: int) -> None:
        self.total, self.count = count, 0

    def add(self, faces: np.ndarray) -> None:
        if self.faces is None:
            self.faces = np.empty((self.total, *faces.shape[1:]), dtype=np.uint8)
        self.faces[self.count : self.count + len(faces)] = faces
        self.count += len(faces)

    def face(self, index: int) -> np.ndarray:
        return self.faces[index]


@dataclass
class ClipFaces:
    """What :func:`find_faces` found in one clip (outcome FACE) or why there is nothing (the others)."""

    outcome: FaceOutcome
    problem: str  # one line saying why there are no crops; "" for FACE
    times: np.ndarray  # (n,) seconds from the clip's start of every kept frame
    status: np.ndarray  # (n,) FaceStatus of every kept frame
    coverage: float  # share of the scheduled detection frames in which the person was found
    written: np.ndarray  # (m,) positions (into the kept frames) of the crops, increasing
    faces: np.ndarray | None  # uint8 [m, S, S, 3]; None when they went to the caller's sink
    peak: int | None  # index into the crops
    peak_image: np.ndarray | None  # uint8: the peak crop (peak.image face) or its whole frame (frame)
    report: dict  # frame counts, times and the peak, for the clip's report (JSON-ready)

    @property
    def face_times(self) -> np.ndarray:
        """(m,) seconds from the clip's start of each crop."""
        return self.times[self.written]


def find_faces(
    source: FrameSource,
    detector: FaceDetector,
    cfg: PrepareConfig,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    openface_csv: str | Path | None = None,
    sink: FaceSink | None = None,
) -> ClipFaces:
    """The faces of ``source``'s frames in ``[start_s, end_s)`` (None: from its first frame / to
    its end), following ``cfg``'s sampling, detector, track, align and peak settings.

    ``openface_csv`` is the clip's OpenFace CSV for ``peak.rule: openface``.  Without a
    ``sink`` the crops come back in ``faces``.  Raises :class:`~minigpt4.prepare.peak.PeakError`
    when the OpenFace CSV cannot be used, errors of ``source.read`` as they come.
    """
    indices = select_frames(source.timestamps, start_s, end_s, cfg.sampling.fps)
    first = float(source.timestamps[0]) if len(source.timestamps) else 0.0
    times = source.timestamps[indices] - (first if start_s is None else start_s)
    if indices.size == 0:
        return _no_crops(FaceOutcome.NO_FRAMES, "the clip's window holds no frame", times, 0.0, {})
    scheduled = np.unique(np.r_[np.arange(0, len(indices), cfg.detector.detect_every), len(indices) - 1])
    found = dict(zip(scheduled.tolist(), _detect(source, indices[scheduled], detector, cfg)))
    track = follow_face(list(found.values()), scheduled, times, cfg.track)
    report = {"frames_kept": int(len(indices)), "detection_frames": int(scheduled.size)}
    if track.num_tracks == 0:
        problem = f"no face found in any of {scheduled.size} detection frames"
        return _no_crops(FaceOutcome.NO_FACE, problem, times, 0.0, report)
    extra = np.zeros(0, dtype=np.int64)
    if _shown(track, scheduled) / scheduled.size >= cfg.track.min_coverage:  # else too little face anyway
        extra = _redetect_positions(track, scheduled, times, cfg.track.max_gap_s)
    if extra.size:
        found.update(zip(extra.tolist(), _detect(source, indices[extra], detector, cfg)))
        positions = np.array(sorted(found))
        track = follow_face([found[p] for p in positions.tolist()], positions, times, cfg.track)
    shown = _shown(track, scheduled)
    coverage = shown / scheduled.size
    report |= {"redetected_frames": int(extra.size), "coverage": round(coverage, 4), "people_seen": track.num_tracks}
    if coverage < cfg.track.min_coverage:
        problem = (
            f"the face shows in {shown} of {scheduled.size} detection frames ({coverage:.0%}), "
            f"under track.min_coverage {cfg.track.min_coverage:.0%}"
        )
        return _no_crops(FaceOutcome.TOO_LITTLE_FACE, problem, times, coverage, report, track.status)
    written = np.flatnonzero(track.status != FaceStatus.MISSING)
    keep_faces = sink is None
    sink = FaceArray() if sink is None else sink
    sink.start(len(written))
    thumbnails = []
    offset = 0
    for part, frames in read_in_chunks(source, indices[written], cfg.detector.batch_size):
        faces = align_faces(frames, track.landmarks[written[offset : offset + len(part)]], cfg.align.size)
        sink.add(faces)
        if cfg.peak.rule is PeakRule.EXPRESSION:
            thumbnails.append(expression_thumbnails(faces))
        offset += len(part)
    # the peak among the detected frames: an interpolated crop may show whatever crossed the face
    candidates = np.flatnonzero(track.status[written] == FaceStatus.DETECTED)
    pick = choose_peak(
        cfg.peak.rule,
        times[written[candidates]],
        np.concatenate(thumbnails)[candidates] if thumbnails else None,
        Path(openface_csv) if openface_csv is not None else None,
    )
    peak = int(candidates[pick])
    if cfg.peak.image is PeakImage.FACE:
        peak_image = np.array(sink.face(peak))
    else:
        peak_image = source.read([int(indices[written[peak]])])[0]
    report |= _frames_report(times, track, found, written, peak, cfg)
    return ClipFaces(
        FaceOutcome.FACE,
        "",
        times,
        track.status,
        coverage,
        written,
        sink.faces if keep_faces else None,
        peak,
        peak_image,
        report,
    )


def _detect(source: FrameSource, indices: np.ndarray, detector: FaceDetector, cfg: PrepareConfig) -> list[FaceDetections]:
    found = []
    for _, frames in read_in_chunks(source, indices, cfg.detector.batch_size):
        found.extend(detector.detect(frames))
    return found


def _shown(track: FaceTrack, scheduled: np.ndarray) -> int:
    """In how many scheduled detection frames the person was found."""
    return int(np.sum(track.status[scheduled] == FaceStatus.DETECTED))


def _redetect_positions(track: FaceTrack, scheduled: np.ndarray, times: np.ndarray, max_gap_s: float) -> np.ndarray:
    """The skipped frames between two scheduled frames where the person was found on one side
    only, or on both sides more than ``max_gap_s`` apart: where a gap's edges must be found."""
    found = track.status[scheduled] == FaceStatus.DETECTED
    extra = []
    for a, b, found_a, found_b in zip(scheduled, scheduled[1:], found, found[1:]):
        too_far = found_a and found_b and times[b] - times[a] > max_gap_s + TIME_TOLERANCE_S
        if b - a > 1 and (found_a != found_b or too_far):
            extra.extend(range(a + 1, b))
    return np.asarray(extra, dtype=np.int64)


def _frames_report(
    times: np.ndarray, track: FaceTrack, found: dict, written: np.ndarray, peak: int, cfg: PrepareConfig
) -> dict:
    """Which frames got a crop, which were interpolated, where the detector missed the person."""
    detection_positions = np.array(sorted(found))
    missed = detection_positions[track.status[detection_positions] != FaceStatus.DETECTED]
    return {
        "frames_written": int(len(written)),
        "frame_times": _rounded(times[written]),
        "interpolated_frames": np.flatnonzero(track.status[written] == FaceStatus.INTERPOLATED).tolist(),
        "times_without_face_detected": _rounded(times[missed]),
        "times_left_out": _rounded(times[track.status == FaceStatus.MISSING]),
        "peak_frame": peak,
        "peak_time": round(float(times[written[peak]]), 4),
        "peak_rule": cfg.peak.rule.value,
    }


def _rounded(times: np.ndarray) -> list[float]:
    return [round(float(t), 4) for t in times]


def _no_crops(
    outcome: FaceOutcome,
    problem: str,
    times: np.ndarray,
    coverage: float,
    report: dict,
    status: np.ndarray | None = None,
) -> ClipFaces:
    status = np.full(len(times), FaceStatus.MISSING, dtype=np.int64) if status is None else status
    return ClipFaces(outcome, problem, times, status, coverage, np.zeros(0, dtype=np.int64), None, None, None, report)
