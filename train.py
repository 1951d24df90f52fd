"""Fine-tune Emotion-LLaMA with LoRA, k-fold over the configured folds.

    python train.py --cfg-path train_configs/Emotion-LLaMA-MW-tuning.yaml
    torchrun --nproc_per_node 4 train.py --cfg-path ...
"""

from __future__ import annotations

import argparse

import minigpt4  # noqa: F401  (registers models, datasets, tasks and runners)
from minigpt4.common.config import Config
from minigpt4.common.registry import registry
from minigpt4.runners.common import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="run config YAML")
    parser.add_argument("--options", nargs="+", default=[], help="overrides such as run.max_epoch=5 (key=value)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    cfg = Config(parse_args(argv), default_runner="runner_base")
    return registry.get("runner", cfg.run_cfg.runner)(cfg).run()


if __name__ == "__main__":
    run_cli(main)
