"""The FaceMAE / VideoMAE extraction loop and its two commands, on tiny encoders."""

import csv
import importlib.util
import unicodedata
from pathlib import Path

import decord
import numpy as np
import pytest
import torch
from PIL import Image

from minigpt4.common.registry import registry
from minigpt4.datasets.frames import ClipReadError, uniform_frame_indices, videomae_frame_indices
from minigpt4.common import atomic_io
from minigpt4.features.writer import EXTRACTION_RECORD
from minigpt4.datasets.errors import SKIPPED_REPORT
from minigpt4.features.clip_vectors import frames_to_model_input
from minigpt4.features.encoder_extract import (
    describe_summary,
    extract_face_mae_features,
    extract_video_mae_features,
    list_clips,
)
from synthetic_clips import smooth_frames as _smooth_frames, write_video

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH_PX = 48, 64

# mpeg4 at 50 Mb/s still shifts pixels by ~3.6 grey levels on average (yuv420p chroma
# subsampling and YUV rounding); through the tiny encoders that moves a feature by 0.3-0.5%
# of its norm (measured), while a different clip moves it by 2.5-3.7%.  1.5% separates the two.
CODEC_RELATIVE_TOLERANCE = 0.015




def smooth_frames(num_frames: int, height: int = HEIGHT, width: int = WIDTH_PX, seed: int = 0) -> np.ndarray:
    return _smooth_frames(num_frames, height, width, seed)


def write_folder(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    return folder


def write_npy(path: Path, frames: np.ndarray) -> Path:
    np.save(path, frames)
    return path


def content_sensitive(model: torch.nn.Module) -> torch.nn.Module:
    """A seeded random encoder whose output depends on the pixels enough to tell clips apart.

    With timm's default init the position table outweighs the patch embedding, so any two
    clips give nearly the same vector and a tolerance check would be toothless.
    """
    torch.manual_seed(0)
    model.apply(lambda module: module.reset_parameters() if hasattr(module, "reset_parameters") else None)
    with torch.no_grad():
        model.patch_embed.proj.weight.mul_(5)
    return model.eval()


@pytest.fixture(scope="module")
def face_model():
    return content_sensitive(registry.get("encoder", "face_mae_tiny")())


@pytest.fixture(scope="module")
def video_model():
    return content_sensitive(registry.get("encoder", "video_mae_tiny")())


def load_cli(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- features -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["face", "video"])
def test_folder_npy_and_video_give_the_same_features(tmp_path, family, face_model, video_model):
    extract = extract_face_mae_features if family == "face" else extract_video_mae_features
    model = face_model if family == "face" else video_model
    frames = smooth_frames(20)
    (tmp_path / "in").mkdir()
    video = write_video(tmp_path / "in" / "as_video.mp4", frames)
    # every frame decoded in order: what the sampled, seeking reads of the video must match
    decoded = decord.VideoReader(str(video), num_threads=1).get_batch(list(range(20))).asnumpy()
    inputs = [
        write_folder(tmp_path / "in" / "as_folder", frames),
        write_npy(tmp_path / "in" / "as_array.npy", frames),
        video,
        write_npy(tmp_path / "in" / "decoded.npy", decoded),
        write_npy(tmp_path / "in" / "other.npy", smooth_frames(20, seed=5)),
    ]
    summary = extract(model, inputs, tmp_path / "out")
    assert summary.done == 5 and not summary.skipped
    out = {path.stem: np.load(path) for path in (tmp_path / "out").glob("*.npy")}
    assert out["as_array"].shape == (model.num_features,) and out["as_array"].dtype == np.float32
    np.testing.assert_allclose(out["as_folder"], out["as_array"], rtol=0, atol=1e-6)  # lossless: same pixels
    np.testing.assert_allclose(out["as_video"], out["decoded"], rtol=0, atol=1e-6)  # the right frames, decoded
    reference = np.linalg.norm(out["as_array"])
    codec_error = np.linalg.norm(out["as_video"] - out["as_array"]) / reference
    other_clip = np.linalg.norm(out["other"] - out["as_array"]) / reference
    assert codec_error < CODEC_RELATIVE_TOLERANCE < other_clip, (codec_error, other_clip)


def test_face_utterance_is_the_mean_of_frame_rows(tmp_path, face_model):
    clip = [write_npy(tmp_path / "clip.npy", smooth_frames(7))]
    extract_face_mae_features(face_model, clip, tmp_path / "frame", feature_level="FRAME")
    extract_face_mae_features(face_model, clip, tmp_path / "utt", feature_level="UTTERANCE")
    rows, mean = np.load(tmp_path / "frame" / "clip.npy"), np.load(tmp_path / "utt" / "clip.npy")
    assert rows.shape == (7, face_model.num_features) and mean.shape == (face_model.num_features,)
    np.testing.assert_allclose(mean, rows.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_face_max_frames_samples_uniformly(tmp_path, face_model):
    frames = smooth_frames(10)
    extract_face_mae_features(
        face_model, [write_npy(tmp_path / "clip.npy", frames)], tmp_path / "out", feature_level="FRAME", max_frames=4
    )
    picked = uniform_frame_indices(10, 4)
    assert picked == [0, 3, 6, 9]
    with torch.no_grad():
        expected = face_model(frames_to_model_input(frames[picked], face_model.img_size)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out" / "clip.npy"), expected, rtol=1e-5, atol=1e-5)


def test_video_uses_the_mer_sampling(tmp_path, video_model):
    frames = smooth_frames(40)
    extract_video_mae_features(video_model, [write_npy(tmp_path / "clip.npy", frames)], tmp_path / "out")
    pixels = frames_to_model_input(frames[videomae_frame_indices(40)], video_model.img_size)  # [16, 3, S, S]
    with torch.no_grad():
        expected = video_model(pixels.transpose(0, 1)[None])[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out" / "clip.npy"), expected, rtol=1e-5, atol=1e-5)


def test_frames_are_resized_and_scaled_to_unit_range():
    frames = np.full((2, 30, 50, 3), 255, np.uint8)
    frames[1] = 0
    pixels = frames_to_model_input(frames, 64)
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels[0], torch.ones(3, 64, 64))
    torch.testing.assert_close(pixels[1], torch.zeros(3, 64, 64))


def test_batches_and_workers_change_nothing(tmp_path, face_model):
    clips = [write_npy(tmp_path / f"c{i}.npy", smooth_frames(3 + i, seed=i)) for i in range(5)]
    extract_face_mae_features(face_model, clips, tmp_path / "one", batch_size=1)
    extract_face_mae_features(face_model, clips, tmp_path / "many", batch_size=3, num_workers=2, frames_per_forward=4)
    for i in range(5):
        np.testing.assert_allclose(
            np.load(tmp_path / "many" / f"c{i}.npy"), np.load(tmp_path / "one" / f"c{i}.npy"), rtol=1e-5, atol=1e-6
        )


def test_video_refuses_frame_level(tmp_path, video_model):
    with pytest.raises(ValueError, match="FRAME"):
        extract_video_mae_features(video_model, [], tmp_path / "out", feature_level="FRAME")


# ---- resume and atomic writes -----------------------------------------------------------


def test_rerun_skips_finished_clips(tmp_path, face_model, monkeypatch):
    clips = [write_npy(tmp_path / f"c{i}.npy", smooth_frames(3, seed=i)) for i in range(3)]
    extract_face_mae_features(face_model, clips[:2], tmp_path / "out")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}

    writes = []
    real_save = atomic_io.save_npy_atomic
    monkeypatch.setattr(
        "minigpt4.features.encoder_extract.save_npy_atomic",
        lambda path, array: (writes.append(Path(path).name), real_save(path, array)),
    )
    summary = extract_face_mae_features(face_model, clips, tmp_path / "out")
    assert (summary.done, summary.already_present) == (1, 2) and writes == ["c2.npy"]
    assert all((tmp_path / "out" / name).stat().st_mtime_ns == mtime for name, mtime in before.items())


def test_interrupted_write_leaves_no_partial_file(tmp_path, face_model, monkeypatch):
    def save_half_then_fail(handle, array):
        handle.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt  # the user stops the run mid-write

    clip = write_npy(tmp_path / "clip.npy", smooth_frames(3))
    monkeypatch.setattr(atomic_io.np, "save", save_half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        extract_face_mae_features(face_model, [clip], tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [EXTRACTION_RECORD]


# ---- bad clips ----------------------------------------------------------------------------


def empty_folder(root: Path) -> tuple[Path, Path]:
    (root / "bad").mkdir()
    return root / "bad", root / "bad"


def unreadable_video(root: Path) -> tuple[Path, Path]:
    (root / "bad.mp4").write_bytes(b"definitely not a video" * 40)
    return root / "bad.mp4", root / "bad.mp4"


def zero_frame_video(root: Path) -> tuple[Path, Path]:
    (root / "bad.mp4").write_bytes(b"")
    return root / "bad.mp4", root / "bad.mp4"


def mixed_sizes(root: Path) -> tuple[Path, Path]:
    folder = write_folder(root / "bad", smooth_frames(3))
    Image.fromarray(smooth_frames(1, height=HEIGHT // 2)[0]).save(folder / "00001.png")
    return folder, folder / "00001.png"


BAD_CLIPS = {
    "empty folder": empty_folder,
    "unreadable video": unreadable_video,
    "zero-frame video": zero_frame_video,
    "frames of different sizes": mixed_sizes,
}


@pytest.mark.parametrize("make_bad", BAD_CLIPS.values(), ids=BAD_CLIPS.keys())
def test_bad_clip_stops_the_run_before_any_output(tmp_path, face_model, make_bad):
    (tmp_path / "in").mkdir()
    good = write_npy(tmp_path / "in" / "a_good.npy", smooth_frames(3))  # sorts before the bad clip
    bad_clip, bad_file = make_bad(tmp_path / "in")
    with pytest.raises(ClipReadError) as err:
        extract_face_mae_features(face_model, [good, bad_clip], tmp_path / "out")
    assert err.value.clip == "bad" and err.value.path == str(bad_file)
    assert "bad" in str(err.value) and str(bad_file) in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make_bad", BAD_CLIPS.values(), ids=BAD_CLIPS.keys())
def test_skip_bad_reports_and_does_the_rest(tmp_path, video_model, make_bad):
    (tmp_path / "in").mkdir()
    good = write_npy(tmp_path / "in" / "a_good.npy", smooth_frames(12))
    bad_clip, bad_file = make_bad(tmp_path / "in")
    summary = extract_video_mae_features(video_model, [good, bad_clip], tmp_path / "out", skip_bad=True)
    assert summary.done == 1 and [exc.clip for exc in summary.skipped] == ["bad"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_good.npy", EXTRACTION_RECORD, SKIPPED_REPORT]
    with open(tmp_path / "out" / SKIPPED_REPORT, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["clip", "file", "problem"]
    assert rows[1][:2] == ["bad", str(bad_file)] and rows[1][2] and len(rows) == 2


def test_clip_that_fails_only_when_decoded(tmp_path, face_model):
    # the header is fine (so the checks pass); the pixel data is cut off
    folder = write_folder(tmp_path / "in" / "truncated", smooth_frames(2))
    data = (folder / "00001.png").read_bytes()
    (folder / "00001.png").write_bytes(data[: len(data) // 2])
    good = write_npy(tmp_path / "in" / "good.npy", smooth_frames(2))
    with pytest.raises(ClipReadError, match="00001.png"):
        extract_face_mae_features(face_model, [folder], tmp_path / "stop")
    summary = extract_face_mae_features(face_model, [folder, good], tmp_path / "skip", skip_bad=True)
    assert summary.done == 1 and summary.skipped[0].path == str(folder / "00001.png")
    assert "truncated" in (tmp_path / "skip" / SKIPPED_REPORT).read_text()


# ---- inputs and commands ----------------------------------------------------------------


def test_list_clips_from_folder_and_list_file(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    write_npy(root / "b.npy", smooth_frames(1))
    write_video(root / "a.mp4", smooth_frames(2))
    write_folder(root / "c", smooth_frames(1))
    (root / ".hidden.npy").write_bytes(b"")
    (root / "README.txt").write_text("not a clip")
    (root / "features").mkdir()
    assert [p.name for p in list_clips(root, exclude=root / "features")] == ["a.mp4", "b.npy", "c"]

    listing = tmp_path / "list.txt"
    listing.write_text(f"# clips to do\nclips/b.npy\n\n{root / 'c'}\n")
    assert list_clips(listing) == [root / "b.npy", root / "c"]


def cli_argv(tmp_path, checkpoint: str, model: str) -> list[str]:
    return [
        *("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")),
        *("--checkpoint", str(tmp_path / checkpoint), "--model", model, "--device", "cpu"),
    ]


def test_face_cli_on_released_layout(tmp_path):
    model = registry.get("encoder", "face_mae_tiny")()
    released = model.state_dict() | {"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 64)}
    torch.save({"model": released}, tmp_path / "mae_tiny.pth")
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "v1.mp4", smooth_frames(6))
    write_folder(tmp_path / "in" / "f1", smooth_frames(4))
    cli = load_cli("extract_mae_embedding")
    argv = cli_argv(tmp_path, "mae_tiny.pth", "face_mae_tiny")
    assert cli.main(argv + ["--feature_level", "FRAME", "--max_frames", "3"]) == 0
    assert np.load(tmp_path / "out" / "v1.npy").shape == (3, 64)
    assert np.load(tmp_path / "out" / "f1.npy").shape == (3, 64)
    with pytest.raises(SystemExit, match="not a FaceMAE"):
        cli.main(cli_argv(tmp_path, "mae_tiny.pth", "video_mae_tiny"))


def test_video_cli_on_released_layout(tmp_path, capsys):
    model = registry.get("encoder", "video_mae_tiny")()
    released = {f"encoder.{k}": v for k, v in model.state_dict().items()} | {
        "encoder_to_decoder.weight": torch.zeros(32, 64),
        "mask_token": torch.zeros(1, 1, 32),
    }
    torch.save({"model": released}, tmp_path / "videomae_tiny.pth")
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "v1.mp4", smooth_frames(20))
    write_npy(tmp_path / "in" / "n1.npy", smooth_frames(5))
    cli = load_cli("extract_maeVideo_embedding")
    argv = cli_argv(tmp_path, "videomae_tiny.pth", "video_mae_tiny")
    assert cli.main(argv + ["--batch_size", "2"]) == 0
    assert "2 clips written" in capsys.readouterr().out
    assert np.load(tmp_path / "out" / "v1.npy").shape == (64,) and np.load(tmp_path / "out" / "n1.npy").shape == (64,)
    assert cli.main(argv) == 0 and "0 clips written, 2 already present" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="FRAME"):
        cli.main(argv + ["--feature_level", "FRAME"])


# ---- the MER baseline's resize, memory -----------------------------------------------------


def photo_like(height: int = 180, width: int = 260, seed: int = 3) -> np.ndarray:
    """uint8 [H, W, 3]: smooth shading, sharp edges and sensor noise, like a face photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = 110 + 60 * np.sin(x / 23.0)[..., None] * np.cos(y / 31.0)[..., None] * np.array([1.0, 0.8, 0.6])
    image[(x - width / 2) ** 2 + (y - height / 2) ** 2 < (height / 3) ** 2] += 50  # a hard-edged disc
    image[:, width // 3 : width // 3 + 4] = 20  # a thin dark line
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [224, 64])
def test_resize_is_the_mer_baselines_torchvision_path(size):
    from torchvision import transforms

    frame = photo_like()
    baseline = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])(Image.fromarray(frame))
    ours = frames_to_model_input(frame[None], size)[0]
    assert ours.shape == baseline.shape == (3, size, size)
    # the acceptance bound is 1/255; being the same PIL call, it is met exactly
    # (torch's antialiased bilinear, used before, was off by up to 1.00007/255 here)
    torch.testing.assert_close(ours, baseline, rtol=0, atol=0)


def test_frames_are_resized_as_they_are_decoded(tmp_path):
    import tracemalloc

    from minigpt4.features.encoder_extract import _ClipFrameDataset, _FramesJob

    big = np.zeros((8, 600, 800, 3), np.uint8)  # 1.4 MB a frame, 11.5 MB the clip
    np.save(tmp_path / "big.npy", big)
    dataset = _ClipFrameDataset([_FramesJob("big", tmp_path / "big.npy", list(range(8)))], img_size=64)
    tracemalloc.start()
    _, pixels = dataset[0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert pixels.shape == (8, 3, 64, 64)
    assert peak < 3 * big[0].nbytes, peak  # one frame at full size at a time, never the clip


# ---- FaceMAE on MAE-Face's pre-training file ------------------------------------------------


def mae_face_pretraining_file(path: Path) -> Path:
    """The MAE-Face layout: timm ViT names, decoder and mask token, no fc_norm."""
    model = registry.get("encoder", "face_mae_tiny")(global_pool=False)
    encoder = {k: v for k, v in model.state_dict().items() if not k.startswith("fc_norm")}
    torch.save({"model": encoder | {"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 64)}}, path)
    return path


def test_face_cli_global_pool_on_a_pretraining_file_needs_the_flag(tmp_path):
    mae_face_pretraining_file(tmp_path / "mae_pretrain.pth")
    write_folder(tmp_path / "in" / "f1", smooth_frames(4))
    cli = load_cli("extract_mae_embedding")
    argv = cli_argv(tmp_path, "mae_pretrain.pth", "face_mae_tiny") + ["--global_pool"]
    with pytest.raises(SystemExit, match="--fresh_fc_norm"):
        cli.main(argv)
    assert not (tmp_path / "out").exists()
    assert cli.main(argv + ["--fresh_fc_norm"]) == 0
    # the documented output: the mean patch token through an untrained LayerNorm (weight 1, bias 0)
    model = registry.get("encoder", "face_mae_tiny")(
        global_pool=True, fresh_fc_norm=True, checkpoint=tmp_path / "mae_pretrain.pth"
    ).eval()
    with torch.no_grad():
        tokens = model.forward_features(frames_to_model_input(smooth_frames(4), 64))
        expected = torch.nn.functional.layer_norm(tokens[:, 1:].mean(dim=1), (64,), eps=1e-6).mean(dim=0)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "f1.npy"), expected.numpy(), rtol=1e-5, atol=1e-5)


# ---- output folders of other settings -------------------------------------------------------


@pytest.fixture
def face_cli_setup(tmp_path):
    model = registry.get("encoder", "face_mae_tiny")()
    torch.save({"model": model.state_dict()}, tmp_path / "mae_a.pth")
    other = content_sensitive(registry.get("encoder", "face_mae_tiny")())
    torch.save({"model": other.state_dict()}, tmp_path / "mae_b.pth")
    write_folder(tmp_path / "in" / "f1", smooth_frames(4))
    write_npy(tmp_path / "in" / "n1.npy", smooth_frames(3, seed=2))
    return load_cli("extract_mae_embedding"), cli_argv(tmp_path, "mae_a.pth", "face_mae_tiny")


@pytest.mark.parametrize(
    "change, named",
    [
        (["--global_pool", "--fresh_fc_norm"], "global_pool"),
        (["--feature_level", "FRAME"], "feature_level"),
        (["--max_frames", "2"], "max_frames"),
        (["--checkpoint", "OTHER"], "weights_sha256"),
    ],
    ids=["global_pool", "frame-level", "max_frames", "other-checkpoint"],
)
def test_rerun_with_other_settings_is_refused_then_replaced_with_overwrite(tmp_path, face_cli_setup, capsys, change, named):
    cli, argv = face_cli_setup
    change = [str(tmp_path / "mae_b.pth") if arg == "OTHER" else arg for arg in change]
    assert cli.main(argv) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(SystemExit, match=rf"differs in: [^)]*\b{named}\b.*--overwrite"):
        cli.main(argv + change)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    capsys.readouterr()
    assert cli.main(argv + change + ["--overwrite"]) == 0
    assert "2 clips written, 0 already present" in capsys.readouterr().out
    assert cli.main(argv + change) == 0 and "0 clips written, 2 already present" in capsys.readouterr().out


def test_folder_of_vectors_without_a_record_is_not_mixed_into(tmp_path, face_cli_setup):
    cli, argv = face_cli_setup
    (tmp_path / "out").mkdir()
    np.save(tmp_path / "out" / "f1.npy", np.zeros(64, np.float32))  # made by hand, or by an older version
    with pytest.raises(SystemExit, match=r"1 \*\.npy file\(s\) made with unknown settings.*--overwrite"):
        cli.main(argv)
    assert cli.main(argv + ["--overwrite"]) == 0
    assert np.abs(np.load(tmp_path / "out" / "f1.npy")).sum() > 0


# ---- bad options: one line, nothing created -------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (["--output", "FILE"], "is a file, not a folder"),
        (["--device", "gpu0"], "--device 'gpu0': not a device"),
        (["--frames_per_forward", "0"], "--frames_per_forward must be an integer of at least 1"),
        (["--batch_size", "0"], "--batch_size must be an integer of at least 1"),
        (["--max_frames", "0"], "--max_frames must be an integer of at least 1"),
    ],
    ids=["output-is-a-file", "device", "frames_per_forward", "batch_size", "max_frames"],
)
def test_bad_option_is_one_line_before_any_output(tmp_path, face_cli_setup, change, message):
    cli, argv = face_cli_setup
    (tmp_path / "a_file").write_text("not a folder")
    change = [str(tmp_path / "a_file") if arg == "FILE" else arg for arg in change]
    with pytest.raises(SystemExit) as err:
        cli.main(argv + change)
    assert message in str(err.value.code) and "\n" not in str(err.value.code)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message for a machine without CUDA")
def test_cuda_device_without_a_gpu_is_one_line(tmp_path, face_cli_setup):
    cli, argv = face_cli_setup
    with pytest.raises(SystemExit, match="no CUDA GPU is visible"):
        cli.main(argv + ["--device", "cuda"])


# ---- oddities reported in the summary ------------------------------------------------------


def test_video_summary_names_clips_shorter_than_the_encoder_samples(tmp_path, video_model):
    clips = [write_npy(tmp_path / "short.npy", smooth_frames(5)), write_npy(tmp_path / "long.npy", smooth_frames(20))]
    summary = extract_video_mae_features(video_model, clips, tmp_path / "out")
    assert summary.short == ["short"]
    assert "1 clip(s) have fewer than 16 frames, so frames were repeated: short" in describe_summary(summary, "out")


def test_empty_input_folder_is_reported(tmp_path, face_cli_setup, capsys):
    cli, argv = face_cli_setup
    empty = tmp_path / "empty"
    empty.mkdir()
    argv[argv.index("--input") + 1] = str(empty)
    assert cli.main(argv) == 0
    assert "note: no clips found in --input" in capsys.readouterr().out


def test_clip_given_as_mp4_and_avi_uses_one_and_says_so(tmp_path, face_model):
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "c1.avi", smooth_frames(4))
    write_video(tmp_path / "in" / "c1.mp4", smooth_frames(4, seed=9))
    summary = extract_face_mae_features(face_model, list_clips(tmp_path / "in"), tmp_path / "out")
    assert summary.done == 1 and [name for name, _, _ in summary.duplicates] == ["c1"]
    line = describe_summary(summary, tmp_path / "out")
    assert "clip 'c1' is given more than once; used" in line and "c1.avi" in line and "c1.mp4" in line


def test_clip_names_are_nfc_whatever_the_file_system_stores(tmp_path, face_model):
    decomposed = unicodedata.normalize("NFD", "café")  # how macOS hands out the name
    clip = write_npy(tmp_path / f"{decomposed}.npy", smooth_frames(2))
    extract_face_mae_features(face_model, [clip], tmp_path / "out")
    assert [p.stem for p in (tmp_path / "out").glob("*.npy")] == [unicodedata.normalize("NFC", "café")]
