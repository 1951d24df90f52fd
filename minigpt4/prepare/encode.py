"""The optional last step: FaceMAE and VideoMAE vectors of the prepared clips, in process.

The same functions as ``extract_mae_embedding.py`` and ``extract_maeVideo_embedding.py``:
FaceMAE reads each clip's folder of aligned faces, VideoMAE its face array, and the vectors
land in ``<output>/features/<dir>/<clip>.npy``, where the hcmw dataset's ``feature_root``
finds them.  Clips already encoded are skipped, as with the scripts.
"""

from __future__ import annotations

import logging

from minigpt4.features.encoder_extract import (
    build_encoder,
    describe_summary,
    extract_face_mae_features,
    extract_video_mae_features,
)
from minigpt4.models.face_mae import FaceMAE
from minigpt4.models.video_mae import VideoMAE
from minigpt4.prepare.config import PrepareConfig
from minigpt4.prepare.write import PreparedLayout

logger = logging.getLogger(__name__)


def run_encoders(cfg: PrepareConfig, layout: PreparedLayout, clips: list[str]) -> None:
    encoders = cfg.encoders
    steps = (
        (encoders.face_mae, FaceMAE, extract_face_mae_features, [layout.face_frames / clip for clip in clips]),
        (encoders.video_mae, VideoMAE, extract_video_mae_features, [layout.face_arrays / f"{clip}.npy" for clip in clips]),
    )
    for encoder, family, extract, inputs in steps:
        model = build_encoder(encoder.model, family, encoder.checkpoint, encoders.trust_checkpoint)
        output_dir = layout.features / encoder.dir
        summary = extract(
            model, inputs, output_dir, device=encoders.device, batch_size=encoders.batch_size, progress=cfg.progress
        )
        logger.info("%s: %s", encoder.model, describe_summary(summary, output_dir))
