"""Distributed helpers that work the same with one process or many under ``torchrun``.

``torchrun`` announces each process through the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, plus ``MASTER_ADDR``/``MASTER_PORT`` for the rendezvous).  When those are
absent every helper here answers as a single process (rank 0 of 1), so library code can call
them unconditionally.  Call :func:`init_distributed` before anything asks for the rank.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_ENV)


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_local_rank() -> int:
    """Index of this process on its machine; picks the GPU it owns."""
    return int(os.environ.get("LOCAL_RANK", 0)) if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(backend: str | None = None) -> bool:
    """Join the ``torchrun`` process group; returns whether this run is distributed.

    ``backend`` defaults to NCCL when CUDA is present and Gloo otherwise.  Outside
    ``torchrun`` this does nothing, so single-process runs need no launcher.
    """
    if not launched_by_torchrun():
        logger.info("not launched by torchrun; running as a single process")
        return False
    if is_dist_avail_and_initialized():
        return True
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        # Bind the GPU before the process group exists so NCCL never touches cuda:0 by accident.
        torch.cuda.set_device(local_rank)
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend, init_method="env://")
    logger.info(
        "distributed: rank %d of %d (local rank %d, backend %s)",
        get_rank(),
        get_world_size(),
        local_rank,
        backend,
    )
    return True


def destroy_distributed() -> None:
    if is_dist_avail_and_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if not is_dist_avail_and_initialized():
        return
    if dist.get_backend() == "nccl":
        # Naming the device avoids NCCL guessing it (and warning) from the rank.
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` when not distributed."""
    if not is_dist_avail_and_initialized():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
