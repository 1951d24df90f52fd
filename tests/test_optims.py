import math

import pytest
import torch

from minigpt4.common.optims import (
    LinearWarmupCosineLRScheduler,
    LinearWarmupStepLRScheduler,
    build_optimizer_param_groups,
)
from minigpt4.common.registry import registry


def _optimizer(lr=1.0):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2, 2))], lr=lr)


def _cosine(optimizer, **overrides):
    settings = dict(max_epoch=4, iters_per_epoch=10, min_lr=1e-5, init_lr=1e-3, warmup_steps=5, warmup_start_lr=1e-6)
    settings.update(overrides)
    return LinearWarmupCosineLRScheduler(optimizer, **settings)


def _walk(scheduler, positions):
    return [scheduler.step(epoch, step) for epoch, step in positions]


POSITIONS = [(epoch, step) for epoch in range(4) for step in range(10)]


def test_registered_names():
    assert registry.get("lr_scheduler", "linear_warmup_cosine_lr") is LinearWarmupCosineLRScheduler
    assert registry.get("lr_scheduler", "linear_warmup_step_lr") is LinearWarmupStepLRScheduler


def test_cosine_warmup_is_linear_then_cosine_per_epoch():
    optimizer = _optimizer()
    scheduler = _cosine(optimizer)
    warmup_lr, init_lr, min_lr = 1e-6, 1e-3, 1e-5

    for step in range(5):
        expected = warmup_lr + (init_lr - warmup_lr) * step / 5
        assert scheduler.step(0, step) == pytest.approx(expected, rel=1e-12)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
    # Warm-up ends exactly on init_lr, which is also the cosine value of epoch 0.
    for step in (5, 9):
        assert scheduler.step(0, step) == pytest.approx(init_lr, rel=1e-12)
    for epoch in (1, 2, 3):
        expected = (init_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * epoch / 4)) + min_lr
        assert scheduler.step(epoch, 0) == pytest.approx(expected, rel=1e-12)
        assert scheduler.step(epoch, 7) == pytest.approx(expected, rel=1e-12)


def test_default_warmup_start_is_init_lr_and_zero_warmup_means_none():
    scheduler = _cosine(_optimizer(), warmup_start_lr=-1)
    assert scheduler.step(0, 0) == pytest.approx(1e-3)
    scheduler = _cosine(_optimizer(), warmup_steps=0)
    assert scheduler.step(0, 0) == pytest.approx(1e-3)


def test_step_scheduler_values():
    optimizer = _optimizer()
    scheduler = LinearWarmupStepLRScheduler(
        optimizer, max_epoch=6, min_lr=5e-4, init_lr=1e-2, decay_rate=0.5, warmup_start_lr=1e-3, warmup_steps=4
    )
    for step in range(4):
        assert scheduler.step(0, step) == pytest.approx(1e-3 + (1e-2 - 1e-3) * step / 4, rel=1e-12)
    assert scheduler.step(0, 4) == pytest.approx(1e-2)
    for epoch in range(1, 6):
        expected = max(5e-4, 1e-2 * 0.5**epoch)
        assert scheduler.step(epoch, 0) == pytest.approx(expected, rel=1e-12)
    assert scheduler.step(5, 0) == pytest.approx(5e-4)  # 1e-2 / 32 is below min_lr


def _build(kind, optimizer, **overrides):
    if kind == "cosine":
        return _cosine(optimizer, **overrides)
    settings = dict(max_epoch=4, min_lr=1e-5, init_lr=1e-3, decay_rate=0.7, warmup_start_lr=1e-6, warmup_steps=5)
    settings.update(overrides)
    return LinearWarmupStepLRScheduler(optimizer, **settings)


@pytest.mark.parametrize("kind", ["cosine", "step"])
def test_state_dict_round_trip_resumes_identical_sequence(kind):
    uninterrupted = _walk(_build(kind, _optimizer()), POSITIONS)

    first = _build(kind, _optimizer())
    before = _walk(first, POSITIONS[:13])
    state = first.state_dict()
    assert all(isinstance(v, (int, float, type(None))) for v in state.values())

    # A fresh scheduler built with other settings takes everything from the saved state.
    resumed_optimizer = _optimizer(lr=123.0)
    resumed = _build(kind, resumed_optimizer, init_lr=5.0, min_lr=0.0)
    resumed.load_state_dict(state)
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(before[-1])
    after = _walk(resumed, POSITIONS[13:])
    assert before + after == uninterrupted


def test_load_state_dict_rejects_foreign_state():
    scheduler = _cosine(_optimizer())
    with pytest.raises(KeyError, match="unknown keys"):
        scheduler.load_state_dict({"decay_rate": 0.5})


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Linear(3, 3)
        self.proj = torch.nn.Linear(3, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.scale = torch.nn.Parameter(torch.ones(4))
        self.frozen.requires_grad_(False)


def test_param_groups_split_decay_and_skip_frozen():
    model = _Tiny()
    groups = build_optimizer_param_groups(model, weight_decay=0.05)
    by_decay = {group["weight_decay"]: {id(p) for p in group["params"]} for group in groups}
    assert by_decay[0.05] == {id(model.proj.weight)}
    assert by_decay[0.0] == {id(model.proj.bias), id(model.norm.weight), id(model.norm.bias), id(model.scale)}
    frozen = {id(p) for p in model.frozen.parameters()}
    assert not frozen & (by_decay[0.05] | by_decay[0.0])
    torch.optim.AdamW(groups, lr=1e-3)  # the groups are valid AdamW input


def test_param_groups_need_trainable_parameters():
    model = _Tiny().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer_param_groups(model, weight_decay=0.05)
