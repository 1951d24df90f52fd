"""Clip frame sources (folder, .npy, video), the frame samplings and the clip errors."""

import random

import av
import numpy as np
import pytest
from PIL import Image

from minigpt4.datasets.frames import (
    ClipReadError,
    clip_name,
    open_clip_frames,
    read_first_frame,
    uniform_frame_indices,
    videomae_frame_indices,
)
from synthetic_clips import smooth_frames, write_video

# mpeg4 at a high bit rate: chroma subsampling (yuv420p) and YUV rounding leave a few grey
# levels of loss on these smooth frames; measured mean ~3.6, so 6 leaves room across
# codec builds while a wrong frame (or order) is off by tens
VIDEO_MEAN_ABS_TOLERANCE = 6.0




def write_folder(folder, frames: np.ndarray) -> None:
    folder.mkdir()
    order = list(range(len(frames)))
    random.Random(0).shuffle(order)  # creation order must not matter, only names
    for i in order:
        Image.fromarray(frames[i]).save(folder / f"frame_{i:04d}.png")


# ---- samplings --------------------------------------------------------------------------


def test_videomae_indices_on_40_frames():
    # t = 39 / 8 = 4.875; segment x starts at int(2.4375 + 4.875 x)
    assert videomae_frame_indices(40) == [2, 3, 7, 8, 12, 13, 17, 18, 21, 22, 26, 27, 31, 32, 36, 37]


def test_videomae_indices_on_10_frames_caps_at_last():
    # t = 9 / 8 = 1.125: starts 0 1 2 3 5 6 7 8; the last pair is 8, 9
    assert videomae_frame_indices(10) == [0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 6, 7, 7, 8, 8, 9]


@pytest.mark.parametrize("num_frames", [9, 5, 2])
def test_videomae_indices_on_short_clips_start_every_segment_at_0(num_frames):
    assert videomae_frame_indices(num_frames) == [0, 1] * 8


def test_videomae_indices_on_one_frame():
    assert videomae_frame_indices(1) == [0] * 16


def test_uniform_indices():
    # MAE-Face's sampling: linspace(0, T - 1, N) truncated, both ends included
    assert uniform_frame_indices(10, 4) == [0, 3, 6, 9]  # 0, 3, 6, 9 exactly
    assert uniform_frame_indices(100, 7) == [0, 16, 33, 49, 66, 82, 99]  # 16.5 -> 16, 49.5 -> 49, 82.5 -> 82
    assert uniform_frame_indices(5, 1) == [0]
    assert uniform_frame_indices(7) == list(range(7))
    assert uniform_frame_indices(7, 7) == uniform_frame_indices(7, 50) == list(range(7))
    for total, wanted in [(100, 7), (13, 12), (1000, 3)]:
        picked = uniform_frame_indices(total, wanted)
        assert len(picked) == wanted and picked == sorted(set(picked)) and 0 <= picked[0] and picked[-1] < total
        gaps = np.diff(picked)
        assert gaps.max() - gaps.min() <= 1  # evenly spread


@pytest.mark.parametrize(
    "bad", [lambda: uniform_frame_indices(5, 0), lambda: uniform_frame_indices(0), lambda: videomae_frame_indices(0)]
)
def test_samplings_refuse_nonsense(bad):
    with pytest.raises(ValueError):
        bad()


# ---- sources ----------------------------------------------------------------------------


def test_folder_reads_in_name_order(tmp_path):
    frames = smooth_frames(6, 24, 32)
    write_folder(tmp_path / "clip_a", frames)
    clip = open_clip_frames(tmp_path / "clip_a")
    assert clip.clip == "clip_a" and clip.num_frames == 6
    np.testing.assert_array_equal(clip.read([5, 0, 2, 2]), frames[[5, 0, 2, 2]])


def test_npy_reads_requested_frames(tmp_path):
    frames = smooth_frames(5, 24, 32)
    np.save(tmp_path / "clip_b.npy", frames)
    clip = open_clip_frames(tmp_path / "clip_b.npy")
    assert clip.clip == "clip_b" and clip.num_frames == 5
    np.testing.assert_array_equal(clip.read([4, 1, 1]), frames[[4, 1, 1]])


def test_video_reads_requested_frames_up_to_codec_loss(tmp_path):
    frames = smooth_frames(12, 48, 64)
    write_video(tmp_path / "clip_c.mp4", frames)
    clip = open_clip_frames(tmp_path / "clip_c.mp4")
    assert clip.clip == "clip_c" and clip.num_frames == 12
    wanted = [11, 0, 5, 5, 6]
    got = clip.read(wanted).astype(int)
    assert got.shape == (5, 48, 64, 3)
    for row, index in enumerate(wanted):
        error = np.abs(got[row] - frames[index]).mean()
        neighbours = [np.abs(got[row] - frames[j]).mean() for j in (index - 1, index + 1) if 0 <= j < 12]
        assert error < VIDEO_MEAN_ABS_TOLERANCE and all(error < n for n in neighbours), (index, error, neighbours)


def test_read_first_frame(tmp_path):
    frames = smooth_frames(3, 24, 32)
    np.save(tmp_path / "clip.npy", frames)
    image = read_first_frame(tmp_path / "clip.npy")
    assert image.mode == "RGB" and image.size == (32, 24)
    np.testing.assert_array_equal(np.asarray(image), frames[0])


def test_clip_name_of_folder_keeps_dots(tmp_path):
    (tmp_path / "s01.take2").mkdir()
    assert clip_name(tmp_path / "s01.take2") == "s01.take2"
    assert clip_name(tmp_path / "s01.take2.mp4") == "s01.take2"


# ---- bad clips ----------------------------------------------------------------------------


def assert_clip_error(path, clip, file, *words):
    with pytest.raises(ClipReadError) as err:
        open_clip_frames(path)
    message = str(err.value)
    assert err.value.clip == clip and err.value.path == str(file)
    assert clip in message and str(file) in message
    for word in words:
        assert word in message, message


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no frames here")
    assert_clip_error(tmp_path / "empty", "empty", tmp_path / "empty", "no image frames")


def test_unreadable_image_names_the_frame(tmp_path):
    write_folder(tmp_path / "broken", smooth_frames(3, 24, 32))
    (tmp_path / "broken" / "frame_0001.png").write_bytes(b"not a png")
    assert_clip_error(tmp_path / "broken", "broken", tmp_path / "broken" / "frame_0001.png", "unreadable image")


def test_frames_of_different_sizes_name_the_odd_frame(tmp_path):
    write_folder(tmp_path / "mixed", smooth_frames(3, 24, 32))
    Image.fromarray(smooth_frames(1, 20, 32)[0]).save(tmp_path / "mixed" / "frame_0002.png")
    assert_clip_error(tmp_path / "mixed", "mixed", tmp_path / "mixed" / "frame_0002.png", "32x20", "32x24")


def test_zero_byte_video(tmp_path):
    (tmp_path / "nothing.mp4").write_bytes(b"")
    assert_clip_error(tmp_path / "nothing.mp4", "nothing", tmp_path / "nothing.mp4", "empty")


def test_video_with_header_but_no_frames(tmp_path):
    path = tmp_path / "header_only.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()  # writes the header; no frame follows
    assert path.stat().st_size > 0
    with pytest.raises(ClipReadError) as err:
        open_clip_frames(path)
    assert err.value.clip == "header_only" and err.value.path == str(path)


def test_unreadable_video(tmp_path):
    (tmp_path / "garbage.mp4").write_bytes(b"this is not a video" * 50)
    assert_clip_error(tmp_path / "garbage.mp4", "garbage", tmp_path / "garbage.mp4", "unreadable video")


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((3, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 8, 3), np.uint8), "(T, H, W, 3)"),
        (np.zeros((0, 8, 8, 3), np.uint8), "no frames"),
    ],
)
def test_bad_arrays(tmp_path, array, words):
    np.save(tmp_path / "arr.npy", array)
    assert_clip_error(tmp_path / "arr.npy", "arr", tmp_path / "arr.npy", words)


def test_missing_and_unsupported_paths(tmp_path):
    assert_clip_error(tmp_path / "gone.mp4", "gone", tmp_path / "gone.mp4", "no such file")
    (tmp_path / "notes.txt").write_text("x")
    assert_clip_error(tmp_path / "notes.txt", "notes", tmp_path / "notes.txt", "not a clip")
