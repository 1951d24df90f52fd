"""HuBERT audio vectors for a folder (or list) of clips: ``<output>/<clip>.npy`` per clip.

A clip is a video (its first audio track) or an audio file (.wav, .flac, .mp3, .m4a, .ogg).

    python extract_audio_embedding.py --input videos/ --output features/HL-UTT \
        --model_dir weights/chinese-hubert-large
"""

from __future__ import annotations

import sys

from minigpt4.datasets.audio_track import AUDIO_SUFFIXES, is_audio_clip_entry
from minigpt4.features.audio_extract import extract_audio_features
from minigpt4.features.encoder_extract import extraction_argument_parser, run_extraction
from minigpt4.models.hubert_encoder import HubertAudioEncoder


def main(argv: list[str] | None = None) -> int:
    parser = extraction_argument_parser(
        __doc__.splitlines()[0], default_model=None, clip_kinds=f"videos with sound, {', '.join(AUDIO_SUFFIXES)} files"
    )
    parser.add_argument(
        "--model_dir",
        required=True,
        help="a Hugging Face HuBERT folder (config.json, model.safetensors or pytorch_model.bin, "
        "optionally preprocessor_config.json)",
    )
    parser.add_argument(
        "--layer", type=int, default=-1, help="hidden-state layer (0 = transformer input, -1 = last; default -1)"
    )
    parser.add_argument(
        "--window_seconds", type=float, default=30.0, help="longest piece of sound encoded at once (default 30)"
    )
    args = parser.parse_args(argv)
    summary = run_extraction(
        args,
        lambda: HubertAudioEncoder.from_pretrained(
            args.model_dir, args.layer, args.window_seconds, trust_checkpoint=args.trust_checkpoint
        ),
        extract_audio_features,
        is_entry=is_audio_clip_entry,
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
