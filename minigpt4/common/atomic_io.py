"""Writing files so that a reader never sees half of one: through ``<name>.tmp`` and a rename."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` through ``<path>.tmp`` and an atomic rename.

    A run killed mid-write leaves at most the ``.tmp`` file, never a truncated ``path``, so
    "the file exists" can safely mean "this item is done".  A write that fails with an
    exception removes its ``.tmp`` as well.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        # a file object, not a name: np.save would append ".npy" to "<name>.npy.tmp"
        with open(tmp, "wb") as handle:
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) through ``<path>.tmp`` and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
