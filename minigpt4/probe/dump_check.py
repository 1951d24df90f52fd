"""Is a feature dump intact? Its manifest, row names and arrays checked against what the
manifest records, before the probe fits anything.

Checking stays cheap on dumps of gigabytes: an array is judged by its ``.npy`` header (dtype,
shape) and its size on disk (cut short or not), never by reading its values.  Values that are
not finite are found when a feature set is read for fitting (:func:`non_finite_rows`), which is
when they are read anyway.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from minigpt4.features.writer import DTYPES, LAYOUTS, MANIFEST, NAMES, names_digest
from minigpt4.probe.labels import ProbeInputError, listed

REMAKE = "remake the dump (rerun eval_emotion.py --dataset hcmw_caption into an empty run.output_dir)"
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_manifest(folder: Path) -> dict:
    """``manifest.json`` of a complete dump, with the entries the probe reads."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ProbeInputError(f"probe.dump_dir: {folder} holds no {MANIFEST}; is it a feature dump folder?")
    try:
        manifest = json.loads(path.read_bytes())
    except OSError as exc:
        raise ProbeInputError(f"{path}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not text
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        problem = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise ProbeInputError(f"{path}: not JSON ({problem}{where}); {REMAKE}") from None
    if not isinstance(manifest, dict):
        raise ProbeInputError(f"{path}: not a dump manifest (a JSON {type(manifest).__name__}, not an object); {REMAKE}")
    if not manifest.get("complete"):
        raise ProbeInputError(f"{path}: the dump is not complete; rerun the dump to finish it")
    files = manifest.get("files")
    if not isinstance(manifest.get("rows"), int) or not isinstance(files, dict):
        raise ProbeInputError(f"{path}: not a dump manifest (it needs 'rows' and 'files' entries); {REMAKE}")
    if manifest.get("layout", "stacked") not in LAYOUTS:
        raise ProbeInputError(f"{path}: layout {manifest['layout']!r} is not one of {', '.join(LAYOUTS)}; {REMAKE}")
    for kind, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
            raise ProbeInputError(f"{path}: files.{kind} records no shape; {REMAKE}")
    return manifest


def read_names(folder: Path, manifest: dict) -> list[str]:
    """The dump's row order (``names.txt``), checked against the manifest's row count and the
    SHA-256 of the names it recorded (the writer records it in every dump): reordered lines
    would pair rows with the wrong labels."""
    path = folder / NAMES
    if not path.is_file():
        raise ProbeInputError(f"{path}: missing (it gives the clip of each row); {REMAKE}")
    try:
        names = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ProbeInputError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ProbeInputError(f"{path}: not UTF-8 text; {REMAKE}") from None
    if len(names) != manifest["rows"]:
        raise ProbeInputError(f"{path} lists {len(names)} clips, the manifest {manifest['rows']} rows")
    fingerprint = manifest.get("fingerprint")
    recorded = fingerprint.get("names_sha256") if isinstance(fingerprint, dict) else None
    if recorded is not None and names_digest(names) != recorded:
        raise ProbeInputError(
            f"{path}: not as the dump wrote it (lines reordered or edited: their SHA-256 differs from the manifest's "
            f"fingerprint.names_sha256), so rows would pair with the wrong clips and labels; restore the dump's {NAMES} or {REMAKE}"
        )
    return names


def array_problem(path: Path, shape: tuple[int, ...], dtype: str | None, stacked: bool = True) -> str | None:
    """What is wrong with the ``.npy`` file at ``path`` that should hold a ``shape`` array of
    ``dtype`` (None: float16 or float32), from its header and size alone; None when nothing.
    ``stacked``: the first axis is the dump's rows (one per clip)."""
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "a folder, not a .npy file"
    size = path.stat().st_size
    if size == 0:
        return "empty (0 bytes)"
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in HEADER_READERS:
                return f".npy format version {version[0]}.{version[1]}, which the dump never writes"
            found_shape, _, found_dtype = HEADER_READERS[version](handle)
            data_offset = handle.tell()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except ValueError as exc:  # numpy's words for a missing or broken header
        return "cut short inside its .npy header" if str(exc).startswith("EOF") else "no .npy header (another format?)"
    if found_dtype.hasobject:
        return "an object array (Python objects, not numbers)"
    if found_dtype.name not in DTYPES:
        return f"holds {found_dtype} values; a dump holds {' or '.join(DTYPES)}"
    if dtype is not None and found_dtype.name != dtype:
        return f"holds {found_dtype.name} values, the manifest records {dtype}"
    if found_shape != shape:
        if stacked and found_shape[1:] == shape[1:] and len(found_shape) == len(shape):
            return f"holds {found_shape[0]} rows, the manifest records {shape[0]}"
        return f"holds an array of shape {found_shape}, the manifest records {shape}"
    needed = data_offset + math.prod(found_shape) * found_dtype.itemsize
    if size < needed:
        return f"cut short: {size} bytes, its {found_dtype.name} array of shape {found_shape} needs {needed}"
    return None


def damaged_files_error(problems: Sequence[tuple[Path, str]]) -> ProbeInputError:
    """One line: the first damaged file and its problem, and how many more there are."""
    path, problem = problems[0]
    more = f" (and {len(problems) - 1} more damaged file(s))" if len(problems) > 1 else ""
    return ProbeInputError(f"{path}: {problem}{more}; {REMAKE}")


def non_finite_rows(X: np.ndarray, names: Sequence[str]) -> str | None:
    """Why the feature set ``X`` (N, D) cannot be probed: the clips of its rows holding NaN or
    infinite values; None when every value is finite."""
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if not bad.size:
        return None
    return f"NaN or infinite values in {len(bad)} clip(s): {listed([names[row] for row in bad])}"
