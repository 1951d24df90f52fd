"""Multi-layer dumps and pooled spans (SPEC section 7): ``model.llama_feature_layers`` and
``model.llama_feature_pools``.

References are built here, independently of the model's feature path: the LLM input by hand
(``reference_sequence``) and Hugging Face's own ``hidden_states`` of the whole sequence, where
decoder layer l is ``hidden_states[l + 1]`` and the last entry is after the final norm.
"""

from __future__ import annotations

import pytest
import torch

from test_feature_dump import clip_inputs, demo_env, reference_sequence, tokenizer_file  # noqa: F401
from tiny_model import HCMW_INSTRUCTION, build_model

LAYERS = [0, -1]  # the tiny LLaMA has 2 decoder layers: the first's output and the final-norm output
POOLS = ["image", "streams", "prompt"]
POSITIONS = [3, 6, 9, 70]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model(demo_env):
    return build_model(demo_env)


@pytest.fixture(scope="module")
def reference(model, clip_inputs, tokenizer_file):
    """Hugging Face ``hidden_states`` of the full hand-built sequence of the first 4 clips."""
    image, vectors = clip_inputs["image"][:4], clip_inputs["video_features"][:4]
    with torch.no_grad():
        embeds, names = reference_sequence(model, tokenizer_file, image, vectors, model.layout.chat_template)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        states = model.llama_model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True).hidden_states
    samples = {"image": image, "video_features": vectors, "instruction_input": [HCMW_INSTRUCTION] * 4}
    return samples, states, names


def span_means(states, names, layer: int) -> torch.Tensor:
    """Mean hidden state over each pool's tokens, found by what sits at each position -> [B, K, H]."""
    hidden = states[layer + 1 if layer >= 0 else layer]
    spans = {
        "image": [i for i, n in enumerate(names) if n.startswith("<image")],
        "streams": [i for i, n in enumerate(names) if n.startswith("<stream")],
        "prompt": list(range(len(names) - 1)),  # everything but the answer's </s>
    }
    return torch.stack([hidden[:, spans[pool]].mean(1) for pool in POOLS], dim=1)


@pytest.mark.parametrize("full_sequence", [False, True])
def test_each_layer_and_position_equals_hugging_faces_hidden_states(model, reference, full_sequence):
    samples, states, _ = reference
    features = model.extract_features(samples, POSITIONS, full_sequence=full_sequence, layers=LAYERS, pools=POOLS)
    assert features.llama_features.shape == (4, len(LAYERS), len(POSITIONS), model.llama_model.config.hidden_size)
    torch.testing.assert_close(features.llama_features[:, 0], states[1][:, POSITIONS], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(features.llama_features[:, 1], states[-1][:, POSITIONS], atol=TOLERANCE, rtol=0)
    # the first layer's output is not the final state: the two entries really are different layers
    assert not torch.allclose(states[1][:, POSITIONS], states[-1][:, POSITIONS], atol=1e-3)


@pytest.mark.parametrize("full_sequence", [False, True])
def test_pools_are_the_mean_over_each_spans_hidden_states(model, reference, full_sequence):
    samples, states, names = reference
    features = model.extract_features(samples, POSITIONS, full_sequence=full_sequence, layers=LAYERS, pools=POOLS)
    assert features.llama_pooled_features.shape == (4, len(LAYERS), len(POOLS), model.llama_model.config.hidden_size)
    for index, layer in enumerate(LAYERS):
        torch.testing.assert_close(
            features.llama_pooled_features[:, index], span_means(states, names, layer), atol=TOLERANCE, rtol=0
        )


def test_negative_layers_count_from_the_end(model, reference):
    samples, _, _ = reference
    by_index = model.extract_features(samples, POSITIONS, layers=[0, 1]).llama_features
    from_end = model.extract_features(samples, POSITIONS, layers=[-2, -1]).llama_features
    torch.testing.assert_close(by_index, from_end, atol=0, rtol=0)
    one_layer = model.extract_features(samples, POSITIONS).llama_features  # default [-1]: (B, P, H) as before
    torch.testing.assert_close(one_layer, by_index[:, 1], atol=0, rtol=0)


def _forward_lengths(model, samples, **kwargs) -> tuple[list[int], int]:
    """Sequence lengths each decoder call saw, and how often the LM head ran."""
    seen, head_calls = [], []
    hooks = [
        model.causal_lm.model.register_forward_pre_hook(lambda m, a, k: seen.append(k["inputs_embeds"].shape[1]), with_kwargs=True),
        model.causal_lm.lm_head.register_forward_hook(lambda *a: head_calls.append(1)),
    ]
    try:
        model.extract_features(samples, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen, len(head_calls)


def test_one_truncated_forward_serves_every_layer_without_logits(model, reference):
    samples, _, names = reference
    seen, head_calls = _forward_lengths(model, samples, positions=[6, 9], layers=LAYERS)
    assert seen == [10] and head_calls == 0
    image_end = max(i for i, n in enumerate(names) if n.startswith("<image")) + 1
    seen, _ = _forward_lengths(model, samples, positions=[6], layers=LAYERS, pools=["image"])
    assert seen == [image_end]
    seen, _ = _forward_lengths(model, samples, positions=[6], layers=LAYERS, pools=["prompt"])
    assert seen == [len(names) - 1]  # the whole prompt, not the answer
    assert model.feature_forward_length(HCMW_INSTRUCTION, [6], ["prompt"]) == len(names) - 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"llama_feature_layers": [2]}, "out of range"),
        ({"llama_feature_layers": [-3]}, "out of range"),
        ({"llama_feature_layers": [1, -1]}, "distinct layers"),
        ({"llama_feature_layers": []}, "distinct layers"),
        ({"llama_feature_pools": ["faces"]}, "llama_feature_pools"),
    ],
)
def test_bad_layers_or_pools_stop_the_model_build(demo_env, overrides, message):
    with pytest.raises(ValueError, match=message):
        build_model(demo_env, **overrides)
