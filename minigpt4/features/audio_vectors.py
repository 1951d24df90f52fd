"""One clip's HuBERT vector from its sound, window by window: the steps
``extract_audio_embedding.py`` runs on every clip, for a waveform in memory (the detect job's
window of sound) as for a recording streamed from its file.

1. **Statistics.**  HuBERT-large's feature extractor normalises a clip to zero mean and unit
   variance over the whole clip.  :func:`waveform_stats` gathers the count, mean and variance
   in float64 over fixed blocks of :data:`STATS_BLOCK` samples (merged as Chan et al.'s
   parallel variance), so the numbers are the same whether the samples come as one array or
   in the pieces a decoder gives.
2. **Windows.**  The clip is cut into the encoder's equal-length windows
   (:meth:`HubertAudioEncoder.windows`); each is normalised (:func:`normalisation`: the
   feature extractor's ``(x - mean) / sqrt(var + 1e-7)`` in float32) and encoded alone.
3. **Vector.**  :class:`ClipFrames` keeps per window the float64 sum of its frame vectors
   (``UTTERANCE``: the clip's vector is their sum over the frame count, the mean over every
   frame of the clip) or the frame vectors themselves (``FRAME``: (T, D), the windows' frames
   one after the other).

Memory therefore follows the window, not the recording.  :func:`audio_vector` is the three
steps on a waveform in memory; the command's loop (:mod:`minigpt4.features.audio_extract`)
runs the same functions on windows streamed from each file, and gives the same vector
(exactly, with its default of one window per forward pass).  :func:`audio_settings` gives
the fingerprint the command's output folder records.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from minigpt4.datasets.audio_track import regroup
from minigpt4.features.clip_vectors import FeatureLevel, encoder_settings
from minigpt4.models.hubert_encoder import HubertAudioEncoder

STATS_BLOCK = 1 << 16  # samples per block of the statistics (4 s at 16 kHz)
NORMALISE_EPSILON = 1e-7  # Wav2Vec2FeatureExtractor's, added to the variance


def audio_settings(encoder: HubertAudioEncoder, *, feature_level: FeatureLevel | str = FeatureLevel.UTTERANCE) -> dict:
    """What ``extract_audio_embedding.py`` records in ``extraction.json`` for ``encoder`` (its
    weights, layer and window) at ``feature_level``."""
    return encoder_settings(
        encoder,  # its state dict: the HuBERT weights
        feature_level=FeatureLevel(feature_level).value,
        layer=encoder.layer,
        normalize=encoder.normalizes,
        sample_rate=encoder.sample_rate,
        window_samples=encoder.window_samples,
    )


@dataclass(frozen=True)
class WaveformStats:
    """A clip's sample count, mean and (population) variance."""

    num_samples: int
    mean: float
    variance: float


def waveform_stats(chunks: Iterable[np.ndarray]) -> WaveformStats:
    """The statistics of the samples of ``chunks`` (float32 pieces of one clip, in order)."""
    count, mean, squares = 0, 0.0, 0.0  # squares: sum of squared deviations from the mean
    for block in regroup(chunks, itertools.repeat(STATS_BLOCK)):
        values = block.astype(np.float64)
        block_mean = float(values.mean())
        block_squares = float(np.square(values - block_mean).sum())
        total = count + len(values)
        delta = block_mean - mean
        mean += delta * len(values) / total
        squares += block_squares + delta * delta * count * len(values) / total
        count = total
    return WaveformStats(count, mean, squares / count if count else 0.0)


@dataclass(frozen=True)
class Normalisation:
    """A clip's preparation for the model, ``(x - mean) / scale`` in float32 (plain numbers,
    so it crosses process bounds); mean 0 and scale 1 leave the samples as they are."""

    mean: np.float32
    scale: np.float32

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        return (samples - self.mean) / self.scale


def normalisation(encoder: HubertAudioEncoder, stats: WaveformStats) -> Normalisation:
    """The whole clip's normalisation when the encoder's folder asks for it (as
    ``Wav2Vec2FeatureExtractor`` computes it), else none."""
    if not encoder.normalizes:
        return Normalisation(np.float32(0), np.float32(1))
    return Normalisation(np.float32(stats.mean), np.sqrt(np.float32(stats.variance) + np.float32(NORMALISE_EPSILON)))


class ClipFrames:
    """One clip's encoded windows, in any order, until its vector is asked for."""

    def __init__(self, num_windows: int, feature_level: FeatureLevel | str):
        self.num_windows = num_windows
        self.level = FeatureLevel(feature_level)
        self.parts: dict[int, tuple[torch.Tensor, int]] = {}  # window -> (frame sum or frames, frame count)

    def add(self, window: int, frames: torch.Tensor) -> None:
        """The frame vectors [T, D] of window ``window``."""
        frames = frames.float().cpu()
        kept = frames.double().sum(dim=0) if self.level is FeatureLevel.UTTERANCE else frames
        self.parts[window] = (kept, len(frames))

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.num_windows

    def vector(self) -> np.ndarray:
        """(D,) at ``UTTERANCE``, (T, D) at ``FRAME``; float32."""
        ordered = [self.parts[window] for window in range(self.num_windows)]
        if self.level is FeatureLevel.FRAME:
            return torch.cat([frames for frames, _ in ordered]).numpy()
        total = sum(count for _, count in ordered)
        return (torch.stack([frame_sum for frame_sum, _ in ordered]).sum(dim=0) / total).float().numpy()


def encode_windows(
    encoder: HubertAudioEncoder, windows: Sequence[np.ndarray], device: str | torch.device
) -> Iterator[tuple[int, torch.Tensor]]:
    """(position in ``windows``, frame vectors [T, D]) of prepared windows; windows of one
    length share a forward pass (lengths differ by a sample between a clip's windows)."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for position, window in enumerate(windows):
        by_length[len(window)].append(position)
    for positions in by_length.values():
        batch = torch.from_numpy(np.stack([windows[position] for position in positions])).to(device)
        yield from zip(positions, encoder(batch))


def audio_vector(
    encoder: HubertAudioEncoder,
    waveform: np.ndarray,
    *,
    feature_level: FeatureLevel | str = FeatureLevel.UTTERANCE,
    windows_per_forward: int = 1,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """One clip's HuBERT vector from its sound, float32 mono (n,) at ``encoder.sample_rate``
    (what :func:`~minigpt4.datasets.audio_track.read_audio_track` gives): what
    ``extract_audio_embedding.py`` writes for the clip.  ``encoder`` must be in eval mode on
    ``device``; at most ``windows_per_forward`` windows share a forward pass."""
    waveform = np.asarray(waveform, dtype=np.float32)  # the decoder's type; a no-op for its samples
    if waveform.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got shape {waveform.shape}")
    stats = waveform_stats([waveform])
    normalise = normalisation(encoder, stats)
    spans = encoder.windows(stats.num_samples)
    frames = ClipFrames(len(spans), feature_level)
    windows = (normalise(waveform[start:end]) for start, end in spans)
    for first in itertools.count(0, windows_per_forward):
        group = list(itertools.islice(windows, windows_per_forward))
        if not group:
            break
        for position, window_frames in encode_windows(encoder, group, device):
            frames.add(first + position, window_frames)
    return frames.vector()
