"""The EVA-CLIP encoder: timm configuration, released-checkpoint loading and registration."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.common.registry import registry
from minigpt4.models.eva_vit import eva_checkpoint_filter, load_eva_checkpoint
from vit_weights import random_block, random_tensors

# the tiny registered encoder; the released-layout file below has one block more and an
# 8x8 position table, as the released eva_vit_g.pth has for ViT-g (40 blocks, 16x16)
WIDTH, HEADS, MLP_HIDDEN, PATCH = 32, 4, 64, 14
MODEL_DEPTH, FILE_DEPTH, FILE_GRID = 2, 3, 8


def released_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A LAVIS-layout EVA state dict with every tensor random, norms and biases included."""
    rand = random_tensors(seed)

    sd = {
        "cls_token": rand(1, 1, WIDTH, scale=1.0),
        "pos_embed": rand(1, 1 + FILE_GRID**2, WIDTH, scale=1.0),
        "patch_embed.proj.weight": rand(WIDTH, 3, PATCH, PATCH, scale=0.02),
        "patch_embed.proj.bias": rand(WIDTH),
    }
    for i in range(FILE_DEPTH):
        sd |= random_block(rand, f"blocks.{i}.", WIDTH, MLP_HIDDEN, qv_bias=True)
    return sd


def reference_forward(
    sd: dict[str, torch.Tensor], images: torch.Tensor, grid: int, depth: int
) -> torch.Tensor:
    """EVA-CLIP written out in plain torch, reading the raw released tensors."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)  # [B, grid*grid, C], row-major patches
    batch, width = x.shape[0], x.shape[2]
    x = torch.cat([sd["cls_token"].expand(batch, -1, -1), x], dim=1)

    # The table is resized here from the raw released tensor, not taken from the loader:
    # this pins which slice is the CLS entry, that patches are laid out row-major and that
    # channels stay channels, all of which the encoder's filter could get wrong.
    table = sd["pos_embed"]
    old = math.isqrt(table.shape[1] - 1)
    patch_table = table[:, 1:].reshape(1, old, old, width).permute(0, 3, 1, 2)
    patch_table = F.interpolate(patch_table, size=(grid, grid), mode="bicubic", align_corners=False)
    patch_table = patch_table.permute(0, 2, 3, 1).reshape(1, grid * grid, width)
    x = x + torch.cat([table[:, :1], patch_table], dim=1)

    head_dim = width // HEADS
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        q_bias, v_bias = sd[p + "attn.q_bias"], sd[p + "attn.v_bias"]
        qkv_bias = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], qkv_bias)
        q, k, v = qkv.reshape(batch, -1, 3, HEADS, head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)
        h = (attn @ v).transpose(1, 2).reshape(batch, -1, width)
        x = x + F.linear(h, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))  # exact GELU
        x = x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return x


@pytest.fixture
def released_file(tmp_path):
    path = tmp_path / "eva_vit_tiny.pth"
    torch.save(released_state_dict(), path)
    return path


def tiny(**overrides):
    return registry.get("encoder", "eva_clip_tiny")(**overrides)


def test_matches_plain_reference_including_position_resize(released_file):
    model = tiny(checkpoint=released_file).eval()
    assert model.patch_grid == (16, 16)  # the file's 8x8 table is resized on load
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(images)
        expected = reference_forward(released_state_dict(), images, grid=16, depth=MODEL_DEPTH)
    assert out.shape == (2, 1 + 16 * 16, WIDTH)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_tail_block_is_reported_not_loaded(released_file, caplog):
    model = tiny()
    with caplog.at_level(logging.INFO, logger="minigpt4.models.eva_vit"):
        report = load_eva_checkpoint(model, released_file)
    assert not report.missing and not report.mismatched
    assert report.unexpected and all(name.startswith("blocks.2.") for name in report.unexpected)
    assert len(report.unexpected) == len([n for n in released_state_dict() if n.startswith("blocks.2.")])
    assert "blocks [2]" in caplog.text


def test_filter_returns_foreign_tensors_as_unused():
    model = tiny()
    sd = released_state_dict() | {"head.weight": torch.zeros(10, WIDTH)}
    tensors, unused = eva_checkpoint_filter(sd, model)
    assert "head.weight" in unused
    assert set(tensors) == set(model.state_dict())
    assert tensors["pos_embed"].shape == (1, 1 + 16 * 16, WIDTH)


def test_foreign_tensor_fails_only_under_strict(tmp_path):
    path = tmp_path / "extra.pth"
    torch.save(released_state_dict() | {"head.weight": torch.zeros(10, WIDTH)}, path)
    with pytest.raises(CheckpointError, match=r"head\.weight"):
        load_eva_checkpoint(tiny(), path)
    report = load_eva_checkpoint(tiny(), path, strict=False)
    assert "head.weight" in report.unexpected


def test_wrong_shape_names_tensor_file_and_shapes(tmp_path):
    path = tmp_path / "wide_mlp.pth"
    torch.save(released_state_dict() | {"blocks.0.mlp.fc1.weight": torch.zeros(2 * MLP_HIDDEN, WIDTH)}, path)
    with pytest.raises(CheckpointError) as err:
        tiny(checkpoint=path)
    message = str(err.value)
    assert "blocks.0.mlp.fc1.weight" in message and str(path) in message
    assert str((2 * MLP_HIDDEN, WIDTH)) in message and str((MLP_HIDDEN, WIDTH)) in message


def test_missing_tensor_is_named(tmp_path):
    path = tmp_path / "no_norm.pth"
    sd = released_state_dict()
    del sd["blocks.1.norm2.bias"]
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"blocks\.1\.norm2\.bias"):
        tiny(checkpoint=path)


def test_tiny_options_reach_timm():
    model = tiny(drop_path_rate=0.1, use_grad_checkpoint=True)
    assert model.grad_checkpointing
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    model(torch.randn(1, 3, 224, 224)).sum().backward()
    assert model.blocks[0].attn.q_bias.grad is not None


def test_eva_clip_g_configuration():
    # built on the meta device: the configuration without 1B parameters in memory
    with torch.device("meta"):
        model = registry.get("encoder", "eva_clip_g")()
        out = model(torch.empty(1, 3, 448, 448))
    block = model.blocks[0]
    assert model.num_features == 1408 and model.patch_grid == (32, 32)
    assert len(model.blocks) == 39 and block.attn.num_heads == 16
    assert block.mlp.fc1.out_features == 6144 and block.norm1.eps == 1e-6
    assert isinstance(block.mlp.act, torch.nn.GELU) and block.mlp.act.approximate == "none"
    assert model.pos_embed.shape == (1, 1 + 32 * 32, 1408)
    assert out.shape == (1, 1 + 32 * 32, 1408)
