"""Where every token of the LLM input goes (SPEC section 4; seed defect 1 of section 10).

The expected token ids are built here from plain SentencePiece encodings of the prompt pieces
and the visual embeddings are recomputed from the model's modules, so the checks do not lean
on ``PromptLayout`` itself.
"""

from __future__ import annotations


import pytest
import sentencepiece as spm
import torch

from minigpt4.models.minigpt_v2 import MiniGPTv2
from minigpt4.models.prompt_layout import IGNORE_INDEX, PLACEHOLDER, PromptLayout, parse_positions
from tiny_model import HCMW_INSTRUCTION, HIDDEN, build_model, random_visual_inputs

SHORT_INSTRUCTION = "<video><VideoHere></video> <feature><FeatureHere></feature> [emotion] What is it? "
CHAT_TEMPLATE = "[INST] {} [/INST]"

NUM_IMAGE_TOKENS = 64  # tiny: 224 / 14 = 16x16 patches, merged by 4


def make_samples(n: int, seed: int, instructions=None, answers=None) -> dict:
    return {
        **random_visual_inputs(n, seed),
        "instruction_input": list(instructions or [HCMW_INSTRUCTION] * n),
        "answer": list(answers or ["mind wandering"] * n),
    }


@pytest.fixture(scope="module")
def sp(tiny_assets):
    return spm.SentencePieceProcessor(model_file=str(tiny_assets["llama_dir"] / "tokenizer.model"))


@pytest.fixture(scope="module")
def models(tiny_assets):
    return {streams: build_model(tiny_assets, seed=streams, num_video_streams=streams) for streams in (2, 3)}


def split_slots(text: str) -> tuple[str, str, str]:
    before, rest = text.split("<VideoHere>")
    between, after = rest.split("<FeatureHere>")
    return before, between, after


def expected_prompt_ids(sp, instruction: str, num_streams: int, chat_template: bool = True) -> list[int]:
    text = CHAT_TEMPLATE.format(instruction) if chat_template else instruction
    before, between, after = split_slots(text)
    return (
        [sp.bos_id()]
        + sp.encode(before)
        + [PLACEHOLDER] * NUM_IMAGE_TOKENS
        + sp.encode(between)
        + [PLACEHOLDER] * (num_streams + 1)
        + sp.encode(after)
    )


# --------------------------------------------------------------------------- token ids


@pytest.mark.parametrize("streams", [2, 3])
@pytest.mark.parametrize("instruction", [HCMW_INSTRUCTION, SHORT_INSTRUCTION], ids=["hcmw", "short"])
def test_prompt_ids_are_bos_plus_plain_pieces_and_slots(models, sp, streams, instruction):
    model = models[streams]
    ids = model.layout.prompt_ids(instruction)
    assert ids == expected_prompt_ids(sp, instruction, streams)
    assert ids[0] == sp.bos_id()
    text_ids = [i for i in ids[1:] if i != PLACEHOLDER]
    assert sp.bos_id() not in text_ids and sp.eos_id() not in text_ids  # no special tokens in the pieces
    # the chat template wraps the instruction: the first piece starts with "[INST]", the last ends with "[/INST]"
    assert sp.decode(text_ids[: len(sp.encode("[INST] <video>"))]) == "[INST] <video>"
    assert sp.decode(sp.encode(split_slots(CHAT_TEMPLATE.format(instruction))[2])).endswith(" [/INST]")


def test_without_chat_template_the_instruction_is_not_wrapped(models, sp):
    tokenizer = models[2].llama_tokenizer
    layout = PromptLayout(tokenizer, NUM_IMAGE_TOKENS, 3, chat_template=False, prompt_template=CHAT_TEMPLATE,
                          end_sym="</s>", max_txt_len=64, max_context_len=512)  # fmt: skip
    ids = layout.prompt_ids(HCMW_INSTRUCTION)
    assert ids == expected_prompt_ids(sp, HCMW_INSTRUCTION, 2, chat_template=False)
    assert "INST" not in sp.decode([i for i in ids if i != PLACEHOLDER])


def test_answer_is_answer_tokens_plus_eos(models, sp):
    layout = models[2].layout
    assert layout.answer_ids("mind wandering") == sp.encode("mind wandering") + [sp.eos_id()]
    assert layout.answer_ids("non-mind wandering") == sp.encode("non-mind wandering") + [sp.eos_id()]
    assert layout.answer_ids("") == [sp.eos_id()]


def test_max_txt_len_caps_the_answer_and_max_context_len_the_prompt(models, sp):
    tokenizer = models[2].llama_tokenizer
    layout = PromptLayout(tokenizer, NUM_IMAGE_TOKENS, 3, chat_template=True, prompt_template=CHAT_TEMPLATE,
                          end_sym="</s>", max_txt_len=2, max_context_len=512)  # fmt: skip
    assert layout.answer_ids("non-mind wandering") == (sp.encode("non-mind wandering") + [sp.eos_id()])[:2]
    prompt_length = len(expected_prompt_ids(sp, HCMW_INSTRUCTION, 2))
    short = PromptLayout(tokenizer, NUM_IMAGE_TOKENS, 3, chat_template=True, prompt_template=CHAT_TEMPLATE,
                         end_sym="</s>", max_txt_len=64, max_context_len=prompt_length - 1)  # fmt: skip
    with pytest.raises(ValueError, match="max_context_len"):
        short.prompt_ids(HCMW_INSTRUCTION)


@pytest.mark.parametrize(
    "instruction",
    [
        "no slots at all",
        "<video><VideoHere></video> only the video",
        "<FeatureHere> <VideoHere> <VideoHere>",
        "<feature><FeatureHere></feature> before <video><VideoHere></video>",
    ],
)
def test_instruction_without_both_slots_is_refused(models, instruction):
    with pytest.raises(ValueError, match="VideoHere"):
        models[2].layout.prompt_ids(instruction)


def test_batch_right_pads_with_pad_token_and_targets_only_answers(models, sp):
    model = models[2]
    pad_id = sp.piece_to_id("$$")
    assert model.layout.pad_id == pad_id != sp.unk_id()
    instructions = [HCMW_INSTRUCTION, SHORT_INSTRUCTION]
    answers = ["mind wandering", "non-mind wandering"]
    _, layout = model.preparing_embedding(make_samples(2, 0, instructions, answers))
    rows = [expected_prompt_ids(sp, i, 2) + sp.encode(a) + [sp.eos_id()] for i, a in zip(instructions, answers)]
    length = max(len(r) for r in rows)
    assert layout.input_ids.shape == (2, length)
    for b, row in enumerate(rows):
        n = len(row)
        prompt_length = len(expected_prompt_ids(sp, instructions[b], 2))
        answer = sp.encode(answers[b]) + [sp.eos_id()]
        expected_ids = [pad_id if i == PLACEHOLDER else i for i in row] + [pad_id] * (length - n)
        assert layout.input_ids[b].tolist() == expected_ids
        assert layout.attention_mask[b].tolist() == [1] * n + [0] * (length - n)
        assert layout.visual_mask[b].tolist() == [i == PLACEHOLDER for i in row] + [False] * (length - n)
        expected_targets = [IGNORE_INDEX] * prompt_length + answer + [IGNORE_INDEX] * (length - n)
        assert layout.targets[b].tolist() == expected_targets
        assert layout.prompt_lengths[b] == prompt_length
    assert layout.attention_mask[0].sum() != layout.attention_mask[1].sum()  # padding really happened


# --------------------------------------------------------------------------- embeddings in the slots


def reference_visual(model: MiniGPTv2, samples: dict, streams: int):
    """Image tokens, stream tokens and CLS recomputed from the modules (SPEC section 4)."""
    with torch.no_grad():
        tokens = model.ln_vision(model.visual_encoder(samples["image"]))
        patches, cls = tokens[:, 1:], tokens[:, 0]
        batch, num_patches, width = patches.shape
        assert num_patches == 4 * NUM_IMAGE_TOKENS
        merged = torch.cat([patches[:, k::4] for k in range(4)], dim=-1)  # 4 consecutive tokens, row-major
        image = model.llama_proj(merged)
        projectors = [model.feats_llama_proj1, model.feats_llama_proj2, model.feats_llama_proj3]
        stream_rows = torch.stack([projectors[k](samples["video_features"][:, k]) for k in range(streams)], dim=1)
        cls_row = model.cls_tk_llama_proj(cls)[:, None]
    return image, stream_rows, cls_row


@pytest.mark.parametrize("streams", [2, 3])
def test_encode_visual_matches_the_modules(models, streams):
    model = models[streams]
    samples = make_samples(2, 1)
    with torch.no_grad():
        visual = model.encode_visual(samples["image"], samples["video_features"])
    image, stream_rows, cls_row = reference_visual(model, samples, streams)
    assert visual.image.shape == (2, NUM_IMAGE_TOKENS, HIDDEN)
    assert visual.streams.shape == (2, streams, HIDDEN)
    assert visual.cls.shape == (2, 1, HIDDEN)
    torch.testing.assert_close(visual.image, image, rtol=0, atol=1e-6)
    torch.testing.assert_close(visual.streams, stream_rows, rtol=0, atol=1e-6)
    torch.testing.assert_close(visual.cls, cls_row, rtol=0, atol=1e-6)
    sequence = visual.sequence()
    assert sequence.shape == (2, NUM_IMAGE_TOKENS + streams + 1, HIDDEN)


@pytest.mark.parametrize("streams", [2, 3])
def test_slots_hold_image_tokens_then_streams_then_cls(models, sp, streams):
    """<VideoHere> holds every image token in order; <FeatureHere> the S streams then CLS (defect 1)."""
    model = models[streams]
    instructions = [HCMW_INSTRUCTION, SHORT_INSTRUCTION]
    samples = make_samples(2, 2, instructions, ["mind wandering", "non-mind wandering"])
    with torch.no_grad():
        visual, layout = model.preparing_embedding(samples)
        embeds = model.embed_layout(layout, visual.sequence())
        table = model.llama_model.get_input_embeddings().weight
    image, stream_rows, cls_row = reference_visual(model, samples, streams)
    pad_id = sp.piece_to_id("$$")

    for b, instruction in enumerate(instructions):
        before, between, after = split_slots(CHAT_TEMPLATE.format(instruction))
        video_start = 1 + len(sp.encode(before))
        feature_start = video_start + NUM_IMAGE_TOKENS + len(sp.encode(between))
        feature_end = feature_start + streams + 1
        torch.testing.assert_close(embeds[b, video_start : video_start + NUM_IMAGE_TOKENS], image[b], rtol=0, atol=1e-6)
        torch.testing.assert_close(embeds[b, feature_start : feature_start + streams], stream_rows[b], rtol=0, atol=1e-6)
        torch.testing.assert_close(embeds[b, feature_end - 1], cls_row[b, 0], rtol=0, atol=1e-6)
        # the feature slot is exactly streams + CLS: no image token slipped in (seed defect 1)
        for k in range(NUM_IMAGE_TOKENS):
            assert not torch.allclose(embeds[b, feature_start], image[b, k])
        # every text row is the token embedding of its id; padding rows are the pad embedding
        ids = expected_prompt_ids(sp, instruction, streams) + sp.encode(samples["answer"][b]) + [sp.eos_id()]
        ids += [pad_id] * (embeds.shape[1] - len(ids))
        text_positions = [t for t, i in enumerate(ids) if i != PLACEHOLDER]
        assert not layout.visual_mask[b, text_positions].any()
        torch.testing.assert_close(embeds[b, text_positions], table[[ids[t] for t in text_positions]], rtol=0, atol=0)
        assert layout.visual_mask[b].sum() == NUM_IMAGE_TOKENS + streams + 1
    # the short instruction is padded on the right with the pad embedding and attention 0
    padded = (layout.attention_mask[1] == 0).nonzero().flatten()
    assert len(padded) > 0 and padded.min() > layout.prompt_lengths[1]
    torch.testing.assert_close(embeds[1, padded], table[pad_id].expand(len(padded), -1), rtol=0, atol=0)


# --------------------------------------------------------------------------- named dump positions


@pytest.mark.parametrize("chat_template", [False, True], ids=["plain", "template"])
@pytest.mark.parametrize("streams", [2, 3])
def test_named_positions_resolve_to_their_tokens(models, sp, streams, chat_template):
    """Each name form (negative K and indices mixed in) against the layout rebuilt here from
    SentencePiece, in both templates."""
    layout = PromptLayout(models[streams].llama_tokenizer, NUM_IMAGE_TOKENS, streams + 1, chat_template, CHAT_TEMPLATE,
                          end_sym="</s>", max_txt_len=64, max_context_len=512)  # fmt: skip
    ids = expected_prompt_ids(sp, HCMW_INSTRUCTION, streams, chat_template)
    text = CHAT_TEMPLATE.format(HCMW_INSTRUCTION) if chat_template else HCMW_INSTRUCTION
    before, between, _ = split_slots(text)
    video_start = 1 + len(sp.encode(before))
    feature_start = video_start + NUM_IMAGE_TOKENS + len(sp.encode(between))
    requested = ["image:0", "image:2", "image:-1", "stream:0", f"stream:{streams - 1}", "stream:-1", "cls",
                 "prompt:0", "prompt:1", "prompt:-1", "prompt:-2", 5, len(ids)]  # fmt: skip
    resolved = layout.resolve_positions(HCMW_INSTRUCTION, parse_positions(requested))
    assert [p.name for p in resolved] == [str(r) for r in requested]
    assert [p.index for p in resolved] == [
        video_start, video_start + 2, video_start + NUM_IMAGE_TOKENS - 1,
        feature_start, feature_start + streams - 1, feature_start + streams - 1, feature_start + streams,
        0, 1, len(ids) - 1, len(ids) - 2, 5, len(ids),
    ]  # fmt: skip
    tokens = [p.token for p in resolved]
    assert tokens[:7] == ["<image 0>", "<image 2>", f"<image {NUM_IMAGE_TOKENS - 1}>", "<stream 0>",
                          f"<stream {streams - 1}>", f"<stream {streams - 1}>", "<cls>"]  # fmt: skip
    assert tokens[7] == "<s>" and tokens[8] == sp.id_to_piece(ids[1])
    assert tokens[9] == sp.id_to_piece(ids[-1]) == ("]" if chat_template else "▁")  # the prompt's last piece
    assert tokens[12] == "</s>"  # just past the prompt: the empty answer's end symbol
    expected_five = "<image 1>" if not chat_template else sp.id_to_piece(ids[5])
    assert tokens[11] == expected_five


@pytest.mark.parametrize(
    "positions, message",
    [
        (["image:64"], r"'image:64' is out of range.*64 image tokens"),
        (["image:-65"], "out of range"),
        (["stream:2"], r"'stream:2' is out of range.*2 stream tokens"),
        (["prompt:500"], r"'prompt:500' is out of range"),
        ([6, 500], r"position 500 is beyond the input"),
        (["image2"], r"'image2' is not a position"),
        (["video:1"], "is not a position"),
        ([-1], "must be non-negative"),
        ([], "empty"),
    ],
)
def test_bad_positions_are_config_errors_naming_the_key(models, positions, message):
    from minigpt4.common.config import ConfigError

    with pytest.raises(ConfigError, match=rf"model\.llama_feature_positions.*{message}"):
        models[2].feature_positions(HCMW_INSTRUCTION, positions)


def test_out_of_range_slot_names_fail_before_the_llm_loads(tiny_assets, monkeypatch):
    """image:K and stream:K are checked against the model's sizes before the LLM's weights are read."""
    import minigpt4.models.minigpt_v2 as minigpt_v2
    from minigpt4.common.config import ConfigError

    def no_llm(*args, **kwargs):
        raise AssertionError("the LLM was loaded before the positions were checked")

    monkeypatch.setattr(minigpt_v2, "load_llm", no_llm)
    for positions in (["image:64"], ["stream:5"], ["cls", "nonsense"]):
        with pytest.raises(ConfigError, match=r"model\.llama_feature_positions"):
            build_model(tiny_assets, llama_feature_positions=positions)


@pytest.mark.parametrize("positions", ["[image2]", "[6, 'stream:x']", "[-3]"])
def test_malformed_positions_are_refused_by_config_validation(tiny_assets, tmp_path, positions):
    """The syntax is checked with the rest of the config, before any model is built."""
    import argparse

    from minigpt4.common.config import Config, ConfigError

    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(
        f"model: {{arch: minigpt_v2, model_type: tiny, llama_model: {tiny_assets['llama_dir']}, "
        f"vit_checkpoint: {tiny_assets['eva_ckpt']}, llama_feature_positions: {positions}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"model\.llama_feature_positions"):
        Config(argparse.Namespace(cfg_path=cfg_path, options=[]), default_runner="runner_eval")
    cfg_path.write_text(cfg_path.read_text().replace(positions, "[image:2, cls, prompt:-1, 7]"), encoding="utf-8")
    Config(argparse.Namespace(cfg_path=cfg_path, options=[]), default_runner="runner_eval")
