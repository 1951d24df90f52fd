"""Peak memory of reading one clip of large frames for an encoder: resized as decoded (what
the extraction commands do) against every frame held at full size before resizing.

    python benchmarks/bench_frame_memory.py --frames 32 --side 2000

The clip is a generated ``.npy`` array (memory-mapped, so only decoded frames cost memory),
read into the encoder's input ([T, 3, 224, 224] float32) in a fresh process per mode.  The
peak is the resident memory's high-water mark (Linux ``VmHWM``, reset once the libraries are
imported) less the resident memory at that reset: what reading the clip adds.  Both modes
must give the same encoder input (the same resize of the same frames); the largest absolute
difference between them is reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = ("resized-while-decoding", "full-size-then-resized")
# What tests/test_benchmarks.py runs: two small frames, seconds.
SMOKE_ARGS = ["--frames", "2", "--side", "300"]


def measure(clip: Path, mode: str, img_size: int, pixels_out: Path) -> dict:
    """Runs in the worker process: read the clip one way, report the peak; the encoder input
    is saved to ``pixels_out`` (after the peak is read) for the comparison of the modes.
    The libraries are imported here, before the peak is reset: the parent stays light."""
    import torch

    from benchmarks.common import machine_info, peak_memory_since_reset_mib, reset_peak_memory, rss_mib
    from minigpt4.datasets.frames import open_clip_frames
    from minigpt4.features.clip_vectors import frames_to_model_input

    if not reset_peak_memory(torch.device("cpu")):
        raise SystemExit("needs Linux (/proc/self/clear_refs) to reset the peak")
    before = rss_mib()
    frames = open_clip_frames(clip)
    indices = list(range(frames.num_frames))
    if mode == MODES[0]:
        pixels = frames_to_model_input(frames.read(indices, size=(img_size, img_size)), img_size)
    else:
        pixels = frames_to_model_input(frames.read(indices), img_size)
    peak = peak_memory_since_reset_mib(torch.device("cpu")) - before
    np.save(pixels_out, pixels.numpy())
    return {"mode": mode, "input_shape": list(pixels.shape), "peak_mib": peak, "machine": machine_info("cpu")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--side", type=int, default=2000, help="frames are side x side RGB")
    parser.add_argument("--img_size", type=int, default=224)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=3, metavar=("CLIP", "MODE", "PIXELS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        clip, mode, pixels = args.worker
        print(json.dumps(measure(Path(clip), mode, args.img_size, Path(pixels))))
        return
    with tempfile.TemporaryDirectory(prefix="bench_frames_") as tmp:
        clip = Path(tmp) / "clip.npy"
        array = np.lib.format.open_memmap(clip, mode="w+", dtype=np.uint8, shape=(args.frames, args.side, args.side, 3))
        for t in range(args.frames):  # one frame at a time: the generator itself stays small
            array[t] = (np.arange(args.side, dtype=np.uint32)[:, None] * (t + 1) % 256).astype(np.uint8)[..., None]
        array.flush()
        del array
        clip_mib = args.frames * args.side * args.side * 3 / 2**20
        print(f"clip: {args.frames} frames of {args.side}x{args.side} ({clip_mib:.0f} MiB as uint8)")
        results = []
        for mode in MODES:
            command = [sys.executable, "-m", "benchmarks.bench_frame_memory", "--img_size", str(args.img_size)]
            command += ["--worker", str(clip), mode, str(Path(tmp) / f"{mode}.npy")]
            results.append(json.loads(subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout))
        inputs = [np.load(Path(tmp) / f"{mode}.npy") for mode in MODES]
    difference = float(np.abs(inputs[0] - inputs[1]).max())
    print("| mode | peak MiB added by reading |\n| --- | --- |")
    for result in results:
        print(f"| {result['mode']} | {result['peak_mib']:.0f} |")
    # the same resize function of the same frames: nothing may differ
    agreed = {"what": "encoder input", "max_abs_diff": difference, "tolerance": 0.0, "agree": difference == 0.0}
    print(f"encoder inputs of the two modes: {'agree' if agreed['agree'] else 'DIFFER'}, max |difference| {difference:.3g}")
    if args.json:
        report = {"frames": args.frames, "side": args.side, "clip_mib": clip_mib, "results": results, "agreement": [agreed]}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
