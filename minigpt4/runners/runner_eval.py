"""Evaluation runner: feature dumps and generation-based evaluation over the datasets named
on the command line (``eval_emotion.py --dataset a,b``).

Every dataset is built and validated, and each task checks what it can without weights (the
dump positions against the instruction), before the model is loaded, so bad input fails fast
and before any output is written.  The dataset's builder names the task that evaluates it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from minigpt4.common import dist_utils
from minigpt4.common.logger import setup_logging
from minigpt4.common.config import Config, ConfigError
from minigpt4.common.registry import registry
from minigpt4.datasets.errors import SKIPPED_REPORT, write_skipped_report
from minigpt4.runners.common import model_config_for, row_loader, seed_everything, select_device
from minigpt4.tasks.base_task import BaseTask

logger = logging.getLogger(__name__)


def check_loader_settings(run_cfg) -> None:
    """The ``run`` values the loop needs, checked before any output exists (a DataLoader
    refusing them later would leave a created, empty output folder behind)."""
    for key, smallest in (("batch_size", 1), ("num_workers", 0)):
        value = run_cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise ConfigError(f"run.{key}: must be an integer of at least {smallest}, got {value!r}")


@registry.register_runner("runner_eval")
class RunnerEval:
    CONFIG = "configs/runners/runner_eval.yaml"

    @classmethod
    def default_config_path(cls) -> Path:
        return Path(__file__).resolve().parents[1] / cls.CONFIG

    def __init__(self, cfg: Config, dataset_names: Sequence[str]):
        self.cfg = cfg
        self.run_cfg = cfg.run_cfg
        self.dataset_names = list(dataset_names)
        sections = {**cfg.datasets_cfg, **cfg.evaluation_datasets_cfg}
        if not self.dataset_names:
            raise ConfigError(
                f"--dataset: names no dataset; give one or more comma-separated names "
                f"(configured in {cfg.args.cfg_path}: {', '.join(sections) or 'none'})"
            )
        for name in self.dataset_names:
            if name not in sections:
                raise ConfigError(
                    f"--dataset {name}: not configured; add it under evaluation_datasets in {cfg.args.cfg_path} "
                    f"(configured: {', '.join(sections) or 'none'})"
                )
        self.sections = sections

    def _build_dataset(self, name: str):
        """Every row, or only the held-out rows of ``fold`` when the section names one."""
        section = self.sections[name]
        fold = section.get("fold", -1)
        if fold is None or fold < 0:
            return BaseTask.build_dataset(name, section, "all")
        return BaseTask.build_dataset(name, section, "eval", fold)

    def run(self) -> dict:
        check_loader_settings(self.run_cfg)
        dist_utils.init_distributed()
        setup_logging(self.run_cfg.log_level)  # after init: it needs the rank
        seed_everything(self.run_cfg.seed)
        datasets = {name: self._build_dataset(name) for name in self.dataset_names}
        tasks = {
            name: registry.get("task", registry.get("builder", name).EVAL_TASK).setup_task(self.run_cfg)
            for name in datasets
        }
        for name, task in tasks.items():
            check = getattr(task, "check_before_model", None)  # what a task can check without weights
            if check is not None:
                check(self.cfg.model_cfg, datasets[name])
        device = select_device(self.run_cfg.device)
        model = BaseTask.build_model(model_config_for(self.cfg.model_cfg, device)).to(device).eval()
        results = {}
        for name, dataset in datasets.items():
            results[name] = self._evaluate(name, tasks[name], model, dataset)
        dist_utils.barrier()
        return results

    def _evaluate(self, name: str, task, model, dataset) -> dict:
        out_dir = Path(self.run_cfg.output_dir)
        if getattr(task, "PER_DATASET_FOLDER", False):
            out_dir = out_dir / name
        writer, rows = task.open_writer(model, dataset, out_dir, self.cfg.model_cfg, self.sections[name])
        rows_of_rank = getattr(dataset, "rows_of_rank", None)
        if rows_of_rank is not None:  # shards: a rank takes a contiguous run of batches, so opens only their shards
            mine = rows_of_rank(dist_utils.get_rank(), dist_utils.get_world_size(), self.run_cfg.batch_size)
            rows = writer.rows_to_do(mine)
        # Only once the writer has accepted the folder: a refused rerun keeps the earlier report.
        if dist_utils.is_main_process():
            if dataset.skipped:
                write_skipped_report(out_dir, dataset.skipped)
            else:
                (out_dir / SKIPPED_REPORT).unlink(missing_ok=True)  # left by a run this one overwrote
        loader = row_loader(dataset, rows, self.run_cfg.batch_size, self.run_cfg.num_workers)
        progress = tqdm(loader, desc=name, disable=not dist_utils.is_main_process(), unit="batch")
        with torch.inference_mode():
            for batch in progress:
                task.step(model, batch, writer)
        manifest = writer.finish()
        if dist_utils.is_main_process():
            logger.info("%s", task.summary(manifest, out_dir))
        return manifest
