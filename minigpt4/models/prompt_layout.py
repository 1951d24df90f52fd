"""The one place that knows where every token of the LLM input goes.

An instruction holds two slots.  The image tokens replace ``<VideoHere>``; the feature
stream tokens (FaceMAE, VideoMAE[, audio]) followed by the CLS token replace
``<FeatureHere>``.  The LLM input is ``[BOS] + wrapped prompt + answer tokens`` where the
text pieces around the slots are tokenized without special tokens (plain SentencePiece, as
the released model was trained).  Slots are marked with placeholders here; the model fills
them with visual embeddings in one ``masked_scatter``.

(The upstream code put the last 4 of 259 visual tokens into the feature slot, moving an image
token there; here the slot sizes come from the model and are checked.)

Feature-dump positions (``model.llama_feature_positions``) are absolute indices or names
resolved against this layout: ``image:K`` (the K-th image token), ``stream:K`` (the K-th
stream token of the feature slot: 0 FaceMAE, 1 VideoMAE, 2 audio), ``cls`` and ``prompt:K``
(the K-th token of ``[BOS] + wrapped prompt``); a negative K counts from the end, so
``prompt:-1`` is the last prompt token.  A name means the same token whatever the template
or tokenizer; an absolute index does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch

from minigpt4.common.config import ConfigError

VIDEO_SLOT = "<VideoHere>"
FEATURE_SLOT = "<FeatureHere>"
PLACEHOLDER = -1  # stands for one visual embedding until the model fills it
IGNORE_INDEX = -100
POSITIONS_KEY = "model.llama_feature_positions"
_POSITION_NAME = re.compile(r"(image|stream|prompt):(-?\d+)|cls")


@dataclass(frozen=True)
class PositionSpec:
    """One requested dump position as written in the config, parsed."""

    name: str  # as written: "7", "image:2", "cls", "prompt:-1"
    span: str  # "index" (absolute), "image", "stream", "cls" or "prompt"
    k: int  # the index: absolute for "index", within the span otherwise (negative: from its end)


@dataclass(frozen=True)
class ResolvedPosition:
    """A dump position placed in an actual input."""

    name: str  # as written in the config
    index: int  # absolute index in [BOS] + wrapped prompt + answer
    token: str  # what sits there: a tokenizer piece, or <image k> / <stream k> / <cls>


def parse_positions(values: Sequence[int | str]) -> list[PositionSpec]:
    """Check the syntax of ``model.llama_feature_positions``; a bad entry is a ConfigError naming the key."""
    values = list(values)
    if not values:
        raise ConfigError(f"{POSITIONS_KEY}: empty; name at least one position, e.g. [image:2, image:3]")
    specs = []
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ConfigError(
                    f"{POSITIONS_KEY} must be non-negative indices or names, got {value}; "
                    f"write prompt:{value} to count from the end of the prompt"
                )
            specs.append(PositionSpec(str(value), "index", value))
            continue
        match = _POSITION_NAME.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ConfigError(
                f"{POSITIONS_KEY}: {value!r} is not a position; write an index (0, 1, ...) or image:K, stream:K, "
                "cls or prompt:K (a negative K counts from the end)"
            )
        span, k = (match.group(1), int(match.group(2))) if match.group(1) else ("cls", 0)
        specs.append(PositionSpec(value, span, k))
    return specs


def check_slot_positions(specs: Sequence[PositionSpec], num_image_tokens: int, num_streams: int) -> None:
    """Range of the image/stream names, known from the model's sizes alone (before the LLM loads)."""
    for spec in specs:
        if spec.span == "image":
            _within(spec, num_image_tokens, "image tokens")
        elif spec.span == "stream":
            _within(spec, num_streams, "stream tokens")


def _within(spec: PositionSpec, size: int, what: str) -> int:
    """``spec.k`` as an offset into a span of ``size`` tokens (negative from its end)."""
    if not -size <= spec.k < size:
        raise ConfigError(
            f"{POSITIONS_KEY}: {spec.name!r} is out of range: the input has {size} {what} "
            f"({spec.span}:0..{spec.span}:{size - 1}, or {spec.span}:-{size}..{spec.span}:-1)"
        )
    return spec.k % size


@dataclass
class LayoutBatch:
    """Token ids of a padded batch; visual positions hold ``pad_id`` and are flagged."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long, 0 on padding
    visual_mask: torch.Tensor  # [B, T] bool, True where a visual embedding goes
    targets: torch.Tensor  # [B, T] long, IGNORE_INDEX except on answer tokens
    prompt_lengths: list[int]  # tokens before the answer, per sample


class PromptLayout:
    """Turns instructions and answers into token ids with visual placeholders.

    ``tokenizer`` is the SentencePiece :class:`LlamaTokenizer` of the LLaMA folder; ``num_image_tokens`` and
    ``num_feature_tokens`` (streams + CLS) come from the model's sizes.
    """

    def __init__(
        self,
        tokenizer,
        num_image_tokens: int,
        num_feature_tokens: int,
        chat_template: bool,
        prompt_template: str,
        end_sym: str,
        max_txt_len: int,
        max_context_len: int,
    ):
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.num_feature_tokens = num_feature_tokens
        self.chat_template = chat_template
        self.prompt_template = prompt_template
        self.end_sym = end_sym
        self.max_txt_len = max_txt_len
        self.max_context_len = max_context_len
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
        self._encode_cached = lru_cache(maxsize=4096)(self._encode)

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text))

    def encode(self, text: str) -> list[int]:
        """Plain SentencePiece ids of ``text`` (no BOS/EOS); cached, prompts repeat a lot."""
        return list(self._encode_cached(text))

    def wrap(self, instruction: str) -> str:
        return self.prompt_template.format(instruction) if self.chat_template else instruction

    def prompt_ids(self, instruction: str) -> list[int]:
        """``[BOS] + wrapped instruction`` with PLACEHOLDERs in both slots."""
        text = self.wrap(instruction)
        if text.count(VIDEO_SLOT) != 1 or text.count(FEATURE_SLOT) != 1:
            raise ValueError(
                f"the instruction must hold {VIDEO_SLOT} and {FEATURE_SLOT} exactly once each: {instruction!r}"
            )
        before_video, rest = text.split(VIDEO_SLOT)
        if FEATURE_SLOT not in rest:
            raise ValueError(f"{FEATURE_SLOT} must come after {VIDEO_SLOT}: {instruction!r}")
        between, after_feature = rest.split(FEATURE_SLOT)
        ids = (
            [self.bos_id]
            + self.encode(before_video)
            + [PLACEHOLDER] * self.num_image_tokens
            + self.encode(between)
            + [PLACEHOLDER] * self.num_feature_tokens
            + self.encode(after_feature)
        )
        if len(ids) > self.max_context_len:
            raise ValueError(
                f"the prompt has {len(ids)} tokens, more than model.max_context_len={self.max_context_len}: {instruction!r}"
            )
        return ids

    @property
    def num_streams(self) -> int:
        return self.num_feature_tokens - 1  # the feature slot holds the streams, then CLS

    def resolve_positions(self, instruction: str, specs: Sequence[PositionSpec]) -> list[ResolvedPosition]:
        """Where each position falls in the dump input ``[BOS] + wrapped prompt + answer ""``."""
        prompt = self.prompt_ids(instruction)
        ids = prompt + self.answer_ids("")
        video_start = prompt.index(PLACEHOLDER)
        feature_start = video_start + self.num_image_tokens + prompt[video_start + self.num_image_tokens :].index(PLACEHOLDER)
        names = self.token_names(ids)
        resolved = []
        for spec in specs:
            if spec.span == "image":
                index = video_start + _within(spec, self.num_image_tokens, "image tokens")
            elif spec.span == "stream":
                index = feature_start + _within(spec, self.num_streams, "stream tokens")
            elif spec.span == "cls":
                index = feature_start + self.num_streams
            elif spec.span == "prompt":
                index = _within(spec, len(prompt), "prompt tokens")
            else:
                index = spec.k
                if index >= len(ids):
                    raise ConfigError(
                        f"{POSITIONS_KEY}: position {index} is beyond the input: indices are 0..{len(ids) - 1} "
                        f"([BOS] + prompt {len(prompt)} + answer {len(ids) - len(prompt)} tokens) for {instruction!r}"
                    )
            resolved.append(ResolvedPosition(spec.name, index, names[index]))
        return resolved

    def token_names(self, ids: Sequence[int]) -> list[str]:
        """Readable name of every id: tokenizer pieces, visual placeholders as <image k>, <stream k>, <cls>."""
        visual = [f"<image {k}>" for k in range(self.num_image_tokens)]
        visual += [f"<stream {k}>" for k in range(self.num_streams)] + ["<cls>"]
        names, visual_index = [], 0
        for token in ids:
            if token == PLACEHOLDER:
                names.append(visual[visual_index])
                visual_index += 1
            else:
                names.append(self.tokenizer.convert_ids_to_tokens(token))
        return names

    def legacy_prompt_ids(self, instruction: str, conversation_prompt: str) -> list[int]:
        """The upstream inference layout, kept to reproduce published numbers.

        Upstream generation used the conversation prompt ``<s>[INST] {} [/INST]``, added BOS in
        front of it (so ``<s>`` became a second BOS), put *all* visual tokens at
        ``<VideoHere>`` and left ``<FeatureHere>`` in the text.
        """
        text = conversation_prompt
        if text.count(VIDEO_SLOT) != 1:
            raise ValueError(f"the instruction must hold {VIDEO_SLOT} exactly once: {instruction!r}")
        before_video, after_video = text.split(VIDEO_SLOT)
        return (
            [self.bos_id]
            # the slow LLaMA tokenizer upstream turned a written "<s>" into the BOS id
            + self.tokenizer.encode_with_special_tokens(before_video)
            + [PLACEHOLDER] * (self.num_image_tokens + self.num_feature_tokens)
            + self.tokenizer.encode_with_special_tokens(after_video)
        )

    def answer_ids(self, answer: str) -> list[int]:
        """Answer tokens plus the end symbol (``</s>`` is the EOS id), capped at max_txt_len."""
        if self.end_sym == self.tokenizer.eos_token:
            ids = self.encode(answer) + [self.eos_id]
        else:
            ids = self.encode(answer + self.end_sym)
        return ids[: self.max_txt_len]

    def batch(self, prompts: Sequence[list[int]], answers: Sequence[list[int]] | None = None, left_pad: bool = False) -> LayoutBatch:
        """Pad ``prompt + answer`` sequences; targets cover the answer tokens only."""
        answers = answers if answers is not None else [[] for _ in prompts]
        sequences = [p + a for p, a in zip(prompts, answers)]
        length = max(len(s) for s in sequences)
        size = (len(sequences), length)
        input_ids = torch.full(size, self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros(size, dtype=torch.long)
        visual_mask = torch.zeros(size, dtype=torch.bool)
        targets = torch.full(size, IGNORE_INDEX, dtype=torch.long)
        for row, (prompt, answer, seq) in enumerate(zip(prompts, answers, sequences)):
            start = length - len(seq) if left_pad else 0
            ids = torch.tensor(seq, dtype=torch.long)
            span = slice(start, start + len(seq))
            visual_mask[row, span] = ids == PLACEHOLDER
            input_ids[row, span] = torch.where(ids == PLACEHOLDER, self.pad_id, ids)
            attention_mask[row, span] = 1
            if answer:
                targets[row, start + len(prompt) : start + len(seq)] = torch.tensor(answer, dtype=torch.long)
        return LayoutBatch(input_ids, attention_mask, visual_mask, targets, [len(p) for p in prompts])
