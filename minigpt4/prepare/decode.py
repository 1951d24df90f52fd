"""Frames by index, upright, with each frame's timestamp: a video file or an array in memory.

Clips are cut by timestamps, not frame counts, so variable-frame-rate recordings cut right:
every frame carries its presentation time in seconds.  The face pipeline (faces.py) reads any
:class:`FrameSource`: :class:`VideoSource` (a file, what the prepare job reads) or
:class:`ArrayFrames` (frames already decoded, what a caller that decodes windows itself holds).

Decord decodes (seekable, batched).  It does not honour rotation metadata correctly: its
bundled FFmpeg auto-rotates the picture while decord keeps the coded size, so a 90-degree
video comes back garbled or fails to decode.  A video whose stream carries a display rotation
(a phone held upright, say) is therefore decoded with PyAV, which returns the coded picture
and its rotation, and turned upright here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import av
import numpy as np

from minigpt4.datasets.frames import ClipReadError


class FrameSource(Protocol):
    """Frames with their presentation times: what the face pipeline reads."""

    timestamps: np.ndarray  # (n,) float64 seconds, one per frame, increasing

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 RGB [len(indices), H, W, 3], upright, for increasing frame ``indices``."""


class ArrayFrames:
    """Frames in memory: uint8 RGB [n, H, W, 3] and their times (seconds, increasing)."""

    def __init__(self, frames: np.ndarray, timestamps: Sequence[float]):
        self.frames = np.asarray(frames)
        self.timestamps = np.asarray(timestamps, dtype=np.float64)
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames: expected uint8 [n, H, W, 3], got {self.frames.dtype} {list(self.frames.shape)}")
        if self.timestamps.shape != (len(self.frames),) or np.any(np.diff(self.timestamps) <= 0):
            raise ValueError(f"timestamps: expected {len(self.frames)} increasing times, one per frame")

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self.frames[np.asarray(indices, dtype=np.int64)]


def read_in_chunks(source: FrameSource, indices: Sequence[int], chunk: int) -> Iterator[tuple[list[int], np.ndarray]]:
    """(indices, frames) for ``indices`` in pieces of ``chunk``: memory stays flat on long clips."""
    for start in range(0, len(indices), chunk):
        part = [int(i) for i in indices[start : start + chunk]]
        yield part, source.read(part)


def rotation_of(frame: av.VideoFrame) -> int:
    """The frame's counter-clockwise display rotation in degrees: 0, 90, 180 or 270."""
    return int(round((frame.rotation or 0) / 90.0)) % 4 * 90


def upright(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as uint8 RGB [H, W, 3], turned upright by its display rotation (a
    stream read as it arrives, frame by frame; :class:`VideoSource` reads files)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = rotation_of(frame) // 90
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


class VideoSource:
    """One video file: ``timestamps`` (seconds, one per frame, increasing) and ``read``."""

    def __init__(self, path: str | os.PathLike, name: str):
        self.path, self.name = Path(path), name
        if not self.path.is_file():
            raise self._error("no such file")
        if self.path.stat().st_size == 0:
            raise self._error("the video file is empty (0 bytes)")
        self.rotation = self._probe_rotation()
        self._pts, self._time_base = self._demux_pts()
        # each frame's time exactly as PyAV gives it while decoding (pts x time base, rounded
        # once), so a stream read live cuts the same windows and interpolates the same faces
        self.timestamps = np.array([float(pts * self._time_base) for pts in self._pts.tolist()], dtype=np.float64)
        if not self.rotation:
            self._reader = self._open_decord()
            if len(self._reader) != len(self.timestamps):  # decord counts frames its own way: keep its times
                self.timestamps = self._reader.get_frame_timestamp(np.arange(len(self._reader)))[:, 0].astype(np.float64)
        if len(self.timestamps) == 0:
            raise self._error("the video has no frames")

    @property
    def num_frames(self) -> int:
        return len(self.timestamps)

    @property
    def duration(self) -> float:
        """End of the last frame: its start plus the median frame interval."""
        step = float(np.median(np.diff(self.timestamps))) if self.num_frames > 1 else 0.0
        return float(self.timestamps[-1]) + step

    def _error(self, problem: str) -> ClipReadError:
        return ClipReadError(self.name, self.path, problem)

    def _probe_rotation(self) -> int:
        """Counter-clockwise display rotation in degrees (0, 90, 180, 270), from the first frame."""
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    kinds = sorted({stream.type for stream in container.streams}) or ["no streams"]
                    raise self._error(f"the file has no video stream (it holds: {', '.join(kinds)})")
                first = next(container.decode(video=0), None)
        except av.FFmpegError as exc:
            raise self._error(f"unreadable video: {exc}") from exc
        if first is None:
            raise self._error("no video frame can be decoded")
        return rotation_of(first)

    def _demux_pts(self) -> tuple[np.ndarray, object]:
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
                return np.asarray(pts, dtype=np.int64), stream.time_base
        except av.FFmpegError as exc:
            raise self._error(f"unreadable video: {exc}") from exc

    def _open_decord(self):
        import decord  # imported here as in minigpt4.datasets.frames: not every platform has it

        try:
            return decord.VideoReader(str(self.path), num_threads=1)
        except (RuntimeError, decord.DECORDError) as exc:
            raise self._error(f"unreadable video: {str(exc).strip().splitlines()[0]}") from exc

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 RGB [n, H, W, 3], upright, for increasing frame ``indices``."""
        indices = [int(i) for i in indices]
        if self.rotation:
            frames = self._read_pyav(indices)
            return np.ascontiguousarray(np.rot90(frames, k=self.rotation // 90, axes=(1, 2)))
        import decord

        try:
            return self._reader.get_batch(indices).asnumpy()
        except (RuntimeError, decord.DECORDError) as exc:
            raise self._error(f"frames {indices[0]}..{indices[-1]} cannot be decoded") from exc

    def _read_pyav(self, indices: list[int]) -> np.ndarray:
        wanted = {int(self._pts[i]): position for position, i in enumerate(indices)}
        frames: list[np.ndarray | None] = [None] * len(indices)
        last = int(self._pts[indices[-1]])
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                container.seek(int(self._pts[indices[0]]), stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.pts in wanted:
                        frames[wanted[frame.pts]] = frame.to_ndarray(format="rgb24")
                    if frame.pts is not None and frame.pts >= last:
                        break
        except av.FFmpegError as exc:
            raise self._error(f"frames {indices[0]}..{indices[-1]} cannot be decoded: {exc}") from exc
        missing = [i for i, frame in zip(indices, frames) if frame is None]
        if missing:
            raise self._error(f"frames {missing[:5]} cannot be decoded")
        return np.stack(frames)
