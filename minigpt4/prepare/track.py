"""One person per clip: link detections into tracks by box overlap, keep one track, fill short gaps.

Detections are linked frame to frame: each track is paired with the detection it overlaps
most (IoU, best pairs first) when that overlap reaches ``iou_threshold``.  A track's overlap
with a detection is the larger of two: with its last box, and with its expected box (the last
box moved on at the speed between its last two detections, per frame), so a face that moves
fast relative to the spacing of detection frames stays one track, and one that stops or turns
back does too.  A detection left over starts a new track.  The kept track is chosen by the
configured rule (largest mean box, or most detections with size breaking ties).  Between two
detections of the kept track at most ``max_gap_s`` seconds apart its box and landmarks are
interpolated linearly; frames outside that (before the first detection, after the last, in
longer gaps) have no face.  Which frames detection ran on, and where it ran again to find a
gap's edges, is the face pipeline's business (faces.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from minigpt4.prepare.config import TrackConfig, TrackRule
from minigpt4.prepare.cut import TIME_TOLERANCE_S
from minigpt4.prepare.detect import FaceDetections


class FaceStatus(IntEnum):
    MISSING = 0  # no face for this frame: it is left out of the output
    DETECTED = 1
    INTERPOLATED = 2  # between two detections of the track at most track.max_gap_s apart


@dataclass
class FaceTrack:
    """The kept person over the clip's ``n`` kept frames."""

    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2; NaN where MISSING
    landmarks: np.ndarray  # (n, 5, 2); NaN where MISSING
    status: np.ndarray  # (n,) FaceStatus
    num_tracks: int  # how many tracks (people) were seen


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (m, 4) with every box in b (k, 4): (m, k)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def expected_box(track: dict[int, tuple], position: int) -> np.ndarray:
    """Where the track's box should be at frame ``position``: its last box moved on at its last speed."""
    positions = sorted(track)[-2:]
    last = track[positions[-1]][0]
    if len(positions) == 1:
        return last
    velocity = (last - track[positions[0]][0]) / (positions[1] - positions[0])  # per frame
    return last + velocity * (position - positions[1])


def link_tracks(
    detections: list[FaceDetections], positions: np.ndarray, iou_threshold: float
) -> list[dict[int, tuple]]:
    """Tracks as {frame position: (box, landmarks)}, linked greedily by IoU with each track's last
    or expected box; ``detections[i]`` are the faces of frame ``positions[i]`` (increasing)."""
    tracks: list[dict[int, tuple]] = []
    for position, found in zip((int(p) for p in positions), detections):
        unmatched = set(range(len(found)))
        if tracks and len(found):
            last = np.stack([track[max(track)][0] for track in tracks])
            expected = np.stack([expected_box(track, position) for track in tracks])
            iou = np.maximum(box_iou(last, found.boxes), box_iou(expected, found.boxes))
            for flat in np.argsort(-iou, axis=None):
                track, det = np.unravel_index(flat, iou.shape)
                if iou[track, det] < iou_threshold:
                    break
                if position in tracks[track] or det not in unmatched:
                    continue
                tracks[track][position] = (found.boxes[det], found.landmarks[det])
                unmatched.discard(det)
        for det in sorted(unmatched):
            tracks.append({position: (found.boxes[det], found.landmarks[det])})
    return tracks


def _mean_area(track: dict[int, tuple]) -> float:
    return float(np.mean([np.prod(box[2:] - box[:2]) for box, _ in track.values()]))


def choose_track(tracks: list[dict[int, tuple]], rule: TrackRule) -> dict[int, tuple]:
    if rule is TrackRule.LARGEST:
        return max(tracks, key=_mean_area)
    return max(tracks, key=lambda track: (len(track), _mean_area(track)))


def follow_face(
    detections: list[FaceDetections], positions: np.ndarray, times: np.ndarray, cfg: TrackConfig
) -> FaceTrack:
    """The kept person over the clip's frames (``times``: seconds, one per frame), detection
    having run on the frames ``positions`` (increasing) and found ``detections`` there."""
    num_frames = len(times)
    boxes = np.full((num_frames, 4), np.nan)
    landmarks = np.full((num_frames, 5, 2), np.nan)
    status = np.full(num_frames, FaceStatus.MISSING, dtype=np.int64)
    tracks = link_tracks(detections, positions, cfg.iou_threshold)
    if not tracks:
        return FaceTrack(boxes, landmarks, status, 0)
    kept = choose_track(tracks, cfg.rule)
    found = sorted(kept)
    for position in found:
        boxes[position], landmarks[position] = kept[position]
        status[position] = FaceStatus.DETECTED
    for start, end in zip(found, found[1:]):
        if end - start < 2 or times[end] - times[start] > cfg.max_gap_s + TIME_TOLERANCE_S:
            continue  # nothing between, or the face may have gone: those frames stay without a face
        weights = (times[start + 1 : end] - times[start]) / (times[end] - times[start])  # 0 < w < 1, by time
        box_a, marks_a = kept[start]
        box_b, marks_b = kept[end]
        boxes[start + 1 : end] = (1 - weights)[:, None] * box_a + weights[:, None] * box_b
        landmarks[start + 1 : end] = (1 - weights)[:, None, None] * marks_a + weights[:, None, None] * marks_b
        status[start + 1 : end] = FaceStatus.INTERPOLATED
    return FaceTrack(boxes, landmarks, status, len(tracks))
