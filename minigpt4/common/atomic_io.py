"""Writing files so that a reader never sees half of one: through ``<name>.tmp`` and a rename.

Every file this project writes as a finished result (feature arrays, manifests, metrics,
summaries, checkpoints) goes through :func:`write_through_tmp`, the one place that knows
the recipe: write the temporary file, flush it to disk, then rename it over the target.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch


def write_through_tmp(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(handle)`` on ``<path>.tmp``, then atomically rename it to ``path``.

    A run killed mid-write leaves at most the ``.tmp`` file, never a truncated ``path``, so
    "the file exists" can safely mean "this item is done", and an earlier version of
    ``path`` stays intact until the new one is complete.  A write that fails with an
    exception removes its ``.tmp`` as well.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` of ``array`` to ``path``, atomically."""
    # a file object, not a name: np.save would append ".npy" to "<name>.npy.tmp"
    write_through_tmp(path, lambda handle: np.save(handle, array))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path``, atomically."""
    write_through_tmp(path, lambda handle: handle.write(text.encode("utf-8")))


def save_torch_atomic(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` of ``obj`` to ``path``, atomically; the parent folder is created."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_through_tmp(path, lambda handle: torch.save(obj, handle))
