"""The detect job's configuration as typed data (defaults, types and allowed keys in one place).

``load_detect_config`` merges the user's YAML and ``--options a.b=c`` over these defaults; an
unknown key, a wrong type or a value out of range stops the run naming the key, before the
detector or any video is opened.

What the features are made with comes from the detector itself (the model config, the encoder
settings and the face pipeline the training clips were prepared with); the config names where
the weights are on this machine (``model.*`` paths, ``encoders.*``) and may override the face
pipeline (``faces``); the identity check then refuses anything that would change the features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from minigpt4.common.config import ConfigError, load_typed_config

SHORT_LAST = ("drop", "keep")
BEHIND = ("drop", "queue")


@dataclass
class InputConfig:
    path: str = "???"  # a video file, a folder of videos, or (live) a growing file, "-" for standard input, a device or URL
    segments: Optional[str] = None  # CSV video, clip, start_s, end_s: windows from it (videos relative to `path`, a folder)
    format: Optional[str] = None  # PyAV/FFmpeg input format of a live source: v4l2, avfoundation, dshow, rtsp, matroska, ...
    options: dict = field(default_factory=dict)  # FFmpeg options of a live source, e.g. {video_size: 640x480, framerate: "25"}


@dataclass
class WindowConfig:
    length_s: float = 2.0  # seconds of recording per estimate
    hop_s: float = 2.0  # seconds from one window's start to the next (< length_s: overlapping windows)
    short_last: str = "drop"  # a last window shorter than length_s: drop | keep (both reported)


@dataclass
class EncodersConfig:
    face_mae: Optional[str] = None  # the FaceMAE checkpoint (its name and settings come from the detector)
    video_mae: Optional[str] = None  # the VideoMAE checkpoint
    audio: Optional[str] = None  # the HuBERT folder
    trust_checkpoint: bool = False  # allow weight files that need full unpickling
    fresh_fc_norm: bool = False  # a FaceMAE pre-training file without fc_norm used with global_pool (as the extraction was)


@dataclass
class LiveConfig:
    follow: bool = False  # read the input as it is written (also --follow)
    max_queue: int = 4  # complete windows waiting for processing before `behind` applies
    behind: str = "drop"  # drop: skip to the newest window when more than max_queue wait; queue: process every window
    stall_s: float = 10.0  # end the run when the source delivers nothing for this long
    plot_every_s: float = 10.0  # redraw timeline.png at most this often


@dataclass
class DetectConfig:
    detector: str = "???"  # a folder written by the probe's export (detector.json, detector.safetensors)
    input: InputConfig = field(default_factory=InputConfig)
    output_dir: str = "detections"  # <output_dir>/<video>/timeline.csv, timeline.png, summary.json
    window: WindowConfig = field(default_factory=WindowConfig)
    model: dict = field(default_factory=dict)  # overrides of the detector's model config: where its weights are here
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    faces: dict = field(default_factory=dict)  # overrides of the face pipeline the detector's clips were prepared with
    device: str = "cpu"
    threads: Optional[int] = None  # torch CPU threads; null: torch's setting
    skip_bad: bool = False  # a video that cannot be read is listed in skipped.tsv and the rest go on
    overwrite: bool = False  # replace results made with other settings in output_dir
    progress: bool = True
    live: LiveConfig = field(default_factory=LiveConfig)


@dataclass
class DetectRunConfig:
    detect: DetectConfig = field(default_factory=DetectConfig)


def load_detect_config(path: str | Path, options: Sequence[str] = ()) -> DetectConfig:
    """Defaults <- the YAML (section ``detect``) <- ``a.b=c`` options, checked."""
    cfg = load_typed_config(path, options, DetectRunConfig).detect
    check_config(cfg)
    return cfg


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_config(cfg: DetectConfig) -> None:
    def bad(key: str, problem: str):
        raise ConfigError(f"detect.{key}: {problem}")

    for key in ("length_s", "hop_s"):
        if not _positive(getattr(cfg.window, key)):
            bad(f"window.{key}", f"must be a positive number of seconds, got {getattr(cfg.window, key)}")
    if cfg.window.short_last not in SHORT_LAST:
        bad("window.short_last", f"{cfg.window.short_last!r} is not one of {', '.join(SHORT_LAST)}")
    if cfg.live.behind not in BEHIND:
        bad("live.behind", f"{cfg.live.behind!r} is not one of {', '.join(BEHIND)}")
    if cfg.live.max_queue < 1:
        bad("live.max_queue", f"must be at least 1, got {cfg.live.max_queue}")
    for key in ("stall_s", "plot_every_s"):
        if not _positive(getattr(cfg.live, key)):
            bad(f"live.{key}", f"must be a positive number of seconds, got {getattr(cfg.live, key)}")
    if cfg.threads is not None and cfg.threads < 1:
        bad("threads", f"must be at least 1, got {cfg.threads}")
    if cfg.input.segments is not None and cfg.live.follow:
        bad("input.segments", "windows from a segments CSV need the finished recording; not with live.follow")
    out = Path(cfg.output_dir)
    existing = next((p for p in (out, *out.parents) if p.exists()), out)
    if existing.exists() and not existing.is_dir():
        bad("output_dir", f"{out} cannot be a folder: {existing} is a file")
