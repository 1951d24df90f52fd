"""Small synthetic clips for the frame-reading and extraction tests."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def smooth_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [T, H, W, 3] of slowly moving colour waves: every frame differs, codecs cope."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    waves = rng.uniform(0.3, 1.5, size=(3, 3))
    frames = [
        np.stack([128 + 100 * np.sin(2 * np.pi * (fx * x + fy * y) + phase + 0.3 * t) for fx, fy, phase in waves], -1)
        for t in range(num_frames)
    ]
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray) -> Path:
    """MPEG-4 at a high bit rate, one thread, so the file is deterministic and nearly lossless."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt, stream.bit_rate, stream.thread_count = "yuv420p", 50_000_000, 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def tones(rate: int, seconds: float = 1.0) -> np.ndarray:
    """Three tones under a Hann window: all content well below 8 kHz, so resampling keeps it."""
    t = np.arange(round(rate * seconds)) / rate
    wave = sum(a * np.sin(2 * np.pi * hz * t + phase) for a, hz, phase in ((0.3, 220, 0), (0.2, 700, 1), (0.1, 1500, 2)))
    return (wave * np.hanning(len(t))).astype(np.float32)


def write_wav(path: Path, channels: np.ndarray, rate: int, codec: str = "pcm_f32le") -> Path:
    """``channels`` float32 [C, n] (C = 1 or 2) as a WAV file."""
    layout = "mono" if len(channels) == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels.T.reshape(1, -1)), format="flt", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
