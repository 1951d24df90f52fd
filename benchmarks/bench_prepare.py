"""Frames per second of the prepare step: decode, detect, align, write, and end to end.

A generated 640x360 video (a drawn face moving across the frame, scripts/tiny_sessions.py)
goes through the stages one at a time and then through the whole job (``prepare``) with
detection on every frame and on every k-th frame (the track interpolated between):

    python benchmarks/bench_prepare.py                       # CPU, torch's thread setting
    python benchmarks/bench_prepare.py --threads 1 2         # one row per thread count
    python benchmarks/bench_prepare.py --device cuda         # detector on a GPU

"decoded fps" counts every frame decoded (the video's frame rate is what the end-to-end job
must keep up with), "detected fps" the frames the detector ran on; the end-to-end row counts
written aligned faces per second of wall time, model loading included, and per second of
this process's CPU time (what a core of its own would give when other jobs share the machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import format_table, load_script, machine_info, write_result
from minigpt4.prepare.align import align_faces
from minigpt4.prepare.config import load_prepare_config
from minigpt4.prepare.decode import VideoSource, read_in_chunks
from minigpt4.prepare.detect import MTCNNDetector
from minigpt4.prepare.run import prepare
from minigpt4.prepare.write import ClipOutput, PreparedLayout

# What tests/test_benchmarks.py runs: a short, small video (the face still found and tracked), seconds.
SMOKE_ARGS = [
    "--frames", "24", "--height", "180", "--width", "320", "--min_face_size", "20", "--batch_size", "8",
    "--detect_every", "1", "--threads", "1",
]
STAGE_COLUMNS = [
    ("torch threads", "threads", "d"),
    ("decode fps", "decode_fps", ".1f"),
    ("detect fps", "detect_fps", ".1f"),
    ("align fps", "align_fps", ".1f"),
    ("write fps", "write_fps", ".1f"),
]
END_TO_END_COLUMNS = [
    ("torch threads", "threads", "d"),
    ("detect_every", "detect_every", "d"),
    ("decoded", "frames_decoded", "d"),
    ("detected", "frames_detected", "d"),
    ("written", "frames_written", "d"),
    ("s", "seconds", ".1f"),
    ("written fps", "written_fps", ".1f"),
    ("detected fps", "detected_fps", ".1f"),
    ("CPU s", "cpu_seconds", ".1f"),
    ("written per CPU s", "written_per_cpu_s", ".1f"),
]


def write_test_video(path: Path, frames: int, height: int, width: int, fps: int, sway_frames: int | None = None) -> None:
    """A face of about 1/4 the frame height swaying left and right once every ``sway_frames``
    (default: once over the video; 100 frames at 25 fps: at most 0.3 frame widths per second)."""
    sessions = load_script("tiny_sessions")
    rng = np.random.default_rng(0)
    images = []
    for t in range(frames):
        phase = 2 * np.pi * t / (sway_frames or frames)
        face = sessions.DrawnFace(
            cy=height * (0.5 + 0.05 * np.sin(2 * phase)), cx=width * (0.5 + 0.15 * np.sin(phase)), r=height / 8
        )
        images.append(sessions.render_frame(height, width, [face], rng))
    sessions.write_video(path, np.stack(images), fps=fps)


def bench_stages(video: Path, out: Path, args) -> dict:
    source = VideoSource(video, "bench")
    indices = list(range(source.num_frames))
    start = time.perf_counter()
    frames = np.concatenate([chunk for _, chunk in read_in_chunks(source, indices, args.batch_size)])
    decode_s = time.perf_counter() - start

    detector = MTCNNDetector(args.min_face_size, 0.9, None, args.device)
    detector.detect(frames[:1])  # warm-up
    start = time.perf_counter()
    found = [face for i in range(0, len(frames), args.batch_size) for face in detector.detect(frames[i : i + args.batch_size])]
    detect_s = time.perf_counter() - start
    landmarks = np.stack([f.landmarks[0] for f in found])  # the drawn face is found in every frame

    start = time.perf_counter()
    faces = np.concatenate(
        [align_faces(frames[i : i + args.batch_size], landmarks[i : i + args.batch_size], 224) for i in range(0, len(frames), args.batch_size)]
    )
    align_s = time.perf_counter() - start

    output = ClipOutput(PreparedLayout(out / "stages"), "bench", 224)
    start = time.perf_counter()
    output.start(len(faces))
    output.add(faces)
    output.commit(faces[0], {})
    write_s = time.perf_counter() - start
    n = len(frames)
    return {"decode_fps": n / decode_s, "detect_fps": n / detect_s, "align_fps": n / align_s, "write_fps": n / write_s}


def bench_end_to_end(video_dir: Path, out: Path, detect_every: int, args) -> dict:
    options = [
        f"input.videos={video_dir}",
        f"output={out}",
        "progress=false",
        f"detector.min_face_size={args.min_face_size}",
        f"detector.detect_every={detect_every}",
        f"detector.batch_size={args.batch_size}",
        f"detector.device={args.device}",
    ]
    start, start_cpu = time.perf_counter(), time.process_time()
    summary = prepare(load_prepare_config(None, options))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return {
        "detect_every": detect_every,
        "frames_decoded": summary.frames_decoded,
        "frames_detected": summary.frames_detected,
        "frames_written": summary.frames_written,
        "seconds": seconds,
        "written_fps": summary.frames_written / seconds,
        "detected_fps": summary.frames_detected / seconds,
        "cpu_seconds": cpu_seconds,
        "written_per_cpu_s": summary.frames_written / cpu_seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--min_face_size", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--detect_every", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()], help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    machine = machine_info(args.device)
    print(f"machine: {machine}")
    stages, end_to_end = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "videos").mkdir()
        video = tmp / "videos" / "walk.mp4"
        write_test_video(video, args.frames, args.height, args.width, fps=25)
        print(f"{args.frames} frames of {args.width}x{args.height}, min_face_size {args.min_face_size}")
        for threads in args.threads:
            torch.set_num_threads(threads)
            stages.append({"threads": threads, **bench_stages(video, tmp / f"stages_{threads}", args)})
            for every in args.detect_every:
                row = bench_end_to_end(tmp / "videos", tmp / f"out_{threads}_{every}", every, args)
                end_to_end.append({"threads": threads, **row})
    print("each stage alone, frames per second:")
    print(format_table(stages, STAGE_COLUMNS))
    print("end to end (prepare), detector start-up included:")
    print(format_table(end_to_end, END_TO_END_COLUMNS))
    load_after = os.getloadavg()[0]
    print(f"load average after: {load_after:.1f}")
    if args.json:
        report = {"frames": args.frames, "height": args.height, "width": args.width, "stages": stages,
                  "end_to_end": end_to_end, "machine": machine, "load_average_after": load_after}
        write_result(args.json, report)


if __name__ == "__main__":
    main()
