"""MiniGPT-v2 as Emotion-LLaMA uses it: EVA-CLIP image tokens, projected FaceMAE/VideoMAE
(and optionally audio) vectors and the CLS token, fed into LLaMA-2 with LoRA."""

from __future__ import annotations

import inspect
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from minigpt4.common.checkpoint_io import LoadReport, load_checkpoint, unwrap_state_dict
from minigpt4.common.config import ConfigError
from minigpt4.common.registry import registry
from minigpt4.models.base_model import llm_config, load_llm, load_vision_encoder, vision_encoder_architecture
from minigpt4.models.checkpoint_maps import load_released_state, model_to_released
from minigpt4.models.eva_vit import EvaViT
from minigpt4.models.llama_tokenizer import LlamaTokenizer
from minigpt4.models.minigpt_base import (
    LlamaStates,
    MiniGPTBase,
    VisualTokens,
    check_pools,
    check_positions,
    decoder_layers_needed,
    resolve_layers,
)
from minigpt4.models.prompt_layout import PromptLayout, ResolvedPosition, check_slot_positions, parse_positions

logger = logging.getLogger(__name__)

MAX_STREAMS = 3  # FaceMAE, VideoMAE, audio: all three projectors exist so released files load
CONFIG_KEYS = (  # model config keys read by the constructor (besides llama_model)
    "vit_model", "vit_checkpoint", "image_size", "drop_path_rate", "use_grad_checkpoint", "freeze_vit",
    "image_token_merge", "video_feature_dim", "num_video_streams", "pad_token", "low_resource", "precision",
    "llm_grad_checkpoint", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "chat_template",
    "prompt_template", "end_sym", "max_txt_len", "max_context_len", "legacy_generate_context",
    "llama_feature_positions", "llama_feature_layers", "llama_feature_pools", "trust_checkpoint",
    "build_vision", "llm_layers",
)
LIST_KEYS = ("lora_target_modules", "llama_feature_positions", "llama_feature_layers", "llama_feature_pools")
VISION_MODULES = ("visual_encoder", "ln_vision")
LLM_DECODER_LAYER = re.compile(r"^llama_model\..*\.layers\.(\d+)\.")  # a decoder layer's tensor (LoRA included)


ALL_LAYERS = -1  # model.llm_layers: build every decoder layer


def check_llm_layers(llm_layers: int, depth: int) -> int:
    """``model.llm_layers`` as the count of decoder layers to build (-1: all ``depth`` of them)."""
    if isinstance(llm_layers, bool) or not isinstance(llm_layers, int) or not ALL_LAYERS <= llm_layers <= depth:
        raise ConfigError(
            f"model.llm_layers: {llm_layers!r} is not a number of decoder layers from 0 to {depth} (the LLM's depth), "
            "or -1 for all of them"
        )
    return depth if llm_layers == ALL_LAYERS else llm_layers


def image_token_count(num_patches: int, image_token_merge: int) -> int:
    """Image tokens of the LLM input: every ``image_token_merge`` patches become one."""
    if num_patches % image_token_merge:
        raise ValueError(f"model.image_token_merge={image_token_merge} does not divide the {num_patches} image patches")
    return num_patches // image_token_merge


@dataclass
class ClipFeatures:
    """The four per-clip feature kinds of the mind-wandering dump (H = LLM hidden size)."""

    facemae_projected: torch.Tensor  # [B, H]
    videomae_projected: torch.Tensor  # [B, H]
    image_projected: torch.Tensor  # [B, N, H]
    llama_features: torch.Tensor  # [B, P, H] for one layer, [B, L, P, H] for several
    llama_pooled_features: torch.Tensor | None = None  # [B, L, K, H] span means; None without pools
    audio_projected: torch.Tensor | None = None  # [B, H] feats_llama_proj3 of the audio vector; None below 3 streams


@registry.register_model("minigpt_v2")
class MiniGPTv2(MiniGPTBase):
    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain": "configs/models/minigpt_v2.yaml",
        "tiny": "configs/models/minigpt_v2_tiny.yaml",
    }
    # model.vit_model must name an encoder of this family: the image tokens and ln_vision
    # follow EVA's layout (CLS first, then the patch tokens)
    VISION_ENCODER = EvaViT
    REQUIRED_PATHS = ("llama_model",)
    OPTIONAL_PATHS = ("vit_checkpoint", "ckpt")  # empty = random ViT / fresh projectors

    def __init__(
        self,
        llama_model: str,
        vit_model: str = "eva_clip_g",
        vit_checkpoint: str | None = None,
        image_size: int = 448,
        drop_path_rate: float = 0.0,
        use_grad_checkpoint: bool = False,
        freeze_vit: bool = True,
        image_token_merge: int = 4,
        video_feature_dim: int = 1024,
        num_video_streams: int = 2,
        pad_token: str = "$$",
        low_resource: bool = False,
        precision: str = "bf16",
        llm_grad_checkpoint: bool = False,
        lora_r: int = 64,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_target_modules: Sequence[str] = ("q_proj", "v_proj"),
        chat_template: bool = True,
        prompt_template: str = "[INST] {} [/INST]",
        end_sym: str = "</s>",
        max_txt_len: int = 1024,
        max_context_len: int = 3800,
        legacy_generate_context: bool = False,
        llama_feature_positions: Sequence[int | str] = ("image:2", "image:3", "image:4", "image:5"),
        llama_feature_layers: Sequence[int] = (-1,),
        llama_feature_pools: Sequence[str] = (),
        trust_checkpoint: bool = False,
        build_vision: bool = True,
        llm_layers: int = ALL_LAYERS,
    ):
        """``build_vision`` and ``llm_layers`` build a model for some feature kinds only: without
        the vision encoder (no image features), and with only the LLM's first ``llm_layers``
        decoder layers (-1: all; 0: no LLM, its weights and tokenizer never read).  The
        projectors are always built; every size comes from the config, the LLM folder's
        ``config.json`` and the encoder's architecture, whatever is built."""
        super().__init__()
        if not 1 <= num_video_streams <= MAX_STREAMS:
            raise ValueError(f"model.num_video_streams must be 1..{MAX_STREAMS}, got {num_video_streams}")
        self.precision = precision
        self.num_video_streams = num_video_streams
        self.image_token_merge = image_token_merge
        self.legacy_generate_context = legacy_generate_context
        self.llama_feature_positions = list(llama_feature_positions)  # as written: indices and names
        self.feature_position_specs = parse_positions(self.llama_feature_positions)  # syntax, before any weights

        self.vit_model = vit_model
        if build_vision:
            self.visual_encoder, self.ln_vision = load_vision_encoder(
                vit_model, image_size, drop_path_rate, use_grad_checkpoint, vit_checkpoint, trust_checkpoint, precision,
                freeze_vit,
            )
            encoder = self.visual_encoder
        else:
            self.visual_encoder = self.ln_vision = None
            encoder = vision_encoder_architecture(vit_model, image_size)
        grid_h, grid_w = encoder.patch_grid
        width = encoder.num_features
        num_image_tokens = image_token_count(grid_h * grid_w, image_token_merge)
        # image:K / stream:K out of range fail here, before the LLM's weights are read.
        check_slot_positions(self.feature_position_specs, num_image_tokens, num_video_streams)

        llm_sizes = llm_config(llama_model)
        self.hidden_size = llm_sizes.hidden_size
        self.llm_depth = llm_sizes.num_hidden_layers
        self.llm_layers_built = check_llm_layers(llm_layers, self.llm_depth)
        needed = decoder_layers_needed(llama_feature_layers, self.llm_depth)  # fails at build on a bad layer
        if 0 < self.llm_layers_built < needed:
            raise ConfigError(
                f"model.llama_feature_layers {list(llama_feature_layers)} need the LLM's first {needed} decoder layers "
                f"but model.llm_layers is {self.llm_layers_built}; name layers below {self.llm_layers_built} or build more"
            )
        self.llama_feature_layers = list(llama_feature_layers)
        self.llama_feature_pools = check_pools(llama_feature_pools)
        self.llama_model = self.llama_tokenizer = self.layout = None
        if self.llm_layers_built:
            self.llama_model, self.llama_tokenizer = load_llm(
                llama_model, precision, pad_token, low_resource, lora_r, lora_alpha, lora_dropout,
                lora_target_modules, llm_grad_checkpoint,
                num_layers=self.llm_layers_built if self.llm_layers_built < self.llm_depth else None,
            )
            self.layout = PromptLayout(
                self.llama_tokenizer,
                num_image_tokens=num_image_tokens,
                num_feature_tokens=num_video_streams + 1,
                chat_template=chat_template,
                prompt_template=prompt_template,
                end_sym=end_sym,
                max_txt_len=max_txt_len,
                max_context_len=max_context_len,
            )
        hidden = self.hidden_size

        self.llama_proj = nn.Linear(width * image_token_merge, hidden)
        self.cls_tk_llama_proj = nn.Linear(width, hidden)
        self.feats_llama_proj1 = nn.Linear(video_feature_dim, hidden)
        self.feats_llama_proj2 = nn.Linear(video_feature_dim, hidden)
        self.feats_llama_proj3 = nn.Linear(video_feature_dim, hidden)
        # Projectors of unused streams stay frozen so DDP needs no unused-parameter search.
        for index in range(num_video_streams, MAX_STREAMS):
            self.stream_projectors[index].requires_grad_(False)
        logger.info("model built: %s", self.built_parts())

    @property
    def stream_projectors(self) -> list[nn.Linear]:
        return [self.feats_llama_proj1, self.feats_llama_proj2, self.feats_llama_proj3]

    def built_parts(self) -> str:
        """What this model holds and what it was built without, in words (the build's log line)."""
        built, left_out = ["projectors"], []
        (built if self.visual_encoder is not None else left_out).append(f"vision encoder {self.vit_model}")
        if self.llm_layers_built == self.llm_depth:
            built.append(f"LLM (all {self.llm_depth} decoder layers)")
        elif self.llm_layers_built:
            built.append(f"LLM decoder layers 0..{self.llm_layers_built - 1} of {self.llm_depth}")
            left_out.append(f"LLM decoder layers {self.llm_layers_built}..{self.llm_depth - 1}")
        else:
            left_out.append("LLM")
        return ", ".join(built) + (f"; not built: {', '.join(left_out)}" if left_out else "")

    def not_built(self, name: str) -> bool:
        """Whether the state-dict entry ``name`` belongs to a part this model was built without."""
        module = name.split(".", 1)[0]
        if module in VISION_MODULES:
            return self.visual_encoder is None
        if module == "llama_model":
            layer = LLM_DECODER_LAYER.match(name)
            if layer is not None and int(layer[1]) >= self.llm_depth:
                return False  # beyond the LLM: no model has a place for it
            return self.llama_model is None or (layer is not None and int(layer[1]) >= self.llm_layers_built)
        return False

    def require_vision(self, what: str) -> None:
        if self.visual_encoder is None:
            raise ValueError(f"{what} needs the vision encoder, but this model was built without it (model.build_vision: false)")

    # ---- encoding: one piece per feature kind; encode_visual joins them ------------------------------
    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EVA tokens through ln_vision -> (patch tokens [B, 1024, 1408], CLS [B, 1408])."""
        self.require_vision("encoding images")
        encoder_dtype = self.visual_encoder.patch_embed.proj.weight.dtype
        with self.maybe_autocast():
            tokens = self.visual_encoder(image.to(self.device, encoder_dtype))
        tokens = self.ln_vision(tokens)  # fp32
        return tokens[:, 1:], tokens[:, 0]

    def project_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, S, S] -> (projected image tokens [B, N, H], projected CLS token [B, 1, H]).

        Needs the vision encoder and the projectors, never the LLM."""
        patches, cls = self.encode_image(image)
        batch, num_patches, width = patches.shape
        # Every `merge` consecutive patch tokens (row-major) become one token:
        # [B, 1024, 1408] -> [B, 256, 5632] for the full model.
        merged = patches.reshape(batch, num_patches // self.image_token_merge, width * self.image_token_merge)
        with self.maybe_autocast():
            return self.llama_proj(merged), self.cls_tk_llama_proj(cls).unsqueeze(1)

    def project_stream(self, index: int, vectors: torch.Tensor) -> torch.Tensor:
        """One stream's vectors [B, D] -> ``feats_llama_proj{index + 1}`` of them [B, H]
        (index 0 FaceMAE, 1 VideoMAE, 2 audio).  Needs the projectors only."""
        if not 0 <= index < self.num_video_streams:
            raise ValueError(f"stream {index} is not one of this model's {self.num_video_streams} streams (model.num_video_streams)")
        projector = self.stream_projectors[index]
        if self.compute_dtype == torch.float32:
            # Features in fp32 are computed in float64 and rounded once: a float32 matmul rounds
            # differently for one row than for a batch of them (another BLAS kernel), so a clip's
            # projection would depend on the batch it was dumped in, and a detector applied to one
            # window at a time would not reproduce its row of the dump.
            weight, bias = projector.weight.double(), projector.bias.double()
            return F.linear(vectors.to(self.device, torch.float64), weight, bias).float()
        with self.maybe_autocast():
            return projector(vectors.to(self.device, torch.float32))

    def project_streams(self, video_features: torch.Tensor) -> torch.Tensor:
        """``video_features`` [B, 3, D] -> the projected streams [B, S, H] (S = model.num_video_streams)."""
        return torch.stack([self.project_stream(k, video_features[:, k]) for k in range(self.num_video_streams)], dim=1)

    def encode_visual(self, image: torch.Tensor, video_features: torch.Tensor) -> VisualTokens:
        image_tokens, cls_token = self.project_image(image)
        return VisualTokens(image=image_tokens, streams=self.project_streams(video_features), cls=cls_token)

    @torch.no_grad()
    def extract_features(
        self,
        samples: dict,
        positions: Sequence[int | str] | None = None,
        full_sequence: bool = False,
        layers: Sequence[int] | None = None,
        pools: Sequence[str] | None = None,
    ) -> ClipFeatures:
        """The feature kinds of SPEC section 7 for a batch (see :meth:`llama_states` for the LLM's)."""
        layers = list(layers if layers is not None else self.llama_feature_layers)
        visual = self.encode_visual(samples["image"], samples["video_features"])
        states = self.llama_states(visual, samples["instruction_input"], positions, layers, pools, full_sequence)
        return ClipFeatures(
            facemae_projected=visual.streams[:, 0],
            videomae_projected=visual.streams[:, 1],
            image_projected=visual.image,
            llama_features=states.selected[:, 0] if len(layers) == 1 else states.selected,  # one layer: the files as before
            llama_pooled_features=states.pooled,
            audio_projected=visual.streams[:, 2] if self.num_video_streams >= 3 else None,
        )

    @torch.no_grad()
    def llama_states(
        self,
        visual: VisualTokens,
        instructions: Sequence[str],
        positions: Sequence[int | str] | None = None,
        layers: Sequence[int] | None = None,
        pools: Sequence[str] | None = None,
        full_sequence: bool = False,
    ) -> LlamaStates:
        """The LLM's hidden states on the dump input ``[BOS] + wrapped prompt + answer ""`` of each
        instruction with ``visual`` in its slots: ``layers`` at ``positions`` [B, L, P, H] and the
        ``pools`` span means [B, L, K, H]; all default to ``model.llama_feature_*`` and come from one
        forward.  A model built with the LLM's first k decoder layers (``model.llm_layers``) gives
        the layers below k (counted in the whole LLM, :func:`decoder_layers_needed`).

        ``full_sequence=True`` runs the whole LLM over the whole input and reads Hugging Face's
        ``hidden_states`` (the reference path kept for tests and benchmarks); by default only the
        prefix the positions and pools need is computed.
        """
        positions = self.batch_feature_positions(instructions, positions)
        layers = list(layers if layers is not None else self.llama_feature_layers)
        pools = list(pools if pools is not None else self.llama_feature_pools)
        layout = self.dump_layout(instructions)
        embeds = self.embed_layout(layout, visual.sequence())
        mask = layout.attention_mask.to(self.device)
        weights = self.span_weights(layout, pools).to(self.device) if pools else None
        if not full_sequence:
            return self.llama_hidden_states(embeds, mask, positions, layers, weights)
        self.require_llm_layers(self.llm_depth, "full_sequence")
        check_positions(positions, embeds.shape[1])
        states = self._decode(embeds, mask, output_hidden_states=True).hidden_states
        # Layer l is hidden_states[l + 1]; hidden_states[-1] is after the final norm.
        per_layer = [states[l + 1] for l in resolve_layers(layers, len(states) - 1)]  # L x [B, T, H]
        return LlamaStates(
            selected=torch.stack([h[:, positions] for h in per_layer], dim=1),
            pooled=torch.stack([weights @ h.float() for h in per_layer], dim=1) if pools else None,
        )

    def feature_positions(self, instruction: str, positions: Sequence[int | str] | None = None) -> list[ResolvedPosition]:
        """Name, absolute index and token of each dump position (default: ``model.llama_feature_positions``)."""
        self.require_llm_layers(1, "model.llama_feature_positions")  # the tokenizer comes with the LLM
        specs = self.feature_position_specs if positions is None else parse_positions(positions)
        return self.layout.resolve_positions(instruction, specs)

    def batch_feature_positions(self, instructions: Sequence[str], positions: Sequence[int | str] | None = None) -> list[int]:
        """Absolute indices of the dump positions, which must be the same for every instruction of a batch."""
        indices = {tuple(p.index for p in self.feature_positions(text, positions)) for text in set(instructions)}
        if len(indices) > 1:
            raise ValueError(
                f"model.llama_feature_positions fall at different indices in this batch's instructions {sorted(indices)}; "
                "dump clips that share one instruction"
            )
        return list(indices.pop())

    # ---- trainable set and checkpoints -------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trainable tensors, in the released (peft 0.2) layout."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        state = {name: t.detach().clone() for name, t in self.state_dict().items() if name in trainable}
        return model_to_released(state)

    def load_released_checkpoint(self, path: str, strict: bool = True, trust_checkpoint: bool = False) -> LoadReport:
        """Load an Emotion-LLaMA / MiniGPT-v2 ``.pth`` (or one written by this project).

        The rules (upstream-only modules and the parts this model was built without skipped, a
        MiniGPT-v2 file as a training start point, everything else strict) are those of
        :func:`load_released_state`, shared with the training runner's resume.
        """
        raw = unwrap_state_dict(load_checkpoint(path, "model.ckpt", trust_checkpoint), "model.ckpt", keys=("model",))
        return load_released_state(self, raw, f"model.ckpt {path}", strict=strict, not_built=self.not_built)

    @classmethod
    def check_config(cls, cfg) -> None:
        """Checks of the model section that need no weights, run by config validation."""
        if "llama_feature_positions" in cfg:
            parse_positions(cfg["llama_feature_positions"])

    @classmethod
    def constructor_arguments(cls, cfg) -> dict:
        """Every constructor argument: the config's value, else the constructor's default."""
        kwargs = {key: list(cfg[key]) if key in LIST_KEYS else cfg[key] for key in CONFIG_KEYS if key in cfg}
        bound = inspect.signature(cls).bind(llama_model=cfg["llama_model"], **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    @classmethod
    def feature_positions_before_loading(cls, cfg, instruction: str) -> list[ResolvedPosition]:
        """The dump positions of ``instruction`` from the tokenizer file and the model's sizes alone,
        so a name or index beyond the input stops a run before any weights are read.  The states
        at those positions need the image tokens and the LLM: a config building either not stops here."""
        args = cls.constructor_arguments(cfg)
        if not args["build_vision"] or args["llm_layers"] == 0:
            key = "model.build_vision: false" if not args["build_vision"] else "model.llm_layers: 0"
            raise ConfigError(
                f"{key} builds no {'vision encoder' if not args['build_vision'] else 'LLM'}, but the LLM states at "
                "model.llama_feature_positions need the image tokens and the LLM; build both for a feature dump"
            )
        grid_h, grid_w = vision_encoder_architecture(args["vit_model"], args["image_size"]).patch_grid
        layout = PromptLayout(
            LlamaTokenizer.from_folder(Path(args["llama_model"]).expanduser(), args["pad_token"]),
            num_image_tokens=image_token_count(grid_h * grid_w, args["image_token_merge"]),
            num_feature_tokens=args["num_video_streams"] + 1,
            chat_template=args["chat_template"],
            prompt_template=args["prompt_template"],
            end_sym=args["end_sym"],
            max_txt_len=args["max_txt_len"],
            max_context_len=args["max_context_len"],
        )
        return layout.resolve_positions(instruction, parse_positions(args["llama_feature_positions"]))

    @classmethod
    def from_config(cls, cfg) -> "MiniGPTv2":
        model = cls(**cls.constructor_arguments(cfg))
        if cfg.get("ckpt"):
            model.load_released_checkpoint(cfg["ckpt"], strict=cfg.get("strict_ckpt", True), trust_checkpoint=cfg.get("trust_checkpoint", False))
        return model
