"""``python -m minigpt4.detect --cfg-path eval_configs/detect_mw.yaml [--follow] [--options detect.key=value ...]``"""

from __future__ import annotations

import argparse
import sys

from minigpt4.common.logger import setup_logging
from minigpt4.detect.config import load_detect_config
from minigpt4.detect.run import detect
from minigpt4.runners.common import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minigpt4.detect", description=__doc__)
    parser.add_argument("--cfg-path", required=True, help="detect config YAML (eval_configs/detect_mw.yaml)")
    parser.add_argument("--follow", action="store_true", help="the input is live: follow it as it is written (detect.live.follow)")
    parser.add_argument("--options", nargs="+", default=[], help="overrides such as detect.window.hop_s=1.0")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    options = [*args.options, *(["detect.live.follow=true"] if args.follow else [])]
    cfg = load_detect_config(args.cfg_path, options)
    setup_logging()
    summary = detect(cfg)
    print(summary.line(), file=sys.stderr if cfg.live.follow else sys.stdout)
    return summary


if __name__ == "__main__":
    run_cli(main)
