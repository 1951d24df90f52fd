"""What a new user gets wrong with ``python -m minigpt4.detect``: each ends as one line naming the
thing and the problem, a report line where skipping was asked, or a correct result."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from conftest import load_script
from detect_fixtures import detect_config, read_timeline, subprocess_env
from minigpt4.common.config import ConfigError
from minigpt4.datasets.frames import ClipReadError
from minigpt4.detect import __main__ as detect_main
from minigpt4.detect.config import load_detect_config
from minigpt4.detect.outputs import SUMMARY_JSON
from minigpt4.detect.run import detect
from minigpt4.probe.artifact import ARRAYS_NAME, JSON_NAME, DetectorFileError
from minigpt4.runners.common import run_cli

ROOT = Path(__file__).resolve().parents[1]


def blank_video(path: Path, seconds: float = 3.0, fps: int = 10) -> Path:
    """A recording of an empty room: background and noise, no face."""
    sessions = load_script("tiny_sessions")
    rng = np.random.default_rng(0)
    frames = np.stack([sessions.render_frame(120, 160, [], rng) for _ in range(int(seconds * fps))])
    sessions.write_video(path, frames, fps=fps)
    return path


def run_command(cfg_path: Path, tiny_assets, *options: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "minigpt4.detect", "--cfg-path", str(cfg_path)]
    if options:
        argv += ["--options", *options]
    return subprocess.run(argv, cwd=ROOT, env=subprocess_env(tiny_assets), input=stdin, capture_output=True, timeout=300)


def command_error(cfg_path: Path, monkeypatch, *options: str) -> str:
    """What ``python -m minigpt4.detect`` ends with, run in this process: its one-line error (the
    entry point's own ``run_cli`` turns a user error into it; one test below runs the real process)."""
    monkeypatch.setattr(detect_main, "setup_logging", lambda: None)  # leave pytest's log capture alone
    argv = ["--cfg-path", str(cfg_path), *(["--options", *options] if options else [])]
    with pytest.raises(SystemExit) as caught:
        run_cli(lambda: detect_main.main(argv))
    return str(caught.value.code)


def yaml_config(path: Path, detector: Path, tiny_assets, source: Path | str, out: Path, **extra) -> Path:
    cfg = {"detect": {
        "detector": str(detector), "input": {"path": str(source)}, "output_dir": str(out), "threads": 1, "progress": False,
        "window": {"length_s": 1.6, "hop_s": 1.6},
        "encoders": {"face_mae": str(tiny_assets["face_mae_ckpt"])}, **extra,
    }}
    path.write_text(yaml.safe_dump(cfg))
    return path


# --------------------------------------------------------------------------- recordings


def test_a_video_without_any_face_gives_no_face_windows_and_no_probability(session_detectors, tiny_assets, tmp_path):
    _, folders, _, _ = session_detectors
    video = blank_video(tmp_path / "empty_room.mp4")
    summary = detect(detect_config(folders["facemae"], tiny_assets, tmp_path / "out", input__path=str(video)))
    rows = read_timeline(tmp_path / "out" / "empty_room" / "timeline.csv")
    assert len(rows) == summary.windows == 3  # 3 s in windows of 1.6 s every 0.8 s, the short last one (1.6-3.0 s) kept
    assert summary.windows_with_estimate == 0
    assert all(row["status"] == "no_face" and row["p_mw"] == row["p_mw_calibrated"] == row["mw"] == "" for row in rows)
    assert all(float(row["coverage"]) == 0.0 for row in rows)
    written = json.loads((tmp_path / "out" / "empty_room" / SUMMARY_JSON).read_text())
    assert written["windows_without_face"] == 3 and written["share_mw"] is None


@pytest.mark.parametrize("short_last, windows, kept, dropped", [("keep", 7, 1, 0), ("drop", 6, 0, 1)])
def test_a_last_window_shorter_than_length_s_is_kept_or_dropped_and_reported(
    session_detectors, tiny_assets, tmp_path, short_last, windows, kept, dropped
):
    """10 s in windows of 1.6 s every 1.6 s: six whole ones and 0.4 s left."""
    _, folders, _, _ = session_detectors
    video = tiny_assets["llama_dir"].parent / "sessions" / "videos" / "session_0.mp4"
    cfg = detect_config(folders["facemae"], tiny_assets, tmp_path / "out", input__path=str(video),
                        window__hop_s=1.6, window__short_last=short_last)
    assert detect(cfg).windows == windows
    rows = read_timeline(tmp_path / "out" / "session_0" / "timeline.csv")
    assert [float(row["start_s"]) for row in rows] == pytest.approx([1.6 * k for k in range(windows)])
    if kept:
        assert (float(rows[-1]["start_s"]), float(rows[-1]["end_s"])) == pytest.approx((9.6, 10.0))
    summary = json.loads((tmp_path / "out" / "session_0" / SUMMARY_JSON).read_text())
    assert (summary["short_windows_kept"], summary["short_windows_dropped"]) == (kept, dropped)


def test_a_corrupt_video_among_good_ones(session_detectors, tiny_assets, tmp_path):
    """Without skip_bad: one line naming it, nothing written; with skip_bad: reported, the rest done."""
    _, folders, _, _ = session_detectors
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(tiny_assets["llama_dir"].parent / "sessions" / "videos" / "session_0.mp4", videos / "a_session.mp4")
    (videos / "b_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    cfg = detect_config(folders["facemae"], tiny_assets, tmp_path / "out", input__path=str(videos), window__hop_s=1.6)
    with pytest.raises(ClipReadError) as caught:
        detect(cfg)
    assert str(caught.value).startswith(f"clip 'b_broken' ({videos / 'b_broken.mp4'}): unreadable video: ")
    assert not (tmp_path / "out").exists()
    cfg.skip_bad = True
    summary = detect(cfg)
    assert summary.recordings == 1 and [bad.clip for bad in summary.skipped] == ["b_broken"]
    report = (tmp_path / "out" / "skipped.tsv").read_text().splitlines()
    assert report[0] == "clip\tfile\tproblem" and report[1].startswith(f"b_broken\t{videos / 'b_broken.mp4'}\tunreadable video")
    assert (tmp_path / "out" / "a_session" / SUMMARY_JSON).is_file()


def test_a_rerun_skips_done_recordings_and_refuses_other_settings(session_detectors, tiny_assets, tmp_path):
    _, folders, _, _ = session_detectors
    video = blank_video(tmp_path / "room.mp4", seconds=2.0)
    cfg = detect_config(folders["facemae"], tiny_assets, tmp_path / "out", input__path=str(video))
    assert detect(cfg).recordings == 1
    assert detect(cfg).already_done == 1
    cfg.window.hop_s = 0.5
    with pytest.raises(Exception) as caught:
        detect(cfg)
    assert "holds files made with other settings (differs in: window.hop_s)" in str(caught.value)
    cfg.overwrite = True
    assert detect(cfg).recordings == 1


# --------------------------------------------------------------------------- the detector folder


@pytest.mark.parametrize("damage, message", [
    ("no_json", "detector {d}: detector.json is missing; export the detector again"),
    ("no_arrays", "detector {d}: detector.safetensors is missing; export the detector again"),
    ("pickle", "{d}/detector.safetensors: a pickle (or a torch.save zip), not safetensors; detectors load no pickle"),
    ("not_json", "{d}/detector.json: not JSON (Expecting value: line 1 column 1 (char 0))"),
    ("other_format", "{d}/detector.json: not a detector of format minigpt4-mw-detector/1 (format: 'something else')"),
])
def test_a_damaged_detector_folder_is_one_line(session_detectors, tiny_assets, tmp_path, damage, message):
    _, folders, _, _ = session_detectors
    folder = tmp_path / "detector"
    shutil.copytree(folders["facemae"], folder)
    if damage == "no_json":
        (folder / JSON_NAME).unlink()
    elif damage == "no_arrays":
        (folder / ARRAYS_NAME).unlink()
    elif damage == "pickle":
        (folder / ARRAYS_NAME).write_bytes(pickle.dumps({"logreg.coef": np.zeros(3)}))
    elif damage == "not_json":
        (folder / JSON_NAME).write_text("")
    else:
        info = json.loads((folder / JSON_NAME).read_text())
        (folder / JSON_NAME).write_text(json.dumps({**info, "format": "something else"}))
    with pytest.raises(DetectorFileError) as caught:
        detect(detect_config(folder, tiny_assets, tmp_path / "out"))
    assert str(caught.value) == message.format(d=folder)
    assert not (tmp_path / "out").exists()


def test_the_command_prints_one_line_for_a_pickled_detector(session_detectors, tiny_assets, tmp_path, monkeypatch):
    _, folders, _, _ = session_detectors
    folder = tmp_path / "detector"
    shutil.copytree(folders["facemae"], folder)
    (folder / ARRAYS_NAME).write_bytes(pickle.dumps([1, 2, 3]))
    cfg = yaml_config(tmp_path / "d.yaml", folder, tiny_assets, tmp_path, tmp_path / "out")
    assert command_error(cfg, monkeypatch) == (
        f"error: {folder}/detector.safetensors: a pickle (or a torch.save zip), not safetensors; detectors load no pickle"
    )
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("option, message", [
    ("detect.window.length_s=0", "detect.window.length_s: must be a positive number of seconds, got 0.0"),
    ("detect.window.hop_s=.nan", "detect.window.hop_s: must be a positive number of seconds, got nan"),
    ("detect.window.short_last=sometimes", "detect.window.short_last: 'sometimes' is not one of drop, keep"),
    ("detect.live.behind=wait", "detect.live.behind: 'wait' is not one of drop, queue"),
    ("detect.live.max_queue=0", "detect.live.max_queue: must be at least 1, got 0"),
])
def test_bad_config_values_are_named(tmp_path, option, message):
    path = tmp_path / "d.yaml"
    path.write_text("detect:\n  detector: d\n  input: {path: v}\n")
    with pytest.raises(ConfigError) as caught:
        load_detect_config(path, [option])
    assert str(caught.value) == message


def test_an_unknown_key_and_a_missing_detector_are_named(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("detect:\n  detector: d\n  input: {path: v}\n  windows: {}\n")
    with pytest.raises(ConfigError, match=r"d.yaml: detect.windows: Key 'windows' not in 'DetectConfig'"):
        load_detect_config(path)
    path.write_text("detect:\n  input: {path: v}\n")
    with pytest.raises(ConfigError, match=r"d.yaml: detect.detector: .* missing mandatory value: detector$"):
        load_detect_config(path)


def test_an_unknown_model_key_is_named(session_detectors, tiny_assets, tmp_path):
    _, folders, _, _ = session_detectors
    with pytest.raises(ConfigError, match=r"^detect.model: unknown key\(s\) \['llama_modle'\]; the detector's model config has "):
        detect(detect_config(folders["facemae"], tiny_assets, tmp_path / "out", model={"llama_modle": "x"}))


def test_missing_encoder_weights_are_named(session_detectors, tiny_assets, tmp_path):
    _, folders, _, _ = session_detectors
    with pytest.raises(ConfigError) as caught:
        detect(detect_config(folders["facemae"], tiny_assets, tmp_path / "out", encoders__face_mae=None))
    assert str(caught.value) == "detect.encoders.face_mae: the detector reads facemae vectors; name the weights to make them with"


# --------------------------------------------------------------------------- live sources


def test_an_unknown_input_format_is_one_line(session_detectors, tiny_assets, tmp_path, monkeypatch):
    _, folders, _, _ = session_detectors
    cfg = yaml_config(tmp_path / "d.yaml", folders["facemae"], tiny_assets, "/dev/video9", tmp_path / "out",
                      live={"follow": True, "stall_s": 1.0})
    last = command_error(cfg, monkeypatch, "detect.input.format=nosuchformat")
    assert last.startswith("error: detect.input.format 'nosuchformat': ") and last.endswith("`ffmpeg -formats`")


def test_a_stream_without_video_is_one_line(session_detectors, tiny_assets, tmp_path, monkeypatch):
    _, folders, _, _ = session_detectors
    sound = tmp_path / "sound.mkv"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    cfg = yaml_config(tmp_path / "d.yaml", folders["facemae"], tiny_assets, sound, tmp_path / "out",
                      live={"follow": True, "stall_s": 1.0})
    assert command_error(cfg, monkeypatch) == f"error: detect.input.path {sound}: the source has no video stream (it holds: audio)"


def test_garbage_on_standard_input_is_one_line(session_detectors, tiny_assets, tmp_path):
    """The real process: standard input, and no traceback on its way out."""
    _, folders, _, _ = session_detectors
    cfg = yaml_config(tmp_path / "d.yaml", folders["facemae"], tiny_assets, "-", tmp_path / "out",
                      live={"follow": True, "stall_s": 2.0})
    done = run_command(cfg, tiny_assets, stdin=bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)))
    assert done.returncode == 1
    last = done.stderr.decode().splitlines()[-1]
    assert last.startswith("error: detect.input.path -: cannot be opened as a video source (")
    assert b"Traceback" not in done.stderr


def test_standard_input_given_on_the_command_line_is_a_dash(tmp_path):
    """``--options detect.input.path=-`` means standard input (YAML would read a list of one null)."""
    path = tmp_path / "d.yaml"
    path.write_text("detect:\n  detector: d\n  input: {path: v}\n")
    assert load_detect_config(path, ["detect.input.path=-"]).input.path == "-"
