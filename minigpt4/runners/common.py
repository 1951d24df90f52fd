"""Set-up shared by the training and evaluation runners: device, seeds, data loaders."""

from __future__ import annotations

import logging
import random
from typing import Sequence

import numpy as np
import torch
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
