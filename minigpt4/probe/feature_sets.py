"""The feature sets a dump offers, each an (N, D) matrix read only when it is probed.

Names (used in the report and in ``probe.concatenations``):

* ``facemae``, ``videomae``, ``audio``: the projected FaceMAE / VideoMAE / audio vectors;
* ``image_mean``: the projected image tokens averaged over the tokens;
* ``llama/L{layer}/{position}``: the LLM state of one dumped layer at one position (the
  position's name from the manifest, e.g. ``image:2``, or its index);
* ``pool/L{layer}/{span}``: the LLM states of one layer averaged over a span;
* ``a+b``: a concatenation of sets ``a`` and ``b``;
* ``ctx{K}/{stat}/{base}``: set ``base`` summarised over each clip's context window of K
  clips (``probe.context``, :mod:`minigpt4.probe.context`);
* ``gru{K}/{base}``: set ``base`` over the same windows, fitted by a GRU instead of a
  logistic regression (``probe.sequence_model: gru``, :mod:`minigpt4.probe.sequence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Sequence

import numpy as np

from minigpt4.probe.config import ProbeConfig
from minigpt4.probe.context import context_windows, short_windows, summarise
from minigpt4.probe.dump import Dump
from minigpt4.probe.labels import ProbeInputError, RowLabels

SINGLE_VECTOR_KINDS = {
    "facemae_projected_features": "facemae",
    "videomae_projected_features": "videomae",
    "audio_projected_features": "audio",
}


@dataclass(frozen=True)
class FeatureSet:
    name: str
    kind: str  # file stem, or "concat"
    index: tuple[int, ...] = ()  # where in one clip's array (layer, position)
    token_mean: bool = False  # average over the token axis (image tokens)
    layer: int | None = None
    position: str | None = None  # position label or span name
    parts: tuple[str, ...] = ()  # names of the concatenated sets
    base: str | None = None  # context and sequence sets: the set they are made of
    window: int | None = None  # context and sequence sets: clips per window
    stat: str | None = None  # context sets: how a window is summarised

    @property
    def is_sequence(self) -> bool:
        return self.kind == "sequence"


def enumerate_sets(dump: Dump, kinds: Sequence[str], concatenations: Sequence[Sequence[str]]) -> list[FeatureSet]:
    """Every set of the wanted kinds the dump holds, then the concatenations."""
    sets = []
    for kind in kinds:
        if kind not in dump.kinds:
            continue
        if kind in SINGLE_VECTOR_KINDS:
            sets.append(FeatureSet(SINGLE_VECTOR_KINDS[kind], kind))
        elif kind == "image_projected_features":
            sets.append(FeatureSet("image_mean", kind, token_mean=True))
        elif kind == "llama_features":
            sets += _grid(dump, kind, "llama", dump.position_labels())
        elif kind == "llama_pooled_features":
            sets += _grid(dump, kind, "pool", dump.pools)
    by_name = {s.name: s for s in sets}
    for parts in concatenations:
        unknown = [part for part in parts if part not in by_name]
        if unknown:
            raise ProbeInputError(
                f"probe.concatenations: {unknown} are not feature sets of {dump.folder}; it offers: {', '.join(by_name)}"
            )
        sets.append(FeatureSet("+".join(parts), "concat", parts=tuple(parts)))
    return sets


def _grid(dump: Dump, kind: str, prefix: str, labels: Sequence[str]) -> list[FeatureSet]:
    """One set per (layer, label); a one-layer llama dump has no layer axis (N, P, H)."""
    layers = dump.layers
    shape = dump.row_shape(kind)
    with_layer_axis = len(shape) == 3
    expected = (len(layers), len(labels)) if with_layer_axis else (len(labels),)
    if shape[:-1] != expected:
        raise ProbeInputError(
            f"{dump.folder}: {kind} rows have shape {shape} but the manifest lists layers {layers} and {list(labels)}"
        )
    return [
        FeatureSet(
            f"{prefix}/L{layer}/{label}",
            kind,
            index=(li, pi) if with_layer_axis else (pi,),
            layer=layer,
            position=label,
        )
        for li, layer in enumerate(layers)
        for pi, label in enumerate(labels)
    ]


def temporal_sets(sets: Sequence[FeatureSet], cfg: ProbeConfig, labels: RowLabels) -> list[FeatureSet]:
    """The context sets (and GRU sets) of ``probe.context`` over the base ``sets`` it names."""
    context = cfg.context
    if not context.windows:
        return []
    if not labels.timed:
        raise ProbeInputError(
            f"probe.context: context windows need each clip's video and start_s in {cfg.annotation} "
            "(columns video, start_s, as minigpt4.prepare writes them)"
        )
    bases = []
    for pattern in context.sets:
        matched = [s for s in sets if fnmatchcase(s.name, pattern)]
        if not matched:
            raise ProbeInputError(
                f"probe.context.sets: {pattern!r} names none of the feature sets ({', '.join(s.name for s in sets)})"
            )
        bases += [s for s in matched if s not in bases]
    made = [
        FeatureSet(f"ctx{k}/{stat}/{base.name}", "context", base=base.name, window=k, stat=stat)
        for base in bases
        for k in context.windows
        for stat in context.stats
    ]
    if cfg.sequence_model is not None:
        made += [
            FeatureSet(f"{cfg.sequence_model}{k}/{base.name}", "sequence", base=base.name, window=k)
            for base in bases
            for k in context.windows
        ]
    return made


class SetLoader:
    """Reads a set's (N, D) float32 matrix from the dump when it is probed, and the context
    windows of the rows; the last base set read is kept, since its context sets follow it."""

    def __init__(self, dump: Dump, sets: Sequence[FeatureSet], labels: RowLabels):
        self.dump, self.labels = dump, labels
        self.every = {s.name: s for s in sets}
        self._windows: dict[int, np.ndarray] = {}
        self._last: tuple[str, np.ndarray] | None = None

    def windows(self, size: int) -> np.ndarray:
        """[N, size] row indices of each row's window (see :func:`context_windows`)."""
        if size not in self._windows:
            labels = self.labels
            self._windows[size] = context_windows(np.array(labels.videos, dtype=object), labels.folds, labels.start_s, size)
        return self._windows[size]

    def short_windows(self, size: int) -> int:
        return short_windows(self.windows(size))

    def __call__(self, feature_set: FeatureSet) -> np.ndarray:
        if feature_set.kind == "context":
            base = self._base(feature_set.base)
            return summarise(base, self.windows(feature_set.window), self.labels.start_s, feature_set.stat)
        if feature_set.is_sequence:
            return self._base(feature_set.base)
        if feature_set.kind == "concat":
            return np.concatenate([self(self.every[part]) for part in feature_set.parts], axis=1)
        if feature_set.token_mean:
            return self.dump.token_mean(feature_set.kind)
        return self.dump.column(feature_set.kind, feature_set.index)

    def _base(self, name: str) -> np.ndarray:
        if self._last is None or self._last[0] != name:
            self._last = None  # the previous base is released before the next is read
            self._last = (name, self(self.every[name]))
        return self._last[1]
