"""Bad input to the prepare job ends as one line naming the file, row or key, before anything is
written (SPEC section 11).  The checks here run before any face detection: they are fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, load_script

from minigpt4.common.config import ConfigError
from minigpt4.datasets.errors import DataError
from minigpt4.features.writer import FeatureOutputError
from minigpt4.prepare.__main__ import main as prepare_main
from minigpt4.prepare.config import load_prepare_config, written_settings
from minigpt4.prepare.cut import SegmentError, list_clip_videos, read_segments
from minigpt4.prepare.run import prepare


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Two short clip videos (a drawn face): enough for the plan, never detected here."""
    sessions = load_script("tiny_sessions")
    folder = tmp_path_factory.mktemp("videos")
    frame = sessions.render_frame(64, 64, [sessions.DrawnFace(32.0, 32.0, 12.0)])
    for clip in ("clip_a", "clip_b"):
        sessions.write_video(folder / f"{clip}.mp4", np.stack([frame] * 3), fps=10)
    return folder


def config(tmp_path: Path, videos: Path, *options: str):
    return load_prepare_config(None, [f"input.videos={videos}", f"output={tmp_path / 'out'}", "progress=false", *options])


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_a_labels_csv_listing_a_clip_twice_names_both_rows(tmp_path, videos):
    labels = write_csv(tmp_path / "labels.csv", "clip,mw_label,test_fold_num\nclip_a,MW,0\nclip_b,MW,1\nclip_a,NonMW,0\n")
    with pytest.raises(SegmentError) as error:
        prepare(config(tmp_path, videos, f"input.labels={labels}"))
    assert str(error.value) == f"{labels} row 4: clip id 'clip_a' is already used by row 2; ids must be unique"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "row, message",
    [
        ("s.mp4,p1,0,1,mw,0", "row 2: mw_label 'mw' of clip 'p1' is not one of MW, NonMW"),
        ("s.mp4,p1,0,1,,0", "row 2: mw_label '' of clip 'p1' is not one of MW, NonMW"),
        ("s.mp4,p1,0,1,MW,1.5", "row 2: test_fold_num '1.5' of clip 'p1' is not an integer"),
        ("s.mp4,p1,0,1,MW,", "row 2: test_fold_num '' of clip 'p1' is not an integer"),
    ],
)
def test_labels_the_hcmw_dataset_would_refuse_are_refused_with_their_row(tmp_path, row, message):
    segments = write_csv(tmp_path / "segments.csv", f"video,clip,start_s,end_s,mw_label,test_fold_num\n{row}\n")
    with pytest.raises(SegmentError) as error:
        read_segments(segments, tmp_path)
    assert str(error.value) == f"{segments} {message}"


def test_a_bad_fold_in_a_labels_csv_names_the_row(tmp_path, videos):
    labels = write_csv(tmp_path / "labels.csv", "clip,mw_label,test_fold_num\nclip_a,MW,0\nclip_b,NonMW,one\n")
    with pytest.raises(SegmentError) as error:
        list_clip_videos(videos, labels)
    assert str(error.value) == f"{labels} row 3: test_fold_num 'one' of clip 'clip_b' is not an integer"


def test_a_utf16_segments_csv_is_read_and_a_latin1_one_is_refused_naming_the_file(tmp_path):
    text = "video,clip,start_s,end_s,mw_label,test_fold_num,participant\nséance.mp4,é1,0,1,MW,0,Zoë\n"
    plans = read_segments(write_csv(tmp_path / "utf16.csv", text, "utf-16"), tmp_path)
    assert [(p.clip, p.participant, p.video_name, p.labels) for p in plans] == [
        ("é1", "Zoë", "séance.mp4", {"mw_label": "MW", "test_fold_num": "0"})
    ]
    latin1 = write_csv(tmp_path / "latin1.csv", text, "latin-1")
    with pytest.raises(DataError) as error:
        read_segments(latin1, tmp_path)
    offset = text.encode("latin-1").index("é".encode("latin-1"))
    assert str(error.value) == f"{latin1}: not UTF-8 text (byte 0xe9 at offset {offset}); save it as UTF-8"


@pytest.mark.parametrize(
    "options, message",
    [
        (["encoders.face_mae.model=video_mae_tiny"], "encoders.face_mae: encoder 'video_mae_tiny' is not a FaceMAE; choose one of: face_mae_tiny, face_mae_vit_large"),
        (["encoders.face_mae.model=face_mae_tiny"], "encoders.face_mae: FaceMAE checkpoint: {ckpt} is not a readable torch checkpoint (not a torch.save file)"),
    ],
)
def test_encoders_are_checked_before_the_first_clip(tmp_path, videos, options, message):
    ckpt = write_csv(tmp_path / "garbage.pth", "not a checkpoint")
    encoders = ["encoders.run=true", f"encoders.face_mae.checkpoint={ckpt}", f"encoders.video_mae.checkpoint={ckpt}"]
    with pytest.raises(ConfigError) as error:
        prepare(config(tmp_path, videos, *encoders, *options))
    assert str(error.value) == message.format(ckpt=ckpt)
    assert not (tmp_path / "out").exists()


def test_an_output_of_older_runs_without_a_record_is_refused(tmp_path, videos):
    (tmp_path / "out" / "tracks").mkdir(parents=True)
    (tmp_path / "out" / "tracks" / "clip_a.json").write_text("{}")
    with pytest.raises(FeatureOutputError) as error:
        prepare(config(tmp_path, videos))
    assert str(error.value) == (
        f"{tmp_path / 'out'} holds 1 tracks/*.json file(s) made with unknown settings (no extraction.json); "
        "refusing to mix them. Pass --overwrite to replace them, or choose another --output"
    )


def test_the_command_refuses_a_rerun_with_other_settings_in_one_line(tmp_path, videos):
    """Through `python -m minigpt4.prepare`: one `error:` line naming the keys, no traceback."""
    out = tmp_path / "out"
    out.mkdir()
    earlier = written_settings(config(tmp_path, videos, "align.size=112", "detector.detect_every=5"))
    (out / "extraction.json").write_text(json.dumps(earlier))
    cfg = tmp_path / "prepare.yaml"
    cfg.write_text(f"input: {{videos: {videos}}}\noutput: {out}\nprogress: false\n")
    run = subprocess.run(
        [sys.executable, "-m", "minigpt4.prepare", "--cfg-path", str(cfg)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: {out} holds files made with other settings (differs in: align.size, detector.detect_every); "
        "refusing to mix them. Pass --overwrite to replace them, or choose another --output"
    )
    assert sorted(p.name for p in out.iterdir()) == ["extraction.json"]


def test_the_command_names_an_unknown_key_in_one_line(tmp_path, videos):
    cfg = tmp_path / "prepare.yaml"
    cfg.write_text(f"input: {{videos: {videos}}}\noutput: {tmp_path / 'out'}\n")
    with pytest.raises(SystemExit) as error:
        prepare_main(["--cfg-path", str(cfg), "--options", "track.max_gap=5"])
    assert str(error.value) == "error: prepare config: track.max_gap: Key 'max_gap' not in 'TrackConfig'. Did you mean: 'max_gap_s'?"
