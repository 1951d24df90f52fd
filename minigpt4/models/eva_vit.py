"""EVA-CLIP ViT-g/14, the image encoder of MiniGPT-v2, built on timm's EVA.

MiniGPT-v2 feeds the language model every token of the last transformer block, so the
encoder here is timm's ``Eva`` with its classifier parts switched off: no pooling, no final
norm, no fc norm, no head.  Its parameter names are the names of the LAVIS ``eva_vit_g.pth``
file, so loading that file needs no renaming, only the position table resized to the
model's patch grid and the 40th block (which MiniGPT-v2 never runs) left out.
"""

from __future__ import annotations

import logging
import os
import re
from functools import partial

import torch
from timm.layers import LayerNorm
from timm.models.eva import Eva

from minigpt4.common.checkpoint_io import CheckpointError, LoadReport, apply_state_dict, read_state_dict
from minigpt4.common.registry import registry
from minigpt4.models.pos_embed import released_vit_tensors

logger = logging.getLogger(__name__)

_BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.")


class EvaViT(Eva):
    """timm's EVA configured as the EVA-CLIP image tower.

    What timm's defaults already give and this relies on: exact GELU MLP of
    ``int(width * mlp_ratio)`` hidden units, pre-norm blocks, a learned absolute position
    table with an entry for the CLS token, and no rope, layer scale or SwiGLU.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=width,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            # one qkv matrix with learned q and v biases; timm keeps k's bias as a zero,
            # non-persistent buffer, exactly EVA's "no k bias"
            qkv_fused=True,
            qkv_bias=True,
            norm_layer=partial(LayerNorm, eps=1e-6),
            drop_path_rate=drop_path_rate,
            # an encoder, not a classifier: timm would otherwise add a final norm and a head
            num_classes=0,
            global_pool="",
            use_fc_norm=False,
            use_post_transformer_norm=False,
        )

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Patches per column and row, for callers that size their projectors from it."""
        return tuple(self.patch_embed.grid_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # [B, 3, img, img] -> [B, 1 + grid_h * grid_w, width], CLS first; the norms
        # forward_features would apply are Identity in this configuration
        return self.forward_features(images)


def _block_beyond(name: str, depth: int) -> int | None:
    """The block index in ``name`` when that block lies beyond ``depth``, else None."""
    match = _BLOCK_NAME.match(name)
    index = int(match.group(1)) if match else -1
    return index if index >= depth else None


def eva_checkpoint_filter(
    state_dict: dict[str, torch.Tensor], model: EvaViT
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Turn a LAVIS ``eva_vit_g.pth`` state dict into ``model``'s tensors.

    Returns the tensors in the model's names (timm's names are LAVIS's, ``attn.q_bias`` and
    ``attn.v_bias`` included) and the names of everything the model has no place for (blocks
    beyond its depth, anything foreign), so the caller decides what is an error.
    """
    own = model.state_dict()
    return released_vit_tensors(state_dict, model.patch_grid, leave_out=lambda name: name not in own)


def load_eva_checkpoint(
    model: EvaViT,
    path: str | os.PathLike,
    trust_checkpoint: bool = False,
    strict: bool = True,
) -> LoadReport:
    """Load a released EVA ViT file into ``model``; every model tensor must be in it.

    Blocks beyond the model's depth (the released file's 40th) are expected: they are
    reported, not loaded.  Any other tensor the model cannot use is an error under
    ``strict`` and a warning otherwise.
    """
    what = f"EVA ViT checkpoint {path}"
    tensors, unused = eva_checkpoint_filter(read_state_dict(path, "EVA ViT checkpoint", trust_checkpoint), model)
    depth = len(model.blocks)
    dropped_blocks = sorted({i for i in (_block_beyond(name, depth) for name in unused) if i is not None})
    foreign = [name for name in unused if _block_beyond(name, depth) is None]
    if foreign and strict:
        raise CheckpointError(
            f"{what}: tensors the encoder has no place for: {', '.join(foreign)}. "
            "Is this an EVA-CLIP ViT file? Load with strict=False to skip them."
        )
    report = apply_state_dict(model, tensors, what)
    report.unexpected.extend(unused)  # the filter kept them out of apply_state_dict
    # one line per file; the released 40th block is expected, so it is no warning
    beyond = f"; blocks {dropped_blocks} ({len(unused) - len(foreign)} tensors) lie beyond the encoder's {depth} blocks, not used"
    logger.info("%s: loaded %d tensors%s", what, len(report.loaded), beyond if dropped_blocks else "")
    if foreign:
        logger.warning("%s: skipped tensors the encoder has no place for: %s", what, ", ".join(foreign))
    return report


def build_eva_vit(
    *,
    use_grad_checkpoint: bool = False,
    checkpoint: str | os.PathLike | None = None,
    trust_checkpoint: bool = False,
    **architecture,
) -> EvaViT:
    """Build the encoder of ``architecture`` (:class:`EvaViT`'s arguments) and, given a
    ``checkpoint``, load it (strictly)."""
    model = EvaViT(**architecture)
    model.set_grad_checkpointing(use_grad_checkpoint)
    if checkpoint is not None:
        load_eva_checkpoint(model, checkpoint, trust_checkpoint)
    return model


# Registered variants (architecture and default input size), timm-style.  eva_clip_g is
# EVA-CLIP ViT-g/14 as MiniGPT-v2 runs it: 39 of the released 40 blocks, and LAVIS's mlp_ratio
# (int(1408 * 4.3637) = 6144 hidden units).  eva_clip_tiny has the same layout in a few
# kilobytes, for tests and the demo assets.  Callers may override img_size, drop_path_rate,
# use_grad_checkpoint, checkpoint and trust_checkpoint.
EVA_VARIANTS = {
    "eva_clip_g": dict(img_size=448, patch_size=14, width=1408, depth=39, num_heads=16, mlp_ratio=4.3637),
    "eva_clip_tiny": dict(img_size=224, patch_size=14, width=32, depth=2, num_heads=4, mlp_ratio=2.0),
}
registry.register_variants("encoder", EVA_VARIANTS, build_eva_vit)
