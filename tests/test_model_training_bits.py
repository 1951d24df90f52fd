"""The class-weighted loss, the trainable set, candidate scoring, the feature dump's pieces and
configuration errors of the tiny MiniGPT-v2 (SPEC sections 4, 7 and 8)."""

from __future__ import annotations

import copy
import re
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F

from minigpt4.models.minigpt_v2 import MiniGPTv2
from minigpt4.models.prompt_layout import IGNORE_INDEX
from tiny_model import HCMW_INSTRUCTION, HIDDEN, build_model, random_visual_inputs

CANDIDATES = ["mind wandering", "non-mind wandering"]


def make_samples(n: int, seed: int, instructions=None, answers=None, weights=None) -> dict:
    samples = {
        **random_visual_inputs(n, seed),
        "instruction_input": list(instructions or [HCMW_INSTRUCTION] * n),
        "answer": list(answers or ["mind wandering"] * n),
    }
    if weights is not None:
        samples["class_weight"] = torch.tensor(weights, dtype=torch.float32)
    return samples


def randomize_lora(model: MiniGPTv2, seed: int = 7) -> MiniGPTv2:
    """peft starts lora_B at zero; give every LoRA tensor random values so LoRA matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def model(tiny_assets):
    return randomize_lora(build_model(tiny_assets))


# --------------------------------------------------------------------------- loss


def hand_loss_terms(model: MiniGPTv2, samples: dict):
    """Per-sample lists of answer-token CE, from a full ``llama_model`` forward with logits."""
    with torch.no_grad():
        visual, layout = model.preparing_embedding(samples)
        embeds = model.embed_layout(layout, visual.sequence())
        logits = model.llama_model(inputs_embeds=embeds, attention_mask=layout.attention_mask).logits.float()
    per_sample = []
    for b in range(len(samples["answer"])):
        positions = (layout.targets[b] != IGNORE_INDEX).nonzero().flatten()
        answer_ids = model.layout.answer_ids(samples["answer"][b])
        assert layout.targets[b, positions].tolist() == answer_ids  # the targets are exactly the answer + EOS
        assert positions.tolist() == list(range(positions[0], positions[0] + len(answer_ids)))
        ce = F.cross_entropy(logits[b, positions - 1], layout.targets[b, positions], reduction="none")
        per_sample.append(ce)
    return per_sample


LOSS_ANSWERS = ["mind wandering", "non-mind wandering"]  # different answer lengths


@pytest.fixture(scope="module")
def hand_ce(model):
    """Answer-token CE per sample of the loss batch (seed 3), computed by hand once."""
    ce = hand_loss_terms(model, make_samples(2, 3, answers=LOSS_ANSWERS))
    assert len(ce[0]) != len(ce[1])  # so the weighting matters
    return ce


def test_weighted_loss_equals_hand_computation(model, hand_ce):
    weights = [0.7, 2.5]
    expected = sum(w * c.sum() for w, c in zip(weights, hand_ce)) / sum(w * len(c) for w, c in zip(weights, hand_ce))
    with torch.no_grad():
        out = model(make_samples(2, 3, answers=LOSS_ANSWERS, weights=weights))
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.token_loss, torch.cat(hand_ce), rtol=1e-5, atol=1e-6)
    assert out.token_weight.tolist() == pytest.approx([0.7] * len(hand_ce[0]) + [2.5] * len(hand_ce[1]))
    unweighted = torch.cat(hand_ce).mean()
    assert not torch.isclose(out.loss, unweighted, rtol=1e-4)  # the weights are really applied


@pytest.mark.parametrize("new_weight", [0.1, 4.0])
def test_changing_one_weight_changes_the_loss_as_the_formula_says(model, hand_ce, new_weight):
    sums, counts = [c.sum() for c in hand_ce], [len(c) for c in hand_ce]
    with torch.no_grad():
        base = model(make_samples(2, 3, answers=LOSS_ANSWERS, weights=[1.0, 1.5])).loss
        changed = model(make_samples(2, 3, answers=LOSS_ANSWERS, weights=[new_weight, 1.5])).loss
    expected = (new_weight * sums[0] + 1.5 * sums[1]) / (new_weight * counts[0] + 1.5 * counts[1])
    torch.testing.assert_close(changed, expected, rtol=1e-5, atol=1e-6)
    assert not torch.isclose(changed, base, rtol=1e-5)


def test_loss_without_weights_is_the_token_mean_and_invariant_to_weight_scale(model, hand_ce):
    with torch.no_grad():
        plain = model(make_samples(2, 3, answers=LOSS_ANSWERS)).loss
        scaled = model(make_samples(2, 3, answers=LOSS_ANSWERS, weights=[3.0, 3.0])).loss
    torch.testing.assert_close(plain, torch.cat(hand_ce).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scaled, plain, rtol=1e-6, atol=1e-7)


def test_score_candidates_is_the_answer_log_likelihood(model):
    samples = make_samples(3, 5)
    scores = model.score_candidates(samples, CANDIDATES)
    assert scores.shape == (3, 2)
    for c, candidate in enumerate(CANDIDATES):
        ce = hand_loss_terms(model, {**samples, "answer": [candidate] * 3})
        torch.testing.assert_close(scores[:, c], torch.stack([-x.sum() for x in ce]), rtol=1e-5, atol=1e-5)


def test_score_candidates_with_prompts_of_different_lengths_equals_each_alone(model):
    """Left-padded prompts and a shared prompt cache change nothing: each row scores as if alone."""
    instructions = [
        HCMW_INSTRUCTION,
        "<video><VideoHere></video> <feature><FeatureHere></feature> [emotion] What is it? ",
        "<video><VideoHere></video> <feature><FeatureHere></feature> Mind wandering? ",
    ]
    candidates = ["happy", *CANDIDATES]  # answers of three lengths
    samples = make_samples(3, 9, instructions=instructions)
    scores = model.score_candidates(samples, candidates)
    for row in range(3):
        single = {key: value[row : row + 1] for key, value in samples.items()}
        for c, candidate in enumerate(candidates):
            (ce,) = hand_loss_terms(model, {**single, "answer": [candidate]})
            torch.testing.assert_close(scores[row, c], -ce.sum(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- trainable set


def trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def is_lora(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def test_only_lora_and_used_projectors_train_by_default(model):
    names = trainable_names(model)
    projectors = {f"{m}.{t}" for m in ("llama_proj", "cls_tk_llama_proj", "feats_llama_proj1", "feats_llama_proj2")
                  for t in ("weight", "bias")}  # fmt: skip
    lora = {n for n in names if is_lora(n)}
    assert names == projectors | lora
    # LoRA r 8 on q_proj and v_proj of both layers: A and B each
    assert len(lora) == 2 * 2 * 2
    assert all(("q_proj" in n or "v_proj" in n) for n in lora)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert {n for n in frozen if n.startswith("visual_encoder.")}  # the ViT exists and is frozen
    assert {n for n in frozen if n.startswith("ln_vision.")} == {"ln_vision.weight", "ln_vision.bias"}
    assert {"feats_llama_proj3.weight", "feats_llama_proj3.bias"} <= frozen  # unused stream (2 streams)
    assert not any(n.startswith("visual_encoder.") or n.startswith("ln_vision.") for n in names)
    base_llm = [n for n in frozen if n.startswith("llama_model.")]
    assert any("embed_tokens" in n for n in base_llm) and any("lm_head" in n for n in base_llm)
    assert any("q_proj.base_layer" in n for n in base_llm)


def test_lora_shapes_follow_config(model):
    lora = {n: p for n, p in model.named_parameters() if is_lora(n)}
    for name, param in lora.items():
        assert param.shape == ((8, HIDDEN) if ".lora_A." in name else (HIDDEN, 8))


def test_three_streams_train_the_third_projector(tiny_assets):
    names = trainable_names(build_model(tiny_assets, num_video_streams=3))
    assert {"feats_llama_proj3.weight", "feats_llama_proj3.bias"} <= names


def test_lora_r_zero_freezes_the_llm(tiny_assets):
    model = build_model(tiny_assets, lora_r=0)
    names = trainable_names(model)
    assert not any(n.startswith("llama_model.") for n in names)
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert names == {f"{m}.{t}" for m in ("llama_proj", "cls_tk_llama_proj", "feats_llama_proj1", "feats_llama_proj2")
                     for t in ("weight", "bias")}  # fmt: skip
    with torch.no_grad():
        out = model(make_samples(1, 0))
    assert torch.isfinite(out.loss)


def test_freeze_vit_false_trains_the_vit(tiny_assets):
    names = trainable_names(build_model(tiny_assets, freeze_vit=False))
    assert any(n.startswith("visual_encoder.") for n in names)
    assert {"ln_vision.weight", "ln_vision.bias"} <= names


@pytest.mark.parametrize("streams", [2, 3])
def test_backward_reaches_every_trainable_tensor_and_no_frozen_one(tiny_assets, model, streams):
    model = copy.deepcopy(model) if streams == 2 else randomize_lora(build_model(tiny_assets, num_video_streams=3))
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(make_samples(2, 6, answers=CANDIDATES, weights=[0.5, 2.0]))
    out.loss.backward()
    params = dict(model.named_parameters())
    no_grad = [n for n, p in params.items() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert no_grad == []  # so DDP needs no unused-parameter search
    leaked = [n for n, p in params.items() if not p.requires_grad and p.grad is not None]
    assert leaked == []


def test_backward_with_fresh_lora_still_gives_every_trainable_tensor_a_gradient(tiny_assets):
    """With peft's zero lora_B the lora_A gradient is zero, but it must exist (not None)."""
    model = build_model(tiny_assets).train()
    model(make_samples(1, 6)).loss.backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_llm_grad_checkpoint_recomputes_layers_for_the_same_gradients_without_deprecation(tiny_assets, model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpointed = randomize_lora(build_model(tiny_assets, llm_grad_checkpoint=True))
    assert not [w for w in caught if "deprecated" in str(w.message) and "checkpointing" in str(w.message)]
    grads, calls = [], []
    for net in (copy.deepcopy(model), checkpointed):
        layer = net.llama_model.get_base_model().model.layers[0].self_attn  # inside the checkpointed layer
        count = [0]
        handle = layer.register_forward_hook(lambda *_, count=count: count.__setitem__(0, count[0] + 1))
        net.train().zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same dropout in both runs
        net(make_samples(2, 6)).loss.backward()
        handle.remove()
        calls.append(count[0])
        grads.append({n: p.grad for n, p in net.named_parameters() if p.requires_grad})
    assert calls == [1, 2]  # checkpointing runs the layer again in the backward pass
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


# --------------------------------------------------------------------------- features


def test_extract_features_truncated_path_equals_full_sequence(model):
    samples = make_samples(3, 8)
    positions = [0, 6, 7, 8, 9, 40, 75]
    fast = model.extract_features(samples, positions)
    full = model.extract_features(samples, positions, full_sequence=True)
    assert fast.llama_features.shape == (3, len(positions), HIDDEN)
    torch.testing.assert_close(fast.llama_features, full.llama_features, rtol=1e-5, atol=1e-5)
    default = model.extract_features(samples)  # llama_feature_positions [image:2, ..., image:5]
    assert default.llama_features.shape == (3, 4, HIDDEN)
    image_2_to_5 = [p.index for p in model.feature_positions(HCMW_INSTRUCTION)]
    assert image_2_to_5 == [9, 10, 11, 12]  # the template: <s> ▁[ INST ] ▁< video >, then image tokens
    reference = model.extract_features(samples, image_2_to_5, full_sequence=True)
    torch.testing.assert_close(default.llama_features, reference.llama_features, rtol=1e-5, atol=1e-5)


def test_extract_features_full_sequence_is_the_final_normed_hidden_state(model):
    """Reference: the LLaMA decoder (with LoRA) run on the dump's input ``[BOS] + prompt + answer ""``."""
    samples = make_samples(2, 9)
    positions = [3, 7, 70]
    with torch.no_grad():
        visual, layout = model.preparing_embedding(samples, answers=["", ""])
        embeds = model.embed_layout(layout, visual.sequence())
        logits = model.llama_model(inputs_embeds=embeds, attention_mask=layout.attention_mask).logits
        last = model.causal_lm.model(inputs_embeds=embeds, attention_mask=layout.attention_mask).last_hidden_state
        # the LM head of this state gives the full model's logits: so it is taken after the final norm
        torch.testing.assert_close(model.causal_lm.lm_head(last), logits, rtol=1e-5, atol=1e-5)
    features = model.extract_features(samples, positions)
    torch.testing.assert_close(features.llama_features, last[:, positions], rtol=1e-5, atol=1e-5)


def test_llama_features_apply_lora(tiny_assets, model):
    samples = make_samples(1, 10)
    fresh = build_model(tiny_assets)  # same seed, zero lora_B
    with torch.no_grad():
        for name, param in fresh.named_parameters():
            if not is_lora(name):
                param.copy_(dict(model.named_parameters())[name])
    with_lora = model.extract_features(samples).llama_features
    without = fresh.extract_features(samples).llama_features
    assert not torch.allclose(with_lora, without, atol=1e-4)


def test_projected_features_are_the_stream_projections(model):
    samples = make_samples(2, 11)
    features = model.extract_features(samples)
    with torch.no_grad():
        face = model.feats_llama_proj1(samples["video_features"][:, 0])
        video = model.feats_llama_proj2(samples["video_features"][:, 1])
        visual = model.encode_visual(samples["image"], samples["video_features"])
        image, cls = visual.image, visual.cls[:, 0]
    assert features.facemae_projected.shape == features.videomae_projected.shape == (2, HIDDEN)
    torch.testing.assert_close(features.facemae_projected, face, rtol=0, atol=1e-6)
    torch.testing.assert_close(features.videomae_projected, video, rtol=0, atol=1e-6)
    torch.testing.assert_close(features.image_projected, image, rtol=0, atol=1e-6)
    # seed defect 2: not shifted by one (VideoMAE in the FaceMAE slot, CLS in the VideoMAE slot)
    assert not torch.allclose(features.facemae_projected, video)
    assert not torch.allclose(features.videomae_projected, cls)


def test_feature_positions_beyond_the_input_raise_a_clear_error(model):
    samples = make_samples(1, 12)
    with pytest.raises(ValueError, match=r"llama_feature_positions.*position 500"):
        model.extract_features(samples, positions=[6, 500])


def test_negative_feature_positions_are_refused(model):
    samples = make_samples(1, 12)
    for full_sequence in (False, True):
        with pytest.raises(ValueError, match="llama_feature_positions must be non-negative"):
            model.extract_features(samples, positions=[6, -1], full_sequence=full_sequence)


# --------------------------------------------------------------------------- configuration errors


def test_missing_llama_folder_names_key_and_path(tiny_assets, tmp_path):
    missing = tmp_path / "no_llama_here"
    with pytest.raises(FileNotFoundError) as info:
        build_model(tiny_assets, llama_model=str(missing))
    assert "model.llama_model" in str(info.value) and str(missing) in str(info.value)


def test_vision_checkpoint_with_wrong_shape_names_tensor_and_file(tiny_assets, tmp_path):
    state = torch.load(tiny_assets["eva_ckpt"], weights_only=True)
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(7, 5)
    bad = tmp_path / "bad_eva.pth"
    torch.save(state, bad)
    with pytest.raises(Exception) as info:
        build_model(tiny_assets, vit_checkpoint=str(bad))
    assert "blocks.1.mlp.fc1.weight" in str(info.value) and str(bad) in str(info.value)


def test_llama_folder_without_tokenizer_model_names_key_and_folder(tiny_assets, tmp_path):
    folder = tmp_path / "llama_without_tokenizer"
    shutil.copytree(tiny_assets["llama_dir"], folder)
    (folder / "tokenizer.model").unlink()
    with pytest.raises(FileNotFoundError) as info:
        build_model(tiny_assets, llama_model=str(folder))
    assert "model.llama_model" in str(info.value) and str(folder) in str(info.value)


def test_pad_token_outside_the_vocabulary_is_named(tiny_assets):
    with pytest.raises(ValueError, match="model.pad_token"):
        build_model(tiny_assets, pad_token="@@no-such-piece@@")


def test_missing_vision_checkpoint_names_the_file(tiny_assets, tmp_path):
    missing = tmp_path / "no_eva.pth"
    with pytest.raises(Exception, match=re.escape(str(missing))):
        build_model(tiny_assets, vit_checkpoint=str(missing))


def test_missing_vision_checkpoint_names_the_config_key(tiny_assets, tmp_path):
    with pytest.raises(Exception, match=r"model\.vit_checkpoint"):
        build_model(tiny_assets, vit_checkpoint=str(tmp_path / "no_eva.pth"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_low_resource_without_gpu_is_a_clear_error(tiny_assets):
    with pytest.raises(RuntimeError, match="model.low_resource"):
        build_model(tiny_assets, low_resource=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU precision rule")
def test_half_precision_config_runs_in_fp32_on_cpu(tiny_assets):
    model = build_model(tiny_assets, precision="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.no_grad():
        assert torch.isfinite(model(make_samples(1, 0)).loss)


def test_num_video_streams_out_of_range_is_refused(tiny_assets):
    with pytest.raises(ValueError, match="num_video_streams"):
        build_model(tiny_assets, num_video_streams=4)


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_bf16_forward_features_and_generation(tiny_assets):
    model = build_model(tiny_assets, precision="bf16").cuda()
    assert model.llama_model.get_input_embeddings().weight.dtype == torch.bfloat16
    samples = make_samples(2, 0, answers=CANDIDATES, weights=[1.0, 2.0])
    samples = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in samples.items()}
    out = model(samples)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    features = model.extract_features(samples)
    full = model.extract_features(samples, full_sequence=True)
    assert torch.isfinite(features.llama_features.float()).all()
    torch.testing.assert_close(features.llama_features.float(), full.llama_features.float(), rtol=5e-2, atol=5e-2)
    texts = model.generate(samples, max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
