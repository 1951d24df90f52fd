"""Reading one clip's still image and feature vectors, with checks that say what is wrong.

Datasets call these twice: once per clip while validating (so every problem is found before
a run writes anything) and again when an item is fetched.  A problem is raised as
:class:`UnusableFile`, whose message the dataset turns into a ``BadClip``.
"""

from __future__ import annotations

import functools
import io
import os
import unicodedata
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
from PIL import Image

from minigpt4.datasets.frames import image_to_rgb, npy_load_problem

NUMERIC_KINDS = "fiu"  # numpy dtype kinds a feature vector may hold: float, int, unsigned


class UnusableFile(ValueError):
    """A clip's file is missing or holds something that cannot be used; the message says what."""


def nfc(name: str) -> str:
    """A clip id or file name in Unicode normal form C, the form ids are compared in."""
    return unicodedata.normalize("NFC", name)


@functools.lru_cache(maxsize=64)
def _names_by_nfc(folder: str) -> dict[str, str]:
    # one listing per folder, not one per missing clip
    return {nfc(name): name for name in os.listdir(folder)}


def find_nfc(path: Path) -> Path:
    """``path``, or the file whose name equals it in normal form C when only that exists.

    An annotation's ``café`` (composed) names the same clip as a folder or file stored
    decomposed (as macOS writes names), and vice versa.  A path with no such twin comes back
    as it is, so "missing" messages name the path the user expects.
    """
    if path.exists():
        return path
    parent = path.parent if path.parent.exists() or path.parent == path else find_nfc(path.parent)
    if not parent.is_dir():
        return path
    name = _names_by_nfc(str(parent)).get(nfc(path.name))
    return parent / name if name is not None else path


def check_image(path: Path) -> None:
    """Raise :class:`UnusableFile` unless ``path`` is an image PIL can decode in full."""
    if not path.is_file():
        raise UnusableFile("missing image")
    _check_decodes(lambda: Image.open(path))


def check_image_bytes(data: bytes) -> None:
    """:func:`check_image` for an image held in memory (a shard's PNG)."""
    _check_decodes(lambda: Image.open(io.BytesIO(data)))


def _check_decodes(open_image: Callable[[], Image.Image]) -> None:
    try:
        # verify() checks the file's structure and checksums but leaves the image unusable,
        # and does not catch truncated pixel data; a second open decodes every pixel.
        with open_image() as image:
            image.verify()
        with open_image() as image:
            image.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... depending on the damage
        raise UnusableFile(f"unreadable image: {exc}") from exc


def open_rgb(source: Path | BinaryIO) -> Image.Image:
    """The image of a file, or of an open binary stream (``io.BytesIO`` of a shard's PNG)."""
    with Image.open(source) as image:
        return image_to_rgb(image)  # 16-bit greyscale too, which convert("RGB") turns white


def read_vector(path: Path, dim: int) -> np.ndarray:
    """The float32 vector (dim,) stored at ``path`` as (dim,) or (1, dim), all values finite."""
    if not path.is_file():
        raise UnusableFile("missing feature vector")
    if path.stat().st_size == 0:
        raise UnusableFile("empty file (0 bytes); expected a .npy array")
    return _checked_vector(path, dim)


def vector_from_bytes(data: bytes, dim: int) -> np.ndarray:
    """:func:`read_vector` for ``.npy`` bytes held in memory (a shard's vector)."""
    return _checked_vector(io.BytesIO(data), dim)


def _checked_vector(source: Path | BinaryIO, dim: int) -> np.ndarray:
    try:
        array = np.load(source, allow_pickle=False)
    except EOFError as exc:
        raise UnusableFile("empty or cut-off file; expected a .npy array") from exc
    except (OSError, ValueError) as exc:
        raise UnusableFile(f"not a readable .npy array: {npy_load_problem(exc)}") from exc
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        raise UnusableFile("not a single .npy array")
    if array.shape not in ((dim,), (1, dim)):
        raise UnusableFile(f"vector of shape {array.shape}; expected ({dim},) or (1, {dim}) (feature_dim = {dim})")
    if array.dtype.kind not in NUMERIC_KINDS:
        raise UnusableFile(f"vector of dtype {array.dtype}; expected numbers")
    vector = array.reshape(dim).astype(np.float32)
    non_finite = int(np.count_nonzero(~np.isfinite(vector)))
    if non_finite:
        raise UnusableFile(f"{non_finite} NaN or inf value(s) in the vector")
    return vector
