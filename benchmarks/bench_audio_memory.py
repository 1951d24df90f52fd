"""Peak memory of the audio extractor against the length of the recording: a long recording
is decoded and encoded window by window, so memory should follow the window, not the length.

    python -m benchmarks.bench_audio_memory --minutes 1 60       # the acceptance pair
    python -m benchmarks.bench_audio_memory --minutes 0.1 0.2    # seconds: the smoke preset

Each length is a generated silent 16 kHz mono WAV (written a piece at a time, so the
generator stays small) run through ``extract_audio_features`` with the tiny HuBERT of
``scripts/make_tiny_assets.py`` (30 s windows, the command's defaults) in a fresh process.
The peak is the whole process's peak resident memory (``ru_maxrss``, imports included), the
number a user sees; the model is the same for every length, so their difference is what the
recording's length costs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from benchmarks.common import load_script, max_rss_mib, run_worker, write_result

SAMPLE_RATE = 16_000
WRITE_SECONDS = 60  # samples per written piece of the WAV
SMOKE_ARGS = ["--minutes", "0.05", "0.1"]  # seconds of sound: the run checks the script, not memory


def write_silence(path: Path, minutes: float) -> Path:
    """A silent 16-bit mono WAV of ``minutes``."""
    remaining = round(minutes * 60 * SAMPLE_RATE)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=SAMPLE_RATE)
        stream.layout = "mono"
        pts = 0
        while remaining:
            count = min(remaining, WRITE_SECONDS * SAMPLE_RATE)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, count), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, pts
            container.mux(stream.encode(frame))
            pts, remaining = pts + count, remaining - count
        container.mux(stream.encode())
    return path


def measure(wav: Path, model_dir: Path, result: Path) -> None:
    """Runs in the worker process: extract one recording, report the process's peak."""
    from minigpt4.features.audio_extract import extract_audio_features
    from minigpt4.models.hubert_encoder import HubertAudioEncoder

    encoder = HubertAudioEncoder.from_pretrained(model_dir)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_audio_out_") as out:
        summary = extract_audio_features(encoder, [wav], out, progress=False)
    seconds = time.perf_counter() - start
    write_result(result, {"clips": summary.done, "seconds": seconds, "peak_rss_mib": max_rss_mib()})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 60.0], help="recording lengths")
    parser.add_argument("--worker", nargs=2, metavar=("WAV", "MODEL_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.worker:
        measure(Path(args.worker[0]), Path(args.worker[1]), Path(args.result))
        return
    if any(minutes <= 0 for minutes in args.minutes):
        parser.error("--minutes must be positive")
    with tempfile.TemporaryDirectory(prefix="bench_audio_") as tmp:
        model_dir = Path(tmp) / "hubert"
        load_script("make_tiny_assets").write_tiny_hubert(model_dir, seed=0)
        rows = []
        for minutes in args.minutes:
            wav = write_silence(Path(tmp) / f"silence_{minutes:g}min.wav", minutes)
            result = run_worker("benchmarks.bench_audio_memory", ["--worker", str(wav), str(model_dir)])
            assert result["clips"] == 1, result
            rows.append((minutes, result))
            wav.unlink()
    print("| recording | peak RSS MiB | extraction s |\n| --- | --- | --- |")
    for minutes, result in rows:
        print(f"| {minutes:g} min | {result['peak_rss_mib']:.0f} | {result['seconds']:.1f} |")
    peaks = [result["peak_rss_mib"] for _, result in rows]
    print(f"spread of the peaks: {max(peaks) - min(peaks):.0f} MiB")
    if args.json:
        report = {"runs": [{"minutes": minutes, **result} for minutes, result in rows],
                  "peak_spread_mib": max(peaks) - min(peaks), "load_average": os.getloadavg()}
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
