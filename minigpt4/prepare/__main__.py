"""Raw videos -> aligned face frames, face arrays, peak frames and the hcmw annotation.

    python -m minigpt4.prepare --cfg-path eval_configs/prepare_hcmw.yaml [--options a.b=c ...] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys

from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.common.config import ConfigError
from minigpt4.common.logger import setup_logging
from minigpt4.common.registry import RegistryError
from minigpt4.datasets.frames import ClipReadError
from minigpt4.features.writer import FeatureOutputError
from minigpt4.prepare.config import load_prepare_config
from minigpt4.prepare.cut import SegmentError
from minigpt4.prepare.run import prepare

# what the command reports as one line: bad input, config or weights, never a bug
PREPARE_ERRORS = (
    ConfigError,
    SegmentError,
    ClipReadError,
    CheckpointError,
    RegistryError,
    FeatureOutputError,
    FileNotFoundError,
    ValueError,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", required=True, help="the prepare config (YAML)")
    parser.add_argument("--options", nargs="+", default=[], help="overrides as key=value, e.g. sampling.fps=10")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what an earlier run with other settings wrote to the output (else such a rerun is refused)",
    )
    args = parser.parse_args(argv)
    setup_logging()
    try:
        summary = prepare(load_prepare_config(args.cfg_path, args.options), overwrite=args.overwrite)
    except PREPARE_ERRORS as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
