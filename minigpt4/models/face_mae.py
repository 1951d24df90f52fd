"""FaceMAE: the MAE-Face ViT-L/16 that turns face frames into one vector each.

The encoder is timm's ``VisionTransformer`` as MAE builds it (qkv bias, LayerNorm eps 1e-6,
a CLS token, a learned position table with an entry for it).  A frame's feature is the CLS
token after the final norm, or with ``global_pool`` the mean of the patch tokens through
``fc_norm`` (MAE's fine-tuning head; timm then has no final norm, exactly as MAE deletes it).
MAE-Face's ``mae_checkpoint-340.pth`` uses timm's names, so loading it only drops the
pre-training decoder and resizes the position table when the patch grid differs.

A pre-training file has no ``fc_norm``.  MAE's fine-tuning recipe loads it into a
global-pooling model anyway, which leaves ``fc_norm`` at its initial values (weight 1,
bias 0); ``fresh_fc_norm`` does that on request (the flag VideoMAE has for the same case),
and without it such a file is refused with global pooling.
"""

from __future__ import annotations

import logging
import os
from functools import partial

import torch
from timm.layers import LayerNorm
from timm.models.vision_transformer import VisionTransformer

from minigpt4.common.checkpoint_io import CheckpointError, LoadReport, apply_state_dict, group_by_prefix, read_state_dict
from minigpt4.common.registry import registry
from minigpt4.models.pos_embed import released_vit_tensors

logger = logging.getLogger(__name__)

# MAE pre-training leaves its decoder and mask token in the file; the encoder never uses them
_PRETRAINING_ONLY = ("decoder_", "mask_token")


class FaceMAE(VisionTransformer):
    """timm's ViT as MAE-Face's encoder; ``forward`` maps [N, 3, img, img] in [0, 1] to [N, width]."""

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        global_pool: bool = False,
    ):
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=width,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            class_token=True,
            norm_layer=partial(LayerNorm, eps=1e-6),
            # "avg" gives MAE's finetune semantics: patch tokens only, then fc_norm
            global_pool="avg" if global_pool else "token",
            num_classes=0,  # a feature extractor: forward returns the pooled vector
        )
        self.img_size = img_size

    @property
    def uses_global_pool(self) -> bool:
        return self.global_pool == "avg"

    @property
    def patch_grid(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)


def face_mae_checkpoint_filter(
    state_dict: dict[str, torch.Tensor], model: FaceMAE
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Turn an MAE(-Face) state dict into ``model``'s tensors.

    Returns the tensors to load and the names that are ignored on purpose: the
    pre-training decoder and mask token, and the norm the model's pooling does not use
    (``fc_norm`` with CLS pooling, the final ``norm`` with global pooling).  Every other
    name is passed on, so loading names anything the model has no place for, as well as
    anything the file lacks.
    """
    # global pooling ends in fc_norm and CLS pooling in norm; the other one has no place
    unused_norm = "norm." if model.uses_global_pool else "fc_norm."
    return released_vit_tensors(
        state_dict, model.patch_grid, leave_out=lambda name: name.startswith((*_PRETRAINING_ONLY, unused_norm))
    )


def load_face_mae_checkpoint(
    model: FaceMAE, path: str | os.PathLike, trust_checkpoint: bool = False, fresh_fc_norm: bool = False
) -> LoadReport:
    """Load an MAE-Face file (``{"model": ...}`` or raw) into ``model``; every tensor must land.

    With global pooling, a file without ``fc_norm`` (MAE pre-training) is refused unless
    ``fresh_fc_norm``, which gives the model an untrained one (weight 1, bias 0) as MAE's
    fine-tuning recipe does when it loads such a file.
    """
    what = f"FaceMAE checkpoint {path}"
    if fresh_fc_norm and not model.uses_global_pool:
        raise ValueError(
            "--fresh_fc_norm applies to --global_pool only (the CLS feature goes through norm, not fc_norm)"
        )
    tensors, ignored = face_mae_checkpoint_filter(read_state_dict(path, "FaceMAE checkpoint", trust_checkpoint), model)
    if model.uses_global_pool and "fc_norm.weight" not in tensors:
        if not fresh_fc_norm:
            raise CheckpointError(
                f"{what} has no fc_norm (an MAE pre-training file), which --global_pool needs; pass "
                "--fresh_fc_norm to use an untrained fc_norm (weight 1, bias 0) as MAE's fine-tuning recipe does, "
                "or drop --global_pool to use the CLS token"
            )
        tensors["fc_norm.weight"] = torch.ones_like(model.fc_norm.weight)
        tensors["fc_norm.bias"] = torch.zeros_like(model.fc_norm.bias)
        logger.warning("%s has no fc_norm: using a fresh one (weight 1, bias 0) as MAE's fine-tuning recipe does", what)
    report = apply_state_dict(model, tensors, what)
    # expected leftovers of the file (the filter kept them out of apply_state_dict): one
    # counted line per file, not a list of names that reads like an error
    report.skipped = {name: "pre-training or pooling parts the encoder does not use" for name in ignored}
    logger.info("%s: %s", what, report.summary(group_by_prefix(_PRETRAINING_ONLY)))
    return report


def build_face_mae(
    *,
    checkpoint: str | os.PathLike | None = None,
    trust_checkpoint: bool = False,
    fresh_fc_norm: bool = False,
    **architecture,
) -> FaceMAE:
    """Build the encoder of ``architecture`` (:class:`FaceMAE`'s arguments) and, given a
    ``checkpoint``, load it (strictly)."""
    model = FaceMAE(**architecture)
    if checkpoint is not None:
        load_face_mae_checkpoint(model, checkpoint, trust_checkpoint, fresh_fc_norm)
    return model


# Registered variants (architecture and default input size), timm-style: MAE-Face ViT-L/16
# (width 1024, 24 blocks, 16 heads, 4096 MLP units) and the same layout at a few hundred
# kilobytes for tests and the demo.  Callers may override img_size, global_pool, checkpoint,
# trust_checkpoint and fresh_fc_norm.
FACE_MAE_VARIANTS = {
    "face_mae_vit_large": dict(img_size=224, patch_size=16, width=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "face_mae_tiny": dict(img_size=64, patch_size=16, width=64, depth=2, num_heads=4, mlp_ratio=4.0),
}
registry.register_variants("encoder", FACE_MAE_VARIANTS, build_face_mae)
