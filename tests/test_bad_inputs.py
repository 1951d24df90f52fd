"""Files a new user gets wrong: each is read as the picture it holds or stopped by an error
that names the file (never a traceback from numpy, csv, pickle or YAML)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minigpt4.common.checkpoint_io import CheckpointError, load_checkpoint
from minigpt4.common.config import Config, ConfigError
from minigpt4.common.registry import registry
from minigpt4.datasets.datasets import hcmw_dataset, mer_dataset
from minigpt4.datasets.datasets.clip_inputs import UnusableFile, open_rgb, read_vector
from minigpt4.datasets.errors import DataError
from minigpt4.datasets.frames import ClipReadError, open_clip_frames


def grey_ramp() -> np.ndarray:
    """An 8-bit greyscale picture with every level from dark to bright."""
    y, x = np.mgrid[0:32, 0:48]
    return ((x * 5 + y * 3) % 256).astype(np.uint8)


def save_16bit_grey(path: Path, grey8: np.ndarray) -> Path:
    # what an 8-bit -> 16-bit conversion writes: v * 257 spans 0..65535
    Image.fromarray(grey8.astype(np.uint16) * 257).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")  # really a 16-bit greyscale PNG
    return path


# ---- 16-bit greyscale PNGs ------------------------------------------------------------------


def test_16bit_grey_peak_frame_is_its_8bit_picture(tmp_path):
    grey8 = grey_ramp()
    Image.fromarray(grey8).save(tmp_path / "grey8.png")
    save_16bit_grey(tmp_path / "grey16.png", grey8)
    expected = np.asarray(open_rgb(tmp_path / "grey8.png"))
    np.testing.assert_array_equal(np.asarray(open_rgb(tmp_path / "grey16.png")), expected)


def test_16bit_grey_face_frames_are_their_8bit_pictures(tmp_path):
    grey8 = grey_ramp()
    for name, save in (("eight", lambda p, g: Image.fromarray(g).save(p)), ("sixteen", save_16bit_grey)):
        (tmp_path / name).mkdir()
        for i in range(2):
            save(tmp_path / name / f"{i:03d}.png", np.roll(grey8, i, axis=1))
    eight, sixteen = open_clip_frames(tmp_path / "eight").read([0, 1]), open_clip_frames(tmp_path / "sixteen").read([0, 1])
    assert sixteen.dtype == np.uint8 and sixteen.shape == (2, 32, 48, 3)
    np.testing.assert_array_equal(sixteen, eight)


# ---- .npy files that are not arrays -----------------------------------------------------------


NOT_ARRAYS = {"zero bytes": b"", "text": b"uuid,mw_label\nclip_1,MW\n"}


@pytest.mark.parametrize("content", NOT_ARRAYS.values(), ids=NOT_ARRAYS.keys())
def test_vector_file_that_is_no_array(tmp_path, content):
    path = tmp_path / "clip_1.npy"
    path.write_bytes(content)
    with pytest.raises(UnusableFile) as err:
        read_vector(path, 8)
    assert "pickle" not in str(err.value) and ".npy" in str(err.value)


@pytest.mark.parametrize("content", NOT_ARRAYS.values(), ids=NOT_ARRAYS.keys())
def test_frame_array_that_is_no_array(tmp_path, content):
    path = tmp_path / "clip_1.npy"
    path.write_bytes(content)
    with pytest.raises(ClipReadError) as err:
        open_clip_frames(path)
    assert err.value.clip == "clip_1" and str(path) in str(err.value) and "pickle" not in str(err.value)


# ---- annotations in other encodings ---------------------------------------------------------


HCMW_CSV = "uuid,mw_label,test_fold_num\ncafé_1,MW,1\nclip_2,NonMW,2\n"
TRANSCRIPT_CSV = "name,sentence\nsample_1,Ça va très bien\n"


def test_utf16_annotations_are_read(tmp_path):
    (tmp_path / "hcmw.csv").write_bytes(HCMW_CSV.encode("utf-16"))  # with its BOM, as Excel writes it
    (tmp_path / "transcript.csv").write_bytes(TRANSCRIPT_CSV.encode("utf-16"))
    assert [row.clip for row in hcmw_dataset.read_annotation(tmp_path / "hcmw.csv")] == ["café_1", "clip_2"]
    assert mer_dataset.read_transcript(tmp_path / "transcript.csv") == {"sample_1": "Ça va très bien"}


@pytest.mark.parametrize(
    "read, text",
    [
        (hcmw_dataset.read_annotation, HCMW_CSV),
        (mer_dataset.read_transcript, TRANSCRIPT_CSV),
        (mer_dataset.read_annotation, "sample_1 30 happy\ncafé_2 25 sad\n"),
    ],
    ids=["hcmw csv", "mer transcript", "mer annotation"],
)
def test_latin1_annotation_is_an_error_naming_the_file(tmp_path, read, text):
    path = tmp_path / "annotation.csv"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8") as err:
        read(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# ---- a text file given as a checkpoint ------------------------------------------------------


def test_text_file_as_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("these are not the weights you are looking for\n")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint") as err:
        load_checkpoint(path, "model.ckpt")
    assert str(path) in str(err.value)
    for encoder in ("face_mae_tiny", "video_mae_tiny", "eva_clip_tiny"):
        with pytest.raises(CheckpointError, match=str(path)):
            registry.get("encoder", encoder)(checkpoint=path)


def test_checkpoint_refusal_names_the_setting_of_each_command(tmp_path):
    import torch

    path = tmp_path / "needs_pickle.pth"
    torch.save({"model": {}, "args": Path("x")}, path)  # a Path object: not loadable with weights_only
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, "model.ckpt")
    assert "model.trust_checkpoint: true" in str(err.value) and "--trust-checkpoint" in str(err.value)


# ---- a malformed --options value ------------------------------------------------------------


@pytest.mark.parametrize("item", ["run.folds=[1,2", 'run.output_dir="out', "model.x={a: 1"])
def test_malformed_options_value_is_a_config_error(item):
    with pytest.raises(ConfigError) as err:
        Config._parse_options([item])
    assert item in str(err.value) and "\n" not in str(err.value)
