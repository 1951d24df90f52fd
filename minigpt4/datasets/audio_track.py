"""The sound of one clip as a mono float waveform at the rate an audio encoder wants.

A clip is a video whose first audio track is used, or an audio file (``.wav`` and the other
:data:`AUDIO_SUFFIXES`).  PyAV (FFmpeg) decodes it and its ``AudioResampler`` converts any
sample format and rate into float32 at the requested rate; the mono waveform is the mean of
the channels (as librosa's and torchaudio's mono conversions).  :func:`audio_chunks` gives
the samples as they are decoded, so a long recording need never be in memory at once
(:func:`regroup` cuts them into windows); :func:`read_audio_track` joins them.  Every problem
(no audio track, no samples, a file FFmpeg cannot read, a codec or sample format it cannot
decode) is a
:class:`~minigpt4.datasets.frames.ClipReadError` that names the clip, the file and what is
wrong: a clip without sound is reported, never filled with silence.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

from minigpt4.datasets.frames import VIDEO_SUFFIXES, ClipReadError, clip_name

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg")


def is_audio_clip_entry(path: Path) -> bool:
    """Whether ``path`` is a file whose sound can be a clip's: a video or an audio file."""
    return path.is_file() and path.suffix.lower() in (*VIDEO_SUFFIXES, *AUDIO_SUFFIXES)


def audio_chunks(path: str | os.PathLike, sample_rate: int, clip: str | None = None) -> Iterator[np.ndarray]:
    """The first audio track of ``path`` as float32 mono pieces at ``sample_rate``, as FFmpeg
    decodes them: a long recording never needs to be in memory at once.  Problems found
    before the first piece (no file, no audio track, no decoder) and while decoding are
    :class:`~minigpt4.datasets.frames.ClipReadError`; so is a track without samples."""
    path = Path(path)
    clip = clip or clip_name(path)
    if not path.is_file():
        raise ClipReadError(clip, path, "no such file")
    if path.suffix.lower() not in (*VIDEO_SUFFIXES, *AUDIO_SUFFIXES):
        raise ClipReadError(
            clip, path, f"not a clip with sound: expected a video or an audio file ({', '.join(AUDIO_SUFFIXES)})"
        )
    if path.stat().st_size == 0:
        raise ClipReadError(clip, path, "the file is empty (0 bytes)")
    num_samples = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ClipReadError(clip, path, "no audio track (the file holds no sound to encode)")
            stream = container.streams.audio[0]
            if stream.codec_context is None:  # FFmpeg knows no decoder for the track's codec / sample format
                problem = "unsupported audio codec or sample format: FFmpeg has no decoder for it"
                raise ClipReadError(clip, path, problem)
            # planar float at the target rate, channels kept: the mono mix is their mean (below),
            # not FFmpeg's down-mix matrix, which scales a stereo pair by 1/sqrt(2) per channel
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            for frame in itertools.chain(container.decode(stream), [None]):  # None: what the resampler still holds
                for out in resampler.resample(frame):
                    mono = out.to_ndarray().mean(axis=0).astype(np.float32, copy=False)
                    num_samples += len(mono)
                    yield mono
    except av.FFmpegError as exc:
        raise ClipReadError(clip, path, f"audio cannot be decoded: {exc}") from exc
    if num_samples == 0:
        raise ClipReadError(clip, path, "the audio track holds no samples")


def read_audio_track(path: str | os.PathLike, sample_rate: int, clip: str | None = None) -> np.ndarray:
    """The whole first audio track of ``path`` (:func:`audio_chunks` joined): float32 (n,), n > 0."""
    return np.concatenate(list(audio_chunks(path, sample_rate, clip)))


def regroup(chunks: Iterable[np.ndarray], lengths: Iterable[int]) -> Iterator[np.ndarray]:
    """The samples of ``chunks`` cut into consecutive pieces of ``lengths``, each piece read
    as soon as its samples have arrived, so at most one piece and one chunk are held.  Where
    the samples end inside a piece, that shorter piece comes last; where ``lengths`` ends,
    the remaining samples are left unread."""
    chunks = iter(chunks)
    held: list[np.ndarray] = []  # samples not yet given out, in order
    held_count = 0
    for length in lengths:
        while held_count < length:
            chunk = next(chunks, None)
            if chunk is None:
                break
            held.append(chunk)
            held_count += len(chunk)
        if held_count == 0:
            return
        joined = np.concatenate(held) if len(held) > 1 else held[0]
        piece, rest = joined[:length], joined[length:]
        held, held_count = ([rest] if len(rest) else []), len(rest)
        yield piece


def read_audio_window(
    path: str | os.PathLike, start_s: float | None, end_s: float | None, sample_rate: int, clip: str | None = None
) -> np.ndarray:
    """The first audio track of ``path`` in ``[start_s, end_s)`` (seconds on the file's timeline;
    None: from its start / to its end) as float32 mono samples at ``sample_rate``: shape (n,), n > 0.

    Decoding starts at the seek point before ``start_s`` and stops after ``end_s``, so a window
    of a long recording costs its own length.  The resampler's timestamps place each sample:
    sample k lies at ``start_s + k / sample_rate``; a window the track covers only in part gives
    that part (never padding).  Problems are :class:`ClipReadError` as in :func:`read_audio_track`.
    """
    path = Path(path)
    clip = clip or clip_name(path)
    first = 0 if start_s is None else round(start_s * sample_rate)  # sample numbers on the file's timeline
    last = None if end_s is None else round(end_s * sample_rate)
    pieces, next_at = [], first
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ClipReadError(clip, path, "no audio track (the file holds no sound to encode)")
            stream = container.streams.audio[0]
            if stream.codec_context is None:
                raise ClipReadError(clip, path, "unsupported audio codec or sample format: FFmpeg has no decoder for it")
            if start_s:
                container.seek(int(start_s / stream.time_base), stream=stream, backward=True, any_frame=False)
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)  # mono = mean of the channels, as above
            for frame in _until(container.decode(stream), math.inf if end_s is None else end_s):
                for out in resampler.resample(frame):
                    at = round(out.time * sample_rate) if out.time is not None else next_at
                    samples = out.to_ndarray().mean(axis=0)
                    lo, hi = max(first - at, 0), len(samples) if last is None else min(last - at, len(samples))
                    if hi > lo:
                        pieces.append(samples[lo:hi])
                    next_at = at + len(samples)
    except av.FFmpegError as exc:
        raise ClipReadError(clip, path, f"audio cannot be decoded: {exc}") from exc
    if not pieces:
        raise ClipReadError(clip, path, f"the audio track holds no samples between {start_s} s and {end_s} s")
    return np.concatenate(pieces).astype(np.float32, copy=False)


def _until(frames, end_s: float):
    """Decoded frames up to the first one starting after ``end_s``, then None (the resampler's flush)."""
    for frame in frames:
        if frame.time is not None and frame.time > end_s:
            break
        yield frame
    yield None
