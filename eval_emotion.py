"""Evaluate Emotion-LLaMA or dump its features.

    python eval_emotion.py --cfg-path eval_configs/eval_emotion.yaml --dataset hcmw_caption
    torchrun --nproc_per_node 4 eval_emotion.py --cfg-path ... --dataset hcmw_caption
"""

from __future__ import annotations

import argparse

import minigpt4  # noqa: F401  (registers models, datasets, tasks and runners)
from minigpt4.common.config import Config
from minigpt4.common.registry import registry
from minigpt4.runners.common import USER_ERRORS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="run config YAML")
    parser.add_argument("--dataset", required=True, help="comma-separated dataset names, e.g. hcmw_caption")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs made with another configuration")
    parser.add_argument("--options", nargs="+", default=[], help="overrides such as run.batch_size=8 (key=value)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.overwrite:
        args.options = [*args.options, "run.overwrite=true"]
    cfg = Config(args, default_runner="runner_eval")
    runner = registry.get("runner", cfg.run_cfg.runner)(cfg, [name.strip() for name in args.dataset.split(",") if name.strip()])
    return runner.run()


if __name__ == "__main__":
    try:
        main()
    except USER_ERRORS as exc:
        raise SystemExit(f"error: {exc}") from exc
