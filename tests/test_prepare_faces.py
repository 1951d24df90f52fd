"""The per-clip face pipeline (minigpt4/prepare/faces.py): gaps, re-detection, the peak frame,
and the in-memory entry point that must give what the file job writes, byte for byte."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO_ROOT, load_script
from PIL import Image

from minigpt4.prepare.config import load_prepare_config
from minigpt4.prepare.cut import select_frames
from minigpt4.prepare.decode import ArrayFrames, VideoSource
from minigpt4.prepare.detect import FaceDetections, FaceDetector, build_detector
from minigpt4.prepare.faces import FaceOutcome, find_faces
from minigpt4.prepare.run import prepare, torch_threads
from minigpt4.prepare.track import FaceStatus

FPS = 25
SESSION_SECONDS = 3.0
WINDOW = (0.5, 2.5)  # the clip cut from the session: 50 frames
BLANK = (1.25, 1.75)  # no face on screen (times in the session)


# --------------------------------------------------------------------------- a fake detector on arrays


class MarkedFaces(FaceDetector):
    """Finds a fixed 40 px face in frames whose pixel (0, 0, 0) is 255; records the frames it saw
    by their number, stored in pixel (0, 0, 1)."""

    def __init__(self):
        self.seen: list[int] = []

    def detect(self, frames: np.ndarray) -> list[FaceDetections]:
        found = []
        for frame in frames:
            self.seen.append(int(frame[0, 0, 1]))
            if frame[0, 0, 0] != 255:
                found.append(FaceDetections.empty())
                continue
            landmarks = np.array([[22.0, 26.0], [38.0, 26.0], [30.0, 34.0], [24.0, 42.0], [36.0, 42.0]])
            found.append(FaceDetections(np.array([[10.0, 10.0, 50.0, 50.0]]), landmarks[None], np.ones(1)))
        return found


def marked_frames(count: int, face: np.ndarray) -> np.ndarray:
    frames = np.full((count, 60, 60, 3), 90, dtype=np.uint8)
    frames[:, 15:45, 15:45] = 200  # a plain "face" where the detector puts it
    frames[:, 0, 0, 0] = np.where(face, 255, 0)
    frames[:, 0, 0, 1] = np.arange(count)
    return frames


def array_config(**settings):
    options = ["input.videos=unused", "output=unused", "align.size=32", "detector.batch_size=4"]
    return load_prepare_config(None, options + [f"{key.replace('__', '.')}={value}" for key, value in settings.items()])


def test_redetection_finds_a_gaps_edges_and_the_gap_gets_no_crops():
    """25 fps, detect_every 5, no face in frames 12-17: the scheduled detection at 15 misses, so the
    skipped frames beside it (11-14, 16-19) are searched; the face is confirmed up to 11 and from 18,
    11 -> 18 is 0.28 s > max_gap_s 0.25, so 12-17 get no crop."""
    face = np.ones(30, bool)
    face[12:18] = False
    detector = MarkedFaces()
    result = find_faces(ArrayFrames(marked_frames(30, face), np.arange(30) / FPS), detector, array_config(detector__detect_every=5))
    assert result.outcome is FaceOutcome.FACE
    assert sorted(detector.seen) == sorted([0, 5, 10, 15, 20, 25, 29] + [11, 12, 13, 14, 16, 17, 18, 19])
    assert result.written.tolist() == [*range(12), *range(18, 30)]
    assert result.faces.shape == (24, 32, 32, 3) and result.faces.dtype == np.uint8
    np.testing.assert_allclose(result.face_times, result.written / FPS)
    detected = [0, 5, 10, 11, 18, 19, 20, 25, 29]
    assert np.flatnonzero(result.status == FaceStatus.DETECTED).tolist() == detected
    assert (result.status[12:18] == FaceStatus.MISSING).all()
    assert result.coverage == pytest.approx(6 / 7)  # of the scheduled frames, 15 missed
    assert result.report["redetected_frames"] == 8 and result.report["detection_frames"] == 7
    assert result.report["times_left_out"] == pytest.approx(np.arange(12, 18) / FPS)


def test_a_short_miss_is_bridged_and_wide_detection_spacing_is_filled_in():
    """A one-frame miss (0.08 s between the detections around it) is interpolated; at 10 fps with
    detect_every 5 (0.5 s apart, over max_gap_s) every frame between is searched, none is guessed."""
    face = np.ones(12, bool)
    face[5] = False
    detector = MarkedFaces()
    flicker = find_faces(ArrayFrames(marked_frames(12, face), np.arange(12) / FPS), detector, array_config(detector__detect_every=5))
    assert flicker.written.tolist() == list(range(12)) and flicker.status[5] == FaceStatus.INTERPOLATED
    slow = MarkedFaces()
    wide = find_faces(ArrayFrames(marked_frames(11, np.ones(11, bool)), np.arange(11) / 10), slow, array_config(detector__detect_every=5))
    assert sorted(slow.seen) == list(range(11)) and (wide.status == FaceStatus.DETECTED).all()


def test_the_peak_is_never_an_interpolated_frame():
    """Frame 7 lies between detections at 5 and 10 and shows something wild: it would be the
    expression rule's farthest face, but only detected frames may be the peak."""
    frames = marked_frames(11, np.ones(11, bool))
    frames[7, 12:48, 12:48] = np.random.default_rng(0).integers(0, 256, (36, 36, 3), dtype=np.uint8)
    frames[5, 30:40, 20:40] = 20  # among the detected frames, the one most unlike the rest
    result = find_faces(ArrayFrames(frames, np.arange(11) / FPS), MarkedFaces(), array_config(detector__detect_every=5))
    assert result.status[7] == FaceStatus.INTERPOLATED
    assert result.peak == 5 and np.array_equal(result.peak_image, result.faces[5])


def test_too_little_face_and_no_face_are_outcomes_not_errors():
    few = np.zeros(10, bool)
    few[:3] = True
    result = find_faces(ArrayFrames(marked_frames(10, few), np.arange(10) / FPS), MarkedFaces(), array_config())
    assert result.outcome is FaceOutcome.TOO_LITTLE_FACE and result.coverage == pytest.approx(0.3)
    assert result.problem == "the face shows in 3 of 10 detection frames (30%), under track.min_coverage 50%"
    assert result.faces is None and result.peak is None and result.written.size == 0
    none = find_faces(ArrayFrames(marked_frames(10, np.zeros(10, bool)), np.arange(10) / FPS), MarkedFaces(), array_config())
    assert (none.outcome, none.problem) == (FaceOutcome.NO_FACE, "no face found in any of 10 detection frames")
    empty = find_faces(ArrayFrames(marked_frames(4, np.ones(4, bool)), np.arange(4) / FPS), MarkedFaces(), array_config(), start_s=9.0)
    assert empty.outcome is FaceOutcome.NO_FRAMES


@pytest.mark.parametrize(
    "frames, times, message",
    [
        (np.zeros((2, 8, 8, 3), np.float32), [0.0, 0.1], r"frames: expected uint8 \[n, H, W, 3\], got float32 \[2, 8, 8, 3\]"),
        (np.zeros((2, 8, 8, 3), np.uint8), [0.1, 0.1], "timestamps: expected 2 increasing times, one per frame"),
    ],
)
def test_array_frames_refuse_what_is_not_a_window(frames, times, message):
    with pytest.raises(ValueError, match=message):
        ArrayFrames(frames, times)


# --------------------------------------------------------------------------- a session with a blank stretch, MTCNN


@pytest.fixture(scope="module")
def blank_session(tmp_path_factory):
    """A generated session (25 fps, the demo sessions' drawn face) with 0.5 s without a face,
    cut by a segments CSV and prepared with the shipped defaults (eval_configs/prepare_hcmw.yaml)."""
    sessions = load_script("tiny_sessions")
    folder = tmp_path_factory.mktemp("blank")
    (folder / "videos").mkdir()
    rng = np.random.default_rng(5)
    phase = np.array([0.3, -1.0, 0.5])
    frames = []
    for i in range(int(SESSION_SECONDS * FPS)):
        t = i / FPS
        faces = [] if BLANK[0] <= t < BLANK[1] else [sessions.session_face(t, "NonMW", phase)]
        frames.append(sessions.render_frame(sessions.SESSION_HEIGHT, sessions.SESSION_WIDTH, faces, rng))
    sessions.write_video(folder / "videos" / "session.mp4", np.stack(frames), fps=FPS)
    (folder / "segments.csv").write_text(f"video,clip,start_s,end_s\nsession.mp4,probe,{WINDOW[0]},{WINDOW[1]}\n")
    options = [f"input.videos={folder / 'videos'}", f"input.segments={folder / 'segments.csv'}", f"output={folder / 'out'}"]
    cfg = load_prepare_config(REPO_ROOT / "eval_configs" / "prepare_hcmw.yaml", options + ["progress=false"])
    summary = prepare(cfg)
    assert summary.prepared == 1
    return folder, cfg


def test_a_blank_stretch_gets_no_crops_and_the_peak_is_a_face(blank_session):
    folder, cfg = blank_session
    out = folder / "out"
    report = json.loads((out / "tracks" / "probe.json").read_text())
    crops = np.load(out / "face_arrays" / "probe.npy")
    assert not [i for i, crop in enumerate(crops) if crop.reshape(-1, 3).std(axis=0).max() < 10]  # no uniform crop
    peak = np.asarray(Image.open(out / "images" / "probe" / "probe_peak_frame.png"))
    assert peak.reshape(-1, 3).std(axis=0).max() > 10
    blank = (BLANK[0] - WINDOW[0], BLANK[1] - WINDOW[0])
    assert not blank[0] - 1e-3 <= report["peak_time"] < blank[1]
    # the reference: MTCNN with the same settings on every frame of the window; a crop for each
    # detected frame and each frame between two detections at most max_gap_s apart
    source = VideoSource(folder / "videos" / "session.mp4", "probe")
    indices = select_frames(source.timestamps, *WINDOW, None)
    times = source.timestamps[indices] - WINDOW[0]
    with torch_threads(1):
        found = build_detector(cfg.detector).detect(source.read(indices))
    detected = np.flatnonzero([len(f) > 0 for f in found])
    expected = set(detected.tolist())
    for a, b in zip(detected, detected[1:]):
        if times[b] - times[a] <= cfg.track.max_gap_s + 1e-4:
            expected |= set(range(a, b))
    assert len(crops) == len(expected) == len(report["frame_times"])
    np.testing.assert_allclose(report["frame_times"], times[sorted(expected)], atol=1e-4)
    assert not any(blank[0] - 1e-3 <= t < blank[1] for t in report["frame_times"])


def test_the_in_memory_pipeline_gives_the_files_bytes(blank_session):
    """The same window decoded by the caller and passed as an array: the crops, the peak image and
    the report are what the prepare job wrote."""
    folder, cfg = blank_session
    out = folder / "out"
    source = VideoSource(folder / "videos" / "session.mp4", "probe")
    indices = select_frames(source.timestamps, *WINDOW, None)
    window = ArrayFrames(source.read(indices), source.timestamps[indices])
    with torch_threads(1):
        result = find_faces(window, build_detector(cfg.detector), cfg, start_s=WINDOW[0], end_s=WINDOW[1])
    assert result.outcome is FaceOutcome.FACE
    assert np.array_equal(result.faces, np.load(out / "face_arrays" / "probe.npy"))
    assert np.array_equal(result.peak_image, np.asarray(Image.open(out / "images" / "probe" / "probe_peak_frame.png")))
    written = json.loads((out / "tracks" / "probe.json").read_text())
    assert {key: written[key] for key in result.report} == result.report
    np.testing.assert_allclose(result.face_times, written["frame_times"], atol=1e-4)
