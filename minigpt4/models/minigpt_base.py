"""The LLM side of MiniGPT-v2: prompt wrapping, the class-weighted loss, candidate scoring,
hidden-state features and greedy generation.  Subclasses provide the visual tokens through
``encode_visual``; everything about token placement lives in :mod:`prompt_layout`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from minigpt4.conversation import single_turn_prompt
from minigpt4.models.base_model import BaseModel
from minigpt4.models.prompt_layout import IGNORE_INDEX, LayoutBatch


@dataclass
class VisualTokens:
    """Projected visual inputs of a batch, in the LLM's hidden size H."""

    image: torch.Tensor  # [B, N, H] projected image tokens (N = patches / merge)
    streams: torch.Tensor  # [B, S, H] FaceMAE, VideoMAE[, audio] projections
    cls: torch.Tensor  # [B, 1, H] projected CLS token

    def sequence(self) -> torch.Tensor:
        """Slot order: image tokens, then streams, then CLS -> [B, N + S + 1, H]."""
        return torch.cat([self.image, self.streams, self.cls], dim=1)


@dataclass
class MiniGPTOutput:
    loss: torch.Tensor  # class-weighted mean token cross-entropy
    token_loss: torch.Tensor  # [M] cross-entropy of each answer token
    token_weight: torch.Tensor  # [M] the class weight of each answer token


POOL_SPANS = ("image", "streams", "prompt")


@dataclass
class LlamaStates:
    """Hidden states kept from one LLM forward (L = requested layers, K = pools)."""

    selected: torch.Tensor  # [B, L, P, H] at the dump positions
    pooled: torch.Tensor | None  # [B, L, K, H] float32 span means, None without pools


def resolve_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """Layer l (0 <= l < num_layers) is the output of decoder layer l, i.e. Hugging Face's
    ``hidden_states[l + 1]``; the last one is taken after the final norm (as HF's
    ``hidden_states[-1]`` is).  Negative l counts from the end: -1 = the final-norm output."""
    layers = list(layers)
    bad = [l for l in layers if not -num_layers <= l < num_layers]
    if bad:
        raise ValueError(
            f"model.llama_feature_layers {bad} out of range: the LLM has {num_layers} decoder layers "
            f"(0..{num_layers - 1}, or -{num_layers}..-1 from the end)"
        )
    resolved = [l % num_layers for l in layers]
    if not resolved or len(set(resolved)) != len(resolved):
        raise ValueError(f"model.llama_feature_layers must name distinct layers, got {layers} of {num_layers}")
    return resolved


def decoder_layers_needed(layers: Sequence[int], num_layers: int) -> int:
    """How many decoder layers, from the first, a model must build to give dump ``layers`` (see
    :func:`resolve_layers`) of an LLM with ``num_layers``: l + 1 for layer l, so every layer
    for the last one (-1), which is read after the final norm."""
    return max(resolve_layers(layers, num_layers)) + 1


def check_pools(pools: Sequence[str]) -> list[str]:
    pools = list(pools)
    bad = [p for p in pools if p not in POOL_SPANS]
    if bad or len(set(pools)) != len(pools):
        raise ValueError(f"model.llama_feature_pools must be distinct names from {', '.join(POOL_SPANS)}, got {pools}")
    return pools


def forward_length(positions: Sequence[int], pool_weights: torch.Tensor | None) -> int:
    """Tokens the LLM must run on: through the last position and the end of every pooled span."""
    keep = max(positions) + 1
    if pool_weights is not None:
        keep = max(keep, int(pool_weights.flatten(0, 1).any(0).nonzero().max()) + 1)
    return keep


def check_positions(positions: Sequence[int], length: int) -> None:
    """Dump positions count from the sequence start (causality makes a prefix enough)."""
    if not positions or any(p < 0 for p in positions):
        raise ValueError(f"model.llama_feature_positions must be non-negative positions, got {list(positions)}")
    if max(positions) >= length:
        raise ValueError(
            f"model.llama_feature_positions reach position {max(positions)} but the input has only {length} tokens"
        )


class MiniGPTBase(BaseModel):
    """Needs ``llama_model``, ``llama_tokenizer``, ``layout``, ``precision``, ``llm_depth`` and
    ``llm_layers_built`` set by subclasses (``llama_model`` None when no decoder layer is built)."""

    legacy_generate_context: bool = False
    llm_depth: int = 0  # decoder layers of the LLaMA folder (its config.json)
    llm_layers_built: int = 0  # the first decoder layers this model holds (model.llm_layers)

    def require_llm_layers(self, needed: int, what: str) -> None:
        """Stop with one line when ``what`` needs more of the LLM's decoder layers than were built."""
        if needed <= self.llm_layers_built:
            return
        if needed >= self.llm_depth:
            wanted = "the whole LLM"
        else:
            wanted = "the LLM's first decoder layer" if needed == 1 else f"the LLM's first {needed} decoder layers"
        built = (
            "without the LLM" if not self.llm_layers_built
            else f"with {self.llm_layers_built} of its {self.llm_depth} decoder layers"
        )
        raise ValueError(f"{what} needs {wanted}, but this model was built {built} (model.llm_layers: {self.llm_layers_built})")

    # ---- pieces of the wrapped LLM -------------------------------------------------------
    @property
    def causal_lm(self):
        """The LLaMA causal LM under any LoRA wrapper (adapters stay injected)."""
        llm = self.llama_model
        return llm.get_base_model() if hasattr(llm, "get_base_model") else llm

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llama_model.get_input_embeddings()(ids)

    def encode_visual(self, image: torch.Tensor, video_features: torch.Tensor) -> VisualTokens:
        raise NotImplementedError

    def embed_layout(self, layout: LayoutBatch, visual: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the visual placeholders filled in slot order."""
        device = self.device
        embeds = self.embed_tokens(layout.input_ids.to(device))
        mask = layout.visual_mask.to(device).unsqueeze(-1)
        return embeds.masked_scatter(mask, visual.to(embeds.dtype))

    def preparing_embedding(self, samples: dict, answers: Sequence[str] | None = None):
        """Visual tokens and the padded training layout ``[BOS] + prompt + answer``."""
        visual = self.encode_visual(samples["image"], samples["video_features"])
        answers = samples["answer"] if answers is None else answers
        return visual, self.text_layout(samples["instruction_input"], answers)

    def text_layout(self, instructions: Sequence[str], answers: Sequence[str]) -> LayoutBatch:
        """The padded layout ``[BOS] + wrapped prompt + answer`` of each instruction and answer."""
        prompts = [self.layout.prompt_ids(text) for text in instructions]
        return self.layout.batch(prompts, [self.layout.answer_ids(a) for a in answers])

    def _decode(self, embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
        with self.maybe_autocast():
            return self.causal_lm.model(inputs_embeds=embeds, attention_mask=attention_mask.to(embeds.device), **kwargs)

    def _answer_token_logits(self, hidden: torch.Tensor, targets: torch.Tensor):
        """LM head only where the next token is an answer token; logits in fp32."""
        shifted = targets[:, 1:].to(hidden.device)
        where = shifted != IGNORE_INDEX
        with self.maybe_autocast():
            logits = self.causal_lm.lm_head(hidden[:, :-1][where])
        return logits.float(), shifted[where], where

    # ---- training --------------------------------------------------------------------------
    def forward(self, samples: dict) -> MiniGPTOutput:
        self.require_llm_layers(self.llm_depth, "the training loss")
        visual, layout = self.preparing_embedding(samples)
        embeds = self.embed_layout(layout, visual.sequence())
        hidden = self._decode(embeds, layout.attention_mask).last_hidden_state
        logits, labels, where = self._answer_token_logits(hidden, layout.targets)
        token_loss = F.cross_entropy(logits, labels, reduction="none")
        weights = samples.get("class_weight")
        if weights is None:
            weights = torch.ones(len(samples["instruction_input"]))
        weights = torch.as_tensor(weights, dtype=torch.float32, device=hidden.device)
        token_weight = weights[:, None].expand(where.shape)[where]
        loss = (token_weight * token_loss).sum() / token_weight.sum()
        return MiniGPTOutput(loss=loss, token_loss=token_loss, token_weight=token_weight)

    # ---- classification by candidate scoring ------------------------------------------------
    @torch.no_grad()
    def score_candidates(self, samples: dict, candidates: Sequence[str]) -> torch.Tensor:
        """Log-likelihood of each candidate answer (with its end symbol) -> [B, C].

        The prompts run once (left-padded, so every answer starts at the same column); the
        cache is then repeated per candidate and all answers are scored in one short pass.
        """
        from transformers import DynamicCache

        self.require_llm_layers(self.llm_depth, "scoring answers")
        visual = self.encode_visual(samples["image"], samples["video_features"]).sequence()
        layout = self.layout.batch([self.layout.prompt_ids(t) for t in samples["instruction_input"]], left_pad=True)
        embeds = self.embed_layout(layout, visual)
        mask = layout.attention_mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.causal_lm.config)
        last = self._decode(embeds, mask, position_ids=positions, cache=cache, use_cache=True).last_hidden_state[:, -1:]

        n_samples, n_cand = embeds.shape[0], len(candidates)
        answers = [self.layout.answer_ids(c) for c in candidates]
        length = max(len(a) for a in answers)
        ids = torch.full((n_cand, length), self.layout.pad_id, dtype=torch.long, device=self.device)
        answer_mask = torch.zeros((n_cand, length), dtype=torch.long, device=self.device)
        for row, answer in enumerate(answers):  # right-padded: nothing after a padded token is scored
            ids[row, : len(answer)] = torch.tensor(answer, device=self.device)
            answer_mask[row, : len(answer)] = 1
        ids, answer_mask = ids.repeat(n_samples, 1), answer_mask.repeat(n_samples, 1)  # row b * C + c
        hidden = last.repeat_interleave(n_cand, dim=0)  # predicts the first answer token
        if length > 1:
            cache.batch_repeat_interleave(n_cand)
            steps = torch.arange(1, length, device=self.device)
            rest = self._decode(
                self.embed_tokens(ids[:, :-1]),
                torch.cat([mask.repeat_interleave(n_cand, dim=0), answer_mask[:, :-1]], dim=1),
                position_ids=positions[:, -1:].repeat_interleave(n_cand, dim=0) + steps,
                cache=cache,
                use_cache=True,
            ).last_hidden_state
            hidden = torch.cat([hidden, rest], dim=1)  # [B * C, length, H]
        with self.maybe_autocast():
            logits = self.causal_lm.lm_head(hidden)
        token_logp = logits.float().log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return (token_logp * answer_mask).sum(-1).view(n_samples, n_cand)

    # ---- features ------------------------------------------------------------------------------
    @torch.no_grad()
    def llama_hidden_states(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: Sequence[int],
        layers: Sequence[int] = (-1,),
        pool_weights: torch.Tensor | None = None,
    ) -> LlamaStates:
        """Hidden states of ``layers`` (see :func:`resolve_layers`) at ``positions``, and the
        weighted means ``pool_weights`` [B, K, T] of each layer's states, from one forward.

        The LLM is causal, so the state at position p depends only on positions 0..p: the
        decoder runs on the first max(positions) + 1 positions (or up to the end of the last
        pooled span) and never computes logits.  Forward hooks reduce each requested layer's
        output as it is produced, so memory holds only what is kept, never every layer.

        Layers count in the whole LLM (the folder's depth) also when only its first k decoder
        layers were built (``model.llm_layers``): such a model serves the layers below k, and
        its layer k - 1 is that decoder layer's output, never the final norm's.
        """
        wanted = resolve_layers(layers, self.llm_depth)
        self.require_llm_layers(max(wanted) + 1, f"model.llama_feature_layers {list(layers)}")
        check_positions(positions, embeds.shape[1])
        keep = forward_length(positions, pool_weights)
        if pool_weights is not None:
            pool_weights = pool_weights[..., :keep].to(embeds.device, torch.float32)
        decoder = self.causal_lm.model
        last = self.llm_depth - 1
        selected, pooled = {}, {}

        def keep_states(layer: int):
            def hook(module, args, output):
                hidden = output[0] if isinstance(output, tuple) else output  # [B, T, H]
                selected[layer] = hidden[:, list(positions)]
                if pool_weights is not None:
                    pooled[layer] = torch.einsum("bkt,bth->bkh", pool_weights, hidden.float())

            return hook

        # The last layer is read after the final norm, as Hugging Face's hidden_states[-1].
        handles = [
            (decoder.norm if layer == last else decoder.layers[layer]).register_forward_hook(keep_states(layer))
            for layer in wanted
        ]
        try:
            self._decode(embeds[:, :keep], attention_mask[:, :keep])
        finally:
            for handle in handles:
                handle.remove()
        return LlamaStates(
            selected=torch.stack([selected[l] for l in wanted], dim=1),
            pooled=torch.stack([pooled[l] for l in wanted], dim=1) if pool_weights is not None else None,
        )

    def span_weights(self, layout: LayoutBatch, pools: Sequence[str]) -> torch.Tensor:
        """Averaging weights of each span -> [B, K, T] (rows sum to 1).

        ``image``: the image tokens; ``streams``: the FaceMAE, VideoMAE[, audio] tokens of the
        feature slot (not its CLS token); ``prompt``: every token before the answer, BOS,
        text and visual tokens included.
        """
        visual_rank = layout.visual_mask.long().cumsum(-1) - 1  # [B, T] order in the visual slots
        num_image = self.layout.num_image_tokens
        num_streams = self.layout.num_streams
        is_visual = layout.visual_mask
        spans = {
            "image": is_visual & (visual_rank < num_image),
            "streams": is_visual & (visual_rank >= num_image) & (visual_rank < num_image + num_streams),
            "prompt": (layout.attention_mask == 1) & (layout.targets == IGNORE_INDEX),
        }
        masks = torch.stack([spans[name] for name in check_pools(pools)], dim=1).float()  # [B, K, T]
        return masks / masks.sum(-1, keepdim=True)

    def feature_forward_length(self, instruction: str, positions: Sequence[int], pools: Sequence[str]) -> int:
        """How many input tokens the dump's forward covers (a ``prompt`` pool needs all of them)."""
        layout = self.dump_layout([instruction])
        return forward_length(positions, self.span_weights(layout, pools) if pools else None)

    def feature_layout(self, samples: dict) -> tuple[VisualTokens, LayoutBatch]:
        """Visual tokens and the dump's input: ``[BOS] + wrapped prompt + answer ""``."""
        visual = self.encode_visual(samples["image"], samples["video_features"])
        return visual, self.dump_layout(samples["instruction_input"])

    def dump_layout(self, instructions: Sequence[str]) -> LayoutBatch:
        """The dump's input of each instruction: ``[BOS] + wrapped prompt + answer ""`` (the end symbol)."""
        return self.text_layout(instructions, [""] * len(instructions))

    # ---- generation ------------------------------------------------------------------------
    def generation_layout(self, instructions: Sequence[str]) -> LayoutBatch:
        if self.legacy_generate_context:
            prompts = [self.layout.legacy_prompt_ids(i, single_turn_prompt(i)) for i in instructions]
        else:
            prompts = [self.layout.prompt_ids(i) for i in instructions]
        return self.layout.batch(prompts, left_pad=True)

    @torch.no_grad()
    def generate(self, samples: dict, max_new_tokens: int = 30) -> list[str]:
        """Greedy decoding with a KV cache; rows are left-padded so they finish together."""
        from transformers import DynamicCache

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.require_llm_layers(self.llm_depth, "generation")

        visual = self.encode_visual(samples["image"], samples["video_features"]).sequence()
        layout = self.generation_layout(samples["instruction_input"])
        embeds = self.embed_layout(layout, visual)
        mask = layout.attention_mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.causal_lm.config)
        eos = self.layout.eos_id
        done = torch.zeros(mask.shape[0], dtype=torch.bool, device=self.device)
        generated = []
        step_embeds, step_positions = embeds, positions
        for _ in range(max_new_tokens):
            hidden = self._decode(step_embeds, mask, position_ids=step_positions, cache=cache, use_cache=True).last_hidden_state
            with self.maybe_autocast():
                logits = self.causal_lm.lm_head(hidden[:, -1])
            next_ids = torch.where(done, eos, logits.float().argmax(-1))
            generated.append(next_ids)
            done |= next_ids == eos
            if bool(done.all()):
                break
            step_embeds = self.embed_tokens(next_ids[:, None])
            step_positions = step_positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        tokens = torch.stack(generated, dim=1).tolist()
        texts = []
        for row in tokens:
            row = row[: row.index(eos)] if eos in row else row
            texts.append(self.llama_tokenizer.decode(row).strip())
        return texts
