"""Read-only access to a feature dump: its manifest, row names and arrays, one slice at a
time through memory maps (a dump of 1,000 clips x 10 layers x 4096 is gigabytes; the probe
never holds more than the one feature set it fits)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from minigpt4.datasets.errors import SKIPPED_REPORT
from minigpt4.probe.dump_check import array_problem, damaged_files_error, read_manifest, read_names
from minigpt4.probe.labels import ProbeInputError

CHUNK_ROWS = 32  # rows averaged per mapping when pooling image tokens


class Dump:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.names = read_names(self.folder, self.manifest)
        self.layout = self.manifest.get("layout", "stacked")
        self.files = self.manifest["files"]

    def check_files(self, kinds: Sequence[str]) -> None:
        """Every array of the dumped ``kinds`` present, readable and as the manifest records
        it (dtype, shape, one row per name, not cut short), judged from headers and sizes;
        else one error naming the first damaged file."""
        stacked = self.layout == "stacked"
        problems = []
        for kind in (kind for kind in kinds if kind in self.files):
            if stacked:
                wanted = {self.path(kind): (len(self.names), *self.row_shape(kind))}
            else:
                wanted = {self.path(kind, name): self.row_shape(kind) for name in self.names}
            for path, shape in wanted.items():
                problem = array_problem(path, shape, self.manifest.get("dtype"), stacked)
                if problem:
                    problems.append((path, problem))
        if problems:
            raise damaged_files_error(problems)

    def path(self, kind: str, clip: str | None = None) -> Path:
        """The file of ``kind`` (stacked), or of ``kind`` for ``clip`` (per-clip), as the writer lays them out."""
        return self.folder / f"{kind}.npy" if self.layout == "stacked" else self.folder / kind / f"{clip}.npy"

    @property
    def kinds(self) -> list[str]:
        return list(self.files)

    def row_shape(self, kind: str) -> tuple[int, ...]:
        shape = tuple(self.files[kind]["shape"])
        return shape[1:] if self.layout == "stacked" else shape

    @property
    def layers(self) -> list[int]:
        return list(self.manifest.get("llama_feature_layers", [-1]))  # dumps before layers existed: the last

    @property
    def pools(self) -> list[str]:
        return list(self.manifest.get("llama_feature_pools", []))

    def position_labels(self) -> list[str]:
        """A label per dumped position: its name (``image:2``) where the manifest has one, else the index."""
        labels = []
        for entry in self.manifest.get("llama_feature_positions", []):
            if isinstance(entry, dict):
                labels.append(str(entry.get("name") or entry.get("index", entry.get("position"))))
            else:
                labels.append(str(entry))
        return labels

    def left_out(self) -> list[str]:
        """Clips the dump skipped on purpose (``on_error: skip``), from its skipped.tsv."""
        report = self.folder / SKIPPED_REPORT
        if not report.is_file():
            return []
        with report.open(newline="") as handle:
            return sorted({row["clip"] for row in csv.DictReader(handle, delimiter="\t")})

    # ---- reading ------------------------------------------------------------------------------
    def _rows(self, kind: str, take: Callable[[np.ndarray], np.ndarray], start: int, stop: int) -> np.ndarray:
        if self.layout == "stacked":
            array = np.load(self.path(kind), mmap_mode="r")
            out = np.asarray(take(array[start:stop]), dtype=np.float32)
            del array  # unmapped: the pages read leave this process's resident memory
            return out
        return np.stack(
            [np.asarray(take(np.load(self.path(kind, name), mmap_mode="r")[None]), np.float32)[0]
             for name in self.names[start:stop]]
        )

    def column(self, kind: str, index: tuple[int, ...] = ()) -> np.ndarray:
        """``array[:, *index]`` of one kind as float32 -> (N, H)."""
        self._check(kind)
        return self._rows(kind, lambda rows: rows[(slice(None), *index)], 0, len(self.names))

    def token_mean(self, kind: str) -> np.ndarray:
        """Mean over a kind's token axis (N, T, H) -> (N, H), a chunk of rows at a time."""
        self._check(kind)
        chunks = [
            self._rows(kind, lambda rows: rows.mean(axis=1, dtype=np.float32), start, start + CHUNK_ROWS)
            for start in range(0, len(self.names), CHUNK_ROWS)
        ]
        return np.concatenate(chunks)

    def _check(self, kind: str) -> None:
        if kind not in self.files:
            raise ProbeInputError(f"{self.folder}: the dump has no {kind} (its files: {', '.join(self.files)})")
