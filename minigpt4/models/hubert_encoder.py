"""HuBERT as the audio encoder of the third feature stream (SPEC sections 4 and 9).

A Hugging Face HuBERT folder (any HuBERT: the upstream used a large Chinese one) turns
windows of a clip's mono waveform into frame vectors, 50 per second at 16 kHz, taken from one
layer of its hidden states.  When the folder holds a ``preprocessor_config.json`` its
``Wav2Vec2FeatureExtractor`` says how the waveform is prepared (``do_normalize``: zero mean,
unit variance over the whole clip, as the model was trained; done by
:mod:`minigpt4.features.audio_vectors`, window by window); without one the waveform is fed as
it is.

Loading is strict, as for every other weight file of the project: ``config.json`` must
describe a HuBERT, and the weights (``model.safetensors``, or ``pytorch_model.bin`` read
through :func:`~minigpt4.common.checkpoint_io.load_checkpoint`, so with ``weights_only`` unless
``trust_checkpoint``) must hold every tensor of the model in its shape.  transformers would
fill a missing tensor with random values and load on, so a folder of another model, or one
missing a layer, would give vectors of a random network (and other ones on every run).

Long clips run in windows so memory stays bounded: a clip of n samples is cut into
ceil(n / window_samples) windows of equal length (they differ by at most one sample, so
no short tail window exists), each window is encoded on its own, and the frame vectors of
the windows follow each other in time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from minigpt4.common.checkpoint_io import CheckpointError, LoadReport, read_state_dict
from minigpt4.models.base_model import quiet_transformers

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 16_000  # what every released HuBERT was trained on
PREPROCESSOR_CONFIG = "preprocessor_config.json"
# the weight files of a Hugging Face folder, in transformers' order of preference
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HUBERT_MODEL_TYPE = "hubert"
# the SpecAugment embedding only training uses (masked time steps); inference never reads it,
# and converted checkpoints may lack it: then it is set to zeros, not left random, so the
# model's weights (and the digest an output folder records) are the folder's alone
TRAINING_ONLY = ("masked_spec_embed",)


def check_window_seconds(window_seconds: float) -> None:
    """``--window_seconds`` must be a positive, finite number of seconds."""
    if isinstance(window_seconds, bool) or not isinstance(window_seconds, (int, float)):
        raise ValueError(f"--window_seconds must be a number of seconds, got {window_seconds!r}")
    if not math.isfinite(window_seconds) or window_seconds <= 0:
        raise ValueError(f"--window_seconds must be a positive, finite number of seconds, got {window_seconds}")


class HubertAudioEncoder(nn.Module):
    """Windows [B, L] -> frame vectors [B, T, D] of layer ``layer`` of L transformer layers
    (kept as its non-negative index): L (or -1, the default) is the model's output
    ``last_hidden_state``, after the final layer norm of HuBERT-large-style models;
    0 <= k < L is ``hidden_states[k]``, the input of transformer layer k (0: the projected conv
    features plus position embedding).  The last layer is not read from ``hidden_states``:
    transformers 4 put the normed output there, transformers 5 the un-normed one.

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
        check_window_seconds(window_seconds)
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
                f"--window_seconds {window_seconds}: a window must hold at least "
                f"{2 * self.min_samples / self.sample_rate:.3f} s ({2 * self.min_samples} samples)"
            )

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, layer: int = -1, window_seconds: float = 30.0, trust_checkpoint: bool = False
    ) -> "HubertAudioEncoder":
        """The HuBERT of a local Hugging Face folder (``config.json`` + weights), every tensor
        loaded from the folder (see the module's docstring)."""
        check_window_seconds(window_seconds)  # before seconds of loading
        folder = Path(folder).expanduser()
        hubert = load_hubert(folder, trust_checkpoint)
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
    def normalizes(self) -> bool:
        """Whether a clip is brought to zero mean and unit variance before it is encoded."""
        return self.feature_extractor is not None and bool(self.feature_extractor.do_normalize)

    @property
    def min_samples(self) -> int:
        """The receptive field of the convolutional front end: the shortest input giving one frame."""
        samples = 1
        for kernel, stride in zip(reversed(self.hubert.config.conv_kernel), reversed(self.hubert.config.conv_stride)):
            samples = (samples - 1) * stride + kernel
        return samples

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
    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Prepared windows of one length [B, L] -> their frame vectors [B, T, D] of ``layer``."""
        output = self.hubert(windows, output_hidden_states=self.layer < self.num_layers)
        return output.last_hidden_state if self.layer == self.num_layers else output.hidden_states[self.layer]


def load_hubert(folder: Path, trust_checkpoint: bool = False) -> HubertModel:
    """The ``HubertModel`` of ``folder`` with every one of its tensors from the folder's weights."""
    what = f"HuBERT folder {folder}"
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(f"{what}: config.json is not a JSON object of model settings: {exc}") from exc
    if model_type != HUBERT_MODEL_TYPE:
        raise CheckpointError(
            f"{what}: config.json describes a {model_type!r} model, not a HuBERT (model_type "
            f"{HUBERT_MODEL_TYPE!r}); pass the folder of a Hugging Face HuBERT"
        )
    tensors = _read_weights(folder, what, trust_checkpoint)
    with quiet_transformers(), _transformers_logs_off():  # the problems are raised below, in one line
        config = HubertConfig.from_pretrained(folder, local_files_only=True)
        # transformers maps older layouts (a ``hubert.`` prefix, weight-norm ``weight_g`` / ``weight_v``)
        hubert, info = HubertModel.from_pretrained(
            None, config=config, state_dict=tensors, output_loading_info=True, ignore_mismatched_sizes=True
        )
    missing = sorted(name for name in info["missing_keys"] if not name.startswith(TRAINING_ONLY))
    mismatched = sorted(f"{name}: file {tuple(file)} vs model {tuple(model)}" for name, file, model in info["mismatched_keys"])
    unexpected = sorted(info["unexpected_keys"])
    loaded = [name for name in hubert.state_dict() if name not in info["missing_keys"]]
    report = LoadReport(loaded, missing, unexpected, mismatched)
    if missing or mismatched:
        raise CheckpointError(f"{what}: the weights do not fit its HuBERT: {report.describe()}")
    with torch.no_grad():
        for name, tensor in hubert.state_dict().items():
            if name in info["missing_keys"]:  # training-only, by the check above
                tensor.zero_()
    if unexpected:
        logger.warning("%s: tensors HuBERT has no place for, not used: %s", what, ", ".join(unexpected))
    return hubert


def _read_weights(folder: Path, what: str, trust_checkpoint: bool) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weight file, by name."""
    file = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if file is None:
        raise CheckpointError(f"{what}: no weights ({' or '.join(WEIGHT_FILES)}; sharded weights are not read)")
    if file.suffix == ".safetensors":
        try:
            return load_file(file)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{what}: {file.name} is not a readable safetensors file: {exc}") from exc
    return read_state_dict(file, what, trust_checkpoint)


@contextlib.contextmanager
def _transformers_logs_off():
    """transformers' own loading report off: its problems are this module's errors instead."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
