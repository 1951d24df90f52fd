"""The tiny tokenizer splits the fixed prompt texts into LLaMA-2's pieces, and the wrapper
honours the folder's ``legacy`` flag (SPEC section 4).

The expected pieces are copied from SPEC (checked there against the LLaMA-2 tokenizer), so
an absolute position means on the demo what it means on the real weights.
"""

from __future__ import annotations

import json
import shutil

import pytest

from minigpt4.models.llama_tokenizer import LlamaTokenizer
from minigpt4.models.prompt_layout import PLACEHOLDER, PromptLayout

HCMW_INSTRUCTION = (
    "<video><VideoHere></video> <feature><FeatureHere></feature> [classification] "
    "Please classify the video into one of these categories: mind wandering or non-mind wandering. "
)
NINE_LABELS = (
    "Please determine which emotion label in the video represents: "
    "happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt."
)
SIX_LABELS = "Please determine which emotion label in the video represents: happy, sad, neutral, angry, worried, surprise."
SENTENCE = "I am worried about the exam"
CHAT_TEMPLATE = "[INST] {} [/INST]"
NUM_IMAGE_TOKENS = 64
NUM_FEATURE_TOKENS = 3  # FaceMAE, VideoMAE, CLS

# SPEC section 4, piece for piece.
BEFORE_VIDEO = "▁< video >".split(" ")
BEFORE_VIDEO_TEMPLATE = "▁[ INST ] ▁< video >".split(" ")
BETWEEN_SLOTS = "▁</ video > ▁< feature >".split(" ")
AFTER_FEATURE = (
    "▁</ feature > ▁[ class ification ] ▁Please ▁class ify ▁the ▁video ▁into ▁one ▁of ▁these ▁categories : "
    "▁mind ▁wand ering ▁or ▁non - mind ▁wand ering . ▁"
).split(" ")
TEMPLATE_TAIL = "▁[ / INST ]".split(" ")
ANSWERS = {"mind wandering": "▁mind ▁wand ering".split(" "), "non-mind wandering": "▁non - mind ▁wand ering".split(" ")}
MER_BEFORE_SENTENCE = "▁</ feature > ▁The ▁person ▁in ▁video ▁says :".split(" ")
MER_AFTER_SENTENCE = (
    ". ▁ ▁[ em otion ] ▁Please ▁determine ▁which ▁emotion ▁label ▁in ▁the ▁video ▁represents : "
    "▁happy , ▁sad , ▁neutral , ▁angry , ▁worried , ▁surprise , ▁fear , ▁cont empt , ▁doubt . ▁"
).split(" ")
# the six-label question ends after "surprise" the same way the nine-label one ends after "doubt"
MER_AFTER_SENTENCE_SIX = MER_AFTER_SENTENCE[: MER_AFTER_SENTENCE.index("▁fear") - 1] + [".", "▁"]


@pytest.fixture(scope="module")
def tokenizer(tiny_assets):
    return LlamaTokenizer.from_folder(tiny_assets["llama_dir"])


def pieces(tokenizer, text: str) -> list[str]:
    return [tokenizer.convert_ids_to_tokens(i) for i in tokenizer.encode(text)]


def layout_pieces(tokenizer, instruction: str, chat_template: bool) -> list[str]:
    layout = PromptLayout(tokenizer, NUM_IMAGE_TOKENS, NUM_FEATURE_TOKENS, chat_template, CHAT_TEMPLATE,
                          end_sym="</s>", max_txt_len=64, max_context_len=512)  # fmt: skip
    return ["<visual>" if i == PLACEHOLDER else tokenizer.convert_ids_to_tokens(i) for i in layout.prompt_ids(instruction)]


@pytest.mark.parametrize("chat_template", [False, True], ids=["plain", "template"])
def test_hcmw_prompt_is_split_into_the_llama2_pieces(tokenizer, chat_template):
    before = BEFORE_VIDEO_TEMPLATE if chat_template else BEFORE_VIDEO
    after = AFTER_FEATURE + TEMPLATE_TAIL if chat_template else AFTER_FEATURE
    expected = (
        ["<s>"] + before + ["<visual>"] * NUM_IMAGE_TOKENS + BETWEEN_SLOTS + ["<visual>"] * NUM_FEATURE_TOKENS + after
    )
    assert layout_pieces(tokenizer, HCMW_INSTRUCTION, chat_template) == expected
    assert (len(before), len(BETWEEN_SLOTS), len(AFTER_FEATURE)) == ((6 if chat_template else 3), 6, 29)


def test_the_original_dump_positions_hold_image_tokens_2_to_5_only_without_the_template(tokenizer):
    """SPEC section 4: positions 6..9 are image tokens 2..5 plain, '>' and image tokens 0..2 with the template."""
    plain = layout_pieces(tokenizer, HCMW_INSTRUCTION, chat_template=False)
    template = layout_pieces(tokenizer, HCMW_INSTRUCTION, chat_template=True)
    assert plain[4:10] == ["<visual>"] * 6 and plain[3] == ">"
    assert template[6:10] == [">", "<visual>", "<visual>", "<visual>"]


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_answers_are_split_into_the_llama2_pieces(tokenizer, answer):
    assert pieces(tokenizer, answer) == ANSWERS[answer]


@pytest.mark.parametrize("question, after", [(NINE_LABELS, MER_AFTER_SENTENCE), (SIX_LABELS, MER_AFTER_SENTENCE_SIX)],
                         ids=["nine-labels", "six-labels"])  # fmt: skip
def test_mer_fixed_text_is_split_into_the_llama2_pieces(tokenizer, question, after):
    """The original's MER instruction: two spaces before [emotion], the lone '▁' being the second."""
    instruction = "<video><VideoHere></video> <feature><FeatureHere></feature> {} [{}] {} ".format(
        f"The person in video says: {SENTENCE}. ", "emotion", question
    )
    got = layout_pieces(tokenizer, instruction, chat_template=False)
    feature_end = len(got) - got[::-1].index("<visual>")
    assert got[:feature_end] == ["<s>"] + BEFORE_VIDEO + ["<visual>"] * NUM_IMAGE_TOKENS + BETWEEN_SLOTS + [
        "<visual>"
    ] * NUM_FEATURE_TOKENS
    assert got[feature_end:] == MER_BEFORE_SENTENCE + pieces(tokenizer, SENTENCE) + after


def test_the_tokenizer_normalises_like_llama2(tokenizer):
    """No whitespace collapsing, no NFKC, dummy prefix, bytes for what no piece covers."""
    assert pieces(tokenizer, "mind  wandering") == ["▁mind", "▁", "▁wand", "ering"]
    assert pieces(tokenizer, "ﬁ") != pieces(tokenizer, "fi")  # NFKC would fold the ligature into "fi"
    assert pieces(tokenizer, "mind")[0].startswith("▁")
    text = "Zürich 2024 😀"
    ids = tokenizer.encode(text)
    assert tokenizer.unk_token_id not in ids
    assert "<0xC3>" in [tokenizer.convert_ids_to_tokens(i) for i in ids]  # "ü" as UTF-8 bytes
    assert tokenizer.decode(ids) == text


def test_special_ids_and_pad_piece(tokenizer):
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.eos_token == "</s>"
    assert tokenizer.convert_ids_to_tokens(tokenizer.pad_token_id) == "$$"
    assert tokenizer.pad_token_id not in tokenizer.encode(HCMW_INSTRUCTION)


# --------------------------------------------------------------------------- legacy flag


def folder_with(tmp_path, tiny_assets, config: dict | None):
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    shutil.copy(tiny_assets["llama_dir"] / "tokenizer.model", folder / "tokenizer.model")
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "config, first_piece",
    [({"legacy": True}, "▁["), (None, "▁["), ({"tokenizer_class": "LlamaTokenizer"}, "▁["), ({"legacy": False}, "[")],
    ids=["legacy-true", "no-file", "no-key", "legacy-false"],
)
def test_legacy_flag_decides_the_piece_after_a_special_token(tmp_path, tiny_assets, config, first_piece):
    tokenizer = LlamaTokenizer.from_folder(folder_with(tmp_path, tiny_assets, config))
    ids = tokenizer.encode_with_special_tokens("<s>[INST] <video>")
    assert [tokenizer.convert_ids_to_tokens(i) for i in ids] == ["<s>", first_piece, "INST", "]", "▁<", "video", ">"]
    # plain pieces (no special token in the text) are the same either way
    assert pieces(tokenizer, "[INST] <video>") == BEFORE_VIDEO_TEMPLATE
    # the end symbol written in the text is the EOS id
    assert tokenizer.encode_with_special_tokens("mind wandering</s>") == tokenizer.encode("mind wandering") + [2]


def test_a_bad_legacy_value_names_the_file(tmp_path, tiny_assets):
    folder = folder_with(tmp_path, tiny_assets, {"legacy": "yes"})
    with pytest.raises(ValueError, match=r"tokenizer_config\.json.*legacy"):
        LlamaTokenizer.from_folder(folder)


def test_the_generated_folders_say_legacy_true(tiny_assets):
    for key in ("llama_dir", "tokenizer_dir"):
        config = json.loads((tiny_assets[key] / "tokenizer_config.json").read_text(encoding="utf-8"))
        assert config["legacy"] is True
