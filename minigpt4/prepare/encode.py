"""The optional last step: FaceMAE, VideoMAE (and HuBERT) vectors of the prepared clips, in process.

The same functions as ``extract_mae_embedding.py``, ``extract_maeVideo_embedding.py`` and
``extract_audio_embedding.py``: FaceMAE reads each clip's folder of aligned faces, VideoMAE
its face array, HuBERT (with ``encoders.audio.model_dir``) its sound (clips without sound
have none), and the vectors land in ``<output>/features/<dir>/<clip>.npy``, where the hcmw
dataset's ``feature_root`` finds them.  Clips already encoded are skipped, as with the scripts.  The encoders are built
(names checked, weights loaded) before the first clip is prepared: a bad name or checkpoint
stops the run with nothing written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.common.config import ConfigError
from minigpt4.common.registry import RegistryError
from minigpt4.features.audio_extract import extract_audio_features
from minigpt4.features.encoder_extract import (
    build_encoder,
    describe_summary,
    extract_face_mae_features,
    extract_video_mae_features,
)
from minigpt4.models.face_mae import FaceMAE
from minigpt4.models.hubert_encoder import HubertAudioEncoder
from minigpt4.models.video_mae import VideoMAE
from minigpt4.prepare.config import PrepareConfig
from minigpt4.prepare.write import PreparedLayout

logger = logging.getLogger(__name__)


@dataclass
class EncoderStep:
    """One encoder, built, with the extraction function and the per-clip input it reads."""

    key: str  # its section under `encoders` in the config
    dir: str  # its folder under <output>/features
    model: torch.nn.Module
    extract: Callable
    clip_input: Callable[[PreparedLayout, str], Path | None]  # None: the clip has no such input


def build_encoders(cfg: PrepareConfig) -> list[EncoderStep]:
    """The configured encoders, built; a bad name or weight file is a ConfigError naming the key."""
    encoders = cfg.encoders
    plan = (
        ("face_mae", encoders.face_mae, FaceMAE, extract_face_mae_features, lambda layout, clip: layout.face_frames / clip),
        (
            "video_mae",
            encoders.video_mae,
            VideoMAE,
            extract_video_mae_features,
            lambda layout, clip: layout.face_arrays / f"{clip}.npy",
        ),
    )
    steps = []
    for key, encoder, family, extract, clip_input in plan:
        try:
            model = build_encoder(encoder.model, family, encoder.checkpoint, encoders.trust_checkpoint)
        except (RegistryError, CheckpointError, ValueError, OSError) as exc:
            raise ConfigError(f"encoders.{key}: {exc}") from exc
        steps.append(EncoderStep(key, encoder.dir, model, extract, clip_input))
    if encoders.audio.model_dir is not None:
        try:
            hubert = HubertAudioEncoder.from_pretrained(encoders.audio.model_dir)
        except (ValueError, OSError) as exc:  # OSError: not a model folder, unreadable weights
            raise ConfigError(f"encoders.audio.model_dir: {exc}") from exc
        steps.append(EncoderStep("audio", encoders.audio.dir, hubert, extract_audio_features, _clip_sound))
    return steps


def _clip_sound(layout: PreparedLayout, clip: str) -> Path | None:
    path = layout.audio_file(clip)
    return path if path.is_file() else None


def run_encoders(cfg: PrepareConfig, layout: PreparedLayout, clips: list[str], steps: list[EncoderStep]) -> None:
    for step in steps:
        output_dir = layout.features / step.dir
        summary = step.extract(
            step.model,
            [path for path in (step.clip_input(layout, clip) for clip in clips) if path is not None],
            output_dir,
            device=cfg.encoders.device,
            batch_size=cfg.encoders.batch_size,
            progress=cfg.progress,
        )
        logger.info("%s: %s", step.key, describe_summary(summary, output_dir))
