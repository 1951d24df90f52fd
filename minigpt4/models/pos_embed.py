"""Resizing a learned absolute position table to another patch grid (EVA and FaceMAE files)."""

from __future__ import annotations

import math

import torch
from timm.layers import resample_abs_pos_embed


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a released [1, 1 + g*g, C] table (CLS entry first) to ``grid``.

    The CLS entry is kept as it is; the g x g patch entries are resized bicubically with
    plain ``F.interpolate(align_corners=False)`` and no antialiasing, which is what LAVIS
    (for EVA) and MAE's ``interpolate_pos_embed`` (for MAE-Face) do.  A table that is not
    square is returned unchanged, so loading reports its wrong shape.
    """
    patches = pos_embed.shape[1] - 1 if pos_embed.ndim == 3 else 0
    side = math.isqrt(patches)
    if side == 0 or side * side != patches:
        return pos_embed
    return resample_abs_pos_embed(
        pos_embed,
        new_size=list(grid),
        old_size=[side, side],
        num_prefix_tokens=1,
        interpolation="bicubic",
        antialias=False,
    )
