"""The feature sets a dump offers, each an (N, D) matrix read only when it is probed.

Names (used in the report and in ``probe.concatenations``):

* ``facemae``, ``videomae``, ``audio``: the projected FaceMAE / VideoMAE / audio vectors;
* ``image_mean``: the projected image tokens averaged over the tokens;
* ``llama/L{layer}/{position}``: the LLM state of one dumped layer at one position (the
  position's name from the manifest, e.g. ``image:2``, or its index);
* ``pool/L{layer}/{span}``: the LLM states of one layer averaged over a span;
* ``a+b``: a concatenation of sets ``a`` and ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from minigpt4.probe.dump import Dump
from minigpt4.probe.labels import ProbeInputError

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


def load_set(dump: Dump, feature_set: FeatureSet, every: dict[str, FeatureSet]) -> np.ndarray:
    """The set's (N, D) float32 matrix, read from the dump now."""
    if feature_set.kind == "concat":
        return np.concatenate([load_set(dump, every[part], every) for part in feature_set.parts], axis=1)
    if feature_set.token_mean:
        return dump.token_mean(feature_set.kind)
    return dump.column(feature_set.kind, feature_set.index)
