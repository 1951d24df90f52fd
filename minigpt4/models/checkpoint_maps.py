"""Released Emotion-LLaMA / MiniGPT-v2 checkpoints <-> this model's parameter names.

The released ``.pth`` files hold ``{"model": state_dict, ...}`` with only the trainable
tensors: ``llama_proj.*``, ``feats_llama_proj{1,2,3}.*``, ``cls_tk_llama_proj.*`` and LoRA
weights written by peft 0.2, whose names carry no adapter name
(``...q_proj.lora_A.weight``).  Current peft inserts the adapter name
(``...q_proj.lora_A.default.weight``).  Upstream loaded with ``strict=False`` and so dropped
every LoRA tensor without a word; here each one is mapped and checked.

Two more layouts load by rule, everything else stays strict:

- Upstream-only modules (:data:`UPSTREAM_ONLY`): the original model created them trainable
  and its runner saved every trainable tensor, but its forward pass never used them.  Their
  tensors are reported as "upstream-only, not used" and skipped, under ``strict`` too.
- Parts the model was deliberately built without (a model for some feature kinds only: no
  LLM, or only its first decoder layers): their tensors are reported as "not built for this
  feature set" and skipped, under ``strict`` too.  Only a tensor with no place in the model
  can be skipped so; one the model has always loads.
- MiniGPT-v2's own checkpoint, the upstream training start point, holds ``llama_proj.*`` and
  LoRA only.  A file with none of the Emotion-LLaMA projectors (:data:`EMOTION_PROJECTORS`)
  is read as that layout: the projectors keep their fresh initialisation and are reported as
  newly initialised.  A file holding some of them must hold all.
"""

from __future__ import annotations

import logging
import re
from typing import Callable

import torch
from torch import nn

from minigpt4.common.checkpoint_io import LoadReport, apply_state_dict

logger = logging.getLogger(__name__)

LORA_RELEASED = re.compile(r"^(?P<head>.*\.lora_[AB])\.(?P<tail>weight|bias)$")
LORA_CURRENT = re.compile(r"^(?P<head>.*\.lora_[AB])\.(?P<adapter>[^.]+)\.(?P<tail>weight|bias)$")

# Top-level modules of the original model that this one does not have -> why.  Extend this
# list (with the reason) only for modules the original's forward pass never used.
UPSTREAM_ONLY = {
    "attention": "the original's auxiliary MLP head over the stream features, trainable but never "
                 "used in its forward pass",
}
UPSTREAM_ONLY_REASON = "upstream-only, not used"
NOT_BUILT_REASON = "not built for this feature set"

# Projectors Emotion-LLaMA added to MiniGPT-v2; MiniGPT-v2's own checkpoint has none of them.
EMOTION_PROJECTORS = ("feats_llama_proj1", "feats_llama_proj2", "feats_llama_proj3", "cls_tk_llama_proj")
PROJECTORS = ("llama_proj", *EMOTION_PROJECTORS)


def _module(name: str) -> str:
    return name.split(".", 1)[0]


def tensor_group(name: str) -> str:
    """The group a tensor is counted in by load reports: LoRA, projectors or its top module."""
    if ".lora_" in name:
        return "LoRA"
    if _module(name) in PROJECTORS:
        return "projectors"
    return _module(name)


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


def load_released_state(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    what: str,
    strict: bool = True,
    start_point: bool = True,
    not_built: Callable[[str], bool] | None = None,
) -> LoadReport:
    """Put a state dict in the released (or current peft) layout into ``model``'s trainables.

    Used by ``model.ckpt`` (released files, ``start_point=True``: a MiniGPT-v2 file is a
    valid training start) and by the training runner's exact resume (``start_point=False``:
    the file must hold every trainable tensor).  A wrongly shaped tensor is always an error;
    under ``strict`` so is a file tensor with no place in the model (upstream-only modules
    excepted) and a trainable tensor the file does not provide.  ``not_built(name)`` says which
    tensors belong to parts the model was built without; those it has no place for are
    skipped.  Logs one summary line.
    """
    mapped = released_to_model(state_dict)
    skipped = {name: UPSTREAM_ONLY_REASON for name in mapped if _module(name) in UPSTREAM_ONLY}
    if not_built is not None:
        own = model.state_dict()
        skipped |= {name: NOT_BUILT_REASON for name in mapped if name not in own and not_built(name)}
    kept = {name: tensor for name, tensor in mapped.items() if name not in skipped}
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    initialised = []
    if start_point and not any(_module(name) in EMOTION_PROJECTORS for name in kept):
        initialised = [name for name in trainable if _module(name) in EMOTION_PROJECTORS]
    report = apply_state_dict(
        model, kept, what, require_all=strict, strict_unexpected=strict,
        required=[name for name in trainable if name not in initialised],
    )
    report.skipped, report.initialised = skipped, initialised
    logger.info("%s: %s", what, report.summary(tensor_group))
    if not report.clean:
        logger.warning("%s does not match the model exactly: %s", what, report.describe())
    return report
