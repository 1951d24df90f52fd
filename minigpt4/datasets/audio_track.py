"""The sound of one clip as a mono float waveform at the rate an audio encoder wants.

A clip is a video whose first audio track is used, or an audio file (``.wav`` and the other
:data:`AUDIO_SUFFIXES`).  PyAV (FFmpeg) decodes it and its ``AudioResampler`` converts any
sample format and rate into float32 at the requested rate; the mono waveform is the mean of
the channels (as librosa's and torchaudio's mono conversions).  Every problem (no audio track, no samples, a file
FFmpeg cannot read, a codec or sample format it cannot decode) is a
:class:`~minigpt4.datasets.frames.ClipReadError` that names the clip, the file and what is
wrong: a clip without sound is reported, never filled with silence.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from minigpt4.datasets.frames import VIDEO_SUFFIXES, ClipReadError, clip_name

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg")


def is_audio_clip_entry(path: Path) -> bool:
    """Whether ``path`` is a file whose sound can be a clip's: a video or an audio file."""
    return path.is_file() and path.suffix.lower() in (*VIDEO_SUFFIXES, *AUDIO_SUFFIXES)


def read_audio_track(path: str | os.PathLike, sample_rate: int, clip: str | None = None) -> np.ndarray:
    """The first audio track of ``path`` as float32 mono samples at ``sample_rate``: shape (n,), n > 0."""
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
            chunks = []
            for frame in container.decode(stream):
                chunks += [out.to_ndarray().mean(axis=0) for out in resampler.resample(frame)]
            chunks += [out.to_ndarray().mean(axis=0) for out in resampler.resample(None)]  # what the filter still holds
    except av.FFmpegError as exc:
        raise ClipReadError(clip, path, f"audio cannot be decoded: {exc}") from exc
    if not chunks or sum(len(chunk) for chunk in chunks) == 0:
        raise ClipReadError(clip, path, "the audio track holds no samples")
    return np.concatenate(chunks).astype(np.float32, copy=False)
