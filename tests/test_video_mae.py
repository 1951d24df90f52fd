"""VideoMAE: built from timm's EVA blocks, checked against VideoMAE written out in plain torch."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.common.registry import registry
from minigpt4.models.video_mae import load_video_mae_checkpoint, sinusoid_position_table
from vit_weights import random_block, random_tensors

# the registered tiny VideoMAE: 16 frames of 64x64, tubelets of 2 x 16 x 16 -> 8 x 4 x 4 tokens
WIDTH, DEPTH, HEADS, MLP_HIDDEN, PATCH, TUBELET, FRAMES, SIZE = 64, 2, 4, 256, 16, 2, 16, 64
TOKENS = (FRAMES // TUBELET) * (SIZE // PATCH) ** 2
DECODER_WIDTH = 32


def numpy_sinusoid_table(num_positions: int, dim: int) -> np.ndarray:
    """The table exactly as VideoMAE's get_sinusoid_encoding_table writes it."""
    angles = np.array([[p / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for p in range(num_positions)])
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return angles


def encoder_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """VideoMAE encoder tensors in the original names, every one random."""
    rand = random_tensors(seed)

    sd = {
        "patch_embed.proj.weight": rand(WIDTH, 3, TUBELET, PATCH, PATCH, scale=0.05),
        "patch_embed.proj.bias": rand(WIDTH),
        "fc_norm.weight": rand(WIDTH, offset=1.0),
        "fc_norm.bias": rand(WIDTH),
    }
    for i in range(DEPTH):
        sd |= random_block(rand, f"blocks.{i}.", WIDTH, MLP_HIDDEN, qv_bias=True)
    return sd


def decoder_state_dict() -> dict[str, torch.Tensor]:
    """The pre-training parts a VideoMAE pre-training file holds beside the encoder."""
    gen = torch.Generator().manual_seed(7)
    return {
        "mask_token": torch.randn(1, 1, DECODER_WIDTH, generator=gen),
        "pos_embed": torch.randn(1, TOKENS, DECODER_WIDTH, generator=gen),
        "encoder_to_decoder.weight": torch.randn(DECODER_WIDTH, WIDTH, generator=gen),
        "decoder.blocks.0.attn.qkv.weight": torch.randn(3 * DECODER_WIDTH, DECODER_WIDTH, generator=gen),
        "decoder.norm.weight": torch.randn(DECODER_WIDTH, generator=gen),
        "decoder.head.weight": torch.randn(TUBELET * PATCH * PATCH * 3, DECODER_WIDTH, generator=gen),
    }


def pretraining_file(tmp_path, encoder: dict[str, torch.Tensor]):
    """The pre-training layout: encoder under ``encoder.``, decoder beside it, under "model"."""
    path = tmp_path / "maeVideo_ckp.pth"
    sd = {f"encoder.{name}": tensor for name, tensor in encoder.items()} | decoder_state_dict()
    torch.save({"model": sd, "epoch": 199}, path)
    return path


def reference_forward(sd: dict[str, torch.Tensor], clips: torch.Tensor) -> torch.Tensor:
    """VideoMAE in plain torch: [B, 3, T, H, W] -> [B, WIDTH]."""
    x = F.conv3d(clips, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(TUBELET, PATCH, PATCH))
    x = x.flatten(2).transpose(1, 2)  # [B, tokens, C] in (t, h, w) order
    x = x + torch.from_numpy(numpy_sinusoid_table(x.shape[1], WIDTH)).float()[None]
    batch, head_dim = x.shape[0], WIDTH // HEADS
    for i in range(DEPTH):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (WIDTH,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        q_bias, v_bias = sd[p + "attn.q_bias"], sd[p + "attn.v_bias"]
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], torch.cat([q_bias, torch.zeros_like(q_bias), v_bias]))
        q, k, v = qkv.reshape(batch, -1, 3, HEADS, head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)
        h = (attn @ v).transpose(1, 2).reshape(batch, -1, WIDTH)
        x = x + F.linear(h, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (WIDTH,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return F.layer_norm(x.mean(dim=1), (WIDTH,), sd["fc_norm.weight"], sd["fc_norm.bias"], eps=1e-6)


def tiny(**overrides):
    return registry.get("encoder", "video_mae_tiny")(**overrides)


def test_position_table_is_videomae_formula():
    expected = numpy_sinusoid_table(TOKENS, WIDTH)
    np.testing.assert_allclose(sinusoid_position_table(TOKENS, WIDTH)[0].numpy(), expected, rtol=0, atol=1e-6)


def test_position_table_is_a_fixed_buffer():
    model = tiny()
    assert "pos_embed" not in model.state_dict()
    assert all(name != "pos_embed" for name, _ in model.named_parameters())
    np.testing.assert_allclose(model.pos_embed[0].numpy(), numpy_sinusoid_table(TOKENS, WIDTH), atol=1e-6)


def test_matches_plain_reference(tmp_path):
    sd = encoder_state_dict()
    model = tiny(checkpoint=pretraining_file(tmp_path, sd)).eval()
    clips = torch.rand(2, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(clips)
        expected = reference_forward(sd, clips)
    assert out.shape == (2, WIDTH)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_pretraining_layout_lands_every_tensor_and_reports_decoder(tmp_path, caplog):
    sd = encoder_state_dict()
    model = tiny()
    with caplog.at_level(logging.INFO, logger="minigpt4.models.video_mae"):
        report = load_video_mae_checkpoint(model, pretraining_file(tmp_path, sd))
    own = model.state_dict()
    assert set(own) == set(sd) == set(report.loaded)
    for name, tensor in own.items():
        torch.testing.assert_close(tensor, sd[name], rtol=0, atol=0, msg=name)
    assert sorted(report.skipped) == sorted(decoder_state_dict()) and report.clean
    # one counted summary line for the file, no tensor names that read like an error
    (line,) = [r.getMessage() for r in caplog.records if r.name == "minigpt4.models.video_mae"]
    assert line.endswith(
        "skipped 6 (pre-training parts the encoder does not use: "
        "decoder 3, encoder_to_decoder 1, mask_token 1, pos_embed 1)"
    ), line
    assert f"loaded {len(own)} (" in line and "encoder_to_decoder.weight" not in line
    assert torch.equal(model.blocks[0].attn.k_bias, torch.zeros(WIDTH))  # no k bias


@pytest.mark.parametrize("wrapper", ["module", None])
def test_finetuned_layout_loads(tmp_path, wrapper):
    sd = encoder_state_dict(seed=3)
    path = tmp_path / "videomae_finetuned.pth"
    torch.save({wrapper: sd} if wrapper else sd, path)
    model = tiny(checkpoint=path)
    torch.testing.assert_close(model.blocks[1].attn.v_bias.detach(), sd["blocks.1.attn.v_bias"], rtol=0, atol=0)


@pytest.mark.parametrize("missing", ["blocks.0.attn.v_bias", "fc_norm.weight"])
def test_missing_encoder_tensor_is_named(tmp_path, missing):
    sd = encoder_state_dict()
    del sd[missing]
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        tiny(checkpoint=pretraining_file(tmp_path, sd))


def test_vit_large_configuration():
    # on the meta device: the configuration without 300M parameters in memory
    with torch.device("meta"):
        model = registry.get("encoder", "video_mae_vit_large")()
        out = model(torch.empty(1, 3, 16, 224, 224))
    block = model.blocks[0]
    assert out.shape == (1, 1024) and model.img_size == 224 and model.num_frames == 16
    assert model.patch_embed.proj.kernel_size == (2, 16, 16) and model.pos_embed.shape == (1, 8 * 14 * 14, 1024)
    assert len(model.blocks) == 24 and block.attn.num_heads == 16 and block.mlp.fc1.out_features == 4096
    assert block.attn.qkv.bias is None and block.attn.q_bias.shape == block.attn.v_bias.shape == (1024,)
    assert block.norm1.eps == 1e-6 and model.fc_norm.eps == 1e-6


def pretraining_norm_layout(encoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A real pre-training encoder ends with ``norm`` and has no ``fc_norm``."""
    sd = dict(encoder)
    sd["norm.weight"], sd["norm.bias"] = sd.pop("fc_norm.weight"), sd.pop("fc_norm.bias")
    return sd


def test_pretraining_norm_file_is_refused_with_the_way_out(tmp_path):
    path = pretraining_file(tmp_path, pretraining_norm_layout(encoder_state_dict()))
    with pytest.raises(CheckpointError, match="--fresh_fc_norm"):
        tiny(checkpoint=path)


def test_fresh_fc_norm_reproduces_the_mer_baseline(tmp_path):
    sd = encoder_state_dict()
    path = pretraining_file(tmp_path, pretraining_norm_layout(sd))
    model = tiny(checkpoint=path, fresh_fc_norm=True).eval()
    assert torch.equal(model.fc_norm.weight, torch.ones(WIDTH)) and torch.equal(model.fc_norm.bias, torch.zeros(WIDTH))
    clips = torch.rand(1, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    baseline = dict(sd, **{"fc_norm.weight": torch.ones(WIDTH), "fc_norm.bias": torch.zeros(WIDTH)})
    with torch.no_grad():
        torch.testing.assert_close(model(clips), reference_forward(baseline, clips), atol=1e-5, rtol=1e-5)
