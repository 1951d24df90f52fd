"""Greedy generation of the tiny MiniGPT-v2: batching, the KV cache, stopping at EOS and the
legacy (upstream) inference context (SPEC section 4)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import sentencepiece as spm
import torch
from torch import nn

from minigpt4.models.minigpt_v2 import MiniGPTv2
from minigpt4.models.prompt_layout import PLACEHOLDER
from tiny_model import HCMW_INSTRUCTION, random_visual_inputs, tiny_config

MER_INSTRUCTION = (
    "<video><VideoHere></video> <feature><FeatureHere></feature> "
    "The person in video says: I am worried about the exam. [emotion] "
    "Please determine which emotion label in the video represents: "
    "happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt. "
)
SHORT_INSTRUCTION = "<video><VideoHere></video> <feature><FeatureHere></feature> [emotion] What is it? "
INSTRUCTIONS = [HCMW_INSTRUCTION, MER_INSTRUCTION, SHORT_INSTRUCTION]  # three different prompt lengths
NUM_VISUAL = 64 + 2 + 1  # image tokens + 2 streams + CLS
MAX_NEW = 8


def build_model(assets, seed: int = 0, **overrides) -> MiniGPTv2:
    torch.manual_seed(seed)
    model = MiniGPTv2.from_config(tiny_config(assets, **overrides)).eval()
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # peft starts lora_B at zero: make LoRA matter in the cached decoding
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    return model


def make_samples(instructions, seed: int = 0) -> dict:
    n = len(instructions)
    return {
        **random_visual_inputs(n, seed),
        "instruction_input": list(instructions),
    }


def select(samples: dict, i: int) -> dict:
    return {k: v[i : i + 1] for k, v in samples.items()}


class RecordingHead(nn.Module):
    """Wraps the LM head and keeps the logits of every call (one call per generated token)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls: list[torch.Tensor] = []

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.inner(hidden)
        self.calls.append(logits.detach().float().clone())
        return logits


class ScriptedHead(nn.Module):
    """Makes row r emit ``script[r][step]`` at each step (last entry repeated)."""

    def __init__(self, vocab: int, script: list[list[int]]):
        super().__init__()
        self.vocab, self.script, self.calls = vocab, script, 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(hidden.shape[0], self.vocab, dtype=hidden.dtype, device=hidden.device)
        for row, tokens in enumerate(self.script):
            logits[row, tokens[min(self.calls, len(tokens) - 1)]] = 10.0
        self.calls += 1
        return logits


@contextlib.contextmanager
def swapped_lm_head(model: MiniGPTv2, head: nn.Module):
    """Put ``head`` in place of the LM head for the block (monkeypatch mishandles nn.Module children)."""
    original = model.causal_lm.lm_head
    model.causal_lm.lm_head = head
    try:
        yield head
    finally:
        model.causal_lm.lm_head = original


def generate_with_ids(model: MiniGPTv2, samples: dict, max_new_tokens: int):
    """``generate``'s texts and the greedy token ids per row (up to, not including, EOS)."""
    with swapped_lm_head(model, RecordingHead(model.causal_lm.lm_head)) as head:
        texts = model.generate(samples, max_new_tokens=max_new_tokens)
    eos = model.layout.eos_id
    ids = []
    for row in range(len(texts)):
        row_ids = []
        for logits in head.calls:
            token = int(logits[row].argmax())
            if token == eos:
                break
            row_ids.append(token)
        ids.append(row_ids)
    return texts, ids, head.calls


@torch.no_grad()
def reference_greedy(model: MiniGPTv2, sample: dict, max_new_tokens: int) -> list[int]:
    """One sample, no padding, no cache: the whole sequence is re-run for every new token."""
    visual = model.encode_visual(sample["image"], sample["video_features"]).sequence()
    layout = model.generation_layout(sample["instruction_input"])
    assert layout.attention_mask.all()
    embeds = model.embed_layout(layout, visual)
    eos = model.layout.eos_id
    ids = []
    for _ in range(max_new_tokens):
        hidden = model.causal_lm.model(inputs_embeds=embeds).last_hidden_state
        token = int(model.causal_lm.lm_head(hidden[:, -1]).argmax(-1))
        if token == eos:
            break
        ids.append(token)
        embeds = torch.cat([embeds, model.embed_tokens(torch.tensor([[token]]))], dim=1)
    return ids


def decode(sp, ids: list[int]) -> str:
    return sp.decode(ids).strip()


@pytest.fixture(scope="module")
def model(tiny_assets):
    return build_model(tiny_assets)


@pytest.fixture(scope="module")
def legacy_model(tiny_assets):
    return build_model(tiny_assets, legacy_generate_context=True)


@pytest.fixture(scope="module")
def sp(tiny_assets):
    return spm.SentencePieceProcessor(model_file=str(tiny_assets["llama_dir"] / "tokenizer.model"))


@pytest.fixture(scope="module")
def samples():
    return make_samples(INSTRUCTIONS, seed=1)


# --------------------------------------------------------------------------- greedy decoding


@pytest.mark.parametrize("which", ["model", "legacy_model"])
def test_batched_generation_equals_one_by_one_and_the_uncached_reference(request, samples, sp, which):
    model = request.getfixturevalue(which)
    layout = model.generation_layout(samples["instruction_input"])
    assert len(set(layout.attention_mask.sum(1).tolist())) == 3  # three prompt lengths: real left padding

    texts, ids, calls = generate_with_ids(model, samples, MAX_NEW)
    assert len(texts) == 3 and sum(len(row) for row in ids) > 0
    for i in range(3):
        single_texts, single_ids, single_calls = generate_with_ids(model, select(samples, i), MAX_NEW)
        assert single_ids[0] == ids[i]
        assert single_texts[0] == texts[i]
        # the logits themselves agree while the row is generating
        for step in range(min(len(ids[i]) + 1, len(single_calls))):
            torch.testing.assert_close(calls[step][i], single_calls[step][0], rtol=1e-4, atol=1e-4)
        assert reference_greedy(model, select(samples, i), MAX_NEW) == ids[i]


def test_generation_stops_at_eos_and_appends_nothing_after_it(model, samples, sp):
    model = copy.deepcopy(model)
    eos = sp.eos_id()
    mind, wand, ering, sad = (sp.piece_to_id(p) for p in ("▁mind", "▁wand", "ering", "▁sad"))
    assert sp.unk_id() not in (mind, wand, ering, sad)
    script = [
        [mind, wand, ering, eos, mind, mind, mind],  # stops after 3 tokens, then the head would go on
        [sad, eos, wand, wand],  # stops after 1
        [mind, mind, wand, ering, sad, eos, mind],  # stops after 5: the last row to finish
    ]
    with swapped_lm_head(model, ScriptedHead(model.causal_lm.config.vocab_size, script)) as head:
        texts = model.generate(samples, max_new_tokens=20)
    assert texts == [decode(sp, [mind, wand, ering]), decode(sp, [sad]), decode(sp, [mind, mind, wand, ering, sad])]
    assert texts[0] == "mind wandering"
    assert head.calls == 6  # generation ends once every row has produced EOS


def test_generation_stops_at_max_new_tokens(model, samples, sp):
    model = copy.deepcopy(model)
    sad = sp.piece_to_id("▁sad")
    assert sad != sp.unk_id()
    with swapped_lm_head(model, ScriptedHead(model.causal_lm.config.vocab_size, [[sad]] * 3)) as head:
        texts = model.generate(samples, max_new_tokens=4)
    assert head.calls == 4
    assert texts == ["sad sad sad sad"] * 3


# --------------------------------------------------------------------------- generation contexts


def test_default_generation_context_is_the_training_prompt_left_padded(model, sp):
    layout = model.generation_layout(INSTRUCTIONS)
    length = layout.input_ids.shape[1]
    pad_id = sp.piece_to_id("$$")
    for row, instruction in enumerate(INSTRUCTIONS):
        prompt = model.layout.prompt_ids(instruction)  # pinned against SentencePiece in test_model_layout
        pad = length - len(prompt)
        assert layout.input_ids[row].tolist() == [pad_id] * pad + [pad_id if i == PLACEHOLDER else i for i in prompt]
        assert layout.attention_mask[row].tolist() == [0] * pad + [1] * len(prompt)
        assert layout.visual_mask[row].tolist() == [False] * pad + [i == PLACEHOLDER for i in prompt]
        assert (layout.targets[row] == -100).all()


@pytest.mark.parametrize("instruction", [HCMW_INSTRUCTION, MER_INSTRUCTION])
def test_legacy_generation_context_is_the_upstream_layout(legacy_model, sp, instruction):
    """``[BOS, BOS] + "[INST] <video>" + all visual tokens + "</video> <feature><FeatureHere></feature> ... [/INST]"``."""
    layout = legacy_model.generation_layout([instruction])
    before, after = f"<s>[INST] {instruction} [/INST]".split("<VideoHere>")
    assert before == "<s>[INST] <video>"
    assert after.startswith("</video> <feature><FeatureHere></feature>")
    expected = [sp.bos_id(), sp.bos_id()] + sp.encode("[INST] <video>") + [PLACEHOLDER] * NUM_VISUAL + sp.encode(after)
    ids = layout.input_ids[0].tolist()
    visual = layout.visual_mask[0].tolist()
    assert [PLACEHOLDER if v else i for i, v in zip(ids, visual)] == expected
    assert layout.attention_mask[0].all()
    # <FeatureHere> stays text; the visual slot is one contiguous block of all N + S + 1 tokens
    first = visual.index(True)
    assert visual[first : first + NUM_VISUAL] == [True] * NUM_VISUAL and sum(visual) == NUM_VISUAL
    assert "<FeatureHere>" in sp.decode(ids[first + NUM_VISUAL :])


def test_legacy_generation_fills_all_visual_tokens_in_order(legacy_model, samples):
    sample = select(samples, 0)
    with torch.no_grad():
        visual = legacy_model.encode_visual(sample["image"], sample["video_features"])
        layout = legacy_model.generation_layout(sample["instruction_input"])
        embeds = legacy_model.embed_layout(layout, visual.sequence())
    rows = layout.visual_mask[0].nonzero().flatten()
    expected = torch.cat([visual.image[0], visual.streams[0], visual.cls[0]])
    torch.testing.assert_close(embeds[0, rows], expected, rtol=0, atol=0)
