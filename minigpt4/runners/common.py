"""Set-up shared by the training and evaluation runners: device, seeds, data loaders."""

from __future__ import annotations

import logging
import random
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from minigpt4.common import dist_utils
from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.common.config import ConfigError
from minigpt4.datasets.data_utils import collate_clips
from minigpt4.datasets.errors import DataError
from minigpt4.features.writer import FeatureOutputError

logger = logging.getLogger(__name__)

# Problems with the user's config, data, weights or output folder: the CLIs print these as one
# line (the message names the key, clip or file) instead of a traceback.
USER_ERRORS = (ConfigError, DataError, CheckpointError, FeatureOutputError, FileNotFoundError)
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def is_user_error(exc: BaseException) -> bool:
    """One of USER_ERRORS, or a ValueError raised by this package's own checks of a value the
    user chose (a ValueError raised inside torch or numpy is a bug here and keeps its traceback)."""
    if isinstance(exc, USER_ERRORS):
        return True
    if not isinstance(exc, ValueError) or exc.__traceback__ is None:
        return False
    origin = Path(traceback.extract_tb(exc.__traceback__)[-1].filename).resolve()
    return origin.is_relative_to(PACKAGE_DIR)


def run_cli(main: Callable[[], Any]) -> Any:
    """Run an entry script's ``main``; a user error ends the process with its one-line message."""
    try:
        return main()
    except Exception as exc:
        if not is_user_error(exc):
            raise
        raise SystemExit(f"error: {exc}") from None


def model_config_for(model_cfg: DictConfig, device: torch.device) -> DictConfig:
    """The model config as ``device`` runs it: half precision is for GPUs, so on the CPU the
    weights load and compute in fp32 whatever ``model.precision`` says, GPU present or not."""
    if device.type == "cuda" or model_cfg.precision == "fp32":
        return model_cfg
    logger.info("run.device=%s: the model runs in fp32 (model.precision %s applies on GPUs)", device, model_cfg.precision)
    cpu_cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    cpu_cfg.precision = "fp32"
    return cpu_cfg


def select_device(requested: str) -> torch.device:
    """``cuda`` means this process's GPU under torchrun; falls back to CPU with a warning."""
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            logger.warning("run.device=%s but no CUDA GPU is visible: running on the CPU", requested)
            return torch.device("cpu")
        if requested == "cuda":
            return torch.device("cuda", dist_utils.get_local_rank())
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    """Same seed on every process: the initial weights must agree across ranks."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class RowSubset(Dataset):
    """The items at ``rows`` of ``dataset``, each tagged with its row number."""

    def __init__(self, dataset: Dataset, rows: Sequence[int]):
        self.dataset = dataset
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, dict]:
        row = self.rows[index]
        return row, self.dataset[row]


def collate_rows(batch: list[tuple[int, dict]]) -> dict:
    samples = collate_clips([item for _, item in batch])
    samples["row"] = [row for row, _ in batch]
    return samples


def row_loader(dataset: Dataset, rows: Sequence[int], batch_size: int, num_workers: int) -> DataLoader:
    """In-order batches over ``rows`` (evaluation: no shuffling, every row once)."""
    return DataLoader(
        RowSubset(dataset, rows),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_rows,
        persistent_workers=False,
    )
