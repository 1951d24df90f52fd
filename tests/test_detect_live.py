"""Live detection (SPEC section 15): a recording written out at real-time pace into a pipe or a
growing Matroska file is followed, each window's estimate a JSON line as soon as it is done."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from detect_fixtures import detect_config, read_timeline, subprocess_env
from minigpt4.detect import features as detect_features
from minigpt4.detect import live as detect_live
from minigpt4.detect.outputs import COLUMNS
from minigpt4.detect.run import detect

ROOT = Path(__file__).resolve().parents[1]
HOP_S = 1.6  # as long as the windows: an estimate every 1.6 s
WINDOWS = 7  # 10 s: six windows of 1.6 s and the last 0.4 s, kept


def session_video(tiny_assets) -> Path:
    return tiny_assets["llama_dir"].parent / "sessions" / "videos" / "session_0.mp4"


def write_config(path: Path, detector: Path, tiny_assets, out: Path, source: str, **live) -> Path:
    cfg = {
        "detect": {
            "detector": str(detector),
            "input": {"path": source},
            "output_dir": str(out),
            "window": {"length_s": 1.6, "hop_s": HOP_S, "short_last": "keep"},
            "encoders": {"face_mae": str(tiny_assets["face_mae_ckpt"])},
            "threads": 1,
            "progress": False,
            "live": {"behind": "queue", "stall_s": 3.0, "plot_every_s": 5.0, **live},
        }
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


class Follower:
    """``python -m minigpt4.detect --follow`` in a subprocess: its stdout lines with their arrival times."""

    def __init__(self, cfg: Path, tiny_assets, stdin=None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "minigpt4.detect", "--cfg-path", str(cfg), "--follow"], cwd=ROOT,
            env=subprocess_env(tiny_assets), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[tuple[float, dict]] = []
        self.stderr: list[str] = []
        self.waiting = threading.Event()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), json.loads(line)))

    def _read_stderr(self):
        for line in self.process.stderr:
            self.stderr.append(line)
            if "live: waiting for" in line:
                self.waiting.set()

    def finish(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        time.sleep(0.2)  # the reader threads drain what is left
        return code

    @property
    def windows(self) -> list[dict]:
        return [line for _, line in self.lines if "window" in line]


def writer(source: Path, target: str, stdout=None, speed: float = 1.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "stream_recording.py"), str(source), target,
                             "--speed", str(speed)], stdout=stdout)


@pytest.fixture(scope="module")
def offline(session_detectors, tiny_assets, tmp_path_factory):
    """The facemae detector offline on the finished Matroska file the writers produce."""
    _, folders, _, _ = session_detectors
    root = tmp_path_factory.mktemp("offline")
    finished = root / "session_0.mkv"
    assert writer(session_video(tiny_assets), str(finished), speed=1000).wait(timeout=60) == 0
    detect(detect_config(folders["facemae"], tiny_assets, root / "out", input__path=str(finished), window__hop_s=HOP_S))
    return [float(row["p_mw"]) for row in read_timeline(root / "out" / "session_0" / "timeline.csv")]


def check_live_run(follower: Follower, writer_done: float, offline: list[float], out: Path, name: str) -> None:
    windows = follower.windows
    assert len(windows) == len(offline) == WINDOWS
    np.testing.assert_allclose([w["p_mw"] for w in windows], offline, rtol=0, atol=1e-5)
    first_arrival = follower.lines[0][0]
    assert first_arrival < writer_done  # estimates while the recording runs
    assert all(w["latency_s"] < HOP_S for w in windows[:-1])  # the last is only known at the end of the stream
    summary = follower.lines[-1][1]["summary"]
    assert summary["windows"] == WINDOWS and summary["dropped"] == 0
    rows = read_timeline(out / name / "timeline.csv")
    assert [float(r["p_mw"]) for r in rows] == pytest.approx([w["p_mw"] for w in windows], abs=1e-7)
    assert (out / name / "timeline.png").is_file() and json.loads((out / name / "summary.json").read_text())["windows"] == WINDOWS


def test_live_from_a_pipe_equals_offline_and_comes_while_it_is_written(session_detectors, tiny_assets, offline, tmp_path):
    _, folders, _, _ = session_detectors
    cfg = write_config(tmp_path / "live.yaml", folders["facemae"], tiny_assets, tmp_path / "out", "-")
    read_end, write_end = os.pipe()
    follower = Follower(cfg, tiny_assets, stdin=read_end)
    os.close(read_end)
    assert follower.waiting.wait(timeout=120), "".join(follower.stderr)
    with os.fdopen(write_end, "wb") as pipe:
        assert writer(session_video(tiny_assets), "-", stdout=pipe).wait(timeout=60) == 0
    writer_done = time.monotonic()
    assert follower.finish() == 0, "".join(follower.stderr)
    check_live_run(follower, writer_done, offline, tmp_path / "out", "stdin")
    assert follower.lines[-1][1]["summary"]["ended"] == "the stream ended"


def test_live_from_a_growing_file_equals_offline(session_detectors, tiny_assets, offline, tmp_path):
    _, folders, _, _ = session_detectors
    growing = tmp_path / "camera.mkv"
    cfg = write_config(tmp_path / "live.yaml", folders["facemae"], tiny_assets, tmp_path / "out", str(growing), stall_s=2.0)
    follower = Follower(cfg, tiny_assets)
    assert follower.waiting.wait(timeout=120), "".join(follower.stderr)
    assert writer(session_video(tiny_assets), str(growing)).wait(timeout=60) == 0
    writer_done = time.monotonic()
    assert follower.finish() == 0, "".join(follower.stderr)
    check_live_run(follower, writer_done, offline, tmp_path / "out", "camera")
    assert "the file grew no more for 2.0 s" in follower.lines[-1][1]["summary"]["ended"]


SLOW_S = 0.6  # what the slowed model adds to each window


@pytest.mark.parametrize("behind", ["drop", "queue"])
def test_a_slow_model_drops_windows_or_queues_them(session_detectors, tiny_assets, tmp_path, monkeypatch, capsys, behind):
    """Each window takes SLOW_S more while one closes every 0.2 s (written at four times real time)."""
    _, folders, _, _ = session_detectors
    features = detect_features.FeatureParts.features

    def slow(self, *args, **kwargs):
        time.sleep(SLOW_S)
        return features(self, *args, **kwargs)

    monkeypatch.setattr(detect_features.FeatureParts, "features", slow)
    growing = tmp_path / "camera.mkv"
    cfg = detect_config(folders["facemae"], tiny_assets, tmp_path / "out", input__path=str(growing), live__follow=True,
                        live__behind=behind, live__max_queue=1, live__stall_s=3.0)
    # the recording starts when detect opens its source (a camera switched on for a ready detector):
    # started earlier, a slow start-up could find the whole file written and keep only its last window
    producers = []
    open_live = detect_live.open_live

    def open_when_recording(*args):
        producers.append(writer(session_video(tiny_assets), str(growing), speed=4.0))
        return open_live(*args)

    monkeypatch.setattr(detect_live, "open_live", open_when_recording)
    try:
        detect(cfg)
    finally:
        for producer in producers:
            producer.wait(timeout=60)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    windows = [line for line in lines if "window" in line]
    dropped = [i for line in lines if "dropped" in line for i in line["dropped"]]
    summary = lines[-1]["summary"]
    assert summary["dropped"] == len(dropped)
    assert sorted([w["window"] for w in windows] + dropped) == list(range(12))  # each window scored or reported dropped
    if behind == "queue":
        assert not dropped and len(windows) == 12
    else:
        # bounded: a kept window waits for at most the one being processed (the last window is only
        # known once the file has grown no more for stall_s)
        assert dropped and max(w["latency_s"] for w in windows[:-1]) < 5 * SLOW_S


def test_sigint_in_a_window_leaves_a_complete_timeline_and_exit_status_0(session_detectors, tiny_assets, tmp_path):
    _, folders, _, _ = session_detectors
    growing = tmp_path / "camera.mkv"
    cfg = write_config(tmp_path / "live.yaml", folders["facemae"], tiny_assets, tmp_path / "out", str(growing))
    follower = Follower(cfg, tiny_assets)
    assert follower.waiting.wait(timeout=120)
    producer = writer(session_video(tiny_assets), str(growing))
    deadline = time.monotonic() + 60
    while not follower.windows and time.monotonic() < deadline:
        time.sleep(0.05)
    follower.process.send_signal(signal.SIGINT)
    assert follower.finish(timeout=60) == 0, "".join(follower.stderr)
    producer.kill()
    with (tmp_path / "out" / "camera" / "timeline.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == COLUMNS and all(len(row) == len(COLUMNS) for row in rows)
    assert [int(row[1]) for row in rows[1:]] == [w["window"] for w in follower.windows]
    assert 1 <= len(follower.windows) < WINDOWS
    assert follower.lines[-1][1]["summary"]["ended"] == "stopped by a signal"
    assert not any("Traceback" in line for line in follower.stderr)


def test_a_stalled_pipe_ends_after_stall_s_with_a_named_message(session_detectors, tiny_assets, tmp_path):
    _, folders, _, _ = session_detectors
    finished = tmp_path / "session.mkv"
    assert writer(session_video(tiny_assets), str(finished), speed=1000).wait(timeout=60) == 0
    half = finished.read_bytes()[: finished.stat().st_size // 2]
    cfg = write_config(tmp_path / "live.yaml", folders["facemae"], tiny_assets, tmp_path / "out", "-", stall_s=2.0)
    read_end, write_end = os.pipe()
    follower = Follower(cfg, tiny_assets, stdin=read_end)
    os.close(read_end)
    assert follower.waiting.wait(timeout=120)
    with os.fdopen(write_end, "wb", buffering=0) as pipe:
        pipe.write(half)  # then nothing more, the pipe left open
        started = time.monotonic()
        assert follower.finish(timeout=60) == 0, "".join(follower.stderr)
        took = time.monotonic() - started
    assert follower.lines[-1][1]["summary"]["ended"] == "the source delivered nothing for 2.0 s (live.stall_s)"
    assert 1 <= len(follower.windows) and took < 30
