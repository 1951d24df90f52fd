"""Throughput and peak memory of FaceMAE and VideoMAE feature extraction.

Runs the real extraction path (``extract_face_mae_features`` / ``extract_video_mae_features``:
decode, resize, encode, atomic write) on generated ``.npy`` clips with random weights, so
it needs no downloads and no network.  Each encoder runs in a fresh process, so the CPU peak
(max RSS) of one is not the other's.

    python benchmarks/bench_encoders.py --preset tiny            # CPU, seconds
    python benchmarks/bench_encoders.py --preset full --device cuda   # ViT-L at 224

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU and the process's max RSS
(``resource.getrusage``) on the CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minigpt4.common.registry import registry
from minigpt4.features.encoder_extract import extract_face_mae_features, extract_video_mae_features

PRESETS = {
    # encoder names and the side of the generated frames (resized to the encoder's input)
    "tiny": {"face": "face_mae_tiny", "video": "video_mae_tiny", "frame_size": 64},
    "full": {"face": "face_mae_vit_large", "video": "video_mae_vit_large", "frame_size": 224},
}


@dataclass
class Result:
    encoder: str
    device: str
    batch_size: int
    clips: int
    frames_per_clip: int
    seconds: float
    peak_mib: float
    memory_kind: str

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
    # Linux reports ru_maxrss in KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, "max RSS"


def run_one(family: str, args: argparse.Namespace) -> Result:
    """Time one encoder on ``args.clips`` generated clips; meant to run in its own process."""
    preset = PRESETS[args.preset]
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = registry.get("encoder", preset[family])()
    extract = extract_face_mae_features if family == "face" else extract_video_mae_features
    rng = np.random.default_rng(0)
    side = preset["frame_size"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = []
        for i in range(args.clips):
            frames = rng.integers(0, 256, size=(args.frames_per_clip, side, side, 3), dtype=np.uint8)
            np.save(tmp / f"clip_{i:04d}.npy", frames)
            clips.append(tmp / f"clip_{i:04d}.npy")
        options = {"device": device, "batch_size": args.batch_size, "num_workers": args.num_workers, "progress": False}
        extract(model, clips[: args.batch_size], tmp / "warmup", **options)  # kernels, allocator, page cache
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        extract(model, clips, tmp / "out", **options)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    peak, kind = peak_memory_mib(device)
    return Result(preset[family], str(device), args.batch_size, args.clips, args.frames_per_clip, seconds, peak, kind)


def print_table(results: list[Result]) -> None:
    header = ("encoder", "device", "batch", "clips", "frames/clip", "clips/s", "peak MiB", "memory")
    rows = [
        (
            r.encoder,
            r.device,
            str(r.batch_size),
            str(r.clips),
            str(r.frames_per_clip),
            f"{r.clips_per_second:.2f}",
            f"{r.peak_mib:.0f}",
            r.memory_kind,
        )
        for r in results
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default=None, help="default: cuda for 'full' when available, else cpu")
    parser.add_argument("--encoders", nargs="+", choices=["face", "video"], default=["face", "video"])
    parser.add_argument("--clips", type=int, default=16, help="timed clips per encoder")
    parser.add_argument("--frames_per_clip", type=int, default=32, help="FaceMAE encodes them all; VideoMAE samples 16")
    parser.add_argument("--batch_size", type=int, default=4, help="clips per forward pass")
    parser.add_argument("--num_workers", type=int, default=0)
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if args.preset == "full" and torch.cuda.is_available() else "cpu"

    # a fresh process per encoder: max RSS only ever grows within one
    results = []
    for family in args.encoders:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results.append(pool.submit(run_one, family, args).result())
    print(f"preset {args.preset}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if torch.device(args.device).type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(torch.device(args.device))}")
    print_table(results)


if __name__ == "__main__":
    main()
