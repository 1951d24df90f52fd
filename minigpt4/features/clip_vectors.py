"""One clip's FaceMAE or VideoMAE vector from its frames in memory: the steps the extraction
commands run on every clip they read, for callers that hold the frames already (the detect
job's aligned face crops).

The commands (:mod:`minigpt4.features.encoder_extract`) read a clip through
``open_clip_frames(path).read(indices, size=...)``, which resizes every frame with
:func:`~minigpt4.datasets.frames.resize_frame` as it is decoded; :func:`frames_to_model_input`
resizes with the same call, so uint8 frames in memory give the pixels a folder of the same
frames as PNGs gives, and :func:`face_mae_vector` / :func:`video_mae_vector` the same vector
(exactly, with the command's default of one clip per forward pass).

The ``*_settings`` functions give the fingerprint an output folder records in
``extraction.json`` for an encoder and its options, without extracting anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from enum import Enum

import numpy as np
import torch

from minigpt4.datasets.frames import (
    MER_FRAMES_PER_SEGMENT,
    resize_frame,
    uniform_frame_indices,
    videomae_frame_indices,
)
from minigpt4.models.face_mae import FaceMAE
from minigpt4.models.video_mae import VideoMAE


class FeatureLevel(str, Enum):
    FRAME = "FRAME"  # one row per sampled frame (or HuBERT frame): (T, D)
    UTTERANCE = "UTTERANCE"  # the mean over them: (D,)


def check_counts(**counts: int) -> None:
    """Each count (``batch_size=0``, say) must be a positive integer (``num_workers``: or 0)."""
    for name, value in counts.items():
        smallest = 0 if name == "num_workers" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise ValueError(f"--{name} must be an integer of at least {smallest}, got {value!r}")


def encoder_settings(model: torch.nn.Module, /, **settings) -> dict:
    """The fingerprint of an encoder's output folder: ``settings`` (level, sampling, names the
    command knows) and a digest of the weights, so another checkpoint or encoder never
    writes into the files of this one."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return dict(settings, encoder=type(model).__name__, weights_sha256=digest.hexdigest())


def frames_to_model_input(frames: np.ndarray, img_size: int) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> float32 [n, 3, img_size, img_size] in [0, 1].

    The MER baseline's ``Resize((img_size, img_size))`` on PIL images, then ``ToTensor``
    (:func:`~minigpt4.datasets.frames.resize_frame`; frames read with ``size`` are already
    resized).  Pixels are only scaled to [0, 1], not mean/std normalised: that is what the
    MER baseline fed both encoders (and what the fork got wrong by feeding 0..255).
    """
    resized = np.stack([resize_frame(frame, (img_size, img_size)) for frame in frames])
    return torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255


def _check_frames(frames: np.ndarray) -> None:
    """Frames in memory must be what the commands decode: uint8 RGB [T, H, W, 3], T >= 1."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"expected uint8 RGB frames of shape (T, H, W, 3), got {getattr(frames, 'dtype', type(frames))} {shape}")
    if len(frames) == 0:
        raise ValueError("a clip needs at least one frame, got 0")


# ---------------------------------------------------------------------------------- FaceMAE


def face_mae_settings(
    model: FaceMAE,
    *,
    feature_level: FeatureLevel | str = FeatureLevel.UTTERANCE,
    max_frames: int | None = None,
    source: Mapping | None = None,
) -> dict:
    """What ``extract_mae_embedding.py`` records in ``extraction.json`` for ``model`` and these
    options (``source``: the command's ``{"model": <registered name>}``)."""
    if max_frames is not None:
        check_counts(max_frames=max_frames)
    return encoder_settings(
        model,
        **(source or {}),
        feature_level=FeatureLevel(feature_level).value,
        max_frames=max_frames,
        global_pool=model.uses_global_pool,
        img_size=model.img_size,
    )


@torch.inference_mode()
def face_mae_vectors(
    model: FaceMAE,
    clips_pixels: Sequence[torch.Tensor],
    *,
    feature_level: FeatureLevel | str = FeatureLevel.UTTERANCE,
    frames_per_forward: int = 256,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """Clips of model input [T_i, 3, S, S] -> each clip's (T_i, D) frame vectors at ``FRAME``,
    their mean (D,) at ``UTTERANCE``; at most ``frames_per_forward`` frames (of one clip or
    several) share a forward pass.  ``model`` must be in eval mode on ``device``."""
    all_frames = torch.cat(list(clips_pixels))  # [sum of T_i, 3, S, S]
    vectors = torch.cat([model(chunk.to(device)) for chunk in all_frames.split(frames_per_forward)])
    per_clip = vectors.split([len(pixels) for pixels in clips_pixels])  # each [T_i, D]
    if FeatureLevel(feature_level) is FeatureLevel.UTTERANCE:
        per_clip = [frame_vectors.mean(dim=0) for frame_vectors in per_clip]
    return [vector.cpu().numpy() for vector in per_clip]


def face_mae_vector(
    model: FaceMAE,
    frames: np.ndarray,
    *,
    feature_level: FeatureLevel | str = FeatureLevel.UTTERANCE,
    max_frames: int | None = None,
    frames_per_forward: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """One clip's FaceMAE vector from its frames, uint8 [T, H, W, 3] in time order: what
    ``extract_mae_embedding.py`` writes for a folder of these frames (``max_frames`` of them,
    spread evenly; all by default)."""
    _check_frames(frames)
    picked = frames[uniform_frame_indices(len(frames), max_frames)]
    pixels = frames_to_model_input(picked, model.img_size)
    return face_mae_vectors(
        model, [pixels], feature_level=feature_level, frames_per_forward=frames_per_forward, device=device
    )[0]


# --------------------------------------------------------------------------------- VideoMAE


def video_mae_settings(
    model: VideoMAE, *, feature_level: FeatureLevel | str = FeatureLevel.UTTERANCE, source: Mapping | None = None
) -> dict:
    """What ``extract_maeVideo_embedding.py`` records in ``extraction.json`` for ``model``
    (``source`` as for :func:`face_mae_settings`); VideoMAE has only the ``UTTERANCE`` level."""
    if FeatureLevel(feature_level) is not FeatureLevel.UTTERANCE:
        raise ValueError(
            "VideoMAE gives one vector per clip (its frames are encoded together); "
            "feature level FRAME has no meaning for it, use UTTERANCE"
        )
    video_mae_frame_indices(model, 1)  # a model the MER sampling cannot feed is refused here
    return encoder_settings(model, **(source or {}), feature_level=FeatureLevel.UTTERANCE.value, img_size=model.img_size)


def video_mae_frame_indices(model: VideoMAE, num_frames: int) -> list[int]:
    """The ``model.num_frames`` frames of a clip of ``num_frames`` that VideoMAE sees: the MER
    test sampling (:func:`~minigpt4.datasets.frames.videomae_frame_indices`) in pairs."""
    if model.num_frames % MER_FRAMES_PER_SEGMENT:
        raise ValueError(
            f"the MER sampling takes frames in pairs; a VideoMAE of {model.num_frames} frames cannot use it"
        )
    return videomae_frame_indices(num_frames, model.num_frames // MER_FRAMES_PER_SEGMENT, MER_FRAMES_PER_SEGMENT)


@torch.inference_mode()
def video_mae_vectors(
    model: VideoMAE, clips_pixels: Sequence[torch.Tensor], *, device: str | torch.device = "cpu"
) -> list[np.ndarray]:
    """Clips of sampled model input [num_frames, 3, S, S] -> one (D,) vector each, all in one
    forward pass.  ``model`` must be in eval mode on ``device``."""
    clips_batch = torch.stack(list(clips_pixels)).transpose(1, 2)  # [B, T, 3, S, S] -> [B, 3, T, S, S]
    return list(model(clips_batch.to(device)).cpu().numpy())


def video_mae_vector(model: VideoMAE, frames: np.ndarray, *, device: str | torch.device = "cpu") -> np.ndarray:
    """One clip's VideoMAE vector from its frames, uint8 [T, H, W, 3] in time order: what
    ``extract_maeVideo_embedding.py`` writes for a ``.npy`` array of these frames."""
    _check_frames(frames)
    pixels = frames_to_model_input(frames[video_mae_frame_indices(model, len(frames))], model.img_size)
    return video_mae_vectors(model, [pixels], device=device)[0]
