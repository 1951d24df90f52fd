"""The frames of one clip, wherever they are stored, and which of them an encoder sees.

A clip is a folder of image frames (taken in name order), a ``.npy`` array [T, H, W, C] of
uint8, or a video file decoded with decord.  :func:`open_clip_frames` checks what can be
checked without decoding every frame (the frames exist, how many, their sizes) and returns a
:class:`ClipFrames` whose ``read`` decodes only the frames asked for, one at a time, and
resizes each as soon as it is decoded, so a clip of huge frames costs memory for one frame
at full size plus the resized ones.  Every problem is a :class:`ClipReadError` that names
the clip, the file and what is wrong.
"""

from __future__ import annotations

import os
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
ARRAY_SUFFIX = ".npy"
# the MER test sampling: 8 segments of 2 consecutive frames give VideoMAE its 16 frames
MER_FRAMES_PER_SEGMENT = 2


class ClipReadError(ValueError):
    """A clip cannot be read; ``clip``, ``path`` and ``problem`` say which, where and why."""

    def __init__(self, clip: str, path: str | os.PathLike, problem: str):
        self.clip, self.path, self.problem = clip, str(path), problem
        super().__init__(clip, self.path, problem)

    def __str__(self) -> str:
        return f"clip {self.clip!r} ({self.path}): {self.problem}"

    @property
    def file(self) -> str:  # the name skip reports use (:class:`~minigpt4.datasets.errors.BadClip`)
        return self.path


def clip_name(path: str | os.PathLike) -> str:
    """The clip id an entry stands for: a folder's name, a file's name without its suffix.

    In Unicode normal form C, as annotations and other file systems write it (macOS hands
    out decomposed names), so the id of ``é`` is the same however the name was stored.
    """
    path = Path(path)
    return unicodedata.normalize("NFC", path.name if path.is_dir() else path.stem)


# PIL's modes of 16-bit greyscale (PNG); 16-bit RGB PNGs already open as 8-bit "RGB"
_DEEP_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def image_to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image``, whatever its bit depth.

    PIL's ``convert("RGB")`` clips 16-bit greyscale to 255 (an all-white picture); the top 8
    bits are the picture PIL itself keeps of a 16-bit RGB PNG, so greyscale gets the same.
    """
    if image.mode in _DEEP_GREY_MODES:
        grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")


def npy_load_problem(exc: Exception) -> str:
    """What ``np.load`` failing with ``exc`` means for a user."""
    if isinstance(exc, EOFError):
        return "the file is empty or cut off"
    if "pickle" in str(exc):  # numpy's words for any bytes without the .npy header
        return "no .npy header (is it a text file or another format?)"
    return str(exc)


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [size[0], size[1], 3]: the MER baseline's path.

    The baseline resized PIL images with torchvision's ``Resize((224, 224))``, which for a
    PIL image is PIL's bilinear resize (with its own antialiasing); this is that call.
    """
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    height, width = size
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))


def is_clip_entry(path: Path) -> bool:
    """Whether ``path`` looks like a clip: a folder, a ``.npy`` array or a video file."""
    return path.is_dir() or path.suffix.lower() in (ARRAY_SUFFIX, *VIDEO_SUFFIXES)


class ClipFrames(ABC):
    """The frames of one clip; ``read`` returns uint8 RGB [n, H, W, 3] for the given indices,
    or [n, size[0], size[1], 3] when a ``size`` is given."""

    def __init__(self, clip: str, path: Path):
        self.clip, self.path = clip, path

    @property
    @abstractmethod
    def num_frames(self) -> int: ...

    @abstractmethod
    def _decode(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """Yield the frames at sorted, distinct ``indices`` one by one, uint8 [H, W, 3]."""

    def read(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_frames):
            raise IndexError(f"clip {self.clip!r}: frame indices must lie in [0, {self.num_frames}), got {indices}")
        # samplings repeat frames (VideoMAE on short clips); decode each one once
        distinct, position = np.unique(indices, return_inverse=True)
        frames = [resize_frame(frame, size) for frame in self._decode(distinct)]
        return np.stack(frames)[position]

    def error(self, problem: str, path: str | os.PathLike | None = None) -> ClipReadError:
        return ClipReadError(self.clip, path or self.path, problem)


class FrameFolder(ClipFrames):
    """Image files in a folder, in name order; every frame must have the first frame's size."""

    def __init__(self, clip: str, path: Path):
        super().__init__(clip, path)
        self.files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise self.error(f"the folder holds no image frames ({', '.join(IMAGE_SUFFIXES)})")
        # headers only: sizes are known without decoding a pixel
        self.size = self._image_size(self.files[0])
        for file in self.files[1:]:
            size = self._image_size(file)
            if size != self.size:
                raise self.error(
                    f"frame is {size[0]}x{size[1]} but the first frame ({self.files[0].name}) is "
                    f"{self.size[0]}x{self.size[1]}; all frames of a clip must have one size",
                    file,
                )

    @property
    def num_frames(self) -> int:
        return len(self.files)

    def _image_size(self, file: Path) -> tuple[int, int]:
        try:
            with Image.open(file) as image:
                return image.size
        except (UnidentifiedImageError, OSError) as exc:
            raise self.error(f"unreadable image: {exc}", file) from exc

    def _decode(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        for index in indices:
            file = self.files[index]
            try:
                with Image.open(file) as image:
                    frame = np.asarray(image_to_rgb(image))
            except (UnidentifiedImageError, OSError) as exc:
                raise self.error(f"unreadable image: {exc}", file) from exc
            if frame.shape[1::-1] != self.size:
                raise self.error(f"frame size changed while reading (now {frame.shape[1]}x{frame.shape[0]})", file)
            yield frame


class FrameArray(ClipFrames):
    """A ``.npy`` array [T, H, W, 3] of uint8, of which only the read frames are loaded.

    The header is read through a memory map; frames are then read from the file one by one,
    not through the map, whose touched pages would stay in this process's memory until the
    clip is closed (a whole clip of huge frames, the very thing resizing while decoding avoids).
    """

    def __init__(self, clip: str, path: Path):
        super().__init__(clip, path)
        if path.stat().st_size == 0:
            raise self.error("the .npy file is empty (0 bytes)")
        try:
            self.array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise self.error(f"not a readable .npy array: {npy_load_problem(exc)}") from exc
        if not isinstance(self.array, np.ndarray):  # np.load reads any zip as an .npz archive, whatever its name
            self.array.close()
            raise self.error("an .npz archive (a zip of arrays), not a .npy array; save the frames with np.save")
        if self.array.ndim != 4 or self.array.shape[-1] != 3 or self.array.dtype != np.uint8:
            raise self.error(f"expected uint8 frames of shape (T, H, W, 3), got {self.array.dtype} {self.array.shape}")
        if self.array.shape[0] == 0:
            raise self.error("the array holds no frames")

    @property
    def num_frames(self) -> int:
        return self.array.shape[0]

    def _decode(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        if not self.array.flags.c_contiguous:  # a Fortran-order file: frames are not contiguous in it
            for index in indices:
                yield np.ascontiguousarray(self.array[index])
            return
        frame_shape = self.array.shape[1:]
        frame_size = int(np.prod(frame_shape))
        with open(self.path, "rb") as handle:
            for index in indices:
                handle.seek(self.array.offset + int(index) * frame_size)
                data = handle.read(frame_size)
                if len(data) != frame_size:
                    raise self.error(f"frame {index} is cut off (the file is shorter than its header says)")
                yield np.frombuffer(data, dtype=np.uint8).reshape(frame_shape)


class VideoFile(ClipFrames):
    """A video decoded with decord, one thread: parallelism comes from the loader's workers."""

    def __init__(self, clip: str, path: Path):
        super().__init__(clip, path)
        import decord  # here, not at the top: decord lacks wheels for some platforms (macOS arm64),
        # and folder and array clips work without it

        if path.stat().st_size == 0:
            raise self.error("the video file is empty (0 bytes)")
        try:
            self.reader = decord.VideoReader(str(path), num_threads=1)
        except (RuntimeError, decord.DECORDError) as exc:
            if not _has_video_stream(path):
                raise self.error("no video stream (the file holds only sound); pass the clip's video or frames") from exc
            raise self.error(f"unreadable video: {_first_line(exc)}") from exc
        if len(self.reader) == 0:
            raise self.error("the video has no frames")

    @property
    def num_frames(self) -> int:
        return len(self.reader)

    def _decode(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        import decord

        # one frame per call: decord reads on from where it stopped without seeking again,
        # and only one full-size frame is held at a time
        for index in indices.tolist():
            try:
                frame = self.reader.get_batch([index]).asnumpy()[0]
            except (RuntimeError, decord.DECORDError) as exc:
                raise self.error(f"frame {index} cannot be decoded: {_first_line(exc)}") from exc
            yield frame


def _has_video_stream(path: Path) -> bool:
    """Whether FFmpeg finds a video stream in ``path`` (True when it cannot tell: the file is
    then reported as an unreadable video)."""
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video)
    except av.FFmpegError:
        return True


def _first_line(exc: Exception) -> str:
    # decord appends a C++ stack trace; the first line says what went wrong
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def open_clip_frames(path: str | os.PathLike, clip: str | None = None) -> ClipFrames:
    """Open the clip at ``path`` (named ``clip``, by default :func:`clip_name`)."""
    path = Path(path)
    clip = clip or clip_name(path)
    if not path.exists():
        raise ClipReadError(clip, path, "no such file or folder")
    if path.is_dir():
        return FrameFolder(clip, path)
    if path.suffix.lower() == ARRAY_SUFFIX:
        return FrameArray(clip, path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFile(clip, path)
    raise ClipReadError(
        clip,
        path,
        f"not a clip: expected a folder of frames, a {ARRAY_SUFFIX} array or a video ({', '.join(VIDEO_SUFFIXES)})",
    )


def read_first_frame(video_path: str | os.PathLike) -> Image.Image:
    """The first frame of a clip (usually a video) as an RGB image, e.g. a clip's still image."""
    return Image.fromarray(open_clip_frames(video_path).read([0])[0])


def videomae_frame_indices(
    num_frames: int, num_segments: int = 8, frames_per_segment: int = MER_FRAMES_PER_SEGMENT
) -> list[int]:
    """The MER test sampling for VideoMAE: ``num_segments`` x ``frames_per_segment`` indices.

    With t = (T - frames_per_segment + 1) / num_segments, segment x starts at
    o = int(t / 2 + t * x) and contributes o, o + 1, ... capped at T - 1.  Clips too short
    for that (T <= num_segments + frames_per_segment - 1) start every segment at 0.
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    if num_frames > num_segments + frames_per_segment - 1:
        tick = (num_frames - frames_per_segment + 1) / num_segments
        offsets = [int(tick / 2 + tick * x) for x in range(num_segments)]
    else:
        offsets = [0] * num_segments
    return [min(o + i, num_frames - 1) for o in offsets for i in range(frames_per_segment)]


def uniform_frame_indices(num_frames: int, max_frames: int | None = None) -> list[int]:
    """Every frame, or ``max_frames`` of them as the MAE-Face extraction sampled:
    ``linspace(0, T - 1, max_frames)`` truncated to integers, first and last frame included."""
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if max_frames is None or max_frames >= num_frames:
        return list(range(num_frames))
    return np.linspace(0, num_frames - 1, max_frames).astype(np.int64).tolist()
