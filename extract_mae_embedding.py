"""FaceMAE features for a folder (or list) of clips: ``<output>/<clip>.npy`` per clip.

    python extract_mae_embedding.py --input faces/ --output features/mae_340_UTT \
        --checkpoint mae_checkpoint-340.pth
"""

from __future__ import annotations

import sys

from minigpt4.features.encoder_extract import (
    build_encoder,
    extract_face_mae_features,
    extraction_argument_parser,
    run_extraction,
)
from minigpt4.models.face_mae import FaceMAE


def main(argv: list[str] | None = None) -> int:
    parser = extraction_argument_parser(__doc__.splitlines()[0], default_model="face_mae_vit_large")
    parser.add_argument("--max_frames", type=int, default=None, help="frames per clip, spread evenly (default: all)")
    parser.add_argument(
        "--global_pool", action="store_true", help="mean of patch tokens through fc_norm instead of the CLS token"
    )
    parser.add_argument(
        "--fresh_fc_norm",
        action="store_true",
        help="with --global_pool, the checkpoint is a pre-training file without fc_norm (MAE-Face's): use an "
        "untrained one (weight 1, bias 0) as MAE's fine-tuning recipe does",
    )
    parser.add_argument("--frames_per_forward", type=int, default=256, help="most frames in one forward pass")
    args = parser.parse_args(argv)
    summary = run_extraction(
        args,
        lambda: build_encoder(
            args.model,
            FaceMAE,
            args.checkpoint,
            args.trust_checkpoint,
            global_pool=args.global_pool,
            fresh_fc_norm=args.fresh_fc_norm,
        ),
        extract_face_mae_features,
        extract_options={
            "source": {"model": args.model},
            "max_frames": args.max_frames,
            "frames_per_forward": args.frames_per_forward,
        },
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
