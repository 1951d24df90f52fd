"""HuBERT audio vectors for a set of clips: one ``<output>/<clip>.npy`` per clip.

The loop of the FaceMAE / VideoMAE commands (:func:`~minigpt4.features.encoder_extract.extract_clips`:
fingerprint, every clip checked before anything is written, resume, ``skip_bad``, atomic
writes) with HuBERT's steps (:mod:`minigpt4.features.audio_vectors`):

- the check decodes each clip's sound once as a stream, keeping only its statistics (sample
  count, mean, variance): a clip without an audio track, without samples or shorter than one
  HuBERT frame stops the run (or is skipped) before anything is written;
- a DataLoader decodes the clips again in its workers, a window at a time, and normalises
  each window with its clip's statistics; windows of equal length (from one clip or
  several, ``batch_size`` at most) share a forward pass, and a clip's vector is written once
  its last window is encoded.

A recording is thus never in memory at once: peak memory follows the window
(``--window_seconds``), not the recording's length.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from minigpt4.datasets.audio_track import audio_chunks, regroup
from minigpt4.datasets.frames import ClipReadError
from minigpt4.features.audio_vectors import (
    ClipFrames,
    Normalisation,
    audio_settings,
    encode_windows,
    normalisation,
    waveform_stats,
)
from minigpt4.features.clip_vectors import FeatureLevel, check_counts
from minigpt4.features.encoder_extract import ClipResult, ExtractionSummary, extract_clips
from minigpt4.models.hubert_encoder import HubertAudioEncoder


@dataclass(frozen=True)
class _AudioJob:
    """What a loader worker needs for one clip: plain data, so it crosses process bounds."""

    clip: str
    path: Path
    normalise: Normalisation
    spans: list[tuple[int, int]]  # [start, end) of each window


class _WindowStream(IterableDataset):
    """Each clip's prepared windows, ``(job, (window, samples))``, as they are decoded (each
    worker takes every num_workers-th clip); a read failure ends the clip with
    ``(job, ClipReadError)``, so the main process decides between stopping and skipping."""

    def __init__(self, jobs: Sequence[_AudioJob], sample_rate: int):
        self.jobs, self.sample_rate = jobs, sample_rate

    def __iter__(self) -> Iterator[tuple[_AudioJob, tuple[int, np.ndarray] | ClipReadError]]:
        worker = get_worker_info()
        jobs = self.jobs if worker is None else self.jobs[worker.id :: worker.num_workers]
        for job in jobs:
            yield from self._windows(job)

    def _windows(self, job: _AudioJob) -> Iterator[tuple[_AudioJob, tuple[int, np.ndarray] | ClipReadError]]:
        lengths = [end - start for start, end in job.spans]
        done = 0
        try:
            for samples in regroup(audio_chunks(job.path, self.sample_rate, job.clip), lengths):
                if len(samples) != lengths[done]:
                    break
                yield job, (done, job.normalise(samples))
                done += 1
            if done < len(lengths):
                raise ClipReadError(job.clip, job.path, "the sound ended sooner than when it was checked")
        except ClipReadError as exc:
            yield job, exc


def extract_audio_features(
    encoder: HubertAudioEncoder,
    clips: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    feature_level: FeatureLevel | str = FeatureLevel.UTTERANCE,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    num_workers: int = 0,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ExtractionSummary:
    """HuBERT per clip: the mean over time of layer ``encoder.layer`` (D,) at ``UTTERANCE``,
    every frame (T, D) at ``FRAME``.  At most ``batch_size`` equal-length windows share a
    forward pass.  ``overwrite`` replaces the files of a folder made with other settings (see
    :func:`~minigpt4.features.encoder_extract.extract_clips`).
    """
    check_counts(batch_size=batch_size, num_workers=num_workers)
    settings = audio_settings(encoder, feature_level=feature_level)
    encoder = encoder.to(device).eval()

    def check(path: Path, clip: str) -> _AudioJob:
        stats = waveform_stats(audio_chunks(path, encoder.sample_rate, clip))
        if stats.num_samples < encoder.min_samples:
            raise ClipReadError(
                clip,
                path,
                f"the audio track is {1000 * stats.num_samples / encoder.sample_rate:.1f} ms long; HuBERT needs at "
                f"least {1000 * encoder.min_samples / encoder.sample_rate:.0f} ms for one frame",
            )
        return _AudioJob(clip, path, normalisation(encoder, stats), encoder.windows(stats.num_samples))

    def encode(jobs: list[_AudioJob]) -> Iterator[ClipResult]:
        loader = DataLoader(
            _WindowStream(jobs, encoder.sample_rate),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=list,  # windows of several lengths: encode_windows groups them
        )
        in_progress: dict[str, ClipFrames] = {}
        for batch in loader:
            windows = [(job, item) for job, item in batch if not isinstance(item, ClipReadError)]
            encoded = encode_windows(encoder, [samples for _, (_, samples) in windows], device)
            for position, frames in encoded:
                job, (window, _) = windows[position]
                clip_frames = in_progress.setdefault(job.clip, ClipFrames(len(job.spans), feature_level))
                clip_frames.add(window, frames)
                if clip_frames.complete:
                    yield job, in_progress.pop(job.clip).vector()
            for job, item in batch:
                if isinstance(item, ClipReadError):
                    in_progress.pop(job.clip, None)  # the windows it had are no vector
                    yield job, item

    return extract_clips(
        clips,
        output_dir,
        settings=settings,
        check=check,
        encode=encode,
        summary=ExtractionSummary(clips_given=len(clips)),
        overwrite=overwrite,
        skip_bad=skip_bad,
        progress=progress,
        desc="HuBERT",
        problem="have no usable sound",
    )
