"""Prepared output feeds the existing tools unchanged: both encoder scripts and the hcmw dataset.

Also the command line, the encoders run in process, and the peak-frame options end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from PIL import Image

import extract_mae_embedding
import extract_maeVideo_embedding
from minigpt4.common.registry import registry
from minigpt4.prepare.__main__ import main as prepare_main

HEIGHT, WIDTH, FRAMES = 128, 160, 10
CLIPS = {"clip_a": "MW", "clip_b": "NonMW"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The frames here are tiny: one thread beats two, by far when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """Two clip videos of a moving face (the second smiles in frame 6) and their labels CSV."""
    sessions = load_script("tiny_sessions")
    folder = tmp_path_factory.mktemp("clips")
    (folder / "videos").mkdir()
    rng = np.random.default_rng(0)
    for number, clip in enumerate(CLIPS):
        frames = []
        for t in range(FRAMES):
            look = {"mouth_open": 1.0, "smile": 1.0} if (number == 1 and t == 6) else {}
            face = sessions.DrawnFace(cy=60.0 + t, cx=60.0 + 4.0 * t, r=24.0, **look)
            frames.append(sessions.render_frame(HEIGHT, WIDTH, [face], rng))
        sessions.write_video(folder / "videos" / f"{clip}.mp4", np.stack(frames), fps=25)
    lines = ["clip,mw_label,test_fold_num,participant"] + [f"{clip},{label},{i},p{i}" for i, (clip, label) in enumerate(CLIPS.items())]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def write_config(path: Path, clip_folder: Path, out: Path, extra: str = "") -> Path:
    path.write_text(
        f"input:\n  videos: {clip_folder / 'videos'}\n  labels: {clip_folder / 'labels.csv'}\n"
        f"output: {out}\nprogress: false\ndetector: {{min_face_size: 30}}\n{extra}"
    )
    return path


@pytest.fixture(scope="module")
def prepared(clip_folder, tiny_assets, tmp_path_factory):
    """The clips prepared by the command, FaceMAE and VideoMAE run at the end (tiny encoders)."""
    folder = tmp_path_factory.mktemp("prepared")
    cfg = write_config(folder / "prepare.yaml", clip_folder, folder / "out")
    options = [
        "encoders.run=true",
        "encoders.face_mae.model=face_mae_tiny",
        f"encoders.face_mae.checkpoint={tiny_assets['face_mae_ckpt']}",
        "encoders.video_mae.model=video_mae_tiny",
        f"encoders.video_mae.checkpoint={tiny_assets['video_mae_ckpt']}",
        "encoders.batch_size=2",
    ]
    assert prepare_main(["--cfg-path", str(cfg), "--options", *options]) == 0
    return folder / "out"


def test_the_command_writes_the_section_6_layout(prepared):
    for clip in CLIPS:
        assert (prepared / "images" / clip / f"{clip}_peak_frame.png").is_file()
        assert len(list((prepared / "face_frames" / clip).glob(f"{clip}_*.png"))) == FRAMES
        assert np.load(prepared / "face_arrays" / f"{clip}.npy").shape == (FRAMES, 224, 224, 3)
    # a folder of clips: the participant from the labels CSV, the video is the clip's file, no window
    assert (prepared / "annotations.csv").read_text().splitlines() == [
        "uuid,mw_label,test_fold_num,participant,video,start_s,end_s",
        "clip_a,MW,0,p0,clip_a.mp4,,",
        "clip_b,NonMW,1,p1,clip_b.mp4,,",
    ]
    summary = json.loads((prepared / "summary.json").read_text())
    assert summary["prepared"] == 2 and summary["frames_written"] == 2 * FRAMES


def test_the_encoder_scripts_read_the_prepared_faces_and_agree_with_the_in_process_run(prepared, tiny_assets, tmp_path):
    """extract_mae_embedding.py on face_frames/ and extract_maeVideo_embedding.py on face_arrays/,
    unchanged, give the vectors that ``encoders.run`` wrote."""
    face_args = ["--input", str(prepared / "face_frames"), "--output", str(tmp_path / "face")]
    face_args += ["--checkpoint", str(tiny_assets["face_mae_ckpt"]), "--model", "face_mae_tiny", "--device", "cpu"]
    video_args = ["--input", str(prepared / "face_arrays"), "--output", str(tmp_path / "video")]
    video_args += ["--checkpoint", str(tiny_assets["video_mae_ckpt"]), "--model", "video_mae_tiny", "--device", "cpu"]
    assert extract_mae_embedding.main(face_args) == 0
    assert extract_maeVideo_embedding.main(video_args) == 0
    for clip in CLIPS:
        for script_dir, prepare_dir in (("face", "mae_340_UTT"), ("video", "maeV_199_UTT")):
            by_script = np.load(tmp_path / script_dir / f"{clip}.npy")
            in_process = np.load(prepared / "features" / prepare_dir / f"{clip}.npy")
            assert by_script.shape == (64,)
            np.testing.assert_allclose(in_process, by_script, rtol=1e-5, atol=1e-6)


def test_the_hcmw_dataset_reads_the_prepared_root(prepared):
    builder = registry.get("builder", "hcmw_caption")(
        {
            "build_info": {
                "annotation": str(prepared / "annotations.csv"),
                "image_root": str(prepared / "images"),
                "feature_root": str(prepared / "features"),
            },
            "feature_dim": 64,
            "vis_processor": {"train": {"image_size": 32}, "eval": {"image_size": 32}},
        }
    )
    items = builder.build("all")
    assert [item["video_id"] for item in items] == list(CLIPS)
    assert items[1]["answer"] == "non-mind wandering" and items[0]["image"].shape == (3, 32, 32)
    face_vector = np.load(prepared / "features" / "mae_340_UTT" / "clip_b.npy")
    np.testing.assert_allclose(items[1]["video_features"][0].numpy(), face_vector)


def test_expression_peak_is_the_smiling_frame(prepared):
    report = json.loads((prepared / "tracks" / "clip_b.json").read_text())
    assert report["peak_rule"] == "expression" and report["peak_frame"] == 6
    peak = np.asarray(Image.open(prepared / "images" / "clip_b" / "clip_b_peak_frame.png"))
    assert np.array_equal(peak, np.asarray(Image.open(prepared / "face_frames" / "clip_b" / "clip_b_00006.png")))


def test_openface_peak_and_whole_frame_image(clip_folder, tmp_path):
    openface = tmp_path / "openface"
    openface.mkdir()
    for clip in CLIPS:  # OpenFace CSVs: leading spaces in the header, as OpenFace writes them
        rows = [f"{t + 1}, 0, {t * 0.04:.3f}, 0.98, 1, {0.5 if t != 3 else 3.0}, 0.2" for t in range(FRAMES)]
        (openface / f"{clip}.csv").write_text("frame, face_id, timestamp, confidence, success, AU06_r, AU12_r\n" + "\n".join(rows) + "\n")
    extra = f"peak: {{rule: openface, openface_dir: {openface}, image: frame}}\n"
    cfg = write_config(tmp_path / "prepare.yaml", clip_folder, tmp_path / "out", extra)
    assert prepare_main(["--cfg-path", str(cfg), "--options", "detector.detect_every=3", "align.size=96"]) == 0
    report = json.loads((tmp_path / "out" / "tracks" / "clip_a.json").read_text())
    assert report["peak_frame"] == 3 and report["peak_rule"] == "openface"
    peak = np.asarray(Image.open(tmp_path / "out" / "images" / "clip_a" / "clip_a_peak_frame.png"))
    assert peak.shape == (HEIGHT, WIDTH, 3)  # the whole upright frame
    assert np.load(tmp_path / "out" / "face_arrays" / "clip_a.npy").shape == (FRAMES, 96, 96, 3)


@pytest.mark.parametrize("rule, index", [("first", 0), ("middle", FRAMES // 2)])
def test_first_and_middle_peak_rules(clip_folder, tmp_path, rule, index):
    cfg = write_config(tmp_path / "prepare.yaml", clip_folder, tmp_path / "out", f"peak: {{rule: {rule}}}\n")
    assert prepare_main(["--cfg-path", str(cfg), "--options", "detector.detect_every=5"]) == 0
    assert json.loads((tmp_path / "out" / "tracks" / "clip_a.json").read_text())["peak_frame"] == index


def test_the_command_reports_bad_input_in_one_line(clip_folder, tmp_path):
    cfg = write_config(tmp_path / "prepare.yaml", clip_folder, tmp_path / "out")
    with pytest.raises(SystemExit, match=r"^error: prepare config: track\.rule: Invalid value 'biggest'"):
        prepare_main(["--cfg-path", str(cfg), "--options", "track.rule=biggest"])
    (tmp_path / "labels.csv").write_text("clip,mw_label,test_fold_num\nclip_a,MW,0\n")
    with pytest.raises(SystemExit, match=r"no row for clip\(s\) clip_b"):
        prepare_main(["--cfg-path", str(cfg), "--options", f"input.labels={tmp_path / 'labels.csv'}"])
    assert not (tmp_path / "out").exists()


def test_the_demo_sessions_cut_into_labelled_clips_with_the_main_face(tiny_assets, tmp_path):
    """The generated sessions (make_tiny_assets part `sessions`): every window lies inside its
    video, and the two windows of the session with a crossing face keep the main (warm) face."""
    from minigpt4.prepare.cut import read_segments
    from minigpt4.prepare.decode import VideoSource

    sessions = load_script("tiny_sessions")
    plans = read_segments(tiny_assets["sessions_segments"], tiny_assets["sessions_videos"])
    assert len(plans) == 10 and {plan.labels["mw_label"] for plan in plans} == {"MW", "NonMW"}
    assert all(plan.end_s <= VideoSource(plan.video, plan.clip).duration for plan in plans)
    rows = ["video,clip,start_s,end_s"] + [f"{p.video.name},{p.clip},{p.start_s},{p.end_s}" for p in plans if p.clip in ("s1_probe2", "s1_probe3")]
    (tmp_path / "two.csv").write_text("\n".join(rows) + "\n")
    cfg = write_config(tmp_path / "prepare.yaml", tmp_path, tmp_path / "out")
    options = [f"input.videos={tiny_assets['sessions_videos']}", f"input.segments={tmp_path / 'two.csv'}", "input.labels=null"]
    options += ["detector.min_face_size=20", "detector.detect_every=2", "align.size=64"]
    assert prepare_main(["--cfg-path", str(cfg), "--options", *options]) == 0
    for clip in ("s1_probe2", "s1_probe3"):
        report = json.loads((tmp_path / "out" / "tracks" / f"{clip}.json").read_text())
        assert report["coverage"] >= 0.9 and report["frames_written"] == report["frames_kept"] == 16
        cheeks = np.load(tmp_path / "out" / "face_arrays" / f"{clip}.npy")[:, 40:45, 10:16].reshape(-1, 3).mean(0)
        assert np.abs(cheeks / cheeks.mean() - np.array(sessions.SKIN) / np.mean(sessions.SKIN)).max() < 0.1
