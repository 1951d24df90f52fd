"""VideoMAE ViT-L/16: one vector per clip of ``num_frames`` frames.

The clip is cut into tubelets (``tubelet_size`` frames x ``patch_size`` x ``patch_size``
pixels) by a Conv3d, a fixed sine-cosine position table is added, pre-norm blocks with a
fused qkv projection and learned q and v biases (no k bias) follow, and the tokens are
averaged and put through ``fc_norm``.  The blocks are timm's ``EvaBlock``, whose attention
(``EvaAttention`` with ``qkv_bias``) has exactly VideoMAE's parameters and names; only the
tubelet embedding and the position table are written here, as timm has neither.
"""

from __future__ import annotations

import logging
import os
from functools import partial

import torch
from timm.layers import LayerNorm
from timm.models.eva import EvaBlock
from torch import nn

from minigpt4.common.checkpoint_io import CheckpointError, LoadReport, apply_state_dict, group_by_prefix, read_state_dict
from minigpt4.common.registry import registry

logger = logging.getLogger(__name__)

# pre-training files hold the encoder under this prefix, beside the decoder
_ENCODER_PREFIX = "encoder."
# pre-training parts the feature extractor never runs
_PRETRAINING_ONLY = ("decoder.", "encoder_to_decoder.", "mask_token")


def sinusoid_position_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's ``get_sinusoid_encoding_table``: [1, num_positions, dim].

    Position p, channel j: angle p / 10000^(2 * (j // 2) / dim); sine on even j, cosine on
    odd j.  Computed in float64 as the original (numpy) does, then stored as float32.
    """
    positions = torch.arange(num_positions, dtype=torch.float64)[:, None]
    pair_index = torch.arange(dim, dtype=torch.float64) // 2
    angles = positions / torch.pow(10000.0, 2 * pair_index / dim)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.to(torch.float32)[None]


class TubeletEmbed(nn.Module):
    """Conv3d patch embedding: [B, C, T, H, W] -> [B, tokens, width], tokens in (t, h, w) order."""

    def __init__(self, img_size: int, patch_size: int, num_frames: int, tubelet_size: int, in_chans: int, width: int):
        super().__init__()
        self.grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, width, kernel_size=kernel, stride=kernel)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.proj(clip).flatten(2).transpose(1, 2)


class VideoMAE(nn.Module):
    """``forward`` maps clips [B, 3, num_frames, img, img] in [0, 1] to [B, width]."""

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        num_frames: int,
        tubelet_size: int,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        in_chans: int = 3,
    ):
        super().__init__()
        self.img_size = img_size
        self.num_frames = num_frames
        self.num_features = width
        self.patch_embed = TubeletEmbed(img_size, patch_size, num_frames, tubelet_size, in_chans, width)
        # fixed, not learned: a non-persistent buffer, so files neither hold nor need it
        self.register_buffer(
            "pos_embed", sinusoid_position_table(self.patch_embed.num_patches, width), persistent=False
        )
        norm_layer = partial(LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(
            *[
                EvaBlock(
                    width,
                    num_heads,
                    qkv_bias=True,  # learned q and v biases; k's is a zero buffer
                    qkv_fused=True,
                    mlp_ratio=mlp_ratio,
                    num_prefix_tokens=0,  # no CLS token
                    norm_layer=norm_layer,
                    act_layer=nn.GELU,
                )
                for _ in range(depth)
            ]
        )
        self.fc_norm = norm_layer(width)

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(clip) + self.pos_embed.to(clip.dtype)  # [B, tokens, width]
        return self.blocks(tokens)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.fc_norm(self.forward_features(clip).mean(dim=1))


def video_mae_checkpoint_filter(
    state_dict: dict[str, torch.Tensor], model: VideoMAE
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Turn a VideoMAE state dict (fine-tuned, or pre-trained with ``encoder.``) into ``model``'s.

    Returns the tensors to load and the names ignored on purpose: the decoder,
    ``encoder_to_decoder``, the mask token, and in a pre-training file the decoder's
    ``pos_embed`` (the encoder's table is fixed, so files never hold one for it).  Every other
    name is passed on, so loading names anything the model has no place for.
    """
    pretraining_layout = any(name.startswith(_ENCODER_PREFIX) for name in state_dict)
    tensors, ignored = {}, []
    for name, tensor in state_dict.items():
        if name.startswith(_PRETRAINING_ONLY) or (pretraining_layout and name == "pos_embed"):
            ignored.append(name)
        else:
            tensors[name.removeprefix(_ENCODER_PREFIX)] = tensor
    return tensors, ignored


def load_video_mae_checkpoint(
    model: VideoMAE, path: str | os.PathLike, trust_checkpoint: bool = False, fresh_fc_norm: bool = False
) -> LoadReport:
    """Load a VideoMAE file (``{"model"|"module": ...}`` or raw) into ``model``; every tensor must land.

    A pre-training file ends the encoder with ``norm`` and has no ``fc_norm``.  The MER2023
    baseline loaded such files into a mean-pooling model, which dropped ``norm`` and left
    ``fc_norm`` at its initial values (weight 1, bias 0).  ``fresh_fc_norm=True`` does the
    same, on request and reported; without it such a file is refused.
    """
    what = f"VideoMAE checkpoint {path}"
    tensors, ignored = video_mae_checkpoint_filter(read_state_dict(path, "VideoMAE checkpoint", trust_checkpoint), model)
    if fresh_fc_norm and "fc_norm.weight" not in tensors:
        for name in ("norm.weight", "norm.bias"):
            if name in tensors:
                del tensors[name]
                ignored.append(name)
        tensors["fc_norm.weight"] = torch.ones_like(model.fc_norm.weight)
        tensors["fc_norm.bias"] = torch.zeros_like(model.fc_norm.bias)
        logger.warning("%s has no fc_norm: using a fresh one (weight 1, bias 0) as the MER2023 baseline did", what)
    elif "fc_norm.weight" not in tensors and "norm.weight" in tensors:
        raise CheckpointError(
            f"{what} is a pre-training file (it ends with norm, has no fc_norm); pass --fresh_fc_norm to use an "
            "untrained fc_norm as the MER2023 baseline did"
        )
    report = apply_state_dict(model, tensors, what)
    # expected leftovers of the file (the filter kept them out of apply_state_dict): one
    # counted line per file, not a list of names that reads like an error
    report.skipped = {name: "pre-training parts the encoder does not use" for name in ignored}
    logger.info("%s: %s", what, report.summary(group_by_prefix(_PRETRAINING_ONLY)))
    return report


def build_video_mae(
    *,
    checkpoint: str | os.PathLike | None = None,
    trust_checkpoint: bool = False,
    fresh_fc_norm: bool = False,
    **architecture,
) -> VideoMAE:
    """Build the encoder of ``architecture`` (:class:`VideoMAE`'s arguments) and, given a
    ``checkpoint``, load it (strictly)."""
    model = VideoMAE(**architecture)
    if checkpoint is not None:
        load_video_mae_checkpoint(model, checkpoint, trust_checkpoint, fresh_fc_norm)
    return model


# Registered variants (architecture and default input size), timm-style: VideoMAE ViT-L/16
# with tubelet 2 (width 1024, 24 blocks, 16 heads, 4096 MLP units) and the same layout at a
# few hundred kilobytes for tests and the demo.  Callers may override img_size, num_frames,
# checkpoint, trust_checkpoint and fresh_fc_norm.
VIDEO_MAE_VARIANTS = {
    "video_mae_vit_large": dict(
        img_size=224, patch_size=16, num_frames=16, tubelet_size=2, width=1024, depth=24, num_heads=16, mlp_ratio=4.0
    ),
    "video_mae_tiny": dict(
        img_size=64, patch_size=16, num_frames=16, tubelet_size=2, width=64, depth=2, num_heads=4, mlp_ratio=4.0
    ),
}
registry.register_variants("encoder", VIDEO_MAE_VARIANTS, build_video_mae)
