"""The loop every extraction command runs, and its FaceMAE and VideoMAE commands: one
``<output>/<clip>.npy`` per clip.

:func:`extract_clips`, shared with the audio command (:mod:`minigpt4.features.audio_extract`):

1. the output folder's fingerprint (encoder, weights, settings) is compared with the
   run's: files of other settings are never mixed in (``overwrite`` replaces them);
2. every clip is opened and checked (frames exist, frame count, frame sizes; for sound: a
   track with enough samples) before anything is written, so a bad clip stops the run with
   nothing written (``skip_bad`` instead reports it in ``<output>/skipped.tsv`` and does the
   rest); clips whose ``.npy`` already exists are done and not opened again, which is how an
   interrupted run resumes;
3. the encoder's own step turns the checked clips into vectors (here: a DataLoader decodes
   the sampled frames in its workers, resizing each as it is decoded to the encoder's input
   size, and :mod:`minigpt4.features.clip_vectors` encodes ``batch_size`` clips at a time);
4. each clip's vector is written atomically (:func:`~minigpt4.common.atomic_io.save_npy_atomic`).

A clip that passes the checks but fails to decode later (a truncated frame, say) is an
error at that point, or with ``skip_bad`` one more line of the report.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from minigpt4.common.atomic_io import save_npy_atomic
from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.common.logger import setup_logging
from minigpt4.common.registry import RegistryError, registry
from minigpt4.datasets.errors import SKIPPED_REPORT, write_skipped_report
from minigpt4.datasets.frames import ClipReadError, clip_name, is_clip_entry, open_clip_frames, uniform_frame_indices
from minigpt4.features.clip_vectors import (
    FeatureLevel,
    check_counts,
    face_mae_settings,
    face_mae_vectors,
    frames_to_model_input,
    video_mae_frame_indices,
    video_mae_settings,
    video_mae_vectors,
)
from minigpt4.features.writer import FeatureOutputError, check_output_fingerprint, record_output_fingerprint
from minigpt4.models.face_mae import FaceMAE
from minigpt4.models.video_mae import VideoMAE

logger = logging.getLogger(__name__)

# what a command reports as one line: bad input, weights, names, output folder or the file
# system (a missing, unreadable or full one), never a bug
EXTRACTION_ERRORS = (ClipReadError, CheckpointError, RegistryError, FeatureOutputError, OSError, ValueError)
_SNIFF_BYTES = 8192  # how much of an --input file is read to tell a binary file from a clip list


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
        return _read_clip_list(input_path)
    raise FileNotFoundError(f"--input {input_path}: no such folder or clip list")


def _read_clip_list(listing: Path) -> list[Path]:
    """The clip paths of a list file: one a line (blank lines and ``#`` comments skipped;
    relative paths start at the list's folder)."""
    binary = ValueError(
        f"--input {listing}: a binary file, not a clip list (a text file naming one clip a line); "
        "pass a folder of clips or such a list"
    )
    with open(listing, "rb") as handle:
        if b"\x00" in handle.read(_SNIFF_BYTES):  # arrays, images, videos: text never holds NUL
            raise binary
    try:
        text = listing.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise binary from None
    lines = [line.strip() for line in text.splitlines()]
    return [listing.parent / line for line in lines if line and not line.startswith("#")]


class ClipJob(Protocol):
    """What the loop knows of a checked clip; each encoder adds what its step needs."""

    clip: str


Job = TypeVar("Job", bound=ClipJob)
# a clip's outcome from an encoder's step: its vector, or why it could not be read after all
ClipResult = tuple[Job, "np.ndarray | ClipReadError"]


def extract_clips(
    clips: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    settings: dict,
    check: Callable[[Path, str], Job],
    encode: Callable[[list[Job]], Iterator[ClipResult]],
    summary: ExtractionSummary,
    overwrite: bool,
    skip_bad: bool,
    progress: bool,
    desc: str,
    problem: str,
) -> ExtractionSummary:
    """The loop of every extraction command (see the module's docstring): ``check(path, clip)``
    opens one clip without output and returns its job (raising
    :class:`~minigpt4.datasets.frames.ClipReadError` for a bad clip); ``encode(jobs)`` yields
    every job's vector (or read error), in any order.  ``problem`` says what bad clips share
    (for the message that stops the run)."""
    output_dir = Path(output_dir)
    replace = check_output_fingerprint(output_dir, settings, overwrite)
    jobs, bad = [], []
    for path in _one_input_per_clip([Path(c) for c in clips], summary):
        name = clip_name(path)
        if not replace and (output_dir / f"{name}.npy").exists():
            summary.already_present += 1
            continue
        try:
            jobs.append(check(path, name))
        except ClipReadError as exc:
            bad.append(exc)
    _open_output(output_dir, settings, replace, bad, summary, skip_bad, problem)
    try:
        with tqdm(total=len(jobs), desc=desc, unit="clip", disable=not progress) as bar:
            for job, result in encode(jobs):
                if isinstance(result, ClipReadError):
                    if not skip_bad:
                        raise result
                    logger.error("%s", result)
                    summary.skipped.append(result)
                else:
                    save_npy_atomic(output_dir / f"{job.clip}.npy", result)
                    summary.done += 1
                bar.update(1)
    finally:
        if skip_bad:
            write_skipped_report(output_dir, summary.skipped)
    return summary


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


def _open_output(
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


# ------------------------------------------------------------------------- FaceMAE, VideoMAE


@dataclass(frozen=True)
class _FramesJob:
    """What a loader worker needs for one clip: plain data, so it crosses process bounds."""

    clip: str
    path: Path
    indices: list[int]


class _ClipFrameDataset(Dataset):
    """Decodes a clip's sampled frames; a read failure is returned, not raised, so the
    main process decides between stopping and skipping."""

    def __init__(self, jobs: Sequence[_FramesJob], img_size: int):
        self.jobs, self.img_size = jobs, img_size

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> tuple[_FramesJob, torch.Tensor | ClipReadError]:
        job = self.jobs[index]
        try:
            # resized as decoded: memory follows the encoder's input size, not the frames'
            frames = open_clip_frames(job.path, job.clip).read(job.indices, size=(self.img_size, self.img_size))
        except ClipReadError as exc:
            return job, exc
        return job, frames_to_model_input(frames, self.img_size)


def _extract_frames(
    clips: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    settings: dict,
    img_size: int,
    sample: Callable[[int], list[int]],
    encode_batch: Callable[[list[torch.Tensor]], list[np.ndarray]],
    batch_size: int,
    num_workers: int,
    frames_needed: int = 0,
    **loop_options,
) -> ExtractionSummary:
    """:func:`extract_clips` for an encoder of frames: each clip's ``sample(num_frames)``
    frames, ``batch_size`` clips per ``encode_batch``."""
    summary = ExtractionSummary(frames_needed=frames_needed, clips_given=len(clips))

    def check(path: Path, clip: str) -> _FramesJob:
        num_frames = open_clip_frames(path, clip).num_frames
        job = _FramesJob(clip, path, sample(num_frames))
        if num_frames < frames_needed:
            summary.short.append(clip)
        return job

    def encode(jobs: list[_FramesJob]) -> Iterator[ClipResult]:
        loader = DataLoader(
            _ClipFrameDataset(jobs, img_size),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=list,  # clips have different frame counts: the encoder step batches them
        )
        for batch in loader:
            readable = [pixels for _, pixels in batch if not isinstance(pixels, ClipReadError)]
            vectors = iter(encode_batch(readable) if readable else [])
            for job, pixels in batch:
                yield job, pixels if isinstance(pixels, ClipReadError) else next(vectors)

    return extract_clips(
        clips, output_dir, settings=settings, check=check, encode=encode, summary=summary, problem="cannot be read",
        **loop_options,
    )


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
    check_counts(batch_size=batch_size, num_workers=num_workers, frames_per_forward=frames_per_forward)
    settings = face_mae_settings(model, feature_level=feature_level, max_frames=max_frames, source=source)
    model = model.to(device).eval()
    return _extract_frames(
        clips,
        output_dir,
        settings=settings,
        img_size=model.img_size,
        sample=lambda num_frames: uniform_frame_indices(num_frames, max_frames),
        encode_batch=lambda pixels: face_mae_vectors(
            model, pixels, feature_level=feature_level, frames_per_forward=frames_per_forward, device=device
        ),
        batch_size=batch_size,
        num_workers=num_workers,
        overwrite=overwrite,
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
    settings = video_mae_settings(model, feature_level=feature_level, source=source)
    model = model.to(device).eval()
    return _extract_frames(
        clips,
        output_dir,
        settings=settings,
        img_size=model.img_size,
        frames_needed=model.num_frames,
        sample=lambda num_frames: video_mae_frame_indices(model, num_frames),
        encode_batch=lambda pixels: video_mae_vectors(model, pixels, device=device),
        batch_size=batch_size,
        num_workers=num_workers,
        overwrite=overwrite,
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
    registered-encoder options (``--checkpoint``, ``--model``) for a command whose encoder is
    a model folder instead; ``clip_kinds`` says what a clip may be."""
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
    parser.add_argument(
        "--trust-checkpoint",
        dest="trust_checkpoint",
        action="store_true",
        help="allow a weight file that needs full unpickling (runs code from the file)",
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
    extract: Callable[..., ExtractionSummary],
    *,
    is_entry: Callable[[Path], bool] = is_clip_entry,
    extract_options: dict | None = None,
) -> str:
    """What every extraction command does once parsed: ``build`` the encoder, extract every
    clip of ``args.input`` (the entries ``is_entry`` accepts) into ``args.output``, and return
    the summary line.  The options are checked before the encoder is built, and nothing is
    written before every clip is; a problem the user can fix (:data:`EXTRACTION_ERRORS`) ends
    the command with one line, ``error: ...``."""
    setup_logging()
    try:
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
    except EXTRACTION_ERRORS as exc:
        raise SystemExit(f"error: {exc}") from exc
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
