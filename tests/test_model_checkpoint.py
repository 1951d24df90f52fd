"""Released Emotion-LLaMA / MiniGPT-v2 checkpoints in and out of the tiny model (SPEC section 5;
seed defect 6: LoRA weights of the released file silently dropped)."""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minigpt4.common.atomic_io import save_torch_atomic
from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.models.minigpt_v2 import MiniGPTv2
from minigpt4.models.pos_embed import resize_pos_embed
from tiny_model import FEATURE_DIM, HCMW_INSTRUCTION, HIDDEN, build_model, random_visual_inputs

VIT_WIDTH = 32  # tiny EVA
LORA_R = 8
LORA_PREFIX = "llama_model.base_model.model.model.layers"


def make_samples(n: int = 2, seed: int = 0) -> dict:
    return {
        **random_visual_inputs(n, seed),
        "instruction_input": [HCMW_INSTRUCTION] * n,
        "answer": ["mind wandering", "non-mind wandering"][:n],
        "class_weight": torch.tensor([1.0, 2.0][:n]),
    }


def released_shapes() -> dict[str, tuple[int, ...]]:
    """The trainable tensors of the released file, peft 0.2 names (no adapter name), tiny sizes."""
    shapes = {}
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            head = f"{LORA_PREFIX}.{layer}.self_attn.{proj}"
            shapes[f"{head}.lora_A.weight"] = (LORA_R, HIDDEN)
            shapes[f"{head}.lora_B.weight"] = (HIDDEN, LORA_R)
    shapes["llama_proj.weight"] = (HIDDEN, 4 * VIT_WIDTH)
    shapes["llama_proj.bias"] = (HIDDEN,)
    shapes["cls_tk_llama_proj.weight"] = (HIDDEN, VIT_WIDTH)
    shapes["cls_tk_llama_proj.bias"] = (HIDDEN,)
    for k in (1, 2, 3):
        shapes[f"feats_llama_proj{k}.weight"] = (HIDDEN, FEATURE_DIM)
        shapes[f"feats_llama_proj{k}.bias"] = (HIDDEN,)
    return shapes


def released_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: 0.1 * torch.randn(shape, generator=generator) for name, shape in released_shapes().items()}


def current_name(released: str) -> str:
    """Current peft inserts the adapter name: ``...lora_A.weight`` -> ``...lora_A.default.weight``."""
    for part in (".lora_A.", ".lora_B."):
        if part in released:
            return released.replace(part, f"{part}default.")
    return released


def write(path: Path, state: dict, **extra) -> Path:
    torch.save({"model": state, **extra}, path)
    return path


def outputs(model: MiniGPTv2, samples: dict) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        loss = model(samples).loss
    return loss, model.extract_features(samples).llama_features


@pytest.fixture(scope="module")
def base(tiny_assets):
    return build_model(tiny_assets)


@pytest.fixture(scope="module")
def samples():
    return make_samples()


@pytest.fixture
def released_file(tmp_path):
    return write(tmp_path / "emotion_llama_tiny.pth", released_state_dict(), optimizer=None, epoch=3)


# --------------------------------------------------------------------------- loading the released layout


def test_released_file_loads_every_tensor_lora_included(base, released_file, samples):
    model = copy.deepcopy(base)
    before = outputs(model, samples)
    report = model.load_released_checkpoint(str(released_file))
    assert report.clean, report.describe()
    file_state = released_state_dict()
    assert sorted(report.loaded) == sorted(current_name(n) for n in file_state)
    own = model.state_dict()
    not_landed = [n for n, t in file_state.items() if not torch.equal(own[current_name(n)], t)]
    assert not_landed == []
    after = outputs(model, samples)
    assert not torch.allclose(before[0], after[0])
    assert not torch.allclose(before[1], after[1])


def test_lora_tensors_of_the_released_file_change_the_output(base, tmp_path, samples):
    """Seed defect 6: LoRA-only file (peft 0.2 names) must land and matter."""
    lora_only = {n: t for n, t in released_state_dict().items() if ".lora_" in n}
    model = copy.deepcopy(base)
    before = outputs(model, samples)
    report = model.load_released_checkpoint(str(write(tmp_path / "lora.pth", lora_only)), strict=False)
    assert len(report.loaded) == len(lora_only) == 8
    assert report.unexpected == [] and report.mismatched == []
    after = outputs(model, samples)
    assert not torch.allclose(before[1], after[1], atol=1e-4)


def test_current_peft_layout_loads_too(base, tmp_path, samples):
    state = {current_name(n): t for n, t in released_state_dict(1).items()}
    model = copy.deepcopy(base)
    report = model.load_released_checkpoint(str(write(tmp_path / "current.pth", state)))
    assert report.clean and len(report.loaded) == len(state)
    own = model.state_dict()
    assert all(torch.equal(own[n], t) for n, t in state.items())


def test_from_config_ckpt_loads_the_file(tiny_assets, released_file):
    model = build_model(tiny_assets, ckpt=str(released_file))
    own = model.state_dict()
    assert all(torch.equal(own[current_name(n)], t) for n, t in released_state_dict().items())


# --------------------------------------------------------------------------- refusing what does not fit


def test_unknown_tensor_is_refused_under_strict_and_reported_without(base, tmp_path):
    unknown = f"{LORA_PREFIX}.7.self_attn.q_proj.lora_A.weight"  # there is no layer 7
    state = released_state_dict() | {unknown: torch.zeros(LORA_R, HIDDEN), "some_head.weight": torch.zeros(3)}
    path = write(tmp_path / "unknown.pth", state)
    model = copy.deepcopy(base)
    with pytest.raises(CheckpointError) as info:
        model.load_released_checkpoint(str(path), strict=True)
    message = str(info.value)
    assert "layers.7.self_attn.q_proj.lora_A" in message and "some_head.weight" in message
    assert str(path) in message
    # nothing was loaded by the refused call
    assert torch.equal(model.state_dict()["llama_proj.weight"], base.state_dict()["llama_proj.weight"])

    report = model.load_released_checkpoint(str(path), strict=False)
    assert "some_head.weight" in report.unexpected
    assert any("layers.7.self_attn.q_proj.lora_A" in n for n in report.unexpected)
    own = model.state_dict()
    assert all(torch.equal(own[current_name(n)], t) for n, t in released_state_dict().items())


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("name", ["feats_llama_proj2.weight", f"{LORA_PREFIX}.1.self_attn.v_proj.lora_B.weight"])
def test_wrong_shape_is_always_refused_and_named(base, tmp_path, strict, name):
    state = released_state_dict()
    state[name] = torch.zeros(5, 3)
    path = write(tmp_path / "wrong_shape.pth", state)
    with pytest.raises(CheckpointError) as info:
        copy.deepcopy(base).load_released_checkpoint(str(path), strict=strict)
    assert current_name(name) in str(info.value) or name in str(info.value)
    assert "(5, 3)" in str(info.value)


def test_missing_trainable_tensor_is_refused_under_strict_and_reported_without(base, tmp_path):
    missing = f"{LORA_PREFIX}.0.self_attn.v_proj.lora_B.weight"
    state = released_state_dict()
    del state[missing]
    path = write(tmp_path / "missing.pth", state)
    with pytest.raises(CheckpointError, match=r"missing.*layers\.0\.self_attn\.v_proj\.lora_B"):
        copy.deepcopy(base).load_released_checkpoint(str(path), strict=True)
    report = copy.deepcopy(base).load_released_checkpoint(str(path), strict=False)
    assert report.missing == [current_name(missing)]


def test_lora_file_into_a_model_without_lora_is_refused(tiny_assets, released_file):
    model = build_model(tiny_assets, lora_r=0)
    with pytest.raises(CheckpointError, match="lora_A"):
        model.load_released_checkpoint(str(released_file), strict=True)


def test_pickled_object_needs_trust_checkpoint(base, tmp_path):
    path = write(tmp_path / "pickled.pth", released_state_dict(), args=argparse.Namespace(lr=1e-4))
    with pytest.raises(CheckpointError, match="trust_checkpoint"):
        copy.deepcopy(base).load_released_checkpoint(str(path))
    report = copy.deepcopy(base).load_released_checkpoint(str(path), trust_checkpoint=True)
    assert report.clean


def test_missing_file_is_named(base, tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(CheckpointError, match="nowhere.pth"):
        copy.deepcopy(base).load_released_checkpoint(str(path))


# --------------------------------------------------------------------------- saving


def test_trainable_state_dict_uses_released_names_and_only_trainable_tensors(base):
    model = copy.deepcopy(base)
    state = model.trainable_state_dict()
    expected = {n for n in released_shapes() if not n.startswith("feats_llama_proj3.")}  # 2 streams: proj3 frozen
    assert set(state) == expected
    assert not any(".default." in n for n in state)
    params = dict(model.named_parameters())
    for name, tensor in state.items():
        assert torch.equal(tensor, params[current_name(name)])
        assert tensor.data_ptr() != params[current_name(name)].data_ptr()  # a copy, not the live tensor


def test_save_then_load_into_a_fresh_model_reproduces_outputs_exactly(tiny_assets, base, released_file, tmp_path, samples):
    trained = copy.deepcopy(base)
    trained.load_released_checkpoint(str(released_file))
    path = tmp_path / "out" / "checkpoint_best.pth"
    save_torch_atomic(path, {"model": trained.trainable_state_dict(), "epoch": 1})

    saved = torch.load(path, weights_only=True)["model"]
    assert not any(".default." in n for n in saved)
    assert any(n.endswith(".lora_A.weight") for n in saved)

    fresh = build_model(tiny_assets, seed=123)  # other random projectors (proj3 included)
    report = fresh.load_released_checkpoint(str(path))
    assert report.clean
    expected_loss, expected_features = outputs(trained, samples)
    loss, features = outputs(fresh, samples)
    assert torch.equal(loss, expected_loss)
    assert torch.equal(features, expected_features)
    assert fresh.score_candidates(samples, ["mind wandering", "non-mind wandering"]).equal(
        trained.score_candidates(samples, ["mind wandering", "non-mind wandering"])
    )


# --------------------------------------------------------------------------- upstream-only modules and MiniGPT-v2 files


def attention_tensors() -> dict[str, torch.Tensor]:
    """The original's auxiliary ``attention`` head: trainable upstream, so saved in its files."""
    return {"attention.0.weight": torch.randn(16, FEATURE_DIM), "attention.0.bias": torch.randn(16),
            "attention.2.weight": torch.randn(1, 16), "attention.2.bias": torch.randn(1)}


def test_upstream_only_tensors_are_reported_and_skipped_under_strict(base, tmp_path, samples, caplog):
    path = write(tmp_path / "with_attention.pth", released_state_dict() | attention_tensors())
    model = copy.deepcopy(base)
    with caplog.at_level(logging.INFO, logger="minigpt4.models.checkpoint_maps"):
        report = model.load_released_checkpoint(str(path), strict=True)
    assert report.clean
    assert sorted(report.skipped) == sorted(attention_tensors())
    assert set(report.skipped.values()) == {"upstream-only, not used"}
    own = model.state_dict()
    assert all(torch.equal(own[current_name(n)], t) for n, t in released_state_dict().items())
    # one INFO line for the file, with counts per group, and nothing at WARNING or above
    lines = [r for r in caplog.records if str(path) in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "loaded 18 (LoRA 8, projectors 10); skipped 4 (upstream-only, not used: attention 4)" in lines[0].getMessage()


def test_unknown_tensor_outside_the_upstream_only_list_is_still_refused(base, tmp_path):
    state = released_state_dict() | attention_tensors() | {"attention_pool.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"not used by the model: attention_pool\.weight$"):
        copy.deepcopy(base).load_released_checkpoint(str(write(tmp_path / "unknown.pth", state)), strict=True)


def test_minigpt_v2_checkpoint_is_a_training_start_with_fresh_projectors(base, tmp_path, caplog):
    """MiniGPT-v2's own file: llama_proj + LoRA, no stream projectors and no cls_tk_llama_proj."""
    state = {n: t for n, t in released_state_dict().items() if ".lora_" in n or n.startswith("llama_proj.")}
    path = write(tmp_path / "minigptv2.pth", state)
    model = copy.deepcopy(base)
    with caplog.at_level(logging.INFO, logger="minigpt4.models.checkpoint_maps"):
        report = model.load_released_checkpoint(str(path), strict=True)
    assert report.clean and sorted(report.loaded) == sorted(current_name(n) for n in state)
    fresh = ["cls_tk_llama_proj.bias", "cls_tk_llama_proj.weight", "feats_llama_proj1.bias", "feats_llama_proj1.weight",
             "feats_llama_proj2.bias", "feats_llama_proj2.weight"]  # the trainable ones (2 streams)
    assert sorted(report.initialised) == fresh
    own, before = model.state_dict(), base.state_dict()
    assert all(torch.equal(own[n], before[n]) for n in fresh)  # their initialisation, untouched
    assert "newly initialised 6 (projectors 6)" in caplog.text


def test_a_file_with_some_emotion_projectors_must_hold_all(base, tmp_path):
    state = {n: t for n, t in released_state_dict().items() if not n.startswith("feats_llama_proj2.")}
    with pytest.raises(CheckpointError, match=r"missing from the file: feats_llama_proj2\."):
        copy.deepcopy(base).load_released_checkpoint(str(write(tmp_path / "partial.pth", state)), strict=True)


# --------------------------------------------------------------------------- position tables


def test_position_table_resize_is_bicubic_with_the_cls_entry_kept():
    """LAVIS's and MAE's ``interpolate_pos_embed``: F.interpolate(bicubic, align_corners=False), CLS first."""
    table = torch.randn(1, 1 + 16 * 16, 8)
    resized = resize_pos_embed(table, (32, 32))
    grid = table[:, 1:].reshape(1, 16, 16, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, 8)
    assert resized.shape == (1, 1 + 32 * 32, 8)
    assert torch.equal(resized[:, :1], table[:, :1])
    torch.testing.assert_close(resized[:, 1:], expected, rtol=1e-5, atol=1e-6)
    odd = torch.randn(1, 1 + 15, 8)  # not square: left for loading to report
    assert resize_pos_embed(odd, (4, 4)) is odd


def test_eva_and_face_mae_loaders_share_the_one_resize():
    from minigpt4.models import eva_vit, face_mae, pos_embed

    assert not hasattr(eva_vit, "_resize_pos_embed") and not hasattr(face_mae, "_resize_pos_embed")
    # both filters hand the file to the one function that resizes its position table
    assert eva_vit.released_vit_tensors is face_mae.released_vit_tensors is pos_embed.released_vit_tensors
