"""Encoding a clip held in memory (the detect job's path) gives exactly the vector the
extraction command writes for the same clip from its files, and the settings functions give
exactly what the command records in ``extraction.json``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic_clips import smooth_frames, tones, write_wav

from minigpt4.common.registry import registry
from minigpt4.datasets.audio_track import read_audio_track
from minigpt4.features.audio_vectors import audio_settings, audio_vector
from minigpt4.features.clip_vectors import face_mae_settings, face_mae_vector, video_mae_settings, video_mae_vector
from minigpt4.features.encoder_extract import build_encoder
from minigpt4.features.writer import EXTRACTION_RECORD
from minigpt4.models.face_mae import FaceMAE
from minigpt4.models.hubert_encoder import HubertAudioEncoder
from minigpt4.models.video_mae import VideoMAE

ROOT = Path(__file__).resolve().parents[1]
CROP = 96  # aligned crops larger than the tiny encoders' 64 pixels: both paths must resize alike


def run_command(name: str, argv: list[str]) -> None:
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([*argv, "--device", "cpu"]) == 0


def saved_encoder(name: str, path: Path) -> Path:
    """A seeded random encoder whose vectors depend on the pixels, as a released-layout file."""
    torch.manual_seed(0)
    model = registry.get("encoder", name)()
    with torch.no_grad():
        model.patch_embed.proj.weight.mul_(5)
    torch.save({"model": model.state_dict()}, path)
    return path


def crops(num_frames: int) -> np.ndarray:
    return smooth_frames(num_frames, CROP, CROP, seed=3)


@pytest.mark.parametrize(
    "options",
    [{}, {"feature_level": "FRAME", "max_frames": 4}, {"max_frames": 5, "frames_per_forward": 2}],
    ids=["utterance", "frame-level-4-frames", "5-frames-2-per-forward"],
)
def test_face_mae_in_memory_is_the_commands_vector_of_the_png_folder(tmp_path, options):
    checkpoint = saved_encoder("face_mae_tiny", tmp_path / "face.pth")
    frames = crops(9)
    folder = tmp_path / "clips" / "c1"
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    argv = ["--input", str(tmp_path / "clips"), "--output", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
            "--model", "face_mae_tiny"]
    argv += [f"--{key}={value}" for key, value in options.items()]
    run_command("extract_mae_embedding", argv)

    model = build_encoder("face_mae_tiny", FaceMAE, checkpoint, trust_checkpoint=False).eval()
    vector = face_mae_vector(model, frames, **options)
    written = np.load(tmp_path / "out" / "c1.npy")
    assert vector.dtype == written.dtype == np.float32 and vector.shape == written.shape
    np.testing.assert_array_equal(vector, written)

    record = json.loads((tmp_path / "out" / EXTRACTION_RECORD).read_text())
    level_and_sampling = {key: options[key] for key in ("feature_level", "max_frames") if key in options}
    assert face_mae_settings(model, source={"model": "face_mae_tiny"}, **level_and_sampling) == record


@pytest.mark.parametrize("num_frames", [40, 7], ids=["sampled", "short-repeats-frames"])
def test_video_mae_in_memory_is_the_commands_vector_of_the_npy_array(tmp_path, num_frames):
    checkpoint = saved_encoder("video_mae_tiny", tmp_path / "video.pth")
    frames = crops(num_frames)
    (tmp_path / "clips").mkdir()
    np.save(tmp_path / "clips" / "c1.npy", frames)
    run_command(
        "extract_maeVideo_embedding",
        ["--input", str(tmp_path / "clips"), "--output", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
         "--model", "video_mae_tiny"],
    )
    model = build_encoder("video_mae_tiny", VideoMAE, checkpoint, trust_checkpoint=False).eval()
    np.testing.assert_array_equal(video_mae_vector(model, frames), np.load(tmp_path / "out" / "c1.npy"))
    record = json.loads((tmp_path / "out" / EXTRACTION_RECORD).read_text())
    assert video_mae_settings(model, source={"model": "video_mae_tiny"}) == record


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory, tiny_assets_script) -> Path:
    folder = tmp_path_factory.mktemp("hubert") / "hubert"
    tiny_assets_script.write_tiny_hubert(folder, seed=0)
    return folder


@pytest.mark.parametrize("feature_level", ["UTTERANCE", "FRAME"])
def test_audio_in_memory_is_the_commands_vector_of_the_wav(tmp_path, hubert_dir, feature_level):
    (tmp_path / "clips").mkdir()
    # stereo 44.1 kHz: the decoder's pieces at 16 kHz fall anywhere across the windows
    wave = tones(44_100, 1.3)
    wav = write_wav(tmp_path / "clips" / "c1.wav", np.stack([wave, 0.5 * np.roll(wave, 700) + 0.02]), 44_100)
    run_command(
        "extract_audio_embedding",
        ["--input", str(tmp_path / "clips"), "--output", str(tmp_path / "out"), "--model_dir", str(hubert_dir),
         "--window_seconds", "0.25", "--feature_level", feature_level],
    )
    encoder = HubertAudioEncoder.from_pretrained(hubert_dir, window_seconds=0.25).eval()
    waveform = read_audio_track(wav, encoder.sample_rate)
    assert len(encoder.windows(len(waveform))) == 6
    vector = audio_vector(encoder, waveform, feature_level=feature_level)
    np.testing.assert_array_equal(vector, np.load(tmp_path / "out" / "c1.npy"))
    record = json.loads((tmp_path / "out" / EXTRACTION_RECORD).read_text())
    assert audio_settings(encoder, feature_level=feature_level) == record
