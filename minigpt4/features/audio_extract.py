"""HuBERT audio vectors for a set of clips: one ``<output>/<clip>.npy`` per clip.

The same conventions as the FaceMAE / VideoMAE extraction (:mod:`encoder_extract`):

1. the output folder's ``extraction.json`` records what produced its vectors (a digest of
   the HuBERT weights, the layer, the feature level, normalisation, sample rate and window);
   a run with anything different into the same folder is refused unless ``overwrite``
   (which replaces the folder's vectors), so vectors of two layers or two models never mix;
2. every clip's sound is decoded and checked (an audio track exists, it holds enough
   samples for one HuBERT frame) before anything is written, so a bad clip stops the run
   with nothing written (``skip_bad`` instead lists it in ``skipped.tsv``); clips whose
   ``.npy`` exists are done and not decoded again, which is how an interrupted run resumes;
3. a DataLoader decodes the clips (in its workers) to mono at the model's rate, HuBERT
   encodes them window by window (see :mod:`minigpt4.models.hubert_encoder`) and each
   clip's vector is written atomically: the mean over time (D,) at ``UTTERANCE``, the frame
   vectors (T, D) at ``FRAME``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from minigpt4.common.atomic_io import save_npy_atomic
from minigpt4.datasets.audio_track import read_audio_track
from minigpt4.datasets.errors import write_skipped_report
from minigpt4.datasets.frames import ClipReadError, clip_name
from minigpt4.features.encoder_extract import (
    ExtractionSummary,
    FeatureLevel,
    _one_input_per_clip,
    check_counts,
    encoder_settings,
    open_output,
    readable_items,
)
from minigpt4.features.writer import check_output_fingerprint
from minigpt4.models.hubert_encoder import HubertAudioEncoder


@dataclass(frozen=True)
class _AudioJob:
    """What a loader worker needs for one clip: plain data, so it crosses process bounds."""

    clip: str
    path: Path


class _ClipAudioDataset(Dataset):
    """Decodes a clip's sound; a read failure is returned, not raised, so the main process
    decides between stopping and skipping."""

    def __init__(self, jobs: Sequence[_AudioJob], sample_rate: int):
        self.jobs, self.sample_rate = jobs, sample_rate

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> tuple[_AudioJob, np.ndarray | None, ClipReadError | None]:
        job = self.jobs[index]
        try:
            return job, read_audio_track(job.path, self.sample_rate, job.clip), None
        except ClipReadError as exc:
            return job, None, exc


def _plan(
    clips: Sequence[Path], output_dir: Path, encoder: HubertAudioEncoder, redo_all: bool, summary: ExtractionSummary
) -> tuple[list[_AudioJob], list[ClipReadError]]:
    """Decode and check every clip without output; count the ones already done."""
    jobs, bad = [], []
    for path in _one_input_per_clip(clips, summary):
        name = clip_name(path)
        if not redo_all and (output_dir / f"{name}.npy").exists():
            summary.already_present += 1
            continue
        try:
            num_samples = len(read_audio_track(path, encoder.sample_rate, name))
        except ClipReadError as exc:
            bad.append(exc)
            continue
        if num_samples < encoder.min_samples:
            bad.append(
                ClipReadError(
                    name,
                    path,
                    f"the audio track is {1000 * num_samples / encoder.sample_rate:.1f} ms long; HuBERT needs at "
                    f"least {1000 * encoder.min_samples / encoder.sample_rate:.0f} ms for one frame",
                )
            )
            continue
        jobs.append(_AudioJob(name, path))
    return jobs, bad


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
    every frame (T, D) at ``FRAME``.  ``batch_size`` clips are decoded per step and at most
    that many equal-length windows share a forward pass.  ``overwrite`` replaces the files of
    a folder made with other settings (see the module's docstring).
    """
    level = FeatureLevel(feature_level)
    check_counts(batch_size=batch_size, num_workers=num_workers)
    output_dir = Path(output_dir)
    settings = encoder_settings(
        encoder,  # its state dict: the HuBERT weights
        feature_level=level.value,
        layer=encoder.layer,
        normalize=bool(encoder.feature_extractor is not None and encoder.feature_extractor.do_normalize),
        sample_rate=encoder.sample_rate,
        window_samples=encoder.window_samples,
    )
    replace = check_output_fingerprint(output_dir, settings, overwrite)
    summary = ExtractionSummary(clips_given=len(clips))
    jobs, bad = _plan([Path(c) for c in clips], output_dir, encoder, replace, summary)
    open_output(output_dir, settings, replace, bad, summary, skip_bad, problem="have no usable sound")
    encoder = encoder.to(device).eval()
    loader = DataLoader(
        _ClipAudioDataset(jobs, encoder.sample_rate),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,  # clips have different lengths: the encoder groups their windows
    )
    try:
        with tqdm(total=len(jobs), desc="HuBERT", unit="clip", disable=not progress) as bar:
            for batch in loader:
                readable = readable_items(batch, skip_bad, summary)
                if readable:
                    frames = encoder([waveform for _, waveform in readable], max_windows_per_forward=batch_size)
                    for (job, _), clip_frames in zip(readable, frames, strict=True):  # [T, D]
                        vector = clip_frames.mean(dim=0) if level is FeatureLevel.UTTERANCE else clip_frames
                        save_npy_atomic(output_dir / f"{job.clip}.npy", vector.float().cpu().numpy())
                        summary.done += 1
                bar.update(len(batch))
    finally:
        if skip_bad:
            write_skipped_report(output_dir, summary.skipped)
    return summary
