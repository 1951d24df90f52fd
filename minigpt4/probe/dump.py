"""Read-only access to a feature dump: its manifest, row names and arrays, one slice at a
time through memory maps (a dump of 1,000 clips x 10 layers x 4096 is gigabytes; the probe
never holds more than the one feature set it fits)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np

from minigpt4.datasets.errors import SKIPPED_REPORT
from minigpt4.features.writer import MANIFEST, NAMES
from minigpt4.probe.labels import ProbeInputError

CHUNK_ROWS = 32  # rows averaged per mapping when pooling image tokens


class Dump:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        if not manifest_path.is_file():
            raise ProbeInputError(f"probe.dump_dir: {self.folder} holds no {MANIFEST}; is it a feature dump folder?")
        self.manifest = json.loads(manifest_path.read_text())
        if not self.manifest.get("complete"):
            raise ProbeInputError(f"{manifest_path}: the dump is not complete; rerun the dump to finish it")
        self.names = (self.folder / NAMES).read_text().splitlines()
        if len(self.names) != self.manifest["rows"]:
            raise ProbeInputError(
                f"{self.folder / NAMES} lists {len(self.names)} clips, the manifest {self.manifest['rows']} rows"
            )
        self.layout = self.manifest.get("layout", "stacked")
        self.files = self.manifest["files"]

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
            array = np.load(self.folder / f"{kind}.npy", mmap_mode="r")
            out = np.asarray(take(array[start:stop]), dtype=np.float32)
            del array  # unmapped: the pages read leave this process's resident memory
            return out
        return np.stack(
            [np.asarray(take(np.load(self.folder / kind / f"{name}.npy", mmap_mode="r")[None]), np.float32)[0]
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
