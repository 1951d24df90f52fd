"""Random ViT tensors in the original checkpoint names, shared by the encoder tests."""

from __future__ import annotations

from typing import Callable

import torch


def random_tensors(seed: int) -> Callable[..., torch.Tensor]:
    """``rand(*shape, scale=0.1, offset=0.0)`` drawing from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.1, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=generator)

    return rand


def random_block(rand: Callable[..., torch.Tensor], prefix: str, width: int, mlp_hidden: int, qv_bias: bool) -> dict:
    """One pre-norm block, every tensor random (norm weights around 1).  ``qv_bias``: separate
    learned q and v biases (EVA, VideoMAE); otherwise a fused qkv bias (timm ViT, MAE)."""
    if qv_bias:
        qkv_bias = {"attn.q_bias": rand(width), "attn.v_bias": rand(width)}
    else:
        qkv_bias = {"attn.qkv.bias": rand(3 * width)}
    tensors = {
        "norm1.weight": rand(width, offset=1.0),
        "norm1.bias": rand(width),
        "attn.qkv.weight": rand(3 * width, width, scale=0.3),
        **qkv_bias,
        "attn.proj.weight": rand(width, width),
        "attn.proj.bias": rand(width),
        "norm2.weight": rand(width, offset=1.0),
        "norm2.bias": rand(width),
        "mlp.fc1.weight": rand(mlp_hidden, width),
        "mlp.fc1.bias": rand(mlp_hidden),
        "mlp.fc2.weight": rand(width, mlp_hidden),
        "mlp.fc2.bias": rand(width),
    }
    return {prefix + name: tensor for name, tensor in tensors.items()}
