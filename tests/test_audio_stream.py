"""The audio stream in the configs and datasets (SPEC sections 4 and 6): with
``model.num_video_streams: 3`` every clip needs an audio vector, never a row of zeros."""

from __future__ import annotations

import csv
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

import minigpt4  # noqa: F401  (fills the registry)
from minigpt4.common.config import Config, ConfigError
from minigpt4.common.registry import registry
from minigpt4.datasets.audio_track import read_audio_track
from minigpt4.datasets.errors import DataError
from minigpt4.models.hubert_encoder import HubertAudioEncoder

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIGS = {  # kind: (file, dataset section, the runner its command uses)
    "eval": (ROOT / "eval_configs" / "demo.yaml", "evaluation_datasets.hcmw_caption", "runner_eval"),
    "train": (ROOT / "train_configs" / "demo.yaml", "datasets.hcmw_caption", "runner_base"),
}
DIM = 8


@pytest.fixture
def demo_paths(tmp_path, monkeypatch) -> Path:
    """What the demo configs' paths point at, as empty stand-ins (only their existence is checked)."""
    for folder in ("llama", "weights", "hcmw/images", "features", "mer/videos"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "weights" / "eva_vit_tiny.pth").touch()
    (tmp_path / "hcmw" / "annotations.csv").write_text("uuid,mw_label,test_fold_num\n")
    (tmp_path / "mer" / "annotation.txt").touch()
    (tmp_path / "mer" / "transcription.csv").write_text("name,sentence\n")
    monkeypatch.setenv("TINY_ASSETS", str(tmp_path))
    monkeypatch.setenv("DEMO_FEATURES", str(tmp_path / "features"))
    return tmp_path


def load(kind: str, *options: str) -> Config:
    path, _, runner = DEMO_CONFIGS[kind]
    return Config(Namespace(cfg_path=str(path), options=list(options)), default_runner=runner)


@pytest.mark.parametrize("kind", DEMO_CONFIGS)
def test_demo_configs_read_three_streams_with_an_audio_dir(demo_paths, kind):
    section = DEMO_CONFIGS[kind][1]
    config = load(kind)
    assert config.model_cfg.num_video_streams == 3
    assert OmegaConf.select(config.config, f"{section}.build_info.audio_dir") == "HL-UTT"


@pytest.mark.parametrize("kind", DEMO_CONFIGS)
def test_three_streams_without_an_audio_dir_is_a_config_error_naming_it(demo_paths, kind):
    section = DEMO_CONFIGS[kind][1]
    expected = rf"^{section}\.build_info\.audio_dir: empty, but model\.num_video_streams is 3"
    with pytest.raises(ConfigError, match=expected):
        load(kind, f"{section}.build_info.audio_dir=")
    # two streams never read the third row: an empty audio_dir (zeros) is allowed there
    load(kind, f"{section}.build_info.audio_dir=", "model.num_video_streams=2")


def test_mer_datasets_take_the_same_rule(demo_paths):
    path = ROOT / "eval_configs" / "demo_mer.yaml"
    key = "evaluation_datasets.mer2024_caption.build_info.audio_dir"
    with pytest.raises(ConfigError, match=rf"^{key}: empty, but model\.num_video_streams is 3"):
        Config(Namespace(cfg_path=str(path), options=["model.num_video_streams=3", f"{key}="]), "runner_eval")


def _hcmw(root: Path, with_audio: list[str]) -> dict:
    """Two clips with peak frame, FaceMAE and VideoMAE vectors; audio vectors for ``with_audio`` only."""
    rows = ["uuid,mw_label,test_fold_num"]
    for clip, label in (("a", "MW"), ("b", "NonMW")):
        rows.append(f"{clip},{label},0")
        image = root / "images" / clip / f"{clip}_peak_frame.png"
        image.parent.mkdir(parents=True)
        Image.new("RGB", (12, 10)).save(image)
        for folder in ("mae_340_UTT", "maeV_199_UTT") + (("HL-UTT",) if clip in with_audio else ()):
            (root / "features" / folder).mkdir(parents=True, exist_ok=True)
            np.save(root / "features" / folder / f"{clip}.npy", np.full(DIM, 0.5, dtype=np.float32))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return {
        "build_info": {
            "annotation": str(root / "labels.csv"),
            "image_root": str(root / "images"),
            "feature_root": str(root / "features"),
            "audio_dir": "HL-UTT",
        },
        "feature_dim": DIM,
        "vis_processor": {"train": {"image_size": 16}, "eval": {"image_size": 16}},
    }


def test_hcmw_clip_without_an_audio_vector_is_named_never_zero_filled(tmp_path):
    cfg = _hcmw(tmp_path, with_audio=["a"])
    missing = tmp_path / "features" / "HL-UTT" / "b.npy"
    with pytest.raises(DataError, match=rf"b: {missing}"):
        registry.get("builder", "hcmw_caption")(cfg).build("all")
    dataset = registry.get("builder", "hcmw_caption")(dict(cfg, on_error="skip")).build("all")
    assert [item["video_id"] for item in dataset] == ["a"]
    assert [(bad.clip, bad.file) for bad in dataset.skipped] == [("b", str(missing))]
    np.testing.assert_array_equal(dataset[0]["video_features"][2].numpy(), np.full(DIM, 0.5))  # the audio row


def test_tiny_assets_give_the_demo_clips_a_tone_of_their_label_and_a_hubert_of_feature_dim(
    tiny_assets, tiny_assets_script
):
    encoder = HubertAudioEncoder.from_pretrained(tiny_assets["hubert_dir"])
    assert encoder.feature_dim == tiny_assets_script.FEATURE_DIM == 64  # the tiny model's video_feature_dim
    assert encoder.feature_extractor is not None and encoder.feature_extractor.do_normalize
    with open(tiny_assets["hcmw_csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        clip = row["uuid"].removesuffix(".mp4")
        sound = read_audio_track(tiny_assets["hcmw_video_root"] / f"{clip}.mp4", encoder.sample_rate)
        assert len(sound) == 32 * encoder.sample_rate // 25  # as long as the 32 frames at 25 fps
        peak_hz = np.argmax(np.abs(np.fft.rfft(sound))) * encoder.sample_rate / len(sound)
        assert abs(peak_hz - tiny_assets_script.AUDIO_TONE_HZ[row["mw_label"]]) < 2
        assert (tiny_assets["hcmw_feature_root"] / "HL-UTT" / f"{clip}.npy").is_file()
