"""The training runner's optimizer-step loop and train mode (SPEC section 8), on CPU.

``micro_steps`` is checked against plain-torch references written out here: accumulation
(``accum_grad_iters``, including a shorter last group), clipping (``max_grad_norm``), fp16
with a grad scaler (``torch.amp.GradScaler("cpu")``), bf16 autocast, and ``no_sync`` under
DDP (a one-process gloo group).  SGD keeps every effect visible: Adam would hide a constant
scale of the gradient, and so a clipping or unscaling mistake.
"""

from __future__ import annotations

import copy
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from minigpt4.runners.runner_base import micro_steps, set_train_mode
from tiny_model import IMAGE_SIZE, build_model

LR = 0.1


def make_batches(n: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(3, 4, generator=generator), "y": torch.randn(3, 2, generator=generator)} for _ in range(n)]


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def mse(net: nn.Module, samples: dict) -> torch.Tensor:
    return ((net(samples["x"]).float() - samples["y"]) ** 2).mean()


def run(net, batches, accum, max_grad_norm, scaler=None, autocast=None, loss_of=mse) -> list[tuple[int, float, float]]:
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    steps = micro_steps(
        net, batches, len(batches), loss_of, optimizer, scaler or torch.amp.GradScaler("cpu", enabled=False),
        set_lr=lambda step: LR, accum_grad_iters=accum, max_grad_norm=max_grad_norm,
        **({"autocast": autocast} if autocast else {}),
    )
    return list(steps)


def reference(net, batches, accum, max_grad_norm) -> None:
    """Plain torch: one step per group on the mean loss of its micro-batches, clipped by hand."""
    params = list(net.parameters())
    for start in range(0, len(batches), accum):
        group = batches[start : start + accum]
        loss = sum(mse(net, b) for b in group) / len(group)
        grads = torch.autograd.grad(loss, params)
        if max_grad_norm > 0:
            norm = torch.sqrt(sum((g**2).sum() for g in grads))
            grads = [g * min(1.0, max_grad_norm / (float(norm) + 1e-6)) for g in grads]
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= LR * g


def assert_same_params(a: nn.Module, b: nn.Module, **tolerance) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=name, **tolerance)


@pytest.mark.parametrize("accum, max_grad_norm", [(1, 0.0), (4, 0.0), (2, 0.0), (4, 1.0), (2, 0.05)])
def test_accumulation_and_clipping_equal_the_plain_torch_reference(accum, max_grad_norm):
    """Five micro-batches: with accum 2 the groups are [0, 1], [2, 3], [4]; 4 and 1.0 are the MW config's."""
    batches = make_batches(5)
    ours, theirs = make_net(), make_net()
    log = run(ours, batches, accum, max_grad_norm)
    reference(theirs, batches, accum, max_grad_norm)
    assert [step for step, _, _ in log] == list(range(5))
    assert_same_params(ours, theirs, rtol=1e-5, atol=1e-6)


def test_clipping_and_accumulation_change_the_result():
    """The cases above could not pass by accident: each setting moves the weights elsewhere."""
    batches = make_batches(5)
    plain, clipped, accumulated = make_net(), make_net(), make_net()
    run(plain, batches, 1, 0.0)
    run(clipped, batches, 1, 0.05)
    run(accumulated, batches, 4, 0.0)
    for other in (clipped, accumulated):
        assert not torch.allclose(plain[0].weight, other[0].weight, atol=1e-4)


def test_losses_are_reported_per_micro_batch_before_division():
    batches = make_batches(3)
    with torch.no_grad():
        expected = [float(mse(make_net(), b)) for b in batches]
    log = run(make_net(), batches, accum=3, max_grad_norm=0.0)  # one group: no step before the last loss
    assert [loss for _, loss, _ in log] == pytest.approx(expected)
    assert [lr for _, _, lr in log] == [LR] * 3


def test_fp16_grad_scaler_unscales_before_clipping():
    """With a scale of 2**12 and no overflow the result is the unscaled run's: the clip saw true gradients."""
    batches = make_batches(4)
    scaled, plain = make_net(), make_net()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=1000)
    run(scaled, batches, 2, 0.05, scaler=scaler)
    run(plain, batches, 2, 0.05)
    assert scaler.get_scale() == 2.0**12  # no overflow, no change
    assert_same_params(scaled, plain, rtol=1e-4, atol=1e-6)


def test_fp16_overflow_skips_the_step_and_backs_off_the_scale():
    batches = make_batches(2)
    net = make_net()
    before = copy.deepcopy(net)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # loss * scale overflows to inf
    run(net, batches, 2, 1.0, scaler=scaler, autocast=lambda: torch.autocast("cpu", dtype=torch.float16))
    assert scaler.get_scale() == 2.0**126
    assert_same_params(net, before, rtol=0, atol=0)


def test_bf16_autocast_computes_in_bf16_and_updates_fp32_weights():
    batches = make_batches(4)
    ours, theirs = make_net(), make_net()
    seen = []

    def loss_of(net, samples):
        out = net(samples["x"])
        seen.append(out.dtype)
        return ((out.float() - samples["y"]) ** 2).mean()

    run(ours, batches, 2, 1.0, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16), loss_of=loss_of)
    reference(theirs, batches, 2, 1.0)
    assert seen == [torch.bfloat16] * 4
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    assert_same_params(ours, theirs, rtol=0.05, atol=2e-3)  # bf16 keeps ~3 significant digits
    assert not torch.equal(ours[0].weight, make_net()[0].weight)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_accumulation_syncs_only_on_the_last_micro_batch_of_each_group():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(make_net())
        syncing = []

        def loss_of(net, samples):
            syncing.append(net.require_backward_grad_sync)  # False inside no_sync()
            return mse(net, samples)

        batches = make_batches(5)
        run(ddp, batches, 2, 1.0, loss_of=loss_of)
        assert syncing == [False, True, False, True, True]
        plain = make_net()
        reference(plain, batches, 2, 1.0)
        assert_same_params(ddp.module, plain, rtol=1e-5, atol=1e-6)
    finally:
        dist.destroy_process_group()


def test_frozen_vit_stays_in_eval_mode_while_the_rest_trains(tiny_assets):
    model = build_model(tiny_assets, drop_path_rate=0.5)
    set_train_mode(model)
    assert model.training and model.llama_model.training
    assert not any(m.training for m in model.visual_encoder.modules())
    lora_dropout = [m for n, m in model.named_modules() if n.endswith("lora_dropout.default")]
    assert lora_dropout and all(m.training for m in lora_dropout)  # trainable parts keep their dropout
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        first, second = model.visual_encoder(image), model.visual_encoder(image)
    assert torch.equal(first, second)  # drop-path (rate 0.5) is off
