"""The tiny MiniGPT-v2 the model tests share: built from the tiny YAML and the generated assets."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

import minigpt4
from minigpt4.models.minigpt_v2 import MiniGPTv2

TINY_YAML = Path(minigpt4.__file__).resolve().parent / "configs" / "models" / "minigpt_v2_tiny.yaml"

# SPEC section 6, spelled out (trailing space included).
HCMW_INSTRUCTION = (
    "<video><VideoHere></video> <feature><FeatureHere></feature> [classification] "
    "Please classify the video into one of these categories: mind wandering or non-mind wandering. "
)
FEATURE_DIM = 64  # tiny encoders' width: the length of the FaceMAE / VideoMAE vectors
HIDDEN = 64  # tiny LLaMA hidden size
IMAGE_SIZE = 224  # tiny EVA input


def tiny_config(assets, **overrides):
    """The tiny model section with paths from the ``tiny_assets`` fixture, plus ``overrides``."""
    cfg = OmegaConf.load(TINY_YAML).model
    cfg.llama_model = str(assets["llama_dir"])
    cfg.vit_checkpoint = str(assets["eva_ckpt"])
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def build_model(assets, seed: int = 0, **overrides) -> MiniGPTv2:
    """A seeded tiny model in eval mode (the seed fixes the projectors' initial weights)."""
    torch.manual_seed(seed)
    return MiniGPTv2.from_config(tiny_config(assets, **overrides)).eval()


def random_visual_inputs(n: int, seed: int) -> dict:
    """Random images and feature vectors of ``n`` clips."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "video_features": torch.randn(n, 3, FEATURE_DIM, generator=generator),
    }
