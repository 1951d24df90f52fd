"""Evaluate Emotion-LLaMA or dump its features.

    python eval_emotion.py --dataset hcmw_caption     # config: eval_configs/eval_emotion.yaml
    python eval_emotion.py --cfg-path eval_configs/eval_mer2023.yaml --dataset feature_face_caption
    torchrun --nproc_per_node 4 eval_emotion.py --cfg-path ... --dataset hcmw_caption
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import minigpt4  # noqa: F401  (registers models, datasets, tasks and runners)
from minigpt4.common.config import Config
from minigpt4.common.logger import setup_logging
from minigpt4.common.registry import registry
from minigpt4.runners.common import run_cli

logger = logging.getLogger("eval_emotion")
DEFAULT_CFG = Path(__file__).resolve().parent / "eval_configs" / "eval_emotion.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", help=f"run config YAML (default: eval_configs/{DEFAULT_CFG.name})")
    parser.add_argument("--dataset", required=True, help="comma-separated dataset names, e.g. hcmw_caption")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs made with another configuration")
    parser.add_argument("--options", nargs="+", default=[], help="overrides such as run.batch_size=8 (key=value)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.cfg_path is None:
        # the runner sets the run's log level later; this line must show before the config is read
        setup_logging()
        args.cfg_path = str(DEFAULT_CFG)
        logger.info("config: %s (no --cfg-path given)", DEFAULT_CFG.relative_to(DEFAULT_CFG.parents[1]).as_posix())
    if args.overwrite:
        args.options = [*args.options, "run.overwrite=true"]
    cfg = Config(args, default_runner="runner_eval")
    runner = registry.get("runner", cfg.run_cfg.runner)(cfg, [name.strip() for name in args.dataset.split(",") if name.strip()])
    return runner.run()


if __name__ == "__main__":
    run_cli(main)
