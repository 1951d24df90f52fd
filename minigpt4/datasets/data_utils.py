"""Turning a list of dataset items into one batch."""

from __future__ import annotations

from typing import Any, Sequence

import torch


def collate_clips(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors (``image`` [B, 3, S, S], ``video_features`` [B, 3, D]), turn floats
    (``class_weight``) into a float32 tensor [B] and keep everything else (the texts and ids)
    as lists, in item order."""
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], float):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = values
    return batch
