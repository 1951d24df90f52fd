"""Videos -> aligned faces, peak frames, sound and the annotation CSV, clip by clip.

1. An output made with other settings is refused unless ``overwrite``.  The clips are listed
   (a folder of videos, or session videos cut by a segments CSV) and every video is opened
   and checked before anything is written: a bad segments row stops the run; an unreadable
   video (empty, corrupt, audio only) stops it too unless ``skip_bad``, which lists it in
   ``skipped.tsv``.  With ``encoders.run`` the encoders are built.  Clips with a report are
   done and kept.
2. Per clip, the face pipeline (faces.py: detect, track, re-detect, align, peak frame)
   streams the crops into the clip's temporary folder; a clip whose face shows in too few
   detection frames is skipped (or stops the run without ``skip_bad``).  The clip's window
   of the video's sound is cut at 16 kHz mono; a finished clip is moved into place, its
   report last (write.py).
3. The annotation CSV, ``skipped.tsv`` and ``summary.json`` are written; with
   ``encoders.run`` the FaceMAE, VideoMAE (and HuBERT) vectors follow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from minigpt4.common.atomic_io import write_text_atomic
from minigpt4.datasets.audio_track import read_audio_window
from minigpt4.datasets.errors import BadClip, write_skipped_report
from minigpt4.datasets.frames import ClipReadError
from minigpt4.features.writer import check_output_fingerprint, record_output_fingerprint
from minigpt4.prepare.config import PrepareConfig, written_settings
from minigpt4.prepare.cut import ClipPlan, check_window, list_clip_videos, read_segments, select_frames
from minigpt4.prepare.decode import VideoSource
from minigpt4.prepare.detect import FaceDetector, build_detector
from minigpt4.prepare.faces import FaceOutcome, find_faces
from minigpt4.prepare.peak import PeakError
from minigpt4.prepare.write import ClipOutput, PreparedLayout, write_annotation

logger = logging.getLogger(__name__)

AUDIO_SAMPLE_RATE = 16_000  # the clips' sound: the rate HuBERT (extract_audio_embedding.py) reads


@dataclass
class PrepareSummary:
    prepared: int = 0  # clips written by this run
    already_present: int = 0  # clips done by an earlier run, left untouched
    skipped: list[BadClip] = field(default_factory=list)
    frames_decoded: int = 0  # frames kept from the clips' windows (after sampling)
    frames_detected: int = 0  # frames the detector ran on
    frames_written: int = 0  # aligned faces written
    without_sound: int = 0  # prepared clips whose video has no (usable) audio track
    coverage: list[float] = field(default_factory=list)  # per prepared clip
    seconds: float = 0.0

    def line(self) -> str:
        coverage = f"{np.mean(self.coverage):.1%}" if self.coverage else "n/a"
        return (
            f"{self.prepared} clips prepared, {self.already_present} already present, {len(self.skipped)} skipped; "
            f"{self.frames_written} face frames of {self.frames_decoded} kept ({self.frames_detected} detected), "
            f"mean face coverage {coverage}, {self.without_sound} without sound, {self.seconds:.1f} s"
        )


@dataclass
class _ClipJob:
    plan: ClipPlan
    source: VideoSource


def prepare(cfg: PrepareConfig, detector: FaceDetector | None = None, overwrite: bool = False) -> PrepareSummary:
    """Run the whole job; ``detector`` replaces the configured one (tests, other detectors).

    An output made with other :func:`~minigpt4.prepare.config.written_settings` is refused
    unless ``overwrite``, which replaces everything prepare wrote there.
    """
    with torch_threads(cfg.threads):
        return _prepare(cfg, detector, overwrite)


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's CPU thread count set to ``threads`` (None: left alone) for a block, then restored.

    MTCNN runs many small operations (a pyramid of tiny convolutions, one resize per
    candidate box): on cores other jobs share, one thread is several times faster than two.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _prepare(cfg: PrepareConfig, detector: FaceDetector | None, overwrite: bool) -> PrepareSummary:
    start = time.perf_counter()
    layout = PreparedLayout(Path(cfg.output))
    summary = PrepareSummary()
    settings = written_settings(cfg)
    # a report marks a finished clip: reports without a record are of unknown settings
    replace = check_output_fingerprint(layout.root, settings, overwrite, outputs=f"{layout.reports.name}/*.json")
    if cfg.input.segments is not None:
        plans = read_segments(cfg.input.segments, cfg.input.videos)
    else:
        plans = list_clip_videos(cfg.input.videos, cfg.input.labels)
    jobs = _plan(plans, cfg, layout, summary, redo_all=replace)
    if summary.skipped and not cfg.skip_bad:
        clip, file, problem = summary.skipped[0]
        raise ClipReadError(clip, file, f"{problem} (nothing was written; set skip_bad: true to skip such clips)")
    detector = detector or build_detector(cfg.detector)
    encoders = []
    if cfg.encoders.run:
        from minigpt4.prepare.encode import build_encoders  # builds models: only when asked

        encoders = build_encoders(cfg)  # a bad name or weight file stops the run before any clip
    if replace:
        layout.remove_outputs()
    record_output_fingerprint(layout.root, settings, replace=False)  # creates the root
    for job in tqdm(jobs, desc="prepare", unit="clip", disable=not cfg.progress):
        try:
            _prepare_clip(job, detector, cfg, layout, summary)
        except ClipReadError as exc:
            if not cfg.skip_bad:
                raise
            logger.warning("skipped: %s", exc)
            summary.skipped.append(BadClip(exc.clip, str(exc.path), exc.problem))
    with contextlib.suppress(OSError):  # the clips' scratch folder, empty once every clip is in place
        (layout.root / ".tmp").rmdir()
    done = [plan for plan in plans if layout.is_done(plan.clip)]
    write_annotation(layout, [plan.annotation_row() for plan in done])
    if cfg.skip_bad:
        write_skipped_report(layout.root, summary.skipped)
    summary.seconds = time.perf_counter() - start
    write_text_atomic(layout.summary, _summary_json(summary))
    if encoders:
        from minigpt4.prepare.encode import run_encoders

        run_encoders(cfg, layout, [plan.clip for plan in done], encoders)
    return summary


def _plan(
    plans: list[ClipPlan], cfg: PrepareConfig, layout: PreparedLayout, summary: PrepareSummary, redo_all: bool
) -> list[_ClipJob]:
    """Open every video once and check every clip, writing nothing."""
    sources: dict[Path, VideoSource | ClipReadError] = {}
    jobs = []
    for plan in plans:
        if not redo_all and layout.is_done(plan.clip):
            summary.already_present += 1
            continue
        if plan.video not in sources:
            try:
                sources[plan.video] = VideoSource(plan.video, plan.clip)
            except ClipReadError as exc:
                sources[plan.video] = exc
        source = sources[plan.video]
        if isinstance(source, ClipReadError):
            summary.skipped.append(BadClip(plan.clip, str(plan.video), source.problem))
            continue
        if cfg.input.segments is not None:
            check_window(plan, source.duration, cfg.input.segments)
        if select_frames(source.timestamps, plan.start_s, plan.end_s, cfg.sampling.fps).size == 0:
            summary.skipped.append(BadClip(plan.clip, str(plan.video), "the clip's window holds no frame"))
            continue
        jobs.append(_ClipJob(plan, source))
    return jobs


def _prepare_clip(
    job: _ClipJob, detector: FaceDetector, cfg: PrepareConfig, layout: PreparedLayout, summary: PrepareSummary
) -> None:
    plan, source = job.plan, job.source
    output = ClipOutput(layout, plan.clip, cfg.align.size)
    openface_csv = Path(cfg.peak.openface_dir) / f"{plan.clip}.csv" if cfg.peak.openface_dir else None
    try:
        result = find_faces(
            source, detector, cfg, start_s=plan.start_s, end_s=plan.end_s, openface_csv=openface_csv, sink=output
        )
        summary.frames_decoded += result.report.get("frames_kept", 0)
        summary.frames_detected += result.report.get("detection_frames", 0) + result.report.get("redetected_frames", 0)
        if result.outcome is not FaceOutcome.FACE:
            raise ClipReadError(plan.clip, plan.video, result.problem)
        report = {"clip": plan.clip, "video": str(plan.video), "start_s": plan.start_s, "end_s": plan.end_s}
        report |= {"rotation": source.rotation} | _cut_audio(plan, output, summary)
        output.commit(result.peak_image, report | result.report)
    except PeakError as exc:
        output.abandon()
        raise ClipReadError(plan.clip, plan.video, str(exc)) from exc
    except BaseException:
        output.abandon()
        raise
    summary.prepared += 1
    summary.frames_written += len(result.written)
    summary.coverage.append(result.coverage)


def _cut_audio(plan: ClipPlan, output: ClipOutput, summary: PrepareSummary) -> dict:
    """The clip's window of its video's sound into the clip's files; a video without (usable)
    sound gives a clip without sound, said in its report, never a made-up silence."""
    try:
        samples = read_audio_window(plan.video, plan.start_s, plan.end_s, AUDIO_SAMPLE_RATE, plan.clip)
    except ClipReadError as exc:
        summary.without_sound += 1
        return {"audio_seconds": None, "no_audio": exc.problem}
    output.add_audio(samples, AUDIO_SAMPLE_RATE)
    return {"audio_seconds": round(len(samples) / AUDIO_SAMPLE_RATE, 4)}


def _summary_json(summary: PrepareSummary) -> str:
    data = asdict(summary)
    data["skipped"] = [bad._asdict() for bad in summary.skipped]
    data["mean_coverage"] = float(np.mean(summary.coverage)) if summary.coverage else None
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"
