"""The prepare job end to end on small generated videos, with the real default detector (MTCNN)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from PIL import Image

from minigpt4.datasets.frames import ClipReadError
from minigpt4.features.writer import FeatureOutputError
from minigpt4.prepare.align import face_template, similarity_transform
from minigpt4.prepare.config import load_prepare_config
from minigpt4.prepare.cut import SegmentError
from minigpt4.prepare.detect import MTCNNDetector
from minigpt4.prepare.run import prepare, torch_threads

HEIGHT, WIDTH = 128, 160
FPS = 25
CROP = 112  # align.size in these tests: small and fast; the demo config uses 224


@pytest.fixture(scope="module")
def sessions():
    """scripts/tiny_sessions.py: the drawn faces and the video writer."""
    return load_script("tiny_sessions")


def moving_face(sessions, t: int, **look):
    """The test face at frame t: moves right and a little down along a known line."""
    return sessions.DrawnFace(cy=50.0 + 0.5 * t, cx=45.0 + 3.0 * t, r=24.0, **look)


def config(tmp_path: Path, videos: Path, **settings):
    """A prepare config for ``videos`` writing to tmp_path/out; settings as dotted keys."""
    options = [f"input.videos={videos}", f"output={tmp_path / 'out'}", "progress=false", f"align.size={CROP}"]
    # one thread: the frames are tiny, and one beats two by far when other jobs share the cores
    options += ["detector.min_face_size=30", "detector.batch_size=8", "threads=1"]
    options += [f"{key.replace('__', '.')}={value}" for key, value in settings.items()]
    return load_prepare_config(None, options)


def eye_and_mouth_centres(crop: np.ndarray) -> np.ndarray:
    """Centroids of the eye whites (left, right) and of the lips, (3, 2) x, y, found by colour."""
    pixels = crop.astype(int)
    yy, xx = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
    white = pixels.min(axis=-1) > 200
    # lips: the only red below the nose (higher up, chroma bleeding reddens the brows' edges)
    lips = (np.abs(pixels - [150, 60, 60]).max(axis=-1) < 35) & (yy > 0.65 * crop.shape[0])
    middle = crop.shape[1] / 2
    parts = [white & (xx < middle), white & (xx >= middle), lips]
    return np.array([[xx[part].mean(), yy[part].mean()] for part in parts])


def expected_centres(sessions, face, size: int) -> np.ndarray:
    """Where the eyes and the mouth of ``face`` lie in an ideal crop: its drawn landmarks fitted to the template.

    (The drawn face's proportions are not the template's, so even a perfect crop leaves each
    landmark a little off the template; the ideal crop is the reference.)
    """
    truth = sessions.face_landmarks(face)
    fit = similarity_transform(truth, face_template(size))
    centres = np.array([truth[0], truth[1], truth[3:].mean(axis=0)])
    return centres @ fit[:, :2].T + fit[:, 2]


def read_rows(path: Path, delimiter=",") -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def face_frames(out: Path, clip: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted((out / "face_frames" / clip).iterdir())]


# --------------------------------------------------------------------------- a moving face


@pytest.fixture(scope="module")
def moving_clip(sessions, tmp_path_factory):
    """24 frames of a face moving along a line, hidden in frames 10-12."""
    folder = tmp_path_factory.mktemp("moving")
    (folder / "videos").mkdir()
    rng = np.random.default_rng(0)
    frames = [
        sessions.render_frame(HEIGHT, WIDTH, [] if 10 <= t <= 12 else [moving_face(sessions, t)], rng) for t in range(24)
    ]
    sessions.write_video(folder / "videos" / "walk.mp4", np.stack(frames), fps=FPS)
    summary = prepare(config(folder, folder / "videos", track__max_gap_s=0.2))
    return folder, summary


def test_aligned_crops_centre_the_face_and_the_track_bridges_a_gap(moving_clip, sessions):
    folder, summary = moving_clip
    out = folder / "out"
    assert summary.prepared == 1 and summary.frames_written == 24
    report = json.loads((out / "tracks" / "walk.json").read_text())
    assert report["times_without_face_detected"] == pytest.approx([10 / FPS, 11 / FPS, 12 / FPS])
    assert report["interpolated_frames"] == [10, 11, 12]
    assert report["coverage"] == pytest.approx(21 / 24)
    crops = face_frames(out, "walk")
    assert len(crops) == 24 and crops[0].shape == (CROP, CROP, 3)
    for t, crop in enumerate(crops):
        if 10 <= t <= 12:  # no face in the frame: the crop shows where the track was
            continue
        target = expected_centres(sessions, moving_face(sessions, t), CROP)
        error = np.abs(eye_and_mouth_centres(crop) - target).max()
        assert error < 0.05 * CROP, f"frame {t}: landmarks {error:.1f} px from the template"
    array = np.load(out / "face_arrays" / "walk.npy")
    assert array.shape == (24, CROP, CROP, 3) and array.dtype == np.uint8
    assert np.array_equal(array[5], crops[5])


def test_interpolated_frames_follow_the_hidden_path(moving_clip, sessions):
    """Where the face was hidden, the interpolated track points where it would have been."""
    folder, _ = moving_clip
    frames = face_frames(folder / "out", "walk")
    background = np.array(sessions.BACKGROUND)
    # the crop of a hidden frame is background only: the track did not jump elsewhere
    assert all(np.abs(frames[t].reshape(-1, 3).mean(0) - background).max() < 6 for t in (10, 11, 12))


def test_rerun_skips_done_clips_and_redoes_an_unfinished_one(moving_clip, tmp_path):
    folder, _ = moving_clip
    cfg = config(folder, folder / "videos", track__max_gap_s=0.2)
    threads = torch.get_num_threads()
    again = prepare(cfg)
    assert torch.get_num_threads() == threads  # `threads: 1` held for the run only
    assert (again.prepared, again.already_present) == (0, 1)
    (folder / "out" / "tracks" / "walk.json").unlink()  # as if killed before the report
    redone = prepare(cfg)
    assert (redone.prepared, redone.already_present) == (1, 0)
    assert not (folder / "out" / ".tmp" / "walk").exists()


def test_a_rerun_with_other_settings_is_refused_unless_overwrite(moving_clip, tmp_path):
    """align.size 112 -> 96 into the same output: refused, naming the key; with overwrite the
    clip is made again and no 112-pixel file is left beside the new ones."""
    folder, _ = moving_clip
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    cfg = config(tmp_path, folder / "videos", track__max_gap_s=0.2, align__size=96)
    with pytest.raises(FeatureOutputError) as refused:
        prepare(cfg)
    assert str(refused.value) == (
        f"{out} holds files made with other settings (differs in: align.size); refusing to mix them. "
        "Pass --overwrite to replace them, or choose another --output"
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    (out / "face_frames" / "stale").mkdir()  # a clip an earlier run made that this run does not list
    again = prepare(cfg, overwrite=True)
    assert (again.prepared, again.already_present) == (1, 0)
    assert np.load(out / "face_arrays" / "walk.npy").shape[1:] == (96, 96, 3)
    assert sorted(os.listdir(out / "face_frames")) == ["walk"]
    assert json.loads((out / "extraction.json").read_text())["align"] == {"size": 96}
    assert prepare(cfg).already_present == 1  # the same settings again: resumes, refuses nothing


def test_min_score_above_every_detection_leaves_the_clip_faceless(moving_clip, tmp_path):
    """The clip the default min_score (0.9) prepares is skipped when no confidence can reach min_score.

    MTCNN scores the drawn face 0.97-0.9999 (float32), never exactly 1.0.
    """
    folder, default_run = moving_clip
    assert default_run.prepared == 1
    summary = prepare(config(tmp_path, folder / "videos", track__max_gap_s=0.2, skip_bad="true", detector__min_score=1.0))
    assert summary.prepared == 0
    (row,) = read_rows(tmp_path / "out" / "skipped.tsv", delimiter="\t")
    assert row["clip"] == "walk" and row["problem"].startswith("no face found in any of 24 detection frames")
    assert not (tmp_path / "out" / "face_frames" / "walk").exists()


def test_mtcnn_finds_the_drawn_face_and_its_landmarks(sessions):
    face = sessions.DrawnFace(cy=100.0, cx=170.0, r=36.0)
    frame = sessions.render_frame(200, 300, [face])
    truth = sessions.face_landmarks(face)
    for max_side in (None, 150):  # full size, and shrunk for detection (landmarks in frame pixels)
        detector = MTCNNDetector(min_face_size=20, min_score=0.9, max_side=max_side, device="cpu")
        with torch_threads(1):
            (found,) = detector.detect(frame[None])
        assert len(found) == 1 and found.scores[0] > 0.9
        assert np.abs(found.landmarks[0] - truth).max() < 0.15 * face.r
        x1, y1, x2, y2 = found.boxes[0]
        assert x1 < face.cx < x2 and y1 < face.cy < y2


# --------------------------------------------------------------------------- two people


@pytest.fixture(scope="module")
def crossing_video(sessions, tmp_path_factory):
    """A large warm face moving left and a small cool face moving right, above it; they cross mid-clip.

    The large face enters at frame 6, the small one is there throughout, in front.
    """
    folder = tmp_path_factory.mktemp("crossing")
    (folder / "videos").mkdir()
    rng = np.random.default_rng(1)
    frames = []
    for t in range(20):
        small = sessions.DrawnFace(cy=30.0, cx=20.0 + 6.0 * t, r=14.0, skin=sessions.COOL_SKIN)
        large = sessions.DrawnFace(cy=84.0, cx=140.0 - 5.0 * t, r=28.0)
        frames.append(sessions.render_frame(HEIGHT, WIDTH, ([large] if t >= 6 else []) + [small], rng))
    sessions.write_video(folder / "videos" / "pair.mp4", np.stack(frames), fps=FPS)
    return folder


def skin_of(crop: np.ndarray, sessions) -> str:
    """Which drawn skin the crop's cheeks show."""
    cheek = crop[int(0.62 * CROP) : int(0.7 * CROP), int(0.15 * CROP) : int(0.25 * CROP)].reshape(-1, 3).mean(0)
    warm = np.abs(cheek / np.array(sessions.SKIN) - cheek.mean() / np.mean(sessions.SKIN)).sum()
    cool = np.abs(cheek / np.array(sessions.COOL_SKIN) - cheek.mean() / np.mean(sessions.COOL_SKIN)).sum()
    return "warm" if warm < cool else "cool"


@pytest.mark.parametrize("rule, skin, frames", [("largest", "warm", 14), ("most_present", "cool", 20)])
def test_the_rule_keeps_one_person_in_every_frame(crossing_video, sessions, tmp_path, rule, skin, frames):
    cfg = config(tmp_path, crossing_video / "videos", track__rule=rule, track__min_coverage=0.3, detector__min_face_size=20)
    summary = prepare(cfg)
    assert summary.prepared == 1
    crops = face_frames(tmp_path / "out", "pair")
    assert len(crops) == frames
    assert [skin_of(crop, sessions) for crop in crops] == [skin] * frames
    assert json.loads((tmp_path / "out" / "tracks" / "pair.json").read_text())["people_seen"] >= 2


# --------------------------------------------------------------------------- cutting sessions


@pytest.fixture(scope="module")
def vfr_session(sessions, tmp_path_factory):
    """A variable-frame-rate session: 0.04 s and 0.12 s between frames in turn, a face throughout."""
    folder = tmp_path_factory.mktemp("vfr")
    (folder / "videos").mkdir()
    steps = np.tile([0.04, 0.12], 15)
    times = np.round(np.concatenate([[0.0], np.cumsum(steps)[:-1]]), 3)
    rng = np.random.default_rng(2)
    # the face walks right and back: a continuous path, one track
    frames = [sessions.render_frame(HEIGHT, WIDTH, [moving_face(sessions, min(i % 22, 22 - i % 22))], rng) for i in range(len(times))]
    sessions.write_video(folder / "videos" / "session.mp4", np.stack(frames), fps=FPS, times=times)
    return folder, times


def write_segments(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "clip", "start_s", "end_s", "mw_label", "test_fold_num"])
        writer.writerows(rows)
    return path


def test_segments_follow_timestamps_on_a_variable_frame_rate(vfr_session, tmp_path):
    folder, times = vfr_session
    segments = write_segments(
        tmp_path / "segments.csv",
        [("session.mp4", "probe_a", 0.30, 0.95, "MW", 0), ("session.mp4", "probe_b", 1.0, 1.9, "NonMW", 1)],
    )
    summary = prepare(config(tmp_path, folder / "videos", input__segments=segments, detector__detect_every=3))
    assert summary.prepared == 2
    out = tmp_path / "out"
    for clip, start, end in (("probe_a", 0.30, 0.95), ("probe_b", 1.0, 1.9)):
        report = json.loads((out / "tracks" / f"{clip}.json").read_text())
        inside = times[(times >= start) & (times < end)]
        np.testing.assert_allclose(report["frame_times"], inside - start, atol=1e-3)
        assert len(face_frames(out, clip)) == len(inside)
        assert report["detection_frames"] == len(range(0, len(inside), 3)) + ((len(inside) - 1) % 3 != 0)
    # the hcmw columns, then who and when: the participant defaults to the session video's name
    where = {"participant": "session", "video": "session.mp4"}
    assert read_rows(out / "annotations.csv") == [
        {"uuid": "probe_a", "mw_label": "MW", "test_fold_num": "0", **where, "start_s": "0.3", "end_s": "0.95"},
        {"uuid": "probe_b", "mw_label": "NonMW", "test_fold_num": "1", **where, "start_s": "1.0", "end_s": "1.9"},
    ]


def test_sampling_fps_keeps_the_first_frame_at_each_tick(vfr_session, tmp_path):
    folder, times = vfr_session
    segments = write_segments(tmp_path / "segments.csv", [("session.mp4", "probe", 0.0, 2.0, "MW", 0)])
    prepare(config(tmp_path, folder / "videos", input__segments=segments, sampling__fps=5))
    report = json.loads((tmp_path / "out" / "tracks" / "probe.json").read_text())
    expected = sorted({float(times[np.searchsorted(times, tick - 1e-4)]) for tick in np.arange(0, 1.85, 0.2)})
    np.testing.assert_allclose(report["frame_times"], expected, atol=1e-3)


@pytest.mark.parametrize(
    "row, message",
    [
        (("session.mp4", "late", 2.0, 9.0), "clip 'late' ends at 9.0 s but .*session.mp4 lasts"),
        (("session.mp4", "backwards", 1.0, 1.0), "clip 'backwards' has end_s 1.0 <= start_s 1.0"),
        (("session.mp4", "probe", 1.0, 1.5), "row 3: clip id 'probe' is already used by row 2"),
    ],
)
def test_bad_segments_are_named_before_any_output(vfr_session, tmp_path, row, message):
    folder, _ = vfr_session
    segments = write_segments(tmp_path / "segments.csv", [("session.mp4", "probe", 0.0, 0.5, "MW", 0), (*row, "MW", 0)])
    with pytest.raises(SegmentError, match=message):
        prepare(config(tmp_path, folder / "videos", input__segments=segments))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad and unusual inputs


@pytest.fixture(scope="module")
def mixed_folder(sessions, tmp_path_factory):
    """Clip videos, good and bad: the bad ones must be named, the unusual ones processed."""
    folder = tmp_path_factory.mktemp("mixed")
    videos = folder / "videos"
    videos.mkdir()
    rng = np.random.default_rng(3)
    face = lambda t: [moving_face(sessions, t % 8)]  # noqa: E731
    clip = lambda present: np.stack([sessions.render_frame(HEIGHT, WIDTH, face(t) if present(t) else [], rng) for t in range(12)])  # noqa: E731
    sessions.write_video(videos / "no_face.mp4", clip(lambda t: False), fps=FPS)
    sessions.write_video(videos / "few_faces.mp4", clip(lambda t: t < 3), fps=FPS)
    sessions.write_video(videos / "rotated.mp4", clip(lambda t: True), fps=FPS, rotation=90)
    sessions.write_video(videos / "séance_ü.mp4", clip(lambda t: True), fps=FPS)
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(2000))
    (videos / "empty.mp4").write_bytes(b"")
    write_audio_only(videos / "audio_only.mp4")
    return folder


def write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        container.mux(stream.encode())


def test_bad_clips_are_listed_and_good_ones_written(mixed_folder, tmp_path, sessions):
    labels = tmp_path / "labels.csv"
    names = ["audio_only", "corrupt", "empty", "few_faces", "no_face", "rotated", "séance_ü"]
    labels.write_text("clip,mw_label,test_fold_num\n" + "".join(f"{n},MW,{i % 2}\n" for i, n in enumerate(names)), encoding="utf-8")
    summary = prepare(config(tmp_path, mixed_folder / "videos", skip_bad="true", input__labels=labels))
    out = tmp_path / "out"
    reasons = {row["clip"]: row["problem"] for row in read_rows(out / "skipped.tsv", delimiter="\t")}
    assert sorted(reasons) == ["audio_only", "corrupt", "empty", "few_faces", "no_face"]
    assert "no video stream" in reasons["audio_only"] and "audio" in reasons["audio_only"]
    assert "unreadable video" in reasons["corrupt"]
    assert "empty (0 bytes)" in reasons["empty"]
    assert "3 of 12 detection frames" in reasons["few_faces"] and "min_coverage" in reasons["few_faces"]
    assert reasons["no_face"].startswith("no face found")
    assert summary.prepared == 2
    assert sorted(os.listdir(out / "face_frames")) == ["rotated", "séance_ü"]
    assert sorted(os.listdir(out / "images")) == ["rotated", "séance_ü"]
    assert not (out / ".tmp").exists()  # no half-built clip left behind
    rows = read_rows(out / "annotations.csv")
    assert [row["uuid"] for row in rows] == ["rotated", "séance_ü"]
    assert list(rows[0]) == ["uuid", "mw_label", "test_fold_num", "video", "start_s", "end_s"]  # no participant known
    assert json.loads((out / "tracks" / "rotated.json").read_text())["rotation"] == 90
    # the rotated clip comes out upright: eyes above the mouth, at the template
    for crop in face_frames(out, "rotated")[::4]:
        target = expected_centres(sessions, moving_face(sessions, 0), CROP)
        assert np.abs(eye_and_mouth_centres(crop) - target).max() < 0.05 * CROP
    summary_file = json.loads((out / "summary.json").read_text())
    assert summary_file["prepared"] == 2 and len(summary_file["skipped"]) == 5


def test_without_skip_bad_an_unreadable_clip_stops_the_run_before_any_output(mixed_folder, tmp_path):
    with pytest.raises(ClipReadError, match="clip 'audio_only' .*no video stream"):
        prepare(config(tmp_path, mixed_folder / "videos"))
    assert not (tmp_path / "out").exists()


def test_without_skip_bad_a_faceless_clip_stops_with_its_name_and_leaves_nothing_of_it(sessions, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    rng = np.random.default_rng(4)
    sessions.write_video(videos / "a_good.mp4", np.stack([sessions.render_frame(HEIGHT, WIDTH, [moving_face(sessions, t)], rng) for t in range(6)]))
    sessions.write_video(videos / "b_blank.mp4", np.stack([sessions.render_frame(HEIGHT, WIDTH, [], rng) for _ in range(6)]))
    with pytest.raises(ClipReadError, match="clip 'b_blank' .*no face found"):
        prepare(config(tmp_path, videos))
    out = tmp_path / "out"
    assert (out / "tracks" / "a_good.json").is_file()  # what was done stays
    assert not (out / "face_frames" / "b_blank").exists() and not any((out / ".tmp").iterdir())
