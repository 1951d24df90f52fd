"""The generated tiny assets: loadable weights, determinism, dataset layouts (the tokenizer: test_tokenizer_pieces)."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import decord
import numpy as np
import pytest
import sentencepiece as spm
import torch
from PIL import Image
from transformers import LlamaForCausalLM


HCMW_INSTRUCTION = (
    "<video><VideoHere></video> <feature><FeatureHere></feature> [classification] "
    "Please classify the video into one of these categories: mind wandering or non-mind wandering. "
)
EMOTIONS = ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt")

# Decoded video frames vs. the PNG frames: the yuv420p round trip alone costs ~3 grey levels
# of mean absolute error on these drawn faces, the MPEG-4 encoding ~1 more.
VIDEO_FRAME_TOLERANCE = 8.0


@pytest.fixture(scope="module")
def sentencepiece_model(tiny_assets):
    return spm.SentencePieceProcessor(model_file=str(tiny_assets["llama_dir"] / "tokenizer.model"))


# --------------------------------------------------------------------------- LLaMA


def test_llama_folder_loads_and_runs(tiny_assets, sentencepiece_model):
    model = LlamaForCausalLM.from_pretrained(tiny_assets["llama_dir"])
    config = model.config
    assert config.vocab_size == sentencepiece_model.vocab_size()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, None)
    assert not config.tie_word_embeddings
    assert model.dtype == torch.float32
    input_ids = torch.tensor([[1, *sentencepiece_model.encode(HCMW_INSTRUCTION)]])
    with torch.no_grad():
        logits = model(input_ids).logits
    assert logits.shape == (1, input_ids.shape[1], config.vocab_size)
    assert torch.isfinite(logits).all()


# --------------------------------------------------------------------------- determinism


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_other_data(tiny_assets, tiny_assets_script, tmp_path):
    reference = file_bytes(tiny_assets["llama_dir"].parent)
    global_rng_states = torch.get_rng_state(), np.random.get_state()[1].copy()
    tiny_assets_script.make_tiny_assets(tmp_path / "seed0", seed=0)
    tiny_assets_script.make_tiny_assets(tmp_path / "seed1", seed=1)
    same_seed, other_seed = file_bytes(tmp_path / "seed0"), file_bytes(tmp_path / "seed1")

    # Seeded generators only: the caller's global random state is left alone.
    assert torch.equal(torch.get_rng_state(), global_rng_states[0])
    assert np.array_equal(np.random.get_state()[1], global_rng_states[1])

    assert same_seed.keys() == reference.keys() == other_seed.keys()
    assert [name for name in reference if same_seed[name] != reference[name]] == []  # videos included
    data_suffixes = (".pth", ".safetensors", ".mp4", ".avi", ".png", ".npy")
    data_files = [name for name in reference if name.endswith(data_suffixes)]
    assert data_files and [name for name in data_files if other_seed[name] == reference[name]] == []
    # The tokenizer is trained on fixed prompt texts only: the same for every seed.
    assert other_seed["llama/tokenizer.model"] == reference["llama/tokenizer.model"]


def test_assets_stay_under_out_dir(tiny_assets):
    root = tiny_assets["llama_dir"].parent
    assert all(path.is_relative_to(root) and path.exists() for path in tiny_assets.values())
    assert sorted(path.name for path in root.iterdir()) == [
        "hcmw", "hubert", "llama", "mer", "sessions", "tokenizer", "weights"
    ]


# --------------------------------------------------------------------------- hcmw


def read_hcmw_rows(tiny_assets) -> list[dict[str, str]]:
    with tiny_assets["hcmw_csv"].open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_hcmw_annotations_and_referenced_files(tiny_assets):
    rows = read_hcmw_rows(tiny_assets)
    assert list(rows[0]) == ["uuid", "mw_label", "test_fold_num"]
    assert len(rows) == 24
    assert Counter((row["test_fold_num"], row["mw_label"]) for row in rows) == {
        (fold, label): 4 for fold in ("0", "1", "2") for label in ("MW", "NonMW")
    }
    for row in rows:
        assert row["uuid"].endswith(".mp4")
        clip = row["uuid"].removesuffix(".mp4")
        assert (tiny_assets["hcmw_video_root"] / f"{clip}.mp4").is_file()
        assert (tiny_assets["hcmw_image_root"] / clip / f"{clip}_peak_frame.png").is_file()
        frames = sorted((tiny_assets["hcmw_frames_root"] / clip).iterdir())
        assert [frame.name for frame in frames] == [f"{clip}_{t:04d}.png" for t in range(32)]
        face = np.load(tiny_assets["hcmw_feature_root"] / "mae_340_UTT" / f"{clip}.npy")
        video = np.load(tiny_assets["hcmw_feature_root"] / "maeV_199_UTT" / f"{clip}.npy")
        assert (face.shape, face.dtype, video.shape, video.dtype) == ((64,), np.float32, (1, 64), np.float32)


def test_hcmw_features_carry_the_label(tiny_assets):
    rows = read_hcmw_rows(tiny_assets)
    feature_dir = tiny_assets["hcmw_feature_root"] / "mae_340_UTT"
    features = np.stack([np.load(feature_dir / row["uuid"].replace(".mp4", ".npy")) for row in rows])
    is_mw = np.array([row["mw_label"] == "MW" for row in rows])
    between = np.linalg.norm(features[is_mw].mean(0) - features[~is_mw].mean(0))
    within = np.linalg.norm(features[is_mw] - features[is_mw].mean(0), axis=1).mean()
    assert between > within


def test_hcmw_videos_decode_like_the_png_frames(tiny_assets):
    for row in read_hcmw_rows(tiny_assets):
        clip = row["uuid"].removesuffix(".mp4")
        reader = decord.VideoReader(str(tiny_assets["hcmw_video_root"] / f"{clip}.mp4"))
        assert len(reader) == 32
        frame = reader[16].asnumpy()
        assert frame.shape == (96, 96, 3)
        png = np.asarray(Image.open(tiny_assets["hcmw_frames_root"] / clip / f"{clip}_0016.png"))
        peak = np.asarray(Image.open(tiny_assets["hcmw_image_root"] / clip / f"{clip}_peak_frame.png"))
        assert np.array_equal(png, peak)
        assert np.abs(frame.astype(np.float64) - png).mean() < VIDEO_FRAME_TOLERANCE
        assert not np.array_equal(reader[0].asnumpy(), frame)  # the head moves


def test_hcmw_faces_differ_by_label(tiny_assets):
    """The label is visible in one frame: NonMW faces are warm (red > blue), MW faces cool."""
    for row in read_hcmw_rows(tiny_assets):
        clip = row["uuid"].removesuffix(".mp4")
        peak = np.asarray(Image.open(tiny_assets["hcmw_image_root"] / clip / f"{clip}_peak_frame.png"), np.float64)
        centre = peak[40:56, 40:56]  # mostly skin, between the eyes and the mouth
        warmth = np.median(centre[..., 0] - centre[..., 2])  # red - blue
        assert (warmth > 0) == (row["mw_label"] == "NonMW")


# --------------------------------------------------------------------------- MER


def test_mer_layout(tiny_assets):
    lines = tiny_assets["mer_annotation"].read_text().splitlines()
    assert len(lines) == 12
    with tiny_assets["mer_transcript"].open(newline="") as handle:
        transcript = {row["name"]: row["sentence"] for row in csv.DictReader(handle)}
    suffixes, emotions = set(), set()
    for line in lines:
        name, n_frames, emotion = line.split()
        assert re.fullmatch(r"sample_\d{8}", name) and emotion in EMOTIONS
        emotions.add(emotion)
        (video,) = tiny_assets["mer_video_root"].glob(f"{name}.*")
        suffixes.add(video.suffix)
        reader = decord.VideoReader(str(video))
        assert (len(reader), reader[0].shape) == (int(n_frames), (96, 96, 3))
        assert transcript[name]
        for folder in ("mae_340_UTT", "maeV_399_UTT", "HL-UTT"):
            vector = np.load(tiny_assets["mer_root"] / folder / f"{name}.npy")
            assert (vector.shape, vector.dtype) == ((64,), np.float32)
    assert suffixes == {".mp4", ".avi"}
    assert len(emotions) >= 5


# --------------------------------------------------------------------------- checkpoints


def vit_block(prefix: str, width: int, mlp: int, qkv_bias: dict[str, tuple]) -> dict[str, tuple]:
    shapes = {
        "norm1.weight": (width,),
        "norm1.bias": (width,),
        "attn.qkv.weight": (3 * width, width),
        **qkv_bias,
        "attn.proj.weight": (width, width),
        "attn.proj.bias": (width,),
        "norm2.weight": (width,),
        "norm2.bias": (width,),
        "mlp.fc1.weight": (mlp, width),
        "mlp.fc1.bias": (mlp,),
        "mlp.fc2.weight": (width, mlp),
        "mlp.fc2.bias": (width,),
    }
    return {prefix + name: shape for name, shape in shapes.items()}


def vit_stem(width: int, patch: int, num_patches: int) -> dict[str, tuple]:
    return {
        "cls_token": (1, 1, width),
        "pos_embed": (1, num_patches + 1, width),
        "patch_embed.proj.weight": (width, 3, patch, patch),
        "patch_embed.proj.bias": (width,),
    }


def expected_eva() -> dict[str, tuple]:
    shapes = vit_stem(width=32, patch=14, num_patches=8 * 8)
    for i in range(3):
        shapes |= vit_block(f"blocks.{i}.", 32, 64, {"attn.q_bias": (32,), "attn.v_bias": (32,)})
    return shapes


def expected_face_mae() -> dict[str, tuple]:
    shapes = vit_stem(width=64, patch=16, num_patches=4 * 4)
    for i in range(2):
        shapes |= vit_block(f"blocks.{i}.", 64, 256, {"attn.qkv.bias": (192,)})
    return shapes | {"norm.weight": (64,), "norm.bias": (64,), "fc_norm.weight": (64,), "fc_norm.bias": (64,)}


def expected_video_mae() -> dict[str, tuple]:
    shapes = {"encoder.patch_embed.proj.weight": (64, 3, 2, 16, 16), "encoder.patch_embed.proj.bias": (64,)}
    for i in range(2):
        shapes |= vit_block(f"encoder.blocks.{i}.", 64, 256, {"attn.q_bias": (64,), "attn.v_bias": (64,)})
    return shapes | {"encoder.fc_norm.weight": (64,), "encoder.fc_norm.bias": (64,)}


@pytest.mark.parametrize(
    ("key", "wrapped", "expected", "decoder_prefixes"),
    [
        ("eva_ckpt", False, expected_eva(), ()),
        ("face_mae_ckpt", True, expected_face_mae(), ("decoder_", "mask_token")),
        ("video_mae_ckpt", True, expected_video_mae(), ("decoder.", "encoder_to_decoder.", "mask_token")),
    ],
)
def test_checkpoint_layout(tiny_assets, key, wrapped, expected, decoder_prefixes):
    loaded = torch.load(tiny_assets[key], map_location="cpu", weights_only=True)
    if wrapped:
        assert list(loaded) == ["model"]
    state_dict = loaded["model"] if wrapped else loaded
    encoder = {name: tuple(t.shape) for name, t in state_dict.items() if not name.startswith(decoder_prefixes)}
    assert encoder == expected
    assert all(t.dtype == torch.float32 for t in state_dict.values())
    if decoder_prefixes:
        assert len(state_dict) > len(encoder)  # decoder entries the loaders must ignore
    # Norm weights and biases are random too, so a loader that drops one of them is caught.
    norm_weights = [t for name, t in state_dict.items() if "norm" in name and name.endswith(".weight")]
    assert norm_weights and not any(torch.equal(t, torch.ones_like(t)) for t in norm_weights)
    assert all(t.abs().sum() > 0 for name, t in state_dict.items() if name.endswith("bias"))
