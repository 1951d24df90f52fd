"""Bad inputs of the three encoder commands: each ends as one line naming the input and the
problem (``error: ...`` from a command, never a traceback), before anything is written."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from synthetic_clips import smooth_frames, tones, write_wav

from minigpt4.common.checkpoint_io import CheckpointError, load_checkpoint
from minigpt4.common.registry import registry
from minigpt4.datasets.frames import ClipReadError, open_clip_frames
from minigpt4.features.audio_vectors import audio_settings, audio_vector
from minigpt4.features.clip_vectors import face_mae_vector, video_mae_vector
from minigpt4.models.hubert_encoder import HubertAudioEncoder

ROOT = Path(__file__).resolve().parents[1]
RATE = 16_000


def load_cli(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command_error(name: str, argv: list[str]) -> str:
    """What the command ``name`` ends with, run in this process: its ``SystemExit`` text."""
    with pytest.raises(SystemExit) as stop:
        load_cli(name).main(argv)
    return str(stop.value.code)


def sound_only_mp4(path: Path) -> Path:
    """An MP4 with an AAC track and no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=RATE)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, RATE // 2), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = RATE, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def face_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "face_mae_tiny.pth"
    torch.save({"model": registry.get("encoder", "face_mae_tiny")().state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "video_mae_tiny.pth"
    torch.save({"model": registry.get("encoder", "video_mae_tiny")().state_dict()}, path)
    return path


def face_argv(clips: Path, output: Path, checkpoint: Path) -> list[str]:
    return ["--input", str(clips), "--output", str(output), "--checkpoint", str(checkpoint),
            "--model", "face_mae_tiny", "--device", "cpu"]


# ---- FaceMAE / VideoMAE inputs ---------------------------------------------------------------


def test_npz_renamed_npy_is_named_through_the_command(tmp_path, face_checkpoint):
    clips = tmp_path / "clips"
    clips.mkdir()
    np.save(clips / "good.npy", smooth_frames(3, 32, 32))
    np.savez(tmp_path / "frames.npz", frames=smooth_frames(3, 32, 32))
    renamed = clips / "renamed.npy"
    (tmp_path / "frames.npz").rename(renamed)
    error = command_error("extract_mae_embedding", face_argv(clips, tmp_path / "out", face_checkpoint))
    assert error == (
        f"error: clip 'renamed' ({renamed}): an .npz archive (a zip of arrays), not a .npy array; "
        "save the frames with np.save"
    )
    assert not (tmp_path / "out").exists()


def test_binary_file_as_input_list_is_one_line_from_the_command_line(tmp_path, face_checkpoint):
    """Run as a user runs it: a separate process, whose stderr must hold no traceback."""
    clip = tmp_path / "clip.npy"
    np.save(clip, smooth_frames(2, 32, 32))
    command = [sys.executable, str(ROOT / "extract_mae_embedding.py"), *face_argv(clip, tmp_path / "out", face_checkpoint)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --input {clip}: a binary file, not a clip list (a text file naming one clip a line); "
        "pass a folder of clips or such a list"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["extract_mae_embedding", "extract_maeVideo_embedding"])
def test_sound_only_file_has_no_video_stream(tmp_path, command, face_checkpoint, video_checkpoint):
    clips = tmp_path / "clips"
    clips.mkdir()
    sound = sound_only_mp4(clips / "talk.mp4")
    checkpoint, model = (
        (face_checkpoint, "face_mae_tiny") if command == "extract_mae_embedding" else (video_checkpoint, "video_mae_tiny")
    )
    argv = ["--input", str(clips), "--output", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
            "--model", model, "--device", "cpu"]
    error = command_error(command, argv)
    assert error == f"error: clip 'talk' ({sound}): no video stream (the file holds only sound); pass the clip's video or frames"
    with pytest.raises(ClipReadError, match="no video stream"):
        open_clip_frames(sound)
    assert not (tmp_path / "out").exists()


def test_pickled_checkpoint_is_refused_in_one_line(tmp_path):
    path = tmp_path / "needs_pickle.pth"
    torch.save({"model": {}, "args": Path("x")}, path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path, "model.ckpt")
    assert str(refused.value) == (
        f"model.ckpt: {path} holds objects that cannot be read safely (weights_only=True; it needs "
        "pathlib.PosixPath). If you trust this file, set model.trust_checkpoint: true in the config "
        "(--trust-checkpoint on the encoder commands)"
    )


# ---- HuBERT folders ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory, tiny_assets_script) -> Path:
    folder = tmp_path_factory.mktemp("hubert") / "hubert"
    tiny_assets_script.write_tiny_hubert(folder, seed=0)
    return folder


@pytest.fixture
def sound_clips(tmp_path) -> Path:
    clips = tmp_path / "clips"
    clips.mkdir()
    write_wav(clips / "a.wav", tones(RATE, 0.5)[None], RATE)
    return clips


def audio_error(clips: Path, output: Path, model_dir: Path, *options: str) -> str:
    argv = ["--input", str(clips), "--output", str(output), "--model_dir", str(model_dir), "--device", "cpu", *options]
    return command_error("extract_audio_embedding", argv)


def copy_folder(source: Path, target: Path, drop=lambda name: False) -> Path:
    """``source`` with the weights ``drop`` names left out."""
    shutil.copytree(source, target)
    tensors = load_file(source / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if not drop(k)}, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_llama_folder_is_not_a_hubert(tmp_path, sound_clips, tiny_assets_script):
    llama = tmp_path / "llama"
    tiny_assets_script.write_tiny_llama(llama, vocab_size=64, seed=0)
    error = audio_error(sound_clips, tmp_path / "out", llama)
    assert error == (
        f"error: HuBERT folder {llama}: config.json describes a 'llama' model, not a HuBERT "
        "(model_type 'hubert'); pass the folder of a Hugging Face HuBERT"
    )
    assert not (tmp_path / "out").exists()


def test_weights_of_another_model_name_the_missing_tensors(tmp_path, sound_clips, hubert_dir, tiny_assets_script):
    """A HuBERT config.json beside a LLaMA's weights: nothing of HuBERT is in the file."""
    folder = tmp_path / "mixed"
    tiny_assets_script.write_tiny_llama(folder, vocab_size=64, seed=0)
    shutil.copy(hubert_dir / "config.json", folder / "config.json")
    error = audio_error(sound_clips, tmp_path / "out", folder)
    assert error.startswith(
        f"error: HuBERT folder {folder}: the weights do not fit its HuBERT: 0 tensors loaded; missing from the file: "
        "encoder.layer_norm.bias, encoder.layer_norm.weight, "
    )
    assert " ... (+59 more); not used by the model: lm_head.weight, model.embed_tokens.weight, " in error
    assert not (tmp_path / "out").exists()


def test_folder_missing_a_layer_names_its_tensors(tmp_path, sound_clips, hubert_dir):
    folder = copy_folder(hubert_dir, tmp_path / "no_layer_1", drop=lambda name: name.startswith("encoder.layers.1."))
    error = audio_error(sound_clips, tmp_path / "out", folder)
    assert error == (
        f"error: HuBERT folder {folder}: the weights do not fit its HuBERT: 54 tensors loaded; missing from the "
        "file: encoder.layers.1.attention.k_proj.bias, encoder.layers.1.attention.k_proj.weight, "
        "encoder.layers.1.attention.out_proj.bias, encoder.layers.1.attention.out_proj.weight, "
        "encoder.layers.1.attention.q_proj.bias, encoder.layers.1.attention.q_proj.weight, "
        "encoder.layers.1.attention.v_proj.bias, encoder.layers.1.attention.v_proj.weight, "
        "encoder.layers.1.feed_forward.intermediate_dense.bias, encoder.layers.1.feed_forward.intermediate_dense.weight"
        " ... (+6 more)"
    )


def test_training_only_embedding_may_be_missing(tmp_path, hubert_dir):
    """masked_spec_embed (SpecAugment's) is never used to encode; converted files may lack it."""
    folder = copy_folder(hubert_dir, tmp_path / "no_spec", drop=lambda name: name == "masked_spec_embed")
    reference = HubertAudioEncoder.from_pretrained(hubert_dir)
    loaded = HubertAudioEncoder.from_pretrained(folder)
    for name, tensor in reference.state_dict().items():
        if name != "hubert.masked_spec_embed":
            torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    # zeros, not a random draw: two loads record the same weights in extraction.json
    assert not loaded.state_dict()["hubert.masked_spec_embed"].any()
    assert audio_settings(HubertAudioEncoder.from_pretrained(folder)) == audio_settings(loaded)


def test_weights_needing_unpickling_are_refused_unless_trusted(tmp_path, sound_clips, hubert_dir):
    folder = tmp_path / "pickled"
    shutil.copytree(hubert_dir, folder)
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({"model": tensors, "args": Path("x")}, folder / "pytorch_model.bin")
    error = audio_error(sound_clips, tmp_path / "out", folder)
    assert error == (
        f"error: HuBERT folder {folder}: {folder / 'pytorch_model.bin'} holds objects that cannot be read safely "
        "(weights_only=True; it needs pathlib.PosixPath). If you trust this file, set model.trust_checkpoint: true "
        "in the config (--trust-checkpoint on the encoder commands)"
    )
    assert not (tmp_path / "out").exists()
    load_cli("extract_audio_embedding").main(
        ["--input", str(sound_clips), "--output", str(tmp_path / "out"), "--model_dir", str(folder), "--device", "cpu",
         "--trust-checkpoint"]
    )
    assert np.load(tmp_path / "out" / "a.npy").shape == (64,)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1"])
def test_window_seconds_must_be_positive_and_finite(tmp_path, sound_clips, hubert_dir, value):
    error = audio_error(sound_clips, tmp_path / "out", hubert_dir, f"--window_seconds={value}")
    shown = float(value)
    assert error == f"error: --window_seconds must be a positive, finite number of seconds, got {shown}"
    assert not math.isfinite(shown) or shown <= 0
    assert not (tmp_path / "out").exists()


def test_window_shorter_than_two_frames_is_named(tmp_path, sound_clips, hubert_dir):
    error = audio_error(sound_clips, tmp_path / "out", hubert_dir, "--window_seconds", "0.04")
    assert error == "error: --window_seconds 0.04: a window must hold at least 0.050 s (800 samples)"


# ---- clips in memory (the detect job's inputs) ----------------------------------------------------


def test_in_memory_frames_must_be_uint8_rgb():
    model = registry.get("encoder", "face_mae_tiny")().eval()
    with pytest.raises(ValueError) as refused:
        face_mae_vector(model, np.zeros((2, 32, 32, 3), np.float32))
    assert str(refused.value) == "expected uint8 RGB frames of shape (T, H, W, 3), got float32 (2, 32, 32, 3)"
    with pytest.raises(ValueError, match="^a clip needs at least one frame, got 0$"):
        video_mae_vector(registry.get("encoder", "video_mae_tiny")().eval(), np.zeros((0, 32, 32, 3), np.uint8))


def test_in_memory_sound_must_be_mono(hubert_dir):
    encoder = HubertAudioEncoder.from_pretrained(hubert_dir)
    with pytest.raises(ValueError) as refused:
        audio_vector(encoder, np.zeros((2, RATE), np.float32))
    assert str(refused.value) == "expected mono samples of shape (n,), got shape (2, 16000)"
    with pytest.raises(ValueError, match="^100 samples is shorter than the 400 samples"):
        audio_vector(encoder, np.zeros(100, np.float32))
