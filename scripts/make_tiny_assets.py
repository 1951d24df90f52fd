"""Generate tiny, deterministic stand-ins for every real input of the project.

    python scripts/make_tiny_assets.py OUT_DIR [--seed N]

Writes, only under OUT_DIR:

- ``llama/``: a Hugging Face LLaMA folder (a SentencePiece tokenizer that splits the project's
  fixed prompt texts exactly as LLaMA-2's does + random tiny weights); ``tokenizer/`` holds
  its tokenizer only;
- ``weights/``: EVA ViT-g, MAE-Face and VideoMAE checkpoints in the released file layouts
  (names and nesting as the real files, tiny shapes, random values), and an Emotion-LLaMA
  checkpoint of the tiny model (projectors + LoRA, the released peft 0.2 names);
- ``hubert/``: a Hugging Face HuBERT folder (random tiny weights, feature extractor config);
- ``hcmw/``: a mind-wandering dataset (annotation CSV, videos with a sound track, face frames, peak frames,
  FaceMAE/VideoMAE/audio vectors) whose drawn faces and tones depend on the label;
- ``mer/``: a MER-format emotion dataset (annotation, transcript, videos, feature vectors);
- ``sessions/``: four session videos (one participant each) of moving drawn faces with a sound
  track and a segments CSV (folds grouped by participant), the raw input of the prepare step
  (``scripts/tiny_sessions.py``).

With the same seed and library versions, every file is byte-identical from run to run
(videos included: the encoder and muxer run single-threaded in bit-exact mode). The
tokenizer depends on the listed LLaMA-2 splits only, not on the seed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import sys
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from PIL import Image
from transformers import HubertConfig, HubertModel, LlamaConfig, LlamaForCausalLM, Wav2Vec2FeatureExtractor
from transformers.utils import logging as hf_logging

# --------------------------------------------------------------------------- prompt texts

HCMW_ANSWERS = {"MW": "mind wandering", "NonMW": "non-mind wandering"}
HCMW_LABELS = tuple(HCMW_ANSWERS)
EMOTIONS = ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt")
TRANSCRIPT_SENTENCES = (
    "I did not expect that at all",
    "This is the best day of my life",
    "Please leave me alone",
    "I am not sure this is right",
    "Why would you do that to me",
    "Everything is fine I think",
    "We lost the game again today",
    "Look at what you have done",
    "I am worried about the exam",
    "That noise scared me",
    "Maybe we should wait and see",
    "You really think that is clever",
)

# How LLaMA-2's SentencePiece splits the fixed prompt texts (SPEC section 4), as
# (text, its pieces separated by single spaces).  The tiny tokenizer is built so that it
# splits every one of them the same way: absolute token positions then mean on the demo
# what they mean on the real weights.  A text is encoded on its own (dummy prefix "▁" added).
LLAMA2_SPLITS = (
    # hcmw (SPEC section 6), pieces of the instruction around its two slots, plain and in the chat template
    ("<video>", "▁< video >"),
    ("[INST] <video>", "▁[ INST ] ▁< video >"),
    ("</video> <feature>", "▁</ video > ▁< feature >"),
    (
        "</feature> [classification] Please classify the video into one of these categories: "
        "mind wandering or non-mind wandering. ",
        "▁</ feature > ▁[ class ification ] ▁Please ▁class ify ▁the ▁video ▁into ▁one ▁of ▁these "
        "▁categories : ▁mind ▁wand ering ▁or ▁non - mind ▁wand ering . ▁",
    ),
    (
        "</feature> [classification] Please classify the video into one of these categories: "
        "mind wandering or non-mind wandering.  [/INST]",
        "▁</ feature > ▁[ class ification ] ▁Please ▁class ify ▁the ▁video ▁into ▁one ▁of ▁these "
        "▁categories : ▁mind ▁wand ering ▁or ▁non - mind ▁wand ering . ▁ ▁[ / INST ]",
    ),
    ("mind wandering", "▁mind ▁wand ering"),
    ("non-mind wandering", "▁non - mind ▁wand ering"),
    # the chat template's closing part, and its opening after a special token when the
    # folder says "legacy": false (no "▁" in front of "[")
    (" [/INST]", "▁ ▁[ / INST ]"),
)
# MER (SPEC section 6): the fixed text after ``<FeatureHere>``, before and after the clip's
# transcript sentence (which keeps its own pieces), for both datasets' questions.
MER_SPLIT_BEFORE_SENTENCE = ("</feature> The person in video says:", "▁</ feature > ▁The ▁person ▁in ▁video ▁says :")
MER_SPLITS_AFTER_SENTENCE = (
    (
        ".  [emotion] Please determine which emotion label in the video represents: "
        "happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt. ",
        ". ▁ ▁[ em otion ] ▁Please ▁determine ▁which ▁emotion ▁label ▁in ▁the ▁video ▁represents : "
        "▁happy , ▁sad , ▁neutral , ▁angry , ▁worried , ▁surprise , ▁fear , ▁cont empt , ▁doubt . ▁",
    ),
    (
        ".  [emotion] Please determine which emotion label in the video represents: "
        "happy, sad, neutral, angry, worried, surprise. ",
        ". ▁ ▁[ em otion ] ▁Please ▁determine ▁which ▁emotion ▁label ▁in ▁the ▁video ▁represents : "
        "▁happy , ▁sad , ▁neutral , ▁angry , ▁worried , ▁surprise . ▁",
    ),
)
# Text right after a special token (``<s>[INST] ...``) is encoded without the dummy prefix by
# a tokenizer whose folder says ``"legacy": false``; these are its pieces then.
LLAMA2_SPLITS_AFTER_SPECIAL = (("[INST] <video>", "[ INST ] ▁< video >"),)

# --------------------------------------------------------------------------- sizes

TOKENIZER_SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2, then 256 byte pieces, as in LLaMA-2
PAD_PIECE = "$$"  # the pad token the model uses; a normal piece, not a special token, as in LLaMA-2
# Unigram scores: the Viterbi split maximises their sum, so a text covered by listed pieces is
# split into the fewest of them, and single characters (and bytes, for anything else) are
# used only where no listed piece fits.
PROMPT_PIECE_SCORE = -1.0
CHARACTER_PIECE_SCORE = -10.0
LLAMA_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
    tie_word_embeddings=False,
    torch_dtype="float32",
)
INIT_STD = 0.02
LM_HEAD_SCALE = 15.0
FEATURE_DIM = 64  # width of the tiny FaceMAE / VideoMAE / HuBERT encoders
# HuBERT-large's architecture (layer-norm conv front end, stable layer norm, as the upstream
# Chinese HuBERT-large) at tiny widths; the conv kernels and strides stay: 50 frames per second.
HUBERT_CONFIG = dict(
    hidden_size=FEATURE_DIM,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
)
AUDIO_SAMPLE_RATE = 16_000
AUDIO_TONE_HZ = {"MW": 220.0, "NonMW": 660.0}  # the demo clips' sound carries the label
HCMW_AUDIO_DIR = "HL-UTT"  # audio vectors beside the FaceMAE / VideoMAE ones, named as MER's

FRAME_SIZE = 96
VIDEO_FPS = 25
HCMW_FRAMES = 32
HCMW_FOLDS = 3
HCMW_CLIPS_PER_LABEL_PER_FOLD = 4
MER_CLIPS = 12
MER_FRAMES = 16
MER_AVI_CLIPS = (3, 8)  # clip indices written as .avi instead of .mp4

# Independent random streams, one per part, so a change in one part leaves the others alone.
# A new part goes last: the seeds of the parts before it stay the same.
PARTS = ("llama", "eva", "face_mae", "video_mae", "hcmw", "mer", "hubert", "sessions", "emotion_llama")
# The tiny model config's (minigpt4/configs/models/minigpt_v2_tiny.yaml) LoRA and image-token merge.
LORA_R = 8
LORA_TARGETS = ("q_proj", "v_proj")
IMAGE_TOKEN_MERGE = 4


# =========================================================================== tokenizer


def _pieces(split: str) -> list[str]:
    return split.split(" ")


def tokenizer_pieces() -> list[str]:
    """The normal pieces in id order: those of the LLaMA-2 splits, the pad piece, single characters.

    Single printable ASCII characters let any other text (a transcript sentence, a generated
    answer) be split into pieces; whatever is left falls back to bytes.
    """
    splits = [*LLAMA2_SPLITS, MER_SPLIT_BEFORE_SENTENCE, *MER_SPLITS_AFTER_SENTENCE, *LLAMA2_SPLITS_AFTER_SPECIAL]
    prompt = [piece for _, split in splits for piece in _pieces(split)]
    characters = [chr(code) for code in range(0x21, 0x7F)]
    return list(dict.fromkeys([*prompt, PAD_PIECE, *characters]))  # first occurrence fixes the id


def tokenizer_model_proto(add_dummy_prefix: bool = True) -> bytes:
    """A SentencePiece unigram model normalising like LLaMA-2's, built piece by piece.

    Identity normalisation (no NFKC), whitespace kept as it is, the dummy prefix "▁" and
    byte fallback.  Built rather than trained, so the splits are the listed ones by
    construction and the bytes never change.
    """
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    Piece = model_pb2.ModelProto.SentencePiece
    proto = model_pb2.ModelProto()
    unk, bos, eos = TOKENIZER_SPECIALS
    proto.pieces.add(piece=unk, score=0.0, type=Piece.UNKNOWN)
    for special in (bos, eos):
        proto.pieces.add(piece=special, score=0.0, type=Piece.CONTROL)
    for byte in range(256):
        proto.pieces.add(piece=f"<0x{byte:02X}>", score=0.0, type=Piece.BYTE)
    for piece in tokenizer_pieces():
        score = CHARACTER_PIECE_SCORE if len(piece) == 1 and piece != "▁" else PROMPT_PIECE_SCORE
        proto.pieces.add(piece=piece, score=score, type=Piece.NORMAL)
    trainer = proto.trainer_spec
    trainer.model_type = model_pb2.TrainerSpec.UNIGRAM
    trainer.vocab_size = len(proto.pieces)
    trainer.byte_fallback = True
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, 1, 2, -1
    trainer.unk_piece, trainer.bos_piece, trainer.eos_piece = unk, bos, eos
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = add_dummy_prefix
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()


def build_tokenizer() -> spm.SentencePieceProcessor:
    """The tiny tokenizer, checked against every LLaMA-2 split it must reproduce."""
    tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_model_proto())
    without_prefix = spm.SentencePieceProcessor(model_proto=tokenizer_model_proto(add_dummy_prefix=False))
    expected = [(tokenizer, text, _pieces(split)) for text, split in LLAMA2_SPLITS]
    expected += [(without_prefix, text, _pieces(split)) for text, split in LLAMA2_SPLITS_AFTER_SPECIAL]
    before_text, before_split = MER_SPLIT_BEFORE_SENTENCE
    for sentence in TRANSCRIPT_SENTENCES:
        for after_text, after_split in MER_SPLITS_AFTER_SENTENCE:
            pieces = _pieces(before_split) + tokenizer.encode(sentence, out_type=str) + _pieces(after_split)
            expected.append((tokenizer, f"{before_text} {sentence}{after_text}", pieces))
    for processor, text, pieces in expected:
        got = processor.encode(text, out_type=str)
        if got != pieces:
            raise RuntimeError(f"the tiny tokenizer splits {text!r} into {got}, LLaMA-2 into {pieces}")
    return tokenizer


def write_tokenizer_files(folder: Path, model_proto: bytes) -> None:
    """``tokenizer.model`` + the configs of a LLaMA-2 folder as shipped.

    ``"legacy": true`` as in Llama-2-7b-chat-hf: text right after a special token written in
    the text (``<s>[INST]``) keeps its "▁" prefix.  The model's tokenizer wrapper reads it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model_proto)
    special_tokens = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    tokenizer_config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": LLAMA_CONFIG["max_position_embeddings"],
        **special_tokens,
    }
    _write_json(folder / "tokenizer_config.json", tokenizer_config)
    _write_json(folder / "special_tokens_map.json", special_tokens)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# =========================================================================== LLaMA


def write_tiny_llama(folder: Path, vocab_size: int, seed: int) -> None:
    """A random ``LlamaForCausalLM`` at tiny size, saved as safetensors."""
    config = LlamaConfig(vocab_size=vocab_size, **LLAMA_CONFIG)
    with torch.random.fork_rng(devices=[]):  # the model's init draws from the global generator
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    # A trained LM head is far from its 0.02 init: with hidden 64 such logits stay within about
    # +-1.3 and no prediction can ever be confident, so the frozen tiny LLM could not learn
    # the demo answers through LoRA.  Scale it to the confident range of a trained model.
    with torch.no_grad():
        model.lm_head.weight.mul_(LM_HEAD_SCALE)
    with _transformers_progress_bars_off():
        model.save_pretrained(folder)


@contextlib.contextmanager
def _transformers_progress_bars_off():
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# =========================================================================== HuBERT


def write_tiny_hubert(folder: Path, seed: int) -> None:
    """A random ``HubertModel`` at tiny size (safetensors) + the feature extractor config of
    HuBERT-large (16 kHz, ``do_normalize``)."""
    with torch.random.fork_rng(devices=[]):  # the model's init draws from the global generator
        torch.manual_seed(seed)
        model = HubertModel(HubertConfig(**HUBERT_CONFIG))
    # Norms and biases start at exactly 1 / 0; make them random so a loader that drops one is caught.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(INIT_STD * torch.randn(param.shape, generator=generator))
    with _transformers_progress_bars_off():
        model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=AUDIO_SAMPLE_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)


def tone_track(label: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """float32 mono: the label's tone at a per-clip loudness, a little noise."""
    t = np.arange(num_samples) / AUDIO_SAMPLE_RATE
    loudness = rng.uniform(0.2, 0.5)
    wave = loudness * np.sin(2 * np.pi * AUDIO_TONE_HZ[label] * t + rng.uniform(0, 2 * np.pi))
    return (wave + rng.normal(0.0, 0.02, num_samples)).astype(np.float32)


# =========================================================================== checkpoints

Shapes = dict[str, tuple[int, ...]]


def random_state_dict(shapes: Shapes, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Float32 tensors ~ N(0, INIT_STD^2); norm weights ~ 1 + N(0, INIT_STD^2).

    Biases and norm parameters are random too (not zeros / ones), so a loader that drops or
    misplaces one of them changes the model's output and is caught.
    """
    state_dict = {}
    for name, shape in shapes.items():
        tensor = INIT_STD * torch.randn(shape, generator=generator)
        if name.endswith(".weight") and "norm" in name.split(".")[-2]:  # norm1, fc_norm, decoder_norm, ...
            tensor += 1.0
        state_dict[name] = tensor
    return state_dict


def vit_block_shapes(prefix: str, width: int, mlp_hidden: int, fused_qkv_bias: bool) -> Shapes:
    """One pre-norm ViT block; the qkv bias is fused (timm) or a learned q and v bias (EVA, VideoMAE)."""
    if fused_qkv_bias:
        qkv_bias = {"attn.qkv.bias": (3 * width,)}
    else:
        qkv_bias = {"attn.q_bias": (width,), "attn.v_bias": (width,)}
    shapes = {
        "norm1.weight": (width,),
        "norm1.bias": (width,),
        "attn.qkv.weight": (3 * width, width),
        **qkv_bias,
        "attn.proj.weight": (width, width),
        "attn.proj.bias": (width,),
        "norm2.weight": (width,),
        "norm2.bias": (width,),
        "mlp.fc1.weight": (mlp_hidden, width),
        "mlp.fc1.bias": (mlp_hidden,),
        "mlp.fc2.weight": (width, mlp_hidden),
        "mlp.fc2.bias": (width,),
    }
    return {f"{prefix}{name}": shape for name, shape in shapes.items()}


def eva_vit_shapes(width=32, depth=3, mlp_hidden=64, patch=14, grid=8) -> Shapes:
    """LAVIS ``eva_vit_g.pth`` layout (raw state dict, no final norm)."""
    shapes = {
        "cls_token": (1, 1, width),
        "pos_embed": (1, grid * grid + 1, width),
        "patch_embed.proj.weight": (width, 3, patch, patch),
        "patch_embed.proj.bias": (width,),
    }
    for i in range(depth):
        shapes |= vit_block_shapes(f"blocks.{i}.", width, mlp_hidden, fused_qkv_bias=False)
    return shapes


def face_mae_shapes(width=64, depth=2, mlp_hidden=256, patch=16, grid=4) -> Shapes:
    """MAE-Face (``mae_checkpoint-340.pth``) layout: timm ViT names plus MAE decoder entries to ignore."""
    decoder_width = width // 2
    shapes = {
        "cls_token": (1, 1, width),
        "pos_embed": (1, grid * grid + 1, width),
        "patch_embed.proj.weight": (width, 3, patch, patch),
        "patch_embed.proj.bias": (width,),
    }
    for i in range(depth):
        shapes |= vit_block_shapes(f"blocks.{i}.", width, mlp_hidden, fused_qkv_bias=True)
    shapes |= {
        "norm.weight": (width,),
        "norm.bias": (width,),
        "fc_norm.weight": (width,),
        "fc_norm.bias": (width,),
        "mask_token": (1, 1, decoder_width),
        "decoder_embed.weight": (decoder_width, width),
        "decoder_embed.bias": (decoder_width,),
        "decoder_pos_embed": (1, grid * grid + 1, decoder_width),
        "decoder_blocks.0.norm1.weight": (decoder_width,),
        "decoder_blocks.0.norm1.bias": (decoder_width,),
        "decoder_norm.weight": (decoder_width,),
        "decoder_norm.bias": (decoder_width,),
        "decoder_pred.weight": (patch * patch * 3, decoder_width),
        "decoder_pred.bias": (patch * patch * 3,),
    }
    return shapes


def video_mae_shapes(width=64, depth=2, mlp_hidden=256, patch=16, tubelet=2) -> Shapes:
    """VideoMAE (``maeVideo_ckp199.pth``) layout under ``encoder.``; no position table (fixed sine-cosine)."""
    decoder_width = width // 2
    shapes = {
        "encoder.patch_embed.proj.weight": (width, 3, tubelet, patch, patch),
        "encoder.patch_embed.proj.bias": (width,),
    }
    for i in range(depth):
        shapes |= vit_block_shapes(f"encoder.blocks.{i}.", width, mlp_hidden, fused_qkv_bias=False)
    shapes |= {
        "encoder.fc_norm.weight": (width,),
        "encoder.fc_norm.bias": (width,),
        "decoder.blocks.0.norm1.weight": (decoder_width,),
        "encoder_to_decoder.weight": (decoder_width, width),
        "mask_token": (1, 1, decoder_width),
    }
    return shapes


def write_checkpoints(folder: Path, seeds: dict[str, int]) -> dict[str, Path]:
    """The three encoder checkpoints, as ``<part>_ckpt`` paths."""
    folder.mkdir(parents=True, exist_ok=True)
    layouts = {  # part: (file name, shapes, nested under "model" as in the released file)
        "eva": ("eva_vit_tiny.pth", eva_vit_shapes(), False),
        "face_mae": ("mae_face_tiny.pth", face_mae_shapes(), True),
        "video_mae": ("video_mae_tiny.pth", video_mae_shapes(), True),
    }
    paths = {}
    for part, (file_name, shapes, nested) in layouts.items():
        state_dict = random_state_dict(shapes, torch.Generator().manual_seed(seeds[part]))
        paths[f"{part}_ckpt"] = folder / file_name
        torch.save({"model": state_dict} if nested else state_dict, paths[f"{part}_ckpt"])
    return paths


def emotion_llama_shapes() -> Shapes:
    """The released Emotion-LLaMA ``.pth`` layout (projectors, LoRA with peft 0.2 names, no adapter
    name) at the tiny model's sizes."""
    hidden, vit_width = LLAMA_CONFIG["hidden_size"], eva_vit_shapes()["cls_token"][-1]
    inputs = {"llama_proj": vit_width * IMAGE_TOKEN_MERGE, "cls_tk_llama_proj": vit_width}
    inputs |= {f"feats_llama_proj{k}": FEATURE_DIM for k in (1, 2, 3)}
    shapes = {}
    for name, fan_in in inputs.items():
        shapes |= {f"{name}.weight": (hidden, fan_in), f"{name}.bias": (hidden,)}
    for layer in range(LLAMA_CONFIG["num_hidden_layers"]):
        for target in LORA_TARGETS:
            head = f"llama_model.base_model.model.model.layers.{layer}.self_attn.{target}"
            shapes |= {f"{head}.lora_A.weight": (LORA_R, hidden), f"{head}.lora_B.weight": (hidden, LORA_R)}
    return shapes


def write_emotion_llama(folder: Path, seed: int) -> Path:
    """``emotion_llama_tiny.pth``: ``{"model": state_dict}`` as the released file.

    Projector weights and biases ~ N(0, 1 / fan_in), a fresh ``nn.Linear``'s scale; LoRA A the
    same, LoRA B ~ N(0, INIT_STD^2) (peft starts it at zero: small and random so it matters).
    """
    generator = torch.Generator().manual_seed(seed)
    shapes = emotion_llama_shapes()
    state_dict = {}
    for name, shape in shapes.items():
        fan_in = shapes[name.rsplit(".", 1)[0] + ".weight"][-1]  # a bias: its weight's
        scale = INIT_STD if ".lora_B." in name else fan_in**-0.5
        state_dict[name] = scale * torch.randn(shape, generator=generator)
    path = folder / "emotion_llama_tiny.pth"
    torch.save({"model": state_dict}, path)
    return path


# =========================================================================== drawn faces


@dataclass(frozen=True)
class Face:
    """What a drawn face looks like: an RGB skin colour and expression amounts (0 = neutral, about -1..1)."""

    skin: tuple[float, float, float]
    eyes_open: bool = True
    gaze: float = 0.0  # pupils to the right (> 0) or left (< 0)
    mouth_open: float = 0.0  # 0 = a line, 1 = wide open
    mouth_curve: float = 0.0  # > 0 smile, < 0 frown
    mouth_tilt: float = 0.0  # one corner up (contempt, doubt)
    brow_raise: float = 0.0
    brow_tilt: float = 0.0  # > 0 inner ends down (anger), < 0 inner ends up (sadness)


WARM_SKIN = (228.0, 178.0, 138.0)
COOL_SKIN = (150.0, 172.0, 212.0)
NEUTRAL_SKIN = (214.0, 180.0, 150.0)
DARK = np.array([40.0, 28.0, 30.0])
EYE_WHITE = np.array([245.0, 245.0, 240.0])
PUPIL = np.array([25.0, 25.0, 60.0])
MOUTH_INSIDE = np.array([120.0, 30.0, 40.0])

EMOTION_FACES = {
    "neutral": Face(NEUTRAL_SKIN),
    "angry": Face(NEUTRAL_SKIN, mouth_curve=-0.6, brow_raise=-0.5, brow_tilt=0.9),
    "happy": Face(NEUTRAL_SKIN, mouth_curve=1.0, mouth_open=0.3, brow_raise=0.2),
    "sad": Face(NEUTRAL_SKIN, mouth_curve=-1.0, brow_raise=0.3, brow_tilt=-0.9),
    "worried": Face(NEUTRAL_SKIN, mouth_curve=-0.4, mouth_open=0.2, brow_raise=0.6, brow_tilt=-0.7),
    "surprise": Face(NEUTRAL_SKIN, mouth_open=1.0, brow_raise=1.0),
    "fear": Face(NEUTRAL_SKIN, mouth_curve=-0.3, mouth_open=0.7, brow_raise=0.8, brow_tilt=-0.5),
    "contempt": Face(NEUTRAL_SKIN, mouth_tilt=0.5, brow_raise=-0.2),
    "doubt": Face(NEUTRAL_SKIN, gaze=0.5, mouth_tilt=-0.4, brow_tilt=0.4),
}


def hcmw_face(label: str, rng: np.random.Generator) -> Face:
    """NonMW: open eyes looking ahead, warm skin, open mouth. MW: closed or averted eyes, cool skin, flat mouth."""
    if label == "NonMW":
        return Face(WARM_SKIN, mouth_open=0.6, brow_raise=0.3)
    if rng.random() < 0.5:
        return Face(COOL_SKIN, eyes_open=False)
    return Face(COOL_SKIN, gaze=float(rng.choice([-0.7, 0.7])))


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _curve(yy, xx, cy, cx, half_width, thickness, curve=0.0, tilt=0.0) -> np.ndarray:
    """A stroke along y = cy + half_width * (tilt * u - 0.4 * curve * u^2), u = (x - cx) / half_width, |u| <= 1."""
    u = (xx - cx) / half_width
    centre_y = cy + half_width * (tilt * u - 0.4 * curve * u**2)
    return (np.abs(u) <= 1.0) & (np.abs(yy - centre_y) <= thickness / 2)


def draw_face(face: Face, size: int, background: np.ndarray, cy: float, cx: float, radius: float) -> np.ndarray:
    """A float (size, size, 3) image of ``face`` centred at (cy, cx) on a plain ``background`` colour."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.broadcast_to(background, (size, size, 3)).copy()
    image[_ellipse(yy, xx, cy, cx, 1.15 * radius, radius)] = face.skin
    stroke = max(1.5, 0.07 * radius)
    for side in (-1, 1):  # left, right
        eye_x, eye_y = cx + side * 0.4 * radius, cy - 0.2 * radius
        if face.eyes_open:
            image[_ellipse(yy, xx, eye_y, eye_x, 0.14 * radius, 0.22 * radius)] = EYE_WHITE
            pupil_x = eye_x + face.gaze * 0.12 * radius
            image[_ellipse(yy, xx, eye_y, pupil_x, 0.09 * radius, 0.09 * radius)] = PUPIL
        else:
            image[_curve(yy, xx, eye_y, eye_x, 0.22 * radius, stroke, curve=-0.5)] = DARK
        brow_y = eye_y - (0.3 + 0.12 * face.brow_raise) * radius
        brow_tilt = -side * 0.3 * face.brow_tilt  # inner end is towards the centre line
        image[_curve(yy, xx, brow_y, eye_x, 0.25 * radius, stroke, tilt=brow_tilt)] = DARK
    mouth_y, mouth_half_width = cy + 0.5 * radius, 0.32 * radius
    if face.mouth_open > 0:
        mouth = _ellipse(yy, xx, mouth_y, cx, max(stroke, 0.2 * face.mouth_open * radius), mouth_half_width)
        image[mouth] = MOUTH_INSIDE
    mouth_line = _curve(
        yy, xx, mouth_y, cx, mouth_half_width, stroke, curve=face.mouth_curve, tilt=0.3 * face.mouth_tilt
    )
    image[mouth_line] = DARK
    return image


def render_clip(face: Face, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: per-clip placement, size and background, small head motion, mild noise."""
    # A greyish background: varied enough to be a nuisance, never louder than the face itself.
    background = rng.uniform(90, 150) + rng.uniform(-15, 15, size=3)
    centre = FRAME_SIZE / 2 + rng.uniform(-6, 6, size=2)
    radius = rng.uniform(0.30, 0.38) * FRAME_SIZE
    phase = rng.uniform(0, 2 * np.pi, size=2)
    frames = np.empty((n_frames, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    for t in range(n_frames):
        sway = 2.5 * np.sin(2 * np.pi * t / n_frames + phase)  # (dy, dx) in pixels
        image = draw_face(face, FRAME_SIZE, background, *(centre + sway), radius)
        image += rng.normal(0.0, 3.0, size=image.shape)
        frames[t] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return frames


# =========================================================================== media writers


def write_video(path: Path, frames: np.ndarray, audio: np.ndarray | None = None) -> None:
    """MPEG-4 part 2 at VIDEO_FPS, bit-exact (``tiny_sessions.write_video``, the one video writer of
    the generated data); ``audio`` (float32 mono at ``AUDIO_SAMPLE_RATE``) becomes a lossless ALAC
    sound track that decodes to the 16-bit samples written."""
    load_tiny_sessions().write_video(path, frames, fps=VIDEO_FPS, audio=audio, sample_rate=AUDIO_SAMPLE_RATE)


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_vector(path: Path, vector: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vector.astype(np.float32))


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def class_means(names, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One random mean feature vector per class, so feature vectors carry the label."""
    return {name: rng.normal(0.0, 1.0, FEATURE_DIM) for name in names}


# =========================================================================== hcmw dataset


def make_hcmw(root: Path, rng: np.random.Generator) -> dict[str, Path]:
    """Synthetic mind-wandering clips, balanced within each fold, in the SPEC section 6 layout."""
    paths = {
        "hcmw_root": root,
        "hcmw_csv": root / "annotations.csv",
        "hcmw_video_root": root / "videos",
        "hcmw_frames_root": root / "frames",
        "hcmw_image_root": root / "images",
        "hcmw_feature_root": root / "features",
    }
    paths["hcmw_video_root"].mkdir(parents=True, exist_ok=True)
    means = {folder: class_means(HCMW_LABELS, rng) for folder in ("mae_340_UTT", "maeV_199_UTT")}
    (sound_rng,) = rng.spawn(1)  # a stream of its own: the sound tracks leave the faces and vectors as they were
    means[HCMW_AUDIO_DIR] = class_means(HCMW_LABELS, sound_rng)
    rows = []
    for fold in range(HCMW_FOLDS):
        labels = list(HCMW_LABELS) * HCMW_CLIPS_PER_LABEL_PER_FOLD
        rng.shuffle(labels)
        for label in labels:
            clip = f"clip_{len(rows):03d}"
            write_hcmw_clip(paths, clip, label, means, rng, sound_rng)
            rows.append((f"{clip}.mp4", label, fold))  # the real annotations keep the suffix
    write_csv(paths["hcmw_csv"], ["uuid", "mw_label", "test_fold_num"], rows)
    return paths


def write_hcmw_clip(
    paths: dict[str, Path], clip: str, label: str, means: dict, rng: np.random.Generator, sound_rng: np.random.Generator
) -> None:
    """The video (with the label's tone as sound), its frames as PNGs, the peak (middle) frame
    and the three feature vectors of a clip."""
    frames = render_clip(hcmw_face(label, rng), HCMW_FRAMES, rng)
    sound = tone_track(label, HCMW_FRAMES * AUDIO_SAMPLE_RATE // VIDEO_FPS, sound_rng)
    write_video(paths["hcmw_video_root"] / f"{clip}.mp4", frames, sound)
    for t, image in enumerate(frames):
        write_png(paths["hcmw_frames_root"] / clip / f"{clip}_{t:04d}.png", image)
    write_png(paths["hcmw_image_root"] / clip / f"{clip}_peak_frame.png", frames[HCMW_FRAMES // 2])
    face_vector = means["mae_340_UTT"][label] + rng.normal(0.0, 0.5, FEATURE_DIM)
    video_vector = means["maeV_199_UTT"][label] + rng.normal(0.0, 0.5, FEATURE_DIM)
    write_vector(paths["hcmw_feature_root"] / "mae_340_UTT" / f"{clip}.npy", face_vector)  # (D,)
    write_vector(paths["hcmw_feature_root"] / "maeV_199_UTT" / f"{clip}.npy", video_vector[None])  # (1, D)
    audio_vector = means[HCMW_AUDIO_DIR][label] + sound_rng.normal(0.0, 0.5, FEATURE_DIM)
    write_vector(paths["hcmw_feature_root"] / HCMW_AUDIO_DIR / f"{clip}.npy", audio_vector)  # (D,)


# =========================================================================== MER dataset


def make_mer(root: Path, rng: np.random.Generator) -> dict[str, Path]:
    """A MER-format emotion set: annotation, transcript, mp4/avi videos and three feature folders."""
    paths = {
        "mer_root": root,
        "mer_annotation": root / "annotation.txt",
        "mer_transcript": root / "transcription.csv",
        "mer_video_root": root / "videos",
    }
    paths["mer_video_root"].mkdir(parents=True, exist_ok=True)
    feature_dirs = ("mae_340_UTT", "maeV_399_UTT", "HL-UTT")
    means = {folder: class_means(EMOTIONS, rng) for folder in feature_dirs}
    emotions = [EMOTIONS[i % len(EMOTIONS)] for i in rng.permutation(MER_CLIPS)]  # every emotion appears
    annotation, transcript = [], []
    for i, emotion in enumerate(emotions):
        name = f"sample_{i:08d}"
        suffix = ".avi" if i in MER_AVI_CLIPS else ".mp4"
        face = replace(EMOTION_FACES[emotion], skin=tuple(np.add(NEUTRAL_SKIN, rng.uniform(-20, 20, 3))))
        write_video(paths["mer_video_root"] / f"{name}{suffix}", render_clip(face, MER_FRAMES, rng))
        for folder in feature_dirs:
            write_vector(root / folder / f"{name}.npy", means[folder][emotion] + rng.normal(0, 0.5, FEATURE_DIM))
        annotation.append(f"{name} {MER_FRAMES} {emotion}\n")
        transcript.append((name, TRANSCRIPT_SENTENCES[rng.integers(len(TRANSCRIPT_SENTENCES))]))
    paths["mer_annotation"].write_text("".join(annotation), encoding="utf-8")
    write_csv(paths["mer_transcript"], ["name", "sentence"], transcript)
    return paths


# =========================================================================== session videos


def load_tiny_sessions():
    """``scripts/tiny_sessions.py`` (the drawn faces, the video writer, the sessions), loaded by
    file once: ``scripts/`` is not a package."""
    if "tiny_sessions" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tiny_sessions", Path(__file__).with_name("tiny_sessions.py"))
        tiny_sessions = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = tiny_sessions  # its dataclasses look their module up there
        spec.loader.exec_module(tiny_sessions)
    return sys.modules["tiny_sessions"]


def make_sessions(root: Path, rng: np.random.Generator) -> dict[str, Path]:
    return load_tiny_sessions().make_sessions(root, rng)


# =========================================================================== entry points


def part_seeds(seed: int) -> dict[str, int]:
    """An independent 32-bit seed per part, derived from the run's seed."""
    children = np.random.SeedSequence(seed).spawn(len(PARTS))
    return {part: int(child.generate_state(1)[0]) for part, child in zip(PARTS, children)}


def make_tiny_assets(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write every tiny asset under ``out_dir``; returns the main paths by name."""
    out_dir = Path(out_dir)
    seeds = part_seeds(seed)
    paths = {"llama_dir": out_dir / "llama", "tokenizer_dir": out_dir / "tokenizer"}
    tokenizer = build_tokenizer()
    for folder in (paths["llama_dir"], paths["tokenizer_dir"]):
        write_tokenizer_files(folder, tokenizer.serialized_model_proto())
    write_tiny_llama(paths["llama_dir"], tokenizer.vocab_size(), seeds["llama"])
    paths |= write_checkpoints(out_dir / "weights", seeds)
    paths["emotion_llama_ckpt"] = write_emotion_llama(out_dir / "weights", seeds["emotion_llama"])
    paths |= make_hcmw(out_dir / "hcmw", np.random.default_rng(seeds["hcmw"]))
    paths |= make_mer(out_dir / "mer", np.random.default_rng(seeds["mer"]))
    paths["hubert_dir"] = out_dir / "hubert"
    write_tiny_hubert(paths["hubert_dir"], seeds["hubert"])
    paths |= make_sessions(out_dir / "sessions", np.random.default_rng(seeds["sessions"]))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the assets into (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    make_tiny_assets(args.out_dir, args.seed)
    print(f"tiny assets (seed {args.seed}) written under {args.out_dir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
