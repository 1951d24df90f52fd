"""What an hcmw shard holds, and its index.

A shard is a plain tar in WebDataset's convention: the members of one sample share a key
(``<key>.<suffix>``) and follow each other.  Keys are the clip's position in the annotation,
zero-padded (a clip id may hold dots, which WebDataset would read as suffixes); the clip id
itself is in the sample's JSON.

``index.json`` beside the shards lists, per shard, its keys and clip ids in order, the
SHA-256 of every member of every sample, and the counts per fold and label: a reader knows
every row and an epoch's length without opening a shard, and finds a member changed since
packing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Iterable, Mapping

INDEX_NAME = "index.json"
INDEX_FORMAT = "hcmw-shards/2"
UNCHECKED_FORMATS = ("hcmw-shards/1",)  # indexes written before members had checksums
SHARD_PREFIX, SHARD_DIGITS, SHARD_SUFFIX = "hcmw-", 6, ".tar"
KEY_DIGITS = 8

# member suffixes of one sample
META = "json"  # {"clip": str, "label": str, "fold": int[, "participant", "video", "start_s", "end_s"]}
IMAGE = "png"  # the peak frame's bytes as read from the folder layout
VECTORS = {"facemae": "facemae.npy", "videomae": "videomae.npy", "audio": "audio.npy"}


def shard_name(number: int) -> str:
    return f"{SHARD_PREFIX}{number:0{SHARD_DIGITS}d}{SHARD_SUFFIX}"


def brace_pattern(n_shards: int) -> str:
    """``hcmw-{000000..000011}.tar``: every shard the packer wrote (one shard: its name)."""
    if n_shards == 1:
        return shard_name(0)
    return f"{SHARD_PREFIX}{{{0:0{SHARD_DIGITS}d}..{n_shards - 1:0{SHARD_DIGITS}d}}}{SHARD_SUFFIX}"


def sample_key(position: int) -> str:
    return f"{position:0{KEY_DIGITS}d}"


def member_digest(data: bytes) -> str:
    """The checksum the index keeps of one member's bytes."""
    return hashlib.sha256(data).hexdigest()


def counts(samples: Iterable[Mapping]) -> dict:
    """Clips per fold and per label (JSON keys are strings, so folds are too)."""
    samples = list(samples)
    return {
        "clips": len(samples),
        "fold": dict(sorted(Counter(str(s["fold"]) for s in samples).items())),
        "label": dict(sorted(Counter(str(s["label"]) for s in samples).items())),
    }


def index_text(shards: list[dict], audio: bool) -> str:
    """The index as written: sorted keys, no timestamps or paths, so equal input gives equal bytes.

    ``shards``: per shard ``{"name", "samples": [{"key", "clip", "label", "fold", "sha256"}]}``,
    ``sha256`` mapping each member suffix of the sample to :func:`member_digest` of its bytes.
    """
    entries = [
        {
            "name": shard["name"],
            "keys": [s["key"] for s in shard["samples"]],
            "clips": [s["clip"] for s in shard["samples"]],
            "sha256": [s["sha256"] for s in shard["samples"]],
            "counts": counts(shard["samples"]),
        }
        for shard in shards
    ]
    index = {
        "format": INDEX_FORMAT,
        "audio": audio,
        "pattern": brace_pattern(len(shards)),
        "shards": entries,
        "counts": counts(s for shard in shards for s in shard["samples"]),
    }
    return json.dumps(index, indent=1, sort_keys=True) + "\n"

