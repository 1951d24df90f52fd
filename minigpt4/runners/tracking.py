"""Where training numbers go: the console log, TensorBoard, and W&B / MLflow when configured."""

from __future__ import annotations

import logging
from pathlib import Path

from minigpt4.common import dist_utils

logger = logging.getLogger(__name__)


class Tracker:
    """Scalars from the main process to every configured sink (others are silent)."""

    def __init__(self, run_cfg, out_dir: Path, config: dict):
        self.sinks = []
        if not dist_utils.is_main_process():
            return
        if run_cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
            self.sinks.append(lambda tag, value, step: self._tb.add_scalar(tag, value, step))
        if run_cfg.wandb_project:
            import wandb

            self._wandb = wandb.init(project=run_cfg.wandb_project, config=config, dir=str(out_dir))
            self.sinks.append(lambda tag, value, step: self._wandb.log({tag: value}, step=step))
        if run_cfg.mlflow_tracking_uri:
            import mlflow

            mlflow.set_tracking_uri(run_cfg.mlflow_tracking_uri)
            mlflow.start_run()
            self._mlflow = mlflow
            self.sinks.append(lambda tag, value, step: mlflow.log_metric(tag.replace("/", "."), value, step=step))

    def scalar(self, tag: str, value: float | None, step: int) -> None:
        if value is None:
            return
        for sink in self.sinks:
            sink(tag, float(value), step)

    def close(self) -> None:
        if hasattr(self, "_tb"):
            self._tb.close()
        if hasattr(self, "_wandb"):
            self._wandb.finish()
        if hasattr(self, "_mlflow"):
            self._mlflow.end_run()
