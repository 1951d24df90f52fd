"""Streaming, resumable feature files: the one writer every feature dump goes through.

Two layouts:

* ``stacked`` (default): one ``<kind>.npy`` per feature kind with N rows, row i belonging to
  line i of ``names.txt``.  Files are created at full size up front (``open_memmap``) and
  each batch's rows are written in place through a mapping closed again right after, so
  memory stays flat however large N is (a mapping kept open would hold every written page
  in the process's resident memory).  A row is marked done in ``.rows_done.npy`` only
  after its data is flushed; a killed run resumes from that mask and ends with the same
  bytes as an uninterrupted one.  Several processes (``torchrun``) write disjoint rows of
  the same files.
* ``per_clip``: ``<kind>/<clip>.npy``, each written atomically; a clip is done when all of
  its files exist.

``manifest.json`` records the fingerprint of what produced the files (config, weights,
positions, dtype, names, batch size); a rerun with a different fingerprint is refused unless
told to overwrite, so outputs of two configs are never mixed.  The encoder commands keep the
same rule for their folders of per-clip files through :func:`check_output_fingerprint`.

Batches are fixed by row index (batch k of a process is always the same rows), and a resumed
run recomputes whole batches: a model's numbers can depend on what else is in the batch (the
rounding of a batched matmul), so only the same batches give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from minigpt4.common import dist_utils
from minigpt4.common.atomic_io import save_npy_atomic, write_text_atomic
from minigpt4.datasets.errors import SKIPPED_REPORT

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
EXTRACTION_RECORD = "extraction.json"  # the fingerprint of a folder of per-clip encoder vectors
NAMES = "names.txt"
PROGRESS = ".rows_done.npy"
LAYOUTS = ("stacked", "per_clip")
DTYPES = ("float16", "float32")


class FeatureOutputError(RuntimeError):
    """The output folder holds files this run must not touch or cannot continue."""


def names_digest(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def rows_beyond_range(batch: np.ndarray, dtype: np.dtype) -> tuple[list[int], float]:
    """The rows (first axis) of ``batch`` holding finite values beyond ``dtype``'s range, and
    the largest such magnitude.  Casting would turn them into inf while the manifest calls the
    file complete."""
    if dtype.kind != "f" or not batch.size:
        return [], 0.0
    magnitude = np.abs(np.where(np.isfinite(batch), batch, 0)).reshape(len(batch), -1).max(axis=1)
    beyond = np.flatnonzero(magnitude > np.finfo(dtype).max)
    return beyond.tolist(), float(magnitude[beyond].max()) if beyond.size else 0.0


def fingerprint_differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (``model.llama_feature_positions``), for the refusal message."""
    changed = []
    for key in sorted(set(old) | set(new), key=str):
        dotted = f"{prefix}{key}"
        before, after = old.get(key), new.get(key)
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            changed += fingerprint_differences(before, after, f"{dotted}.")
        elif before != after:
            changed.append(dotted)
    return changed


def check_output_fingerprint(
    output_dir: str | os.PathLike, settings: Mapping, overwrite: bool, outputs: str = "*.npy"
) -> bool:
    """Whether a folder of per-clip files (``outputs``) may take the files of a run with
    ``settings``, the fingerprint rule of the dump for the encoder commands.

    Creates and removes nothing, so it can run before any other check.  Returns True when the
    earlier files must go first (``overwrite`` and other settings, or files of unknown
    settings); raises :class:`FeatureOutputError` naming what differs when not ``overwrite``.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FeatureOutputError(f"output {output_dir}: is a file, not a folder")
    settings = json.loads(json.dumps(settings))  # as the record gives it back
    record = output_dir / EXTRACTION_RECORD
    if record.is_file():
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except ValueError:  # unreadable JSON: settings unknown
            previous = None
        if previous == settings:
            return False
        changed = fingerprint_differences(previous if isinstance(previous, Mapping) else {}, settings)
        reason = f"holds files made with other settings (differs in: {', '.join(changed)})"
    else:
        existing = list(output_dir.glob(outputs)) if output_dir.is_dir() else []
        if not existing:
            return False
        reason = f"holds {len(existing)} {outputs} file(s) made with unknown settings (no {EXTRACTION_RECORD})"
    if not overwrite:
        raise FeatureOutputError(
            f"{output_dir} {reason}; refusing to mix them. Pass --overwrite to replace them, or choose another --output"
        )
    logger.warning("%s %s: replacing them (--overwrite)", output_dir, reason)
    return True


def record_output_fingerprint(
    output_dir: str | os.PathLike, settings: Mapping, replace: bool, outputs: str = "*.npy"
) -> None:
    """Create ``output_dir`` (call it once every input check has passed), remove the earlier
    ``outputs`` when ``replace`` (what :func:`check_output_fingerprint` returned) and record
    ``settings`` in its ``extraction.json``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if replace:
        for old in output_dir.glob(outputs):
            old.unlink()
    text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    record = output_dir / EXTRACTION_RECORD
    if not record.is_file() or record.read_text(encoding="utf-8") != text:  # a resumed run leaves it as it is
        write_text_atomic(record, text)


class FeatureWriter:
    """Writes rows of named feature kinds for the clips ``names`` into ``out_dir``.

    ``row_shapes`` maps a file stem (``llama_features``) to the shape of one clip's array.
    ``manifest`` is the descriptive part of manifest.json; its ``fingerprint`` entry decides
    whether existing files may be resumed.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        names: Sequence[str],
        row_shapes: Mapping[str, tuple[int, ...]],
        manifest: dict,
        dtype: str = "float16",
        layout: str = "stacked",
        overwrite: bool = False,
        batch_size: int = 1,
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"run.feature_layout: {layout!r} is not one of {', '.join(LAYOUTS)}")
        if dtype not in DTYPES:
            raise ValueError(f"run.feature_dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"run.batch_size: must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.out_dir = Path(out_dir)
        self.names = list(names)
        self.row_shapes = {kind: tuple(shape) for kind, shape in row_shapes.items()}
        self.dtype = np.dtype(dtype)
        self.layout = layout
        self.overwrite = overwrite
        self.manifest = dict(manifest)
        fingerprint = dict(
            manifest.get("fingerprint", {}),
            dtype=dtype,
            layout=layout,
            names_sha256=names_digest(self.names),
            batch_size=batch_size,  # batches decide the last bits of the numbers
        )
        # As manifest.json will give it back (tuples become lists), so equal settings compare equal.
        self.manifest["fingerprint"] = json.loads(json.dumps(fingerprint))
        self.manifest.update(
            rows=len(self.names),
            files={kind: self._file_entry(kind) for kind in self.row_shapes},
            dtype=dtype,
            layout=layout,
        )
        self._done: np.memmap | None = None
        self._created_dir = False  # whether this run made out_dir (a discarded dump takes it away again)

    def _file_entry(self, kind: str) -> dict:
        if self.layout == "stacked":
            return {"path": f"{kind}.npy", "shape": [len(self.names), *self.row_shapes[kind]]}
        return {"path": f"{kind}/<clip>.npy", "shape": list(self.row_shapes[kind])}

    # ---- opening --------------------------------------------------------------------------
    def open(self) -> list[int]:
        """Prepare the folder (main process), then return this process's rows still to do.

        They are whole batches of ``batch_size`` of this process's rows: cut again into
        ``batch_size`` pieces they give exactly the batches of an uninterrupted run.
        """
        if dist_utils.is_main_process():
            self._prepare()
        dist_utils.barrier()
        if self.layout == "stacked":
            done_path = self.out_dir / PROGRESS
            self._done = np.load(done_path, mmap_mode="r+") if done_path.exists() else None
        rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
        todo = self.rows_to_do(list(range(rank, len(self.names), world)))
        if dist_utils.is_main_process():
            self._log_progress()
        return todo

    def rows_to_do(self, mine: Sequence[int]) -> list[int]:
        """The rows of every batch of ``mine`` (cut into ``batch_size`` pieces) not yet all on
        disk: whole batches, so a rerun computes each row in the batch it had."""
        batches = [mine[start : start + self.batch_size] for start in range(0, len(mine), self.batch_size)]
        return [row for batch in batches if not all(self.is_done(row) for row in batch) for row in batch]

    def _log_progress(self) -> None:
        done = sum(self.is_done(row) for row in range(len(self.names)))
        if done == len(self.names):
            logger.info("%s: already complete (%d rows); nothing to do", self.out_dir, done)
        elif done:
            logger.info("%s: resuming, %d of %d rows still to do", self.out_dir, len(self.names) - done, len(self.names))

    def _prepare(self) -> None:
        manifest_path = self.out_dir / MANIFEST
        if manifest_path.exists():
            previous = json.loads(manifest_path.read_text())
            if previous.get("fingerprint") != self.manifest["fingerprint"]:
                if not self.overwrite:
                    changed = fingerprint_differences(previous.get("fingerprint", {}), self.manifest["fingerprint"])
                    raise FeatureOutputError(
                        f"{self.out_dir} holds features made with a different configuration "
                        f"(differs in: {', '.join(changed)}); refusing to mix them. Pass --overwrite "
                        "(run.overwrite: true) to replace them, or choose another run.output_dir"
                    )
                logger.warning("overwriting the features in %s", self.out_dir)
                self._remove_outputs()
            elif previous.get("complete"):
                return
        elif self.overwrite:
            logger.warning("overwriting the features in %s", self.out_dir)
            self._remove_outputs()
        self._created_dir = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # The manifest goes first: whatever a crash leaves behind is tied to its fingerprint.
        write_text_atomic(manifest_path, json.dumps(dict(self.manifest, complete=False), indent=2) + "\n")
        write_text_atomic(self.out_dir / NAMES, "".join(f"{name}\n" for name in self.names))
        if self.layout == "stacked":
            self._create_stacked_files()
        else:
            for kind in self.row_shapes:
                (self.out_dir / kind).mkdir(exist_ok=True)

    def _create_stacked_files(self) -> None:
        n = len(self.names)
        if (self.out_dir / PROGRESS).exists() and all((self.out_dir / f"{k}.npy").exists() for k in self.row_shapes):
            return  # a run of the same fingerprint was interrupted: resume into its files
        for kind, shape in self.row_shapes.items():
            np.lib.format.open_memmap(self.out_dir / f"{kind}.npy", mode="w+", dtype=self.dtype, shape=(n, *shape)).flush()
        np.save(self.out_dir / PROGRESS, np.zeros(n, dtype=np.uint8))

    def _remove_outputs(self) -> None:
        for name in (MANIFEST, NAMES, PROGRESS, *(f"{kind}.npy" for kind in self.row_shapes)):
            (self.out_dir / name).unlink(missing_ok=True)
        for kind in self.row_shapes:
            if (self.out_dir / kind).is_dir():
                shutil.rmtree(self.out_dir / kind)

    # ---- writing ----------------------------------------------------------------------------
    def is_done(self, row: int) -> bool:
        if self.layout == "per_clip":
            return all((self.out_dir / kind / f"{self.names[row]}.npy").exists() for kind in self.row_shapes)
        return self._done is None or bool(self._done[row])

    def write(self, rows: Sequence[int], arrays: Mapping[str, np.ndarray]) -> None:
        """Store one batch: ``arrays[kind]`` holds ``len(rows)`` rows in ``rows`` order."""
        for kind, shape in self.row_shapes.items():
            batch = arrays[kind]
            if batch.shape != (len(rows), *shape):
                raise ValueError(f"{kind}: expected rows of shape {shape}, got a batch of {batch.shape}")
        self._check_value_range(rows, arrays)
        if self.layout == "per_clip":
            for i, row in enumerate(rows):
                for kind in self.row_shapes:
                    save_npy_atomic(self.out_dir / kind / f"{self.names[row]}.npy", arrays[kind][i].astype(self.dtype))
            return
        index = np.asarray(rows)
        for kind in self.row_shapes:
            array = np.load(self.out_dir / f"{kind}.npy", mmap_mode="r+")
            array[index] = arrays[kind].astype(self.dtype)
            array.flush()
            del array  # unmapped: the written pages leave this process's resident memory
        # Marked only after the data is on disk: a killed run redoes at most this batch.
        self._done[index] = 1
        self._done.flush()

    def _check_value_range(self, rows: Sequence[int], arrays: Mapping[str, np.ndarray]) -> None:
        """Refuse a batch with values ``dtype`` cannot hold, naming the clips that hold them.
        With no row of the folder written yet, the dump's files go first (they hold nothing),
        so the suggested float32 rerun finds a clean folder and needs no --overwrite."""
        problems = []
        for kind in self.row_shapes:
            beyond, largest = rows_beyond_range(arrays[kind], self.dtype)
            if beyond:
                clips = ", ".join(self.names[rows[i]] for i in beyond)
                problems.append(
                    f"{kind} of {clips}: a value of {largest:.6g} does not fit {self.dtype.name} "
                    f"(largest {float(np.finfo(self.dtype).max):.6g})"
                )
        if problems:
            remedy = "set run.feature_dtype: float32"
            if not self._discard_if_nothing_written():
                kept = f"this folder keeps the dump's {self.dtype.name} files and rows written"
                remedy += f" and pass --overwrite ({kept})"
            raise FeatureOutputError(f"{self.out_dir}: {'; '.join(problems)}; {remedy}")

    def _discard_if_nothing_written(self) -> bool:
        """Remove this dump's files, and out_dir if this run made it, when no row of the folder
        holds data; returns whether it did.  One process only: under torchrun other ranks may
        be writing into the same files."""
        if dist_utils.get_world_size() > 1 or any(self.is_done(row) for row in range(len(self.names))):
            return False
        self._done = None  # unmapped before its file goes
        self._remove_outputs()
        (self.out_dir / SKIPPED_REPORT).unlink(missing_ok=True)  # the runner's report of this dump
        if self._created_dir and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()
        logger.info("%s: nothing was written; the dump's files are removed", self.out_dir)
        return True

    def finish(self) -> dict:
        """Seal the folder once every process is done; returns the manifest."""
        self._done = None
        dist_utils.barrier()
        manifest_path = self.out_dir / MANIFEST
        if dist_utils.is_main_process():
            pending = self._rows_not_on_disk()
            if pending:
                raise FeatureOutputError(
                    f"{len(pending)} rows were not written (first: {self.names[pending[0]]}); rerun to resume"
                )
            (self.out_dir / PROGRESS).unlink(missing_ok=True)
            write_text_atomic(manifest_path, json.dumps(dict(self.manifest, complete=True), indent=2) + "\n")
        dist_utils.barrier()
        return json.loads(manifest_path.read_text())

    def _rows_not_on_disk(self) -> list[int]:
        if self.layout == "per_clip":
            return [row for row in range(len(self.names)) if not self.is_done(row)]
        progress = self.out_dir / PROGRESS
        return np.flatnonzero(np.load(progress) == 0).tolist() if progress.exists() else []
