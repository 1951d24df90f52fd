"""Learning-rate schedules with LAVIS semantics, and AdamW parameter groups.

Both schedules share the LAVIS warm-up: during epoch 0, for the first ``warmup_steps``
iterations, the learning rate rises linearly from ``warmup_start_lr`` to ``init_lr``::

    lr = warmup_start_lr + (init_lr - warmup_start_lr) * step / warmup_steps

After warm-up the rate depends on the epoch only (it is constant within an epoch), and the
epoch-0 value of both schedules is ``init_lr``, so the hand-over is seamless.  One deliberate
difference from LAVIS: with ``warmup_steps: 0`` LAVIS still sets ``warmup_start_lr`` for
step 0 of epoch 0; here no warm-up means none.

The runner calls ``step(cur_epoch, cur_step)`` before every optimizer step.  The learning
rate is a pure function of (epoch, step) and the settings, so ``state_dict`` holds just those
as plain numbers and a resumed run reproduces the schedule exactly.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from minigpt4.common.registry import registry

logger = logging.getLogger(__name__)


class _WarmupScheduler:
    """Linear warm-up in epoch 0, then ``epoch_lr(epoch)``; subclasses define the latter."""

    def __init__(self, optimizer: torch.optim.Optimizer, init_lr: float, warmup_steps: int, warmup_start_lr: float):
        self.optimizer = optimizer
        self.init_lr = init_lr
        self.warmup_steps = warmup_steps
        # -1 (the LAVIS convention) means "no ramp": start at init_lr.
        self.warmup_start_lr = warmup_start_lr if warmup_start_lr >= 0 else init_lr
        self.last_epoch: int | None = None
        self.last_step: int | None = None

    def epoch_lr(self, epoch: int) -> float:
        raise NotImplementedError

    def lr_at(self, cur_epoch: int, cur_step: int) -> float:
        if cur_epoch == 0 and cur_step < self.warmup_steps:
            progress = cur_step / self.warmup_steps
            return self.warmup_start_lr + (self.init_lr - self.warmup_start_lr) * progress
        return self.epoch_lr(cur_epoch)

    def step(self, cur_epoch: int, cur_step: int) -> float:
        """Set every parameter group's lr for this iteration and return it."""
        lr = self.lr_at(cur_epoch, cur_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_epoch, self.last_step = cur_epoch, cur_step
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if key != "optimizer"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - set(self.state_dict())
        if unknown:
            raise KeyError(
                f"{type(self).__name__} state has unknown keys {sorted(unknown)}; was it saved by another scheduler?"
            )
        vars(self).update(state)
        if self.last_epoch is not None:
            # Put the optimizer back on the rate it had when the state was saved.
            self.step(self.last_epoch, self.last_step)


@registry.register_lr_scheduler("linear_warmup_cosine_lr")
class LinearWarmupCosineLRScheduler(_WarmupScheduler):
    """Warm-up, then per-epoch cosine from ``init_lr`` (epoch 0) towards ``min_lr``.

    ``lr(epoch) = (init_lr - min_lr) * 0.5 * (1 + cos(pi * epoch / max_epoch)) + min_lr``
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_epoch: int,
        iters_per_epoch: int,
        min_lr: float,
        init_lr: float,
        warmup_steps: int = 0,
        warmup_start_lr: float = -1,
    ):
        super().__init__(optimizer, init_lr, warmup_steps, warmup_start_lr)
        self.max_epoch = max_epoch
        self.iters_per_epoch = iters_per_epoch
        self.min_lr = min_lr
        if warmup_steps > iters_per_epoch:
            logger.warning(
                "warmup_steps (%d) exceeds iters_per_epoch (%d): warm-up only runs in epoch 0, "
                "so the lr jumps to the cosine schedule at epoch 1",
                warmup_steps,
                iters_per_epoch,
            )

    def epoch_lr(self, epoch: int) -> float:
        return (self.init_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / self.max_epoch)) + self.min_lr


@registry.register_lr_scheduler("linear_warmup_step_lr")
class LinearWarmupStepLRScheduler(_WarmupScheduler):
    """Warm-up, then ``lr(epoch) = max(min_lr, init_lr * decay_rate ** epoch)``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_epoch: int,
        min_lr: float,
        init_lr: float,
        decay_rate: float = 1,
        warmup_start_lr: float = -1,
        warmup_steps: int = 0,
    ):
        super().__init__(optimizer, init_lr, warmup_steps, warmup_start_lr)
        self.max_epoch = max_epoch
        self.min_lr = min_lr
        self.decay_rate = decay_rate

    def epoch_lr(self, epoch: int) -> float:
        return max(self.min_lr, self.init_lr * self.decay_rate**epoch)


def _norm_parameter_ids(model: torch.nn.Module) -> set[int]:
    # Norm layers are recognised by class name so LLaMA's RMSNorm counts without importing it.
    return {
        id(param)
        for module in model.modules()
        if "norm" in type(module).__name__.lower()
        for param in module.parameters(recurse=False)
    }


def build_optimizer_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups over the trainable parameters: decay for matrices, none for the rest.

    Biases, norm weights and any parameter with fewer than 2 dimensions (gains, position
    scalars) are excluded from weight decay, as shrinking them towards zero only hurts.
    Frozen parameters are left out entirely.
    """
    norm_ids = _norm_parameter_ids(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or name.endswith("bias") or id(param) in norm_ids:
            no_decay.append(param)
        else:
            decay.append(param)
    if not decay and not no_decay:
        raise ValueError(
            f"{type(model).__name__} has no trainable parameters; check the freeze settings "
            "(freeze_vit, lora_r) of the model config"
        )
    logger.info(
        "optimizer: %d tensors (%d parameters) with weight decay %g, %d tensors (%d parameters) without",
        len(decay),
        sum(p.numel() for p in decay),
        weight_decay,
        len(no_decay),
        sum(p.numel() for p in no_decay),
    )
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]
