"""A model built with only the parts a feature set needs (``model.build_vision``,
``model.llm_layers``) gives the full model's numbers, holds no other weights and reads none.

References: the full tiny model's ``extract_features`` on the same inputs, the tensors of the
tiny released checkpoint (``weights/emotion_llama_tiny.pth``) applied with plain torch, and
Hugging Face's own ``hidden_states`` of a deeper LLaMA folder written here.
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from minigpt4.common.config import Config
from minigpt4.models.minigpt_base import decoder_layers_needed
from minigpt4.models.minigpt_v2 import MiniGPTv2
from tiny_model import FEATURE_DIM, HCMW_INSTRUCTION, HIDDEN, build_model, random_visual_inputs

LORA_PREFIX = "llama_model.base_model.model.model.layers"
POSITIONS = ["image:2", "stream:0", "cls", "prompt:-1"]
POOLS = ["image", "streams"]
DEEP = 4  # decoder layers of the deeper LLaMA folder written below (the tiny one has 2)
ROOT_LOGGER = "minigpt4.models"


def current_name(released: str) -> str:
    """Current peft inserts the adapter name: ``...lora_A.weight`` -> ``...lora_A.default.weight``."""
    for part in (".lora_A.", ".lora_B."):
        released = released.replace(part, f"{part}default.")
    return released


def llm_parameters(model) -> dict[str, int]:
    """Parameter counts of the vision side and of the LLM (LoRA included)."""
    counts = {"vision": 0, "llm": 0}
    for name, param in model.named_parameters():
        module = name.split(".")[0]
        if module in ("visual_encoder", "ln_vision"):
            counts["vision"] += param.numel()
        elif module == "llama_model":
            counts["llm"] += param.numel()
    return counts


@pytest.fixture(scope="module")
def checkpoint(tiny_assets) -> dict[str, torch.Tensor]:
    return torch.load(tiny_assets["emotion_llama_ckpt"], weights_only=True)["model"]


@pytest.fixture(scope="module")
def full(tiny_assets):
    """The whole tiny model with three streams and the tiny Emotion-LLaMA checkpoint."""
    return build_model(tiny_assets, num_video_streams=3, ckpt=str(tiny_assets["emotion_llama_ckpt"]))


@pytest.fixture(scope="module")
def samples():
    return {**random_visual_inputs(3, seed=5), "instruction_input": [HCMW_INSTRUCTION] * 3}


@pytest.fixture(scope="module")
def full_features(full, samples):
    return full.extract_features(samples, POSITIONS, layers=[0, -1], pools=POOLS)


# --------------------------------------------------------------------------- the tiny released checkpoint


def test_tiny_emotion_llama_checkpoint_is_the_released_layout_of_the_tiny_model(tiny_assets, checkpoint, caplog):
    """peft 0.2 LoRA names (no adapter name), every trainable tensor of the 3-stream tiny model."""
    assert tiny_assets["emotion_llama_ckpt"].name == "emotion_llama_tiny.pth"
    assert tiny_assets["emotion_llama_ckpt"].parent == tiny_assets["eva_ckpt"].parent  # weights/
    lora = [name for name in checkpoint if ".lora_" in name]
    assert len(lora) == 2 * 2 * 2 and not any(".default." in name for name in lora)  # 2 layers x q, v x A, B
    assert all(name.startswith(LORA_PREFIX) for name in lora)
    with caplog.at_level(logging.INFO, logger=ROOT_LOGGER):
        model = build_model(tiny_assets, num_video_streams=3, ckpt=str(tiny_assets["emotion_llama_ckpt"]))
    assert "loaded 18 (LoRA 8, projectors 10)" in caplog.text and "skipped" not in caplog.text
    own = model.state_dict()
    assert all(torch.equal(own[current_name(name)], tensor) for name, tensor in checkpoint.items())


def test_demo_prepared_loads_the_tiny_checkpoint_by_default(monkeypatch, tmp_path):
    from test_feature_dump import ROOT

    monkeypatch.setenv("TINY_ASSETS", str(tmp_path / "assets"))
    monkeypatch.delenv("DEMO_CKPT", raising=False)
    cfg = OmegaConf.load(ROOT / "eval_configs" / "demo_prepared.yaml")
    assert cfg.model.ckpt == str(tmp_path / "assets" / "weights" / "emotion_llama_tiny.pth")
    monkeypatch.setenv("DEMO_CKPT", "")  # the way back to random projectors
    assert cfg.model.ckpt == ""


# --------------------------------------------------------------------------- stream projections only


@pytest.fixture(scope="module")
def config_only_llama(tiny_assets, tmp_path_factory):
    """A LLaMA folder holding only config.json: no weights, no tokenizer."""
    folder = tmp_path_factory.mktemp("llama_config_only")
    shutil.copy(tiny_assets["llama_dir"] / "config.json", folder)
    return folder


def test_stream_only_model_holds_and_reads_no_eva_and_no_llm(tiny_assets, config_only_llama, tmp_path, checkpoint, caplog):
    with caplog.at_level(logging.INFO, logger=ROOT_LOGGER):
        model = build_model(
            tiny_assets, num_video_streams=3, build_vision=False, llm_layers=0, llama_model=str(config_only_llama),
            vit_checkpoint=str(tmp_path / "no_such_eva.pth"), ckpt=str(tiny_assets["emotion_llama_ckpt"]),
        )
    assert llm_parameters(model) == {"vision": 0, "llm": 0}
    projectors = HIDDEN * (4 * 32 + 1) + HIDDEN * (32 + 1) + 3 * HIDDEN * (FEATURE_DIM + 1)  # llama_proj, cls, 3 streams
    assert sum(p.numel() for p in model.parameters()) == projectors
    assert model.visual_encoder is None and model.llama_model is None and model.hidden_size == HIDDEN
    assert model.layout is None and model.llama_tokenizer is None
    builds = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model built")]
    assert builds == ["model built: projectors; not built: vision encoder eva_clip_tiny, LLM"]
    assert "loaded 10 (projectors 10); skipped 8 (not built for this feature set: LoRA 8)" in caplog.text
    assert torch.equal(model.feats_llama_proj1.weight, checkpoint["feats_llama_proj1.weight"])


def test_stream_projections_equal_the_full_models(tiny_assets, full, full_features, samples):
    model = build_model(
        tiny_assets, num_video_streams=3, build_vision=False, llm_layers=0, ckpt=str(tiny_assets["emotion_llama_ckpt"])
    )
    vectors = samples["video_features"]
    expected = [full_features.facemae_projected, full_features.videomae_projected, full_features.audio_projected]
    for index, reference in enumerate(expected):
        torch.testing.assert_close(model.project_stream(index, vectors[:, index]), reference, rtol=0, atol=0)
    torch.testing.assert_close(model.project_streams(vectors), torch.stack(expected, dim=1), rtol=0, atol=0)


def test_stream_projection_is_the_checkpoints_linear_map(tiny_assets, checkpoint, samples):
    model = build_model(tiny_assets, build_vision=False, llm_layers=0, ckpt=str(tiny_assets["emotion_llama_ckpt"]))
    vectors = samples["video_features"][:, 0]
    reference = F.linear(vectors, checkpoint["feats_llama_proj1.weight"], checkpoint["feats_llama_proj1.bias"])
    torch.testing.assert_close(model.project_stream(0, vectors), reference, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- image tokens without the LLM


def test_image_model_projects_the_full_models_image_tokens_without_an_llm(tiny_assets, full_features, samples, caplog):
    with caplog.at_level(logging.INFO, logger=ROOT_LOGGER):
        model = build_model(tiny_assets, num_video_streams=3, llm_layers=0, ckpt=str(tiny_assets["emotion_llama_ckpt"]))
    assert llm_parameters(model)["llm"] == 0 and llm_parameters(model)["vision"] > 0
    assert "model built: projectors, vision encoder eva_clip_tiny; not built: LLM" in caplog.text
    image_tokens, cls_token = model.project_image(samples["image"])
    torch.testing.assert_close(image_tokens, full_features.image_projected, rtol=0, atol=0)
    assert cls_token.shape == (3, 1, HIDDEN)


# --------------------------------------------------------------------------- an LLM cut after its first layers


@pytest.fixture(scope="module")
def truncated(tiny_assets):
    return build_model(
        tiny_assets, num_video_streams=3, llm_layers=1, llama_feature_layers=[0], ckpt=str(tiny_assets["emotion_llama_ckpt"])
    )


def count_decoder_layer_calls(run) -> int:
    """How many decoder-layer forwards ``run()`` makes, in any model."""
    calls = []

    def hook(module, args, output):
        if isinstance(module, LlamaDecoderLayer):
            calls.append(module)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return len(calls)


def test_truncated_model_builds_and_loads_only_its_first_layers(tiny_assets, truncated, full, caplog):
    assert len(truncated.causal_lm.model.layers) == 1 and truncated.llm_depth == 2
    names = [name for name, _ in truncated.named_parameters() if ".layers." in name]
    assert names and all(".layers.0." in name for name in names)
    own, reference = truncated.state_dict(), full.state_dict()
    lora = [name for name in own if ".lora_" in name]
    assert len(lora) == 4 and all(torch.equal(own[name], reference[name]) for name in lora)
    with caplog.at_level(logging.INFO, logger=ROOT_LOGGER):
        copy.deepcopy(truncated).load_released_checkpoint(str(tiny_assets["emotion_llama_ckpt"]))
    assert "loaded 14 (LoRA 4, projectors 10); skipped 4 (not built for this feature set: LoRA 4)" in caplog.text


def test_truncated_model_gives_the_full_models_states_running_one_layer(truncated, full, full_features, samples):
    visual = truncated.encode_visual(samples["image"], samples["video_features"])
    states = {}
    calls = count_decoder_layer_calls(
        lambda: states.update(s=truncated.llama_states(visual, samples["instruction_input"], POSITIONS, [0], POOLS))
    )
    assert calls == 1  # layer 0 is the output of decoder layer 0: one layer runs, not two
    # same inputs, same batch, same ops: the states are bit-identical to the full model's layer 0
    torch.testing.assert_close(states["s"].selected[:, 0], full_features.llama_features[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(states["s"].pooled[:, 0], full_features.llama_pooled_features[:, 0], rtol=0, atol=0)
    from_end = truncated.llama_states(visual, samples["instruction_input"], POSITIONS, [-2], POOLS)  # -2 of 2 = 0
    torch.testing.assert_close(from_end.selected, states["s"].selected, rtol=0, atol=0)
    by_default = truncated.extract_features(samples, POSITIONS)  # the model's llama_feature_layers: [0]
    torch.testing.assert_close(by_default.llama_features, full_features.llama_features[:, 0], rtol=0, atol=0)
    assert count_decoder_layer_calls(lambda: full.extract_features(samples, POSITIONS, layers=[0])) == 2  # the whole LLM


# --------------------------------------------------------------------------- a deeper LLM: layer semantics


@pytest.fixture(scope="module")
def deep_assets(tiny_assets, tmp_path_factory, checkpoint):
    """The tiny LLaMA's tokenizer with a 4-layer random LLM, and a projectors-only checkpoint."""
    folder = tmp_path_factory.mktemp("deep_llama")
    for path in tiny_assets["llama_dir"].iterdir():
        if path.suffix != ".safetensors" and path.name != "config.json":
            shutil.copy(path, folder)
    config = LlamaConfig.from_pretrained(tiny_assets["llama_dir"])
    config.num_hidden_layers = DEEP
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        LlamaForCausalLM(config).save_pretrained(folder)
    projectors = folder.parent / "projectors.pth"
    torch.save({"model": {n: t for n, t in checkpoint.items() if ".lora_" not in n}}, projectors)
    return {"llama_model": str(folder), "lora_r": 0, "num_video_streams": 3, "ckpt": str(projectors)}


@pytest.fixture
def transformers_records():
    """Records of the transformers loggers (which need not propagate to the root logger)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    try:
        yield records
    finally:
        hf_logger.removeHandler(handler)


def test_a_middle_layer_is_read_before_the_final_norm_in_a_truncated_llm(tiny_assets, deep_assets, samples, transformers_records):
    full_deep = build_model(tiny_assets, **deep_assets)
    truncated = build_model(tiny_assets, llm_layers=2, llama_feature_layers=[1], **deep_assets)
    assert len(truncated.causal_lm.model.layers) == 2 and truncated.llm_depth == DEEP
    # transformers' load report would list layers 2 and 3 as unexpected: it is held back
    assert not [r for r in transformers_records if r.levelno >= logging.WARNING], [r.getMessage() for r in transformers_records]

    visual = truncated.encode_visual(samples["image"], samples["video_features"])
    states = {}
    calls = count_decoder_layer_calls(
        lambda: states.update(s=truncated.llama_states(visual, samples["instruction_input"], POSITIONS, [1]))
    )
    assert calls == 2
    same_prefix = full_deep.extract_features(samples, POSITIONS, layers=[1]).llama_features
    torch.testing.assert_close(states["s"].selected[:, 0], same_prefix, rtol=0, atol=0)
    # Hugging Face's hidden_states[2] of the whole sequence: another sequence length changes the
    # attention kernels' summation order, hence the tolerance of the other feature tests
    hf = full_deep.extract_features(samples, POSITIONS, layers=[1], full_sequence=True).llama_features
    torch.testing.assert_close(states["s"].selected[:, 0], hf, rtol=0, atol=1e-5)
    normed = full_deep.extract_features(samples, POSITIONS, layers=[-1]).llama_features
    assert not torch.allclose(normed, hf, atol=1e-3)
    from_end = truncated.llama_states(visual, samples["instruction_input"], POSITIONS, [-3])  # -3 of 4 = 1
    torch.testing.assert_close(from_end.selected, states["s"].selected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "layers, needed", [([0], 1), ([1], 2), ([-3], 2), ([0, 2], 3), ([2], 3), ([-2], 3), ([-1], 4), ([3], 4), ([1, -1], 4)]
)
def test_decoder_layers_needed_counts_in_the_whole_llm(layers, needed):
    assert decoder_layers_needed(layers, DEEP) == needed


# --------------------------------------------------------------------------- config


def run_config(tiny_assets, tmp_path, model_keys: str) -> Config:
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(
        f"model: {{arch: minigpt_v2, model_type: tiny, llama_model: {tiny_assets['llama_dir']}, "
        f"vit_checkpoint: {tiny_assets['eva_ckpt']}, {model_keys}}}\n",
        encoding="utf-8",
    )
    return Config(argparse.Namespace(cfg_path=cfg_path, options=[]), default_runner="runner_eval")


def test_build_vision_and_llm_layers_read_from_a_run_config(tiny_assets, tmp_path):
    """Both keys pass config validation and reach the model; llm_layers -1 builds every layer."""
    cfg = run_config(tiny_assets, tmp_path, "build_vision: false, llm_layers: 0")
    model = MiniGPTv2.from_config(cfg.model_cfg)
    assert model.visual_encoder is None and model.llama_model is None
    defaults = run_config(tiny_assets, tmp_path, "llama_feature_pools: []")
    assert defaults.model_cfg.build_vision is True and defaults.model_cfg.llm_layers == -1
    assert len(MiniGPTv2.from_config(defaults.model_cfg).causal_lm.model.layers) == 2
