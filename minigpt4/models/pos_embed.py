"""The learned absolute position table of a released ViT file (EVA, FaceMAE) on another
patch grid: resized as LAVIS and MAE resize it, the rest of the file passed on."""

from __future__ import annotations

import math
from collections.abc import Callable

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


def released_vit_tensors(
    state_dict: dict[str, torch.Tensor], grid: tuple[int, int], leave_out: Callable[[str], bool]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a released file for a model of patch grid ``grid``: every name but those
    ``leave_out`` names (returned as the second value, for the loader to report), with
    ``pos_embed`` resized to ``grid``.  Shapes are not checked here; loading reports wrong ones."""
    tensors, left_out = {}, []
    for name, tensor in state_dict.items():
        if leave_out(name):
            left_out.append(name)
        elif name == "pos_embed":
            tensors[name] = resize_pos_embed(tensor, grid)
        else:
            tensors[name] = tensor
    return tensors, left_out
