"""Prepared output feeds the existing tools unchanged: the encoder scripts and the hcmw dataset.

Also the command line, the encoders run in process, the peak-frame options end to end, and make
demo's prepare step (generated sessions -> prepare -> three encoders -> dump).
"""

from __future__ import annotations

import csv
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
from minigpt4.datasets.audio_track import read_audio_track
from minigpt4.prepare.__main__ import main as prepare_main

ROOT = Path(__file__).resolve().parents[1]
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
        f"encoders.audio.model_dir={tiny_assets['hubert_dir']}",  # the clips have no sound: no audio vectors
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


def test_a_video_without_sound_gives_a_clip_without_sound(prepared):
    """No wav is made up: the report says why there is none, the summary counts it, HuBERT has nothing to encode."""
    report = json.loads((prepared / "tracks" / "clip_a.json").read_text())
    assert report["audio_seconds"] is None
    assert report["no_audio"] == "no audio track (the file holds no sound to encode)"
    assert not (prepared / "audio").exists()
    assert json.loads((prepared / "summary.json").read_text())["without_sound"] == 2
    assert (prepared / "features" / "HL-UTT" / "extraction.json").is_file()
    assert not list((prepared / "features" / "HL-UTT").glob("*.npy"))


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


# --------------------------------------------------------------------------- make demo's prepare step


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_demo_sessions_are_participant_safe(tiny_assets, demo_chain):
    """At least 4 participants (one session each) with at least 5 windows, at least 2 folds, a
    participant's clips in one fold only, both labels in every fold; prepare keeps all of it."""
    prepared, _ = demo_chain
    segments = read_csv(tiny_assets["sessions_segments"])
    by_participant = {}
    for row in segments:
        by_participant.setdefault(row["participant"], set()).add((row["video"], row["test_fold_num"]))
    assert len(by_participant) >= 4
    assert all(len(places) == 1 for places in by_participant.values())  # one session, one fold each
    assert all(sum(r["participant"] == p for r in segments) >= 5 for p in by_participant)
    folds = {row["test_fold_num"] for row in segments}
    assert len(folds) >= 2
    assert all({r["mw_label"] for r in segments if r["test_fold_num"] == fold} == {"MW", "NonMW"} for fold in folds)
    annotation = read_csv(prepared / "annotations.csv")
    assert list(annotation[0]) == ["uuid", "mw_label", "test_fold_num", "participant", "video", "start_s", "end_s"]
    keys = ("mw_label", "test_fold_num", "participant", "video", "start_s", "end_s")
    expected = [{"uuid": r["clip"], **{k: r[k] for k in keys}} for r in segments]
    assert annotation == expected  # every window prepared


def test_the_demo_sessions_keep_the_main_face_when_a_second_one_crosses(demo_chain):
    """Session 1 has a smaller, cool-skinned face crossing behind the main one: its windows keep the
    main (warm) face in every frame."""
    prepared, _ = demo_chain
    sessions = load_script("tiny_sessions")
    for clip in ("s1_probe2", "s1_probe3"):
        report = json.loads((prepared / "tracks" / f"{clip}.json").read_text())
        assert report["coverage"] >= 0.9 and report["frames_written"] == report["frames_kept"] == 16
        assert report["people_seen"] >= 2 and report["times_left_out"] == []
        cheeks = np.load(prepared / "face_arrays" / f"{clip}.npy")[:, 140:157, 35:50].reshape(-1, 3).mean(0)
        assert np.abs(cheeks / cheeks.mean() - np.array(sessions.SKIN) / np.mean(sessions.SKIN)).max() < 0.1


def test_the_windows_sound_is_cut_at_16_khz_with_the_labels_pitch(demo_chain):
    """Each window's wav: 1.6 s at 16 kHz, the pitch the session's sound gives its label."""
    prepared, _ = demo_chain
    sessions = load_script("tiny_sessions")
    for row in read_csv(prepared / "annotations.csv"):
        samples = read_audio_track(prepared / "audio" / f"{row['uuid']}.wav", 16_000)
        assert len(samples) == round((float(row["end_s"]) - float(row["start_s"])) * 16_000)
        pitch = np.fft.rfftfreq(len(samples), 1 / 16_000)[np.argmax(np.abs(np.fft.rfft(samples)))]
        assert pitch == pytest.approx(sessions.SESSION_TONE_HZ[row["mw_label"]], abs=1)
        report = json.loads((prepared / "tracks" / f"{row['uuid']}.json").read_text())
        assert report["audio_seconds"] == pytest.approx(1.6)


def test_the_demo_dump_of_the_prepared_clips_has_three_streams(demo_chain):
    prepared, dump_dir = demo_chain
    clips = [row["uuid"] for row in read_csv(prepared / "annotations.csv")]
    assert (dump_dir / "names.txt").read_text().split() == clips
    audio = np.load(dump_dir / "audio_projected_features.npy")
    assert audio.shape == (len(clips), 64) and np.isfinite(audio.astype(np.float32)).all()


def test_the_encoders_run_in_process_give_the_scripts_vectors(demo_chain):
    """encoders.run with encoders.audio.model_dir: the vectors the three extraction commands give."""
    prepared, _ = demo_chain
    pairs = {"face_mae_in_process": "mae_340_UTT", "video_mae_in_process": "maeV_199_UTT", "audio_in_process": "HL-UTT"}
    for in_process, by_script in pairs.items():
        files = sorted((prepared / "features" / by_script).glob("*.npy"))
        assert len(files) == 20
        for path in files:
            np.testing.assert_allclose(np.load(prepared / "features" / in_process / path.name), np.load(path), rtol=1e-5, atol=1e-6)
