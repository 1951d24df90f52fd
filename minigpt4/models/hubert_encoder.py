"""HuBERT as the audio encoder of the third feature stream (SPEC sections 4 and 9).

A Hugging Face ``HubertModel`` folder (any HuBERT: the upstream used a large Chinese one)
turns a clip's mono waveform into frame vectors, 50 per second at 16 kHz, taken from one
layer of its hidden states.  When the folder holds a ``preprocessor_config.json`` its
``Wav2Vec2FeatureExtractor`` prepares the waveform (``do_normalize``: zero mean, unit
variance over the whole clip, as the model was trained); without one the waveform is fed
as it is.

Long clips run in windows so memory stays bounded: a clip of n samples is cut into
ceil(n / window_samples) windows of equal length (they differ by at most one sample, so
no short tail window exists), each window is encoded on its own, and the frame vectors of
the windows are concatenated in time.  The mean over a clip's frames is therefore the
frame-count-weighted mean of the window means; a clip no longer than one window is
encoded in one piece, exactly as ``HubertModel`` would encode it.  Windows of equal length,
from one clip or several, run as one batch.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import HubertModel, Wav2Vec2FeatureExtractor

from minigpt4.models.base_model import quiet_transformers

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 16_000  # what every released HuBERT was trained on
PREPROCESSOR_CONFIG = "preprocessor_config.json"


class HubertAudioEncoder(nn.Module):
    """Waveforms -> frame vectors [T, D] of layer ``layer`` of L transformer layers (kept as
    its non-negative index): L (or -1, the default) is the model's output
    ``last_hidden_state``, after the final layer norm of HuBERT-large-style models;
    0 <= k < L is ``hidden_states[k]``, the input of
    transformer layer k (0: the projected conv features plus position embedding).  The last
    layer is not read from ``hidden_states``: transformers 4 put the normed output there,
    transformers 5 the un-normed one.

    ``feature_extractor`` is None when the waveform needs no preparation.
    """

    def __init__(
        self,
        hubert: HubertModel,
        feature_extractor: Wav2Vec2FeatureExtractor | None = None,
        layer: int = -1,
        window_seconds: float = 30.0,
    ):
        super().__init__()
        self.hubert = hubert.eval()
        self.feature_extractor = feature_extractor
        self.num_layers = hubert.config.num_hidden_layers
        num_states = self.num_layers + 1
        if not -num_states <= layer < num_states:
            raise ValueError(
                f"layer {layer} out of range: this HuBERT has {num_states} hidden-state layers "
                f"(0..{self.num_layers}, or -{num_states}..-1 from the end)"
            )
        self.layer = layer % num_states  # one name per layer: -1 and the last index are the same vectors
        self.sample_rate = feature_extractor.sampling_rate if feature_extractor is not None else DEFAULT_SAMPLE_RATE
        self.window_samples = round(window_seconds * self.sample_rate)
        # two minimum-length windows must fit in one, so no window of a split is too short
        if self.window_samples < 2 * self.min_samples:
            raise ValueError(
                f"window_seconds {window_seconds}: a window must hold at least "
                f"{2 * self.min_samples / self.sample_rate:.3f} s ({2 * self.min_samples} samples)"
            )

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, layer: int = -1, window_seconds: float = 30.0
    ) -> "HubertAudioEncoder":
        """The HuBERT of a local Hugging Face folder (``config.json`` + weights)."""
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: not a Hugging Face model folder (no config.json)")
        with quiet_transformers():
            hubert = HubertModel.from_pretrained(folder, local_files_only=True)
        feature_extractor = None
        if (folder / PREPROCESSOR_CONFIG).is_file():
            feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder, local_files_only=True)
        else:
            logger.info("%s has no %s: waveforms are fed without normalisation", folder, PREPROCESSOR_CONFIG)
        return cls(hubert, feature_extractor, layer, window_seconds)

    @property
    def feature_dim(self) -> int:
        return self.hubert.config.hidden_size

    @property
    def min_samples(self) -> int:
        """The receptive field of the convolutional front end: the shortest input giving one frame."""
        samples = 1
        for kernel, stride in zip(reversed(self.hubert.config.conv_kernel), reversed(self.hubert.config.conv_stride)):
            samples = (samples - 1) * stride + kernel
        return samples

    def prepare(self, waveform: np.ndarray) -> np.ndarray:
        """float32 (n,) at ``sample_rate`` -> the model's input values (n,)."""
        if self.feature_extractor is None:
            return waveform
        return self.feature_extractor(waveform, sampling_rate=self.sample_rate, return_tensors="np").input_values[0]

    def windows(self, num_samples: int) -> list[tuple[int, int]]:
        """[start, end) of the equal-length windows a clip of ``num_samples`` is cut into."""
        if num_samples < self.min_samples:
            raise ValueError(
                f"{num_samples} samples is shorter than the {self.min_samples} samples "
                f"({1000 * self.min_samples / self.sample_rate:.0f} ms) HuBERT needs for one frame"
            )
        count = math.ceil(num_samples / self.window_samples)
        bounds = np.linspace(0, num_samples, count + 1).round().astype(int)
        return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))

    @torch.inference_mode()
    def forward(self, waveforms: Sequence[np.ndarray], max_windows_per_forward: int = 8) -> list[torch.Tensor]:
        """Each waveform (n_i,) -> its frame vectors [T_i, D] on the model's device."""
        device = next(self.hubert.parameters()).device
        inputs = [torch.from_numpy(self.prepare(waveform)) for waveform in waveforms]
        by_length: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # length -> (clip, window, start)
        clip_windows = [self.windows(len(values)) for values in inputs]
        for clip, spans in enumerate(clip_windows):
            for window, (start, end) in enumerate(spans):
                by_length[end - start].append((clip, window, start))
        frames: dict[tuple[int, int], torch.Tensor] = {}
        for length, members in by_length.items():
            for first in range(0, len(members), max_windows_per_forward):
                group = members[first : first + max_windows_per_forward]
                batch = torch.stack([inputs[clip][start : start + length] for clip, _, start in group]).to(device)
                output = self.hubert(batch, output_hidden_states=self.layer < self.num_layers)
                states = output.last_hidden_state if self.layer == self.num_layers else output.hidden_states[self.layer]
                for (clip, window, _), vectors in zip(group, states):
                    frames[clip, window] = vectors
        return [torch.cat([frames[clip, w] for w in range(len(spans))]) for clip, spans in enumerate(clip_windows)]
