"""VideoMAE features for a folder (or list) of clips: ``<output>/<clip>.npy`` per clip.

    python extract_maeVideo_embedding.py --input videos/ --output features/maeV_199_UTT \
        --checkpoint maeVideo_ckp199.pth
"""

from __future__ import annotations

import sys

from minigpt4.features.encoder_extract import (
    build_encoder,
    extract_video_mae_features,
    extraction_argument_parser,
    run_extraction,
)
from minigpt4.models.video_mae import VideoMAE


def main(argv: list[str] | None = None) -> int:
    parser = extraction_argument_parser(__doc__.splitlines()[0], default_model="video_mae_vit_large")
    parser.add_argument(
        "--fresh_fc_norm",
        action="store_true",
        help="the checkpoint is a pre-training file without fc_norm: use an untrained one (MER2023 baseline behaviour)",
    )
    args = parser.parse_args(argv)
    summary = run_extraction(
        args,
        lambda: build_encoder(
            args.model, VideoMAE, args.checkpoint, args.trust_checkpoint, fresh_fc_norm=args.fresh_fc_norm
        ),
        extract_video_mae_features,
        extract_options={"source": {"model": args.model}},
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
