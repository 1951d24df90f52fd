"""FaceMAE and VideoMAE features for a set of clips: one ``<output>/<clip>.npy`` per clip.

The loop both extraction commands share:

1. the output folder's fingerprint (encoder, weights, settings) is compared with the
   run's: files of other settings are never mixed in (``overwrite`` replaces them);
2. every clip is opened and checked (frames exist, frame count, frame sizes) before anything
   is written, so a bad clip stops the run with nothing written (``skip_bad`` instead
   reports it in ``<output>/skipped.tsv`` and does the rest); clips whose ``.npy`` already
   exists are done and not opened again, which is how an interrupted run resumes;
3. a DataLoader over the clips decodes the sampled frames in its workers, resizing each as
   it is decoded to the encoder's input size, and scales them to [0, 1];
4. the encoder runs on ``batch_size`` clips at a time and each clip's vector is written
   atomically (:func:`~minigpt4.common.atomic_io.save_npy_atomic`).

A clip that passes the checks but fails to decode later (a truncated frame, say) is an
error at that point, or with ``skip_bad`` one more line of the report.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from minigpt4.common.atomic_io import save_npy_atomic
from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.common.registry import RegistryError, registry
from minigpt4.datasets.errors import SKIPPED_REPORT, write_skipped_report
from minigpt4.datasets.frames import (
    MER_FRAMES_PER_SEGMENT,
    ClipReadError,
    clip_name,
    is_clip_entry,
    open_clip_frames,
    resize_frame,
    uniform_frame_indices,
    videomae_frame_indices,
)
from minigpt4.features.writer import FeatureOutputError, check_output_fingerprint, record_output_fingerprint
from minigpt4.models.face_mae import FaceMAE
from minigpt4.models.video_mae import VideoMAE

logger = logging.getLogger(__name__)

# what a command reports as one line: bad input, weights, names or output folder, never a bug
EXTRACTION_ERRORS = (ClipReadError, CheckpointError, RegistryError, FeatureOutputError, FileNotFoundError, ValueError)


class FeatureLevel(str, Enum):
    FRAME = "FRAME"  # one row per sampled frame: (T, D)
    UTTERANCE = "UTTERANCE"  # the mean over the sampled frames: (D,)


@dataclass
class ExtractionSummary:
    done: int = 0  # clips written by this run
    already_present: int = 0  # clips whose output existed, left untouched
    skipped: list[ClipReadError] = field(default_factory=list)  # with skip_bad: what and why
    # clips with fewer frames than the encoder samples, so some frames were used twice
    short: list[str] = field(default_factory=list)
    # (clip, the input used, the inputs left out) for clips given more than once (a.mp4 and a.avi)
    duplicates: list[tuple[str, Path, list[Path]]] = field(default_factory=list)
    frames_needed: int = 0  # what ``short`` is short of
    clips_given: int = 0  # inputs named (an empty --input folder gives 0)


def list_clips(
    input_path: str | os.PathLike,
    exclude: str | os.PathLike | None = None,
    is_entry: Callable[[Path], bool] = is_clip_entry,
) -> list[Path]:
    """The clips named by ``input_path``.

    A folder: its entries that ``is_entry`` accepts (by default frame folders, ``.npy`` arrays
    and videos), in name order (hidden entries, other files and ``exclude``, e.g. an output
    folder inside it, are left out).  A file: a
    list with one clip path per line (blank lines and ``#`` comments skipped; relative paths
    start at the list's folder).
    """
    input_path = Path(input_path)
    if input_path.is_dir():
        excluded = Path(exclude).resolve() if exclude is not None else None
        entries = [p for p in sorted(input_path.iterdir()) if not p.name.startswith(".") and p.resolve() != excluded]
        others = [p.name for p in entries if not is_entry(p)]
        if others:
            logger.warning(
                "%s: skipping %d entries that are not clips: %s", input_path, len(others), ", ".join(others[:10])
            )
        return [p for p in entries if is_entry(p)]
    if input_path.is_file():
        lines = [line.strip() for line in input_path.read_text().splitlines()]
        return [input_path.parent / line for line in lines if line and not line.startswith("#")]
    raise FileNotFoundError(f"--input {input_path}: no such folder or clip list")


def frames_to_model_input(frames: np.ndarray, img_size: int) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> float32 [n, 3, img_size, img_size] in [0, 1].

    The MER baseline's ``Resize((img_size, img_size))`` on PIL images, then ``ToTensor``
    (:func:`~minigpt4.datasets.frames.resize_frame`; frames read with ``size`` are already
    resized).  Pixels are only scaled to [0, 1], not mean/std normalised: that is what the
    MER baseline fed both encoders (and what the fork got wrong by feeding 0..255).
    """
    resized = np.stack([resize_frame(frame, (img_size, img_size)) for frame in frames])
    return torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255


@dataclass(frozen=True)
class _ClipJob:
    """What a loader worker needs for one clip: plain data, so it crosses process bounds."""

    clip: str
    path: Path
    indices: list[int]


class _ClipFrameDataset(Dataset):
    """Decodes a clip's sampled frames; a read failure is returned, not raised, so the
    main process decides between stopping and skipping."""

    def __init__(self, jobs: Sequence[_ClipJob], img_size: int):
        self.jobs, self.img_size = jobs, img_size

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> tuple[_ClipJob, torch.Tensor | None, ClipReadError | None]:
        job = self.jobs[index]
        try:
            # resized as decoded: memory follows the encoder's input size, not the frames'
            frames = open_clip_frames(job.path, job.clip).read(job.indices, size=(self.img_size, self.img_size))
        except ClipReadError as exc:
            return job, None, exc
        return job, frames_to_model_input(frames, self.img_size), None


def _one_input_per_clip(clips: Sequence[Path], summary: ExtractionSummary) -> list[Path]:
    """The first input of each clip id; later ones (``a.avi`` beside ``a.mp4``) are reported."""
    owners: dict[str, list[Path]] = {}
    for path in clips:
        owners.setdefault(clip_name(path), []).append(path)
    for name, paths in owners.items():
        if len(paths) > 1:
            summary.duplicates.append((name, paths[0], paths[1:]))
            logger.warning(
                "clip %r is given %d times (%s); using %s", name, len(paths), ", ".join(map(str, paths)), paths[0]
            )
    return [paths[0] for paths in owners.values()]


def _plan(
    clips: Sequence[Path],
    output_dir: Path,
    sample: Callable[[int], list[int]],
    summary: ExtractionSummary,
    redo_all: bool = False,
) -> tuple[list[_ClipJob], list[ClipReadError]]:
    """Open and check every clip without output; count the ones already done."""
    jobs, bad = [], []
    for path in _one_input_per_clip(clips, summary):
        name = clip_name(path)
        if not redo_all and (output_dir / f"{name}.npy").exists():
            summary.already_present += 1
            continue
        try:
            num_frames = open_clip_frames(path, name).num_frames
            jobs.append(_ClipJob(name, path, sample(num_frames)))
        except ClipReadError as exc:
            bad.append(exc)
            continue
        if num_frames < summary.frames_needed:
            summary.short.append(name)
    return jobs, bad


def _extract(
    clips: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    settings: dict,
    overwrite: bool,
    img_size: int,
    sample: Callable[[int], list[int]],
    encode: Callable[[list[torch.Tensor]], list[np.ndarray]],
    batch_size: int,
    num_workers: int,
    skip_bad: bool,
    progress: bool,
    desc: str,
    frames_needed: int = 0,
) -> ExtractionSummary:
    output_dir = Path(output_dir)
    replace = check_output_fingerprint(output_dir, settings, overwrite)
    summary = ExtractionSummary(frames_needed=frames_needed, clips_given=len(clips))
    jobs, bad = _plan([Path(c) for c in clips], output_dir, sample, summary, redo_all=replace)
    open_output(output_dir, settings, replace, bad, summary, skip_bad, problem="cannot be read")
    loader = DataLoader(
        _ClipFrameDataset(jobs, img_size),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,  # clips have different frame counts: the encoder step batches them
    )
    try:
        with tqdm(total=len(jobs), desc=desc, unit="clip", disable=not progress) as bar:
            for batch in loader:
                readable = readable_items(batch, skip_bad, summary)
                if readable:
                    features = encode([pixels for _, pixels in readable])
                    for (job, _), feature in zip(readable, features, strict=True):
                        save_npy_atomic(output_dir / f"{job.clip}.npy", feature)
                        summary.done += 1
                bar.update(len(batch))
    finally:
        if skip_bad:
            write_skipped_report(output_dir, summary.skipped)
    return summary


def open_output(
    output_dir: Path,
    settings: dict,
    replace: bool,
    bad: list[ClipReadError],
    summary: ExtractionSummary,
    skip_bad: bool,
    problem: str,
) -> None:
    """Once every clip is checked: stop with nothing written when some are ``bad`` (each
    logged, ``problem`` says what they share) unless ``skip_bad``; then create the folder
    and record its fingerprint (``replace``: the earlier run's files and report go)."""
    for exc in bad:
        logger.error("%s", exc)
    if bad and not skip_bad:
        logger.error(
            "%d of %d clips %s; nothing was written. Fix them, or skip them with "
            "--skip-bad (skip_bad=True) to list them in %s",
            len(bad),
            summary.clips_given,
            problem,
            output_dir / SKIPPED_REPORT,
        )
        raise bad[0]
    summary.skipped.extend(bad)
    record_output_fingerprint(output_dir, settings, replace)
    if replace:
        (output_dir / SKIPPED_REPORT).unlink(missing_ok=True)  # the report of the replaced run


def readable_items(
    batch: Sequence[tuple[Any, Any, ClipReadError | None]], skip_bad: bool, summary: ExtractionSummary
) -> list[tuple[Any, Any]]:
    """The ``(job, data)`` of a loader batch whose clip decoded; a failure is skipped (logged
    and counted) under ``skip_bad`` and raised otherwise."""
    readable = []
    for job, data, exc in batch:
        if exc is None:
            readable.append((job, data))
        elif skip_bad:
            logger.error("%s", exc)
            summary.skipped.append(exc)
        else:
            raise exc
    return readable


def check_counts(**counts: int) -> None:
    """Each count (``batch_size=0``, say) must be a positive integer (``num_workers``: or 0)."""
    for name, value in counts.items():
        smallest = 0 if name == "num_workers" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise ValueError(f"--{name} must be an integer of at least {smallest}, got {value!r}")


def encoder_settings(model: torch.nn.Module, /, **settings) -> dict:
    """The fingerprint of an encoder's output folder: ``settings`` (level, sampling, names the
    command knows) and a digest of the weights, so another checkpoint or encoder never
    writes into the files of this one."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return dict(settings, encoder=type(model).__name__, weights_sha256=digest.hexdigest())


def extract_face_mae_features(
    model: FaceMAE,
    clips: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    feature_level: FeatureLevel | str = FeatureLevel.UTTERANCE,
    max_frames: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    frames_per_forward: int = 256,
    num_workers: int = 0,
    skip_bad: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    source: Mapping | None = None,
) -> ExtractionSummary:
    """FaceMAE per clip: (T, D) frame vectors at ``FRAME`` level, their mean (D,) at ``UTTERANCE``.

    ``max_frames`` takes that many frames, first and last included, as MAE-Face did (all
    frames by default); ``frames_per_forward`` caps how many frames one forward pass holds,
    so long clips fit.  ``source`` (the encoder's name and weight file, say) joins the output
    folder's fingerprint; ``overwrite`` replaces files made with other settings.
    """
    level = FeatureLevel(feature_level)
    check_counts(batch_size=batch_size, num_workers=num_workers, frames_per_forward=frames_per_forward)
    if max_frames is not None:
        check_counts(max_frames=max_frames)
    settings = encoder_settings(
        model,
        **(source or {}),
        feature_level=level.value,
        max_frames=max_frames,
        global_pool=model.uses_global_pool,
        img_size=model.img_size,
    )
    model = model.to(device).eval()

    @torch.inference_mode()
    def encode(clip_frames: list[torch.Tensor]) -> list[np.ndarray]:
        all_frames = torch.cat(clip_frames)  # [sum of T, 3, img, img]
        vectors = torch.cat([model(chunk.to(device)) for chunk in all_frames.split(frames_per_forward)])
        per_clip = vectors.split([len(frames) for frames in clip_frames])  # each [T, D]
        if level is FeatureLevel.UTTERANCE:
            per_clip = [frame_vectors.mean(dim=0) for frame_vectors in per_clip]
        return [vector.cpu().numpy() for vector in per_clip]

    return _extract(
        clips,
        output_dir,
        settings=settings,
        overwrite=overwrite,
        img_size=model.img_size,
        sample=lambda num_frames: uniform_frame_indices(num_frames, max_frames),
        encode=encode,
        batch_size=batch_size,
        num_workers=num_workers,
        skip_bad=skip_bad,
        progress=progress,
        desc="FaceMAE",
    )


def extract_video_mae_features(
    model: VideoMAE,
    clips: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    feature_level: FeatureLevel | str = FeatureLevel.UTTERANCE,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    num_workers: int = 0,
    skip_bad: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    source: Mapping | None = None,
) -> ExtractionSummary:
    """VideoMAE per clip: one (D,) vector from the MER test sampling of ``model.num_frames`` frames.

    A clip of fewer frames gets some of them twice (the MER sampling); the summary lists
    such clips.  ``source`` and ``overwrite`` as for :func:`extract_face_mae_features`.
    """
    check_counts(batch_size=batch_size, num_workers=num_workers)
    if FeatureLevel(feature_level) is not FeatureLevel.UTTERANCE:
        raise ValueError(
            "VideoMAE gives one vector per clip (its frames are encoded together); "
            "feature level FRAME has no meaning for it, use UTTERANCE"
        )
    if model.num_frames % MER_FRAMES_PER_SEGMENT:
        raise ValueError(
            f"the MER sampling takes frames in pairs; a VideoMAE of {model.num_frames} frames cannot use it"
        )
    num_segments = model.num_frames // MER_FRAMES_PER_SEGMENT
    settings = encoder_settings(model, **(source or {}), feature_level=FeatureLevel.UTTERANCE.value, img_size=model.img_size)
    model = model.to(device).eval()

    @torch.inference_mode()
    def encode(clip_frames: list[torch.Tensor]) -> list[np.ndarray]:
        clips_batch = torch.stack(clip_frames).transpose(1, 2)  # [B, T, 3, H, W] -> [B, 3, T, H, W]
        return list(model(clips_batch.to(device)).cpu().numpy())

    return _extract(
        clips,
        output_dir,
        settings=settings,
        overwrite=overwrite,
        img_size=model.img_size,
        frames_needed=model.num_frames,
        sample=lambda num_frames: videomae_frame_indices(num_frames, num_segments, MER_FRAMES_PER_SEGMENT),
        encode=encode,
        batch_size=batch_size,
        num_workers=num_workers,
        skip_bad=skip_bad,
        progress=progress,
        desc="VideoMAE",
    )


def build_encoder(
    name: str, family: type[torch.nn.Module], checkpoint: str | os.PathLike, trust_checkpoint: bool, **options
) -> torch.nn.Module:
    """Build the registered encoder ``name`` with its weights, refusing one of another family."""
    if not registry.builds("encoder", name, family):
        choices = registry.names("encoder", builds=family)
        raise ValueError(f"encoder {name!r} is not a {family.__name__}; choose one of: {', '.join(choices)}")
    return registry.get("encoder", name)(checkpoint=checkpoint, trust_checkpoint=trust_checkpoint, **options)


def extraction_argument_parser(
    description: str, default_model: str | None, clip_kinds: str = "frame folders, .npy arrays, videos"
) -> argparse.ArgumentParser:
    """The options the extraction commands share; ``default_model`` None leaves out the
    registered-encoder options (``--checkpoint``, ``--model``, ``--trust-checkpoint``) for a
    command whose encoder is a model folder instead; ``clip_kinds`` says what a clip may be."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--input",
        required=True,
        help=f"a folder of clips ({clip_kinds}) or a file listing clip paths, "
        "one per line (relative ones start at the list's folder)",
    )
    parser.add_argument("--output", required=True, help="folder for <clip>.npy (created if missing)")
    if default_model is not None:
        parser.add_argument("--checkpoint", required=True, help="the encoder's weight file")
        parser.add_argument("--model", default=default_model, help=f"registered encoder name (default {default_model})")
    parser.add_argument(
        "--feature_level", default=FeatureLevel.UTTERANCE.value, choices=[level.value for level in FeatureLevel]
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=1, help="clips per forward pass")
    parser.add_argument("--num_workers", type=int, default=0, help="processes decoding frames")
    parser.add_argument(
        "--skip-bad",
        dest="skip_bad",
        action="store_true",
        help=f"skip unreadable clips, listing them in {SKIPPED_REPORT}",
    )
    if default_model is not None:
        parser.add_argument(
            "--trust-checkpoint",
            dest="trust_checkpoint",
            action="store_true",
            help="allow a checkpoint that needs full unpickling (runs code from the file)",
        )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the vectors in --output when they were made with other settings "
        "(encoder, weights, feature level, sampling)",
    )
    return parser


def check_device(name: str) -> torch.device:
    """``--device`` as a torch device that exists here, or a one-line ValueError."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--device {name!r}: not a device; use cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is visible here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return device


def check_output_path(output: str | os.PathLike) -> None:
    """``--output`` must be a folder, or a path where one can be created."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output}: is a file, not a folder")
    existing = next(parent for parent in (output, *output.parents) if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--output {output}: {existing} is not a writable folder")


def run_extraction(
    args: argparse.Namespace,
    build: Callable[[], torch.nn.Module],
    extract: Callable[..., "ExtractionSummary"],
    *,
    is_entry: Callable[[Path], bool] = is_clip_entry,
    extract_options: dict | None = None,
) -> str:
    """What every extraction command does once parsed: ``build`` the encoder, extract every
    clip of ``args.input`` (the entries ``is_entry`` accepts) into ``args.output``, and return
    the summary line.  The options are checked before the encoder is built, and nothing is
    written before every clip is."""
    device = check_device(args.device)
    check_output_path(args.output)
    clips = list_clips(args.input, exclude=args.output, is_entry=is_entry)
    model = build()
    summary = extract(
        model,
        clips,
        args.output,
        feature_level=args.feature_level,
        device=device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        **(extract_options or {}),
    )
    return describe_summary(summary, args.output)


def describe_summary(summary: ExtractionSummary, output_dir: str | os.PathLike) -> str:
    """The command's last words: what was written, and anything a user should know."""
    line = f"{summary.done} clips written, {summary.already_present} already present"
    if summary.skipped:
        line += f", {len(summary.skipped)} skipped (see {Path(output_dir) / SKIPPED_REPORT})"
    notes = []
    if not summary.clips_given:
        notes.append("no clips found in --input")
    if summary.short:
        notes.append(
            f"{len(summary.short)} clip(s) have fewer than {summary.frames_needed} frames, so frames were repeated: "
            + ", ".join(summary.short[:10])
            + (" ..." if len(summary.short) > 10 else "")
        )
    for clip, used, others in summary.duplicates:
        notes.append(f"clip {clip!r} is given more than once; used {used}, ignored {', '.join(map(str, others))}")
    return "\n".join([line, *(f"note: {note}" for note in notes)])
