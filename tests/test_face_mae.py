"""FaceMAE: timm's ViT as MAE-Face, checked against MAE written out in plain torch."""

import logging

import pytest
import torch
import torch.nn.functional as F

from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.common.registry import registry
from minigpt4.models.face_mae import face_mae_checkpoint_filter, load_face_mae_checkpoint
from vit_weights import random_block, random_tensors

# the registered tiny FaceMAE: 64x64 input, 16x16 patches -> a 4x4 grid
WIDTH, DEPTH, HEADS, MLP_HIDDEN, PATCH, GRID = 64, 2, 4, 256, 16, 4
DECODER_WIDTH = 32


def mae_state_dict(seed: int = 0, grid: int = GRID, fc_norm: bool = False) -> dict[str, torch.Tensor]:
    """An MAE pre-training state dict (encoder + decoder + mask token), every tensor random."""
    rand = random_tensors(seed)

    sd = {
        "cls_token": rand(1, 1, WIDTH, scale=1.0),
        "pos_embed": rand(1, 1 + grid * grid, WIDTH, scale=1.0),
        "mask_token": rand(1, 1, DECODER_WIDTH),
        "patch_embed.proj.weight": rand(WIDTH, 3, PATCH, PATCH, scale=0.05),
        "patch_embed.proj.bias": rand(WIDTH),
        "norm.weight": rand(WIDTH, offset=1.0),
        "norm.bias": rand(WIDTH),
        "decoder_embed.weight": rand(DECODER_WIDTH, WIDTH),
        "decoder_embed.bias": rand(DECODER_WIDTH),
        "decoder_pos_embed": rand(1, 1 + grid * grid, DECODER_WIDTH),
        "decoder_blocks.0.norm1.weight": rand(DECODER_WIDTH, offset=1.0),
        "decoder_norm.weight": rand(DECODER_WIDTH, offset=1.0),
        "decoder_pred.weight": rand(PATCH * PATCH * 3, DECODER_WIDTH),
    }
    for i in range(DEPTH):
        sd |= random_block(rand, f"blocks.{i}.", WIDTH, MLP_HIDDEN, qv_bias=False)
    if fc_norm:
        sd |= {"fc_norm.weight": rand(WIDTH, offset=1.0), "fc_norm.bias": rand(WIDTH)}
    return sd


def reference_forward(sd: dict[str, torch.Tensor], images: torch.Tensor, grid: int, global_pool: bool) -> torch.Tensor:
    """MAE's ViT in plain torch, reading the raw file tensors."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)  # [B, grid*grid, C], row-major patches
    batch = x.shape[0]
    x = torch.cat([sd["cls_token"].expand(batch, -1, -1), x], dim=1)

    # resized here from the raw table, as MAE's interpolate_pos_embed does, CLS entry kept
    table = sd["pos_embed"]
    old = int((table.shape[1] - 1) ** 0.5)
    patch_table = table[:, 1:].reshape(1, old, old, WIDTH).permute(0, 3, 1, 2)
    patch_table = F.interpolate(patch_table, size=(grid, grid), mode="bicubic", align_corners=False)
    x = x + torch.cat([table[:, :1], patch_table.flatten(2).transpose(1, 2)], dim=1)

    head_dim = WIDTH // HEADS
    for i in range(DEPTH):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (WIDTH,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, -1, 3, HEADS, head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)
        h = (attn @ v).transpose(1, 2).reshape(batch, -1, WIDTH)
        x = x + F.linear(h, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (WIDTH,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    if global_pool:
        return F.layer_norm(x[:, 1:].mean(dim=1), (WIDTH,), sd["fc_norm.weight"], sd["fc_norm.bias"], eps=1e-6)
    return F.layer_norm(x, (WIDTH,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)[:, 0]


def tiny(**overrides):
    return registry.get("encoder", "face_mae_tiny")(**overrides)


def save(tmp_path, sd, name="mae_checkpoint.pth"):
    path = tmp_path / name
    torch.save({"model": sd, "epoch": 340}, path)  # MAE's layout: the state dict under "model"
    return path


def images(batch=3, size=64):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("global_pool", [False, True])
def test_matches_plain_reference(tmp_path, global_pool):
    sd = mae_state_dict(fc_norm=True)
    model = tiny(global_pool=global_pool, checkpoint=save(tmp_path, sd)).eval()
    pixels = images()
    with torch.no_grad():
        out = model(pixels)
        expected = reference_forward(sd, pixels, GRID, global_pool)
    assert out.shape == (3, WIDTH)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_position_table_resized_bicubic_cls_kept(tmp_path):
    sd = mae_state_dict()
    model = tiny(img_size=128, checkpoint=save(tmp_path, sd)).eval()  # 8x8 grid from a 4x4 table
    assert model.pos_embed.shape == (1, 1 + 8 * 8, WIDTH)
    torch.testing.assert_close(model.pos_embed[:, 0], sd["pos_embed"][:, 0])
    pixels = images(size=128)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), reference_forward(sd, pixels, 8, False), atol=1e-5, rtol=1e-5)


def test_every_encoder_tensor_lands_and_decoder_is_reported(tmp_path, caplog):
    sd = mae_state_dict()
    model = tiny()
    with caplog.at_level(logging.INFO, logger="minigpt4.models.face_mae"):
        report = load_face_mae_checkpoint(model, save(tmp_path, sd))
    own = model.state_dict()
    assert set(report.loaded) == set(own)
    for name, tensor in own.items():
        torch.testing.assert_close(tensor, sd[name], rtol=0, atol=0, msg=name)
    decoder = sorted(name for name in sd if name.startswith(("decoder_", "mask_token")))
    assert sorted(report.skipped) == decoder and report.clean
    # one counted summary line for the file, no tensor names that read like an error
    (line,) = [r.getMessage() for r in caplog.records if r.name == "minigpt4.models.face_mae"]
    assert line.endswith(
        f"loaded {len(own)} (blocks {len(own) - 6}, cls_token 1, norm 2, patch_embed 2, pos_embed 1); "
        "skipped 7 (pre-training or pooling parts the encoder does not use: decoder 6, mask_token 1)"
    ), line
    assert "decoder_pred" not in line and "not used by the model" not in line


def test_filter_ignores_the_norm_the_pooling_does_not_use():
    sd = mae_state_dict(fc_norm=True)
    _, ignored_cls = face_mae_checkpoint_filter(sd, tiny())
    _, ignored_avg = face_mae_checkpoint_filter(sd, tiny(global_pool=True))
    assert {"fc_norm.weight", "fc_norm.bias"} <= set(ignored_cls) and "norm.weight" not in ignored_cls
    assert {"norm.weight", "norm.bias"} <= set(ignored_avg) and "fc_norm.weight" not in ignored_avg


def test_missing_encoder_tensor_is_named(tmp_path):
    sd = mae_state_dict()
    del sd["blocks.1.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        tiny(checkpoint=save(tmp_path, sd))


def test_global_pool_on_a_pretraining_file_names_the_flag(tmp_path):
    # MAE-Face's file: timm names, decoder and mask token, no fc_norm
    with pytest.raises(CheckpointError, match="--fresh_fc_norm"):
        tiny(global_pool=True, checkpoint=save(tmp_path, mae_state_dict()))


def test_fresh_fc_norm_is_mae_finetuning_on_a_pretraining_file(tmp_path):
    # MAE's recipe loads the pre-training file into a global-pooling ViT: fc_norm keeps its
    # initial weight 1, bias 0, and the pre-training norm is left out
    sd = mae_state_dict()
    model = tiny(global_pool=True, fresh_fc_norm=True, checkpoint=save(tmp_path, sd)).eval()
    pixels = images()
    expected_sd = sd | {"fc_norm.weight": torch.ones(WIDTH), "fc_norm.bias": torch.zeros(WIDTH)}
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), reference_forward(expected_sd, pixels, GRID, True), atol=1e-5, rtol=1e-5)


def test_fresh_fc_norm_keeps_a_trained_fc_norm(tmp_path):
    sd = mae_state_dict(fc_norm=True)
    model = tiny(global_pool=True, fresh_fc_norm=True, checkpoint=save(tmp_path, sd))
    torch.testing.assert_close(model.fc_norm.weight.detach(), sd["fc_norm.weight"], rtol=0, atol=0)


def test_fresh_fc_norm_without_global_pool_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--global_pool"):
        tiny(fresh_fc_norm=True, checkpoint=save(tmp_path, mae_state_dict()))


def test_unknown_tensor_is_named(tmp_path):
    sd = mae_state_dict() | {"head.weight": torch.zeros(7, WIDTH)}
    with pytest.raises(CheckpointError, match=r"head\.weight"):
        tiny(checkpoint=save(tmp_path, sd))


def test_vit_large_configuration():
    # on the meta device: the configuration without 300M parameters in memory
    with torch.device("meta"):
        model = registry.get("encoder", "face_mae_vit_large")()
        out = model(torch.empty(2, 3, 224, 224))
    block = model.blocks[0]
    assert out.shape == (2, 1024) and model.img_size == 224
    assert len(model.blocks) == 24 and block.attn.num_heads == 16
    assert block.mlp.fc1.out_features == 4096 and block.attn.qkv.bias is not None
    assert block.norm1.eps == 1e-6 and model.norm.eps == 1e-6
    assert model.pos_embed.shape == (1, 1 + 14 * 14, 1024) and model.cls_token is not None
