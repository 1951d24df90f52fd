"""The prepare step's parts on plain arrays: alignment, tracking, frame selection, peak rules, config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minigpt4.common.config import ConfigError
from minigpt4.prepare.align import TEMPLATE_112, align_faces, face_template, similarity_transform
from minigpt4.prepare.config import PeakRule, TrackConfig, TrackRule, load_prepare_config
from minigpt4.prepare.cut import select_frames
from minigpt4.prepare.detect import FaceDetections
from minigpt4.prepare.peak import PeakError, choose_peak, expression_peak, expression_thumbnails, openface_peak_time
from minigpt4.prepare.track import FaceStatus, box_iou, follow_face


def rotation(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift():
    src = np.random.default_rng(0).uniform(0, 100, size=(5, 2))
    dst = 1.7 * src @ rotation(25).T + np.array([12.0, -30.0])
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], 1.7 * rotation(25), atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], [12.0, -30.0], atol=1e-7)


def test_similarity_transform_never_mirrors():
    src = TEMPLATE_112
    mirrored = src * np.array([-1.0, 1.0])  # the best fit would be a reflection
    linear = similarity_transform(src, mirrored)[:, :2]
    assert np.linalg.det(linear) > 0


def test_align_maps_landmarks_onto_the_template():
    """A frame with five dots at rotated, scaled, shifted template points: the crop has them at the template."""
    size = 96
    height, width = 160, 200
    landmarks = 1.3 * TEMPLATE_112 @ rotation(-15).T + np.array([40.0, 10.0])
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    for x, y in landmarks:
        frame[(yy - y) ** 2 + (xx - x) ** 2 <= 9] = 255
    crop = align_faces(frame[None], landmarks[None], size)[0]
    bright = crop[..., 0] > 128
    cy, cx = np.mgrid[0:size, 0:size]
    for x, y in face_template(size):
        near = bright & ((cy - y) ** 2 + (cx - x) ** 2 <= 36)
        centroid = np.array([cx[near].mean(), cy[near].mean()])
        assert np.abs(centroid - [x, y]).max() < 1.0


def test_align_replicates_the_border_outside_the_frame():
    """Landmarks near the corner: the crop reaches outside the frame and repeats its edge pixels."""
    frame = np.zeros((50, 50, 3), dtype=np.uint8)
    frame[:, :, 1] = np.arange(50, dtype=np.uint8)[None, :] * 4  # a horizontal ramp
    landmarks = TEMPLATE_112 * 0.3 - 8  # partly left of / above the frame
    crop = align_faces(frame[None], landmarks[None], 64)[0]
    assert crop[:, 0, 1].max() == 0  # the left edge (value 0) repeated, not black padding elsewhere
    assert crop[..., 0].max() == 0 and crop[..., 1].max() > 0


def test_align_matches_torch_affine_grid_on_a_pure_scale():
    """Pinned against torch's own affine_grid: scaling a frame by the template-fitting factor."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    crop = align_faces(frame[None], TEMPLATE_112[None] * 1.0, 112)[0]
    identity = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    grid = F.affine_grid(identity, (1, 3, 112, 112), align_corners=False)
    reference = F.grid_sample(torch.from_numpy(frame).permute(2, 0, 1)[None].float(), grid, align_corners=False)
    assert np.abs(crop.astype(int) - reference[0].permute(1, 2, 0).round().numpy().astype(int)).max() <= 1


def detections(*boxes_per_frame) -> list[FaceDetections]:
    """Fake detections: per frame a list of boxes; landmarks are the box corners and centre."""
    frames = []
    for boxes in boxes_per_frame:
        if not boxes:
            frames.append(FaceDetections.empty())
            continue
        boxes = np.asarray(boxes, dtype=np.float64)
        x1, y1, x2, y2 = boxes.T
        centre = np.stack([(x1 + x2) / 2, (y1 + y2) / 2], -1)
        landmarks = np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1), centre, np.stack([x1, y2], -1), np.stack([x2, y2], -1)], 1)
        frames.append(FaceDetections(boxes, landmarks, np.ones(len(boxes))))
    return frames


def test_box_iou():
    a = np.array([[0.0, 0, 10, 10]])
    b = np.array([[5.0, 0, 15, 10], [20.0, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0]])


def times_at(fps: float, count: int) -> np.ndarray:
    return np.arange(count) / fps


def test_track_interpolates_a_short_gap_and_drops_a_long_one():
    """At 10 fps with max_gap_s 0.3: detections 0.3 s apart are bridged, 0.4 s apart are not."""
    big = lambda x: [x, 0, x + 40, 40]  # noqa: E731
    frames = [[big(0)], [], [], [big(6)], [], [], [], [big(14)]]
    track = follow_face(detections(*frames), np.arange(8), times_at(10, 8), TrackConfig(max_gap_s=0.3))
    assert track.status.tolist() == [1, 2, 2, 1, 0, 0, 0, 1]
    np.testing.assert_allclose(track.boxes[1], big(2))  # linear between x=0 and x=6
    assert np.isnan(track.landmarks[4:7]).all()
    # the same detections at 25 fps lie 0.12 and 0.16 s apart: both gaps are bridged
    fast = follow_face(detections(*frames), np.arange(8), times_at(25, 8), TrackConfig(max_gap_s=0.3))
    assert fast.status.tolist() == [1, 2, 2, 1, 2, 2, 2, 1]


def test_track_interpolates_by_time_on_a_variable_frame_rate():
    found = detections([[0, 0, 40, 40]], [[8, 4, 48, 44]])
    times = np.array([0.0, 0.04, 0.2])  # the frame between lies a fifth of the way
    track = follow_face(found, np.array([0, 2]), times, TrackConfig())
    assert track.status.tolist() == [FaceStatus.DETECTED, FaceStatus.INTERPOLATED, FaceStatus.DETECTED]
    np.testing.assert_allclose(track.boxes[1], [1.6, 0.8, 41.6, 40.8])


def test_track_between_detection_frames_is_interpolated():
    """Detection every 4th frame: the frames between follow the two detections linearly."""
    found = detections([[0, 0, 40, 40]], [[8, 4, 48, 44]])
    track = follow_face(found, np.array([0, 4]), times_at(25, 5), TrackConfig())
    assert track.status.tolist() == [FaceStatus.DETECTED, 2, 2, 2, FaceStatus.DETECTED]
    np.testing.assert_allclose(track.landmarks[2], (found[0].landmarks[0] + found[1].landmarks[0]) / 2)


def test_rules_pick_the_largest_or_the_most_present_person():
    small = lambda x: [x, 50, x + 10, 60]  # noqa: E731  present in every frame
    large = [100, 0, 160, 60]  # present in 2 of 5 frames
    frames = [[small(0)], [small(2), large], [small(4)], [small(6), large], [small(8)]]
    times = times_at(10, 5)
    largest = follow_face(detections(*frames), np.arange(5), times, TrackConfig(rule=TrackRule.LARGEST, max_gap_s=0.1))
    present = follow_face(detections(*frames), np.arange(5), times, TrackConfig(rule=TrackRule.MOST_PRESENT))
    assert largest.boxes[1].tolist() == large and largest.num_tracks == 2
    assert np.isnan(largest.boxes[2]).all()  # 0.2 s apart > max_gap_s 0.1: the miss between is not filled
    assert [box[0] for box in present.boxes] == [0, 2, 4, 6, 8]


def test_iou_threshold_decides_whether_a_moving_box_continues_its_track():
    frames = [[[0, 0, 20, 20]], [[10, 0, 30, 20]]]  # IoU 1/3
    linked = follow_face(detections(*frames), np.arange(2), times_at(25, 2), TrackConfig(iou_threshold=0.3))
    split = follow_face(detections(*frames), np.arange(2), times_at(25, 2), TrackConfig(iou_threshold=0.5))
    assert linked.num_tracks == 1 and split.num_tracks == 2


def test_select_frames_by_time_on_a_variable_frame_rate():
    times = np.array([0.0, 0.04, 0.08, 0.2, 0.24, 0.4, 0.44, 0.48, 0.7, 0.74]).astype(np.float32).astype(np.float64)
    assert select_frames(times, 0.08, 0.44, None).tolist() == [2, 3, 4, 5]
    assert select_frames(times, None, None, None).tolist() == list(range(10))
    # 10 per second from 0.0: ticks 0.0, 0.1, ..., 0.7 -> first frame at or after each
    assert select_frames(times, 0.0, 0.8, 10).tolist() == [0, 3, 5, 8]


def face_crops(open_mouth_at: int, count: int) -> np.ndarray:
    """Aligned-looking grey faces with a dark mouth; one frame's mouth is wide open."""
    crops = np.full((count, 64, 64, 3), 180, dtype=np.uint8)
    crops[:, 20:26, 16:26] = crops[:, 20:26, 38:48] = 40  # eyes
    crops[:, 44:47, 22:42] = 60  # closed mouth
    crops[open_mouth_at, 40:54, 22:42] = 30
    crops += np.random.default_rng(0).integers(0, 6, crops.shape, dtype=np.uint8)
    return crops


def test_expression_rule_picks_the_face_farthest_from_the_resting_face():
    crops = face_crops(open_mouth_at=7, count=12)
    crops[3] = np.clip(crops[3].astype(int) + 40, 0, 255)  # brighter only: no expression change
    assert expression_peak(expression_thumbnails(crops)) == 7


def test_openface_rule_reads_au_intensities(tmp_path):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text(
        "frame, face_id, timestamp, confidence, success, AU01_r, AU12_r, AU45_c\n"
        "1, 0, 0.000, 0.98, 1, 0.2, 0.1, 1\n"
        "2, 0, 0.040, 0.98, 1, 1.5, 2.0, 0\n"
        "3, 0, 0.080, 0.10, 0, 5.0, 5.0, 1\n"  # not tracked: ignored
        "4, 0, 0.120, 0.98, 1, 0.3, 0.3, 1\n"
    )
    assert openface_peak_time(csv_path) == pytest.approx(0.04)
    times = np.array([0.0, 0.05, 0.1])
    assert choose_peak(PeakRule.OPENFACE, times, None, csv_path) == 1
    assert choose_peak(PeakRule.MIDDLE, times, None, None) == 1
    assert choose_peak(PeakRule.FIRST, times, None, None) == 0
    with pytest.raises(PeakError, match="no OpenFace CSV"):
        openface_peak_time(tmp_path / "missing.csv")


def test_config_rejects_unknown_keys_bad_values_and_missing_settings(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("input: {videos: v}\noutput: out\n")
    assert load_prepare_config(cfg, ["track.rule=most_present"]).track.rule is TrackRule.MOST_PRESENT
    with pytest.raises(ConfigError, match="detector.min_sore"):
        load_prepare_config(cfg, ["detector.min_sore=0.5"])
    with pytest.raises(ConfigError, match="track.rule"):
        load_prepare_config(cfg, ["track.rule=biggest"])
    with pytest.raises(ConfigError, match="track.min_coverage = 1.5 is out of range"):
        load_prepare_config(cfg, ["track.min_coverage=1.5"])
    with pytest.raises(ConfigError, match="track.max_gap_s = -0.1 is out of range"):
        load_prepare_config(cfg, ["track.max_gap_s=-0.1"])
    with pytest.raises(ConfigError, match="track.max_gap: Key 'max_gap' not in 'TrackConfig'"):
        load_prepare_config(cfg, ["track.max_gap=5"])  # the count of missed detections it replaced
    with pytest.raises(ConfigError, match="peak.openface_dir"):
        load_prepare_config(cfg, ["peak.rule=openface"])
    with pytest.raises(ConfigError, match="encoders.face_mae.checkpoint"):
        load_prepare_config(cfg, ["encoders.run=true"])
    (tmp_path / "q.yaml").write_text("input: {videos: v}\n")
    with pytest.raises(ConfigError, match="output"):
        load_prepare_config(tmp_path / "q.yaml")


def test_a_speeding_face_stays_one_track_by_its_expected_box():
    """40 px boxes at x = 0, 10, 30, 60, 100: the IoU with the last box falls to 1/3, 1/7, 0, but with
    the box moved on at the last speed it stays 3/5; at threshold 0.5 one track, not four."""
    frames = [[[x, 0.0, x + 40, 40]] for x in (0.0, 10.0, 30.0, 60.0, 100.0)]
    track = follow_face(detections(*frames), np.arange(5), times_at(25, 5), TrackConfig(iou_threshold=0.5))
    assert track.num_tracks == 1 and (track.status == FaceStatus.DETECTED).all()


def test_the_expected_box_moves_per_frame_when_detection_frames_are_uneven():
    """Detections at frames 0, 1 and 5 (a re-detected stretch beside a scheduled one): a box moving
    10 px per frame is expected 40 px on at frame 5, not 10 (per detection), and stays one track."""
    frames = [[[x, 0.0, x + 40, 40]] for x in (0.0, 10.0, 50.0)]
    track = follow_face(detections(*frames), np.array([0, 1, 5]), times_at(25, 6), TrackConfig(iou_threshold=0.5))
    assert track.num_tracks == 1 and track.status.tolist() == [1, 1, 2, 2, 2, 1]


@pytest.mark.parametrize("name", ["prepare_hcmw.yaml", "demo_prepare.yaml"])
def test_shipped_configs_load(name):
    cfg = load_prepare_config(Path(__file__).resolve().parents[1] / "eval_configs" / name)
    assert cfg.align.size == 224 and cfg.threads == 1 and cfg.input.segments.endswith("segments.csv")
