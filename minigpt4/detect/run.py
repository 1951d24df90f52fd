"""Recordings -> windows -> faces -> the detector's features -> P(MW) timelines (offline).

1. The detector folder is read and its feature parts are built: only the encoders and model
   parts its set needs (features.py).  Their identity is compared with the detector's before
   any video is opened; the first difference is one error line.
2. The recordings are listed (a file, a folder of videos, or the videos of a segments CSV) and
   opened; windows every ``hop_s`` of ``length_s`` (or the CSV's segments).
3. Per window: the frames in it through prepare's face pipeline (:func:`~minigpt4.prepare.faces.find_faces`,
   on the recording itself, as the prepare job reads it), then its sound when the set needs
   audio, the features, and the detector along the recording (apply.py).
4. Per recording: ``timeline.csv``, ``timeline.png``, ``summary.json`` (written last; a rerun
   skips recordings that have one).  ``<output_dir>/extraction.json`` records the settings: a
   rerun with others is refused unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from minigpt4.datasets.audio_track import read_audio_window
from minigpt4.datasets.errors import BadClip, write_skipped_report
from minigpt4.datasets.frames import VIDEO_SUFFIXES, ClipReadError
from minigpt4.common.config import ConfigError
from minigpt4.detect.apply import RecordingState
from minigpt4.detect.config import DetectConfig
from minigpt4.detect.features import FeatureParts, face_settings
from minigpt4.detect.outputs import NO_FACE, NO_SOUND, OK, SUMMARY_JSON, RecordingSummary, WindowRow, write_recording
from minigpt4.detect.windows import Window, regular_windows, segment_windows
from minigpt4.features.writer import FeatureOutputError, check_output_fingerprint, record_output_fingerprint
from minigpt4.prepare.cut import ClipPlan, check_window, read_segments
from minigpt4.prepare.decode import VideoSource
from minigpt4.prepare.detect import build_detector
from minigpt4.prepare.faces import FaceOutcome, find_faces
from minigpt4.prepare.run import torch_threads
from minigpt4.probe.artifact import JSON_NAME, Detector

logger = logging.getLogger(__name__)


@dataclass
class Recording:
    name: str  # the output folder's name
    path: Path
    segments: list[ClipPlan] = field(default_factory=list)


@dataclass
class DetectSummary:
    recordings: int = 0
    already_done: int = 0
    windows: int = 0
    windows_with_estimate: int = 0
    skipped: list[BadClip] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.recordings} recordings done, {self.already_done} already present, {len(self.skipped)} skipped; "
            f"{self.windows} windows, {self.windows_with_estimate} with an estimate"
        )


class StageClock:
    """Seconds per stage; frame reads through :meth:`timed_source` count as ``decode``."""

    def __init__(self, seconds: dict):
        self.seconds = seconds

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now

    def timed_source(self, source: VideoSource) -> "TimedFrames":
        return TimedFrames(source, self.seconds)


class TimedFrames:
    """A frame source whose reads are added to the ``decode`` seconds."""

    def __init__(self, source: VideoSource, seconds: dict):
        self.source, self.seconds = source, seconds
        self.timestamps = source.timestamps

    def read(self, indices):
        started = time.perf_counter()
        try:
            return self.source.read(indices)
        finally:
            self.seconds["decode"] += time.perf_counter() - started


def output_name(path: Path) -> str:
    """The recording's output folder: its file stem, made safe."""
    return re.sub(r"[^\w.+-]+", "_", path.stem)


def list_recordings(cfg: DetectConfig) -> list[Recording]:
    """The recordings of ``input.path``; two that would share an output folder are an error."""
    source = Path(cfg.input.path).expanduser()
    if cfg.input.segments is not None:
        if not source.is_dir():
            raise ConfigError(f"detect.input.path {source}: with input.segments it must be the folder the CSV's videos are in")
        by_video: dict[Path, list[ClipPlan]] = {}
        for plan in read_segments(cfg.input.segments, source):
            by_video.setdefault(plan.video, []).append(plan)
        recordings = [Recording(output_name(video), video, plans) for video, plans in by_video.items()]
    elif source.is_dir():
        videos = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise ConfigError(f"detect.input.path {source}: the folder holds no videos ({', '.join(VIDEO_SUFFIXES)})")
        recordings = [Recording(output_name(video), video) for video in videos]
    elif source.is_file():
        recordings = [Recording(output_name(source), source)]
    else:
        raise ConfigError(f"detect.input.path {source}: no such file or folder")
    seen: dict[str, Path] = {}
    for recording in recordings:
        if recording.name in seen:
            raise ConfigError(f"detect.input.path: {recording.path} and {seen[recording.name]} would share the output folder {recording.name}")
        seen[recording.name] = recording.path
    return recordings


def run_settings(detector_folder: Path, cfg: DetectConfig, faces) -> dict:
    """What decides the numbers in output_dir: the detector by content, windows, faces."""
    return {
        "detector_sha256": hashlib.sha256((detector_folder / JSON_NAME).read_bytes()).hexdigest(),
        "window": asdict(cfg.window) if cfg.input.segments is None else {"segments": str(cfg.input.segments)},
        "faces": face_settings(faces),
    }


def checked_output(cfg: DetectConfig, parts: FeatureParts, out: Path) -> tuple[dict, bool]:
    """This run's settings, and whether it replaces what ``out`` holds (refused when it holds
    another run's files and ``overwrite`` is off)."""
    settings = run_settings(Path(cfg.detector).expanduser(), cfg, parts.faces)
    return settings, check_output_fingerprint(out, settings, cfg.overwrite, outputs=f"*/{SUMMARY_JSON}")


def detect(cfg: DetectConfig) -> DetectSummary:
    with torch_threads(cfg.threads):
        return _detect(cfg)


def _detect(cfg: DetectConfig) -> DetectSummary:
    detector = Detector.load(cfg.detector)
    parts = FeatureParts(detector, cfg)  # checks the weight files, builds what the set needs
    parts.check_identity()  # and what it built
    out = Path(cfg.output_dir)
    if cfg.live.follow:
        return _follow(cfg, detector, parts, out)
    recordings = list_recordings(cfg)
    settings, replace = checked_output(cfg, parts, out)
    face_detector = build_detector(parts.faces.detector)
    summary = DetectSummary()
    opened = []
    for recording in recordings:
        if not replace and (out / recording.name / SUMMARY_JSON).is_file():
            summary.already_done += 1
            continue
        try:
            opened.append((recording, VideoSource(recording.path, recording.name)))
        except ClipReadError as exc:
            if not cfg.skip_bad:
                raise
            summary.skipped.append(BadClip(exc.clip, str(exc.path), exc.problem))
    record_output_fingerprint(out, settings, replace, outputs=f"*/{SUMMARY_JSON}")
    for recording, source in opened:
        try:
            rows, recording_summary = score_recording(recording, source, detector, parts, face_detector, cfg)
        except ClipReadError as exc:
            if not cfg.skip_bad:
                raise
            logger.warning("skipped: %s", exc)
            summary.skipped.append(BadClip(exc.clip, str(exc.path), exc.problem))
            continue
        write_recording(out / recording.name, rows, recording_summary, detector.threshold)
        summary.recordings += 1
        summary.windows += recording_summary.windows
        summary.windows_with_estimate += recording_summary.windows_with_estimate
    if cfg.skip_bad:
        write_skipped_report(out, summary.skipped)
    return summary


def _follow(cfg: DetectConfig, detector: Detector, parts: FeatureParts, out: Path) -> DetectSummary:
    from minigpt4.detect.live import follow, source_name  # PyAV streaming: only for live sources

    done = out / source_name(cfg.input.path) / SUMMARY_JSON
    if done.is_file() and not cfg.overwrite:
        raise FeatureOutputError(f"{done.parent} holds a finished live run; set detect.overwrite: true to replace it, or another output_dir")
    settings, replace = checked_output(cfg, parts, out)
    record_output_fingerprint(out, settings, replace, outputs=f"*/{SUMMARY_JSON}")
    recording = follow(cfg, detector, parts, build_detector(parts.faces.detector), out)
    return DetectSummary(recordings=1, windows=recording.windows, windows_with_estimate=recording.windows_with_estimate)


def recording_windows(recording: Recording, source: VideoSource, cfg: DetectConfig, summary: RecordingSummary) -> list[Window]:
    if recording.segments:
        for plan in recording.segments:
            check_window(plan, source.duration, cfg.input.segments)
        return segment_windows(recording.segments)
    keep = cfg.window.short_last == "keep"
    windows, dropped = regular_windows(
        float(source.timestamps[0]), float(source.timestamps[0]) + source.duration, cfg.window.length_s, cfg.window.hop_s, keep
    )
    summary.short_windows_dropped = len(dropped)
    summary.short_windows_kept = sum(window.short for window in windows)
    for window in dropped:
        logger.info("%s: the last window (%.2f-%.2f s) is shorter than %s s and is left out (window.short_last: drop)",
                    recording.name, window.start_s, window.end_s, cfg.window.length_s)
    return windows


def score_recording(
    recording: Recording, source: VideoSource, detector: Detector, parts: FeatureParts, face_detector, cfg: DetectConfig
) -> tuple[list[WindowRow], RecordingSummary]:
    summary = RecordingSummary(video=recording.name)
    clock = StageClock(summary.seconds)
    state = RecordingState(detector)
    timed = clock.timed_source(source)
    rows = []
    windows = recording_windows(recording, source, cfg, summary)
    for window in tqdm(windows, desc=recording.name, unit="window", disable=not cfg.progress):
        started = time.perf_counter()
        decoded_before = summary.seconds["decode"]
        faces = find_faces(timed, face_detector, parts.faces, start_s=window.start_s, end_s=window.end_s)
        summary.seconds["faces"] += time.perf_counter() - started - (summary.seconds["decode"] - decoded_before)
        audio = partial(read_audio_window, recording.path, window.start_s, window.end_s, parts.audio_rate, recording.name)
        rows.append(window_row(recording.name, window, faces, state, parts, clock, audio))
        summary.add(rows[-1])
    summary.recording_s = sum(window.end_s - window.start_s for window in windows)
    summary.finish(rows)
    return rows, summary


def window_row(
    name: str, window: Window, faces, state: RecordingState, parts: FeatureParts, clock: StageClock, audio: Callable
) -> WindowRow:
    """The window's row: its estimate, or ``no_face`` with no probability.  ``audio()`` gives
    the window's sound (float32 mono at the audio encoder's rate) when the set reads it."""
    if faces.outcome is not FaceOutcome.FACE:
        return WindowRow(name, window.index, window.start_s, window.end_s, None, None, None, faces.coverage, NO_FACE)
    base = parts.features(faces, audio, clock)
    if base is None:
        return WindowRow(name, window.index, window.start_s, window.end_s, None, None, None, faces.coverage, NO_SOUND)
    started = time.perf_counter()
    estimate = state.estimate(window.start_s, base)
    clock.add("detector", started)
    return WindowRow(name, window.index, window.start_s, window.end_s, estimate.p_mw, estimate.p_mw_calibrated,
                     estimate.mw, faces.coverage, OK)
