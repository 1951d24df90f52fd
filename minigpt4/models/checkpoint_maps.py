"""Released Emotion-LLaMA / MiniGPT-v2 checkpoints <-> this model's parameter names.

The released ``.pth`` files hold ``{"model": state_dict, ...}`` with only the trainable
tensors: ``llama_proj.*``, ``feats_llama_proj{1,2,3}.*``, ``cls_tk_llama_proj.*`` and LoRA
weights written by peft 0.2, whose names carry no adapter name
(``...q_proj.lora_A.weight``).  Current peft inserts the adapter name
(``...q_proj.lora_A.default.weight``).  Upstream loaded with ``strict=False`` and so dropped
every LoRA tensor without a word; here each one is mapped and checked.
"""

from __future__ import annotations

import re

import torch

LORA_RELEASED = re.compile(r"^(?P<head>.*\.lora_[AB])\.(?P<tail>weight|bias)$")
LORA_CURRENT = re.compile(r"^(?P<head>.*\.lora_[AB])\.(?P<adapter>[^.]+)\.(?P<tail>weight|bias)$")


def released_to_model(state_dict: dict[str, torch.Tensor], adapter: str = "default") -> dict[str, torch.Tensor]:
    """Rename released (peft 0.2) LoRA keys to current peft names; other keys pass as is."""
    mapped = {}
    for name, tensor in state_dict.items():
        match = LORA_RELEASED.match(name)
        mapped[f"{match['head']}.{adapter}.{match['tail']}" if match else name] = tensor
    return mapped


def model_to_released(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the adapter name from LoRA keys so the file loads in the upstream code too."""
    mapped = {}
    for name, tensor in state_dict.items():
        match = LORA_CURRENT.match(name)
        mapped[f"{match['head']}.{match['tail']}" if match else name] = tensor
    return mapped
