"""Throughput and peak memory of FaceMAE, VideoMAE and HuBERT (audio) feature extraction.

Runs the real extraction path (``extract_face_mae_features`` / ``extract_video_mae_features``:
decode, resize, encode, atomic write; ``extract_audio_features``: decode, resample, encode in
windows, atomic write) on generated ``.npy`` clips / ``.wav`` files with random weights, so
it needs no downloads and no network.  Each encoder runs in a fresh process, so the CPU peak
(max RSS) of one is not the other's.  The full audio encoder is HuBERT-large's architecture
(transformers' ``HubertConfig`` defaults with the large sizes), the upstream model's.

    python benchmarks/bench_encoders.py --preset tiny            # CPU, seconds
    python benchmarks/bench_encoders.py --preset full --device cuda   # ViT-L at 224

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU and the process's max RSS
(``resource.getrusage``) on the CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from benchmarks.common import format_table, machine_info, write_result
from minigpt4.common.registry import registry
from minigpt4.features.audio_extract import extract_audio_features
from minigpt4.features.encoder_extract import extract_face_mae_features, extract_video_mae_features
from minigpt4.models.hubert_encoder import HubertAudioEncoder

PRESETS = {
    # encoder names and the side of the generated frames (resized to the encoder's input)
    "tiny": {"face": "face_mae_tiny", "video": "video_mae_tiny", "frame_size": 64},
    "full": {"face": "face_mae_vit_large", "video": "video_mae_vit_large", "frame_size": 224},
}
# HuBERT sizes per preset: the tiny assets' stand-in, and HuBERT-large
HUBERT_PRESETS = {
    "tiny": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    ),
    "full": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
AUDIO_RATE = 16_000
# What tests/test_benchmarks.py runs: the tiny preset, small enough for seconds.
SMOKE_ARGS = ["--preset", "tiny", "--clips", "2", "--frames_per_clip", "4", "--audio_seconds", "1", "--batch_size", "2"]


@dataclass
class Result:
    encoder: str
    device: str
    batch_size: int
    clips: int
    clip_length: str  # frames of a video clip, seconds of sound
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


def hubert_encoder(preset: str) -> HubertAudioEncoder:
    """A random HuBERT with HuBERT-large's layout (layer-norm conv front end, stable layer norm)."""
    layout = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    config = HubertConfig(**layout, **HUBERT_PRESETS[preset])
    prepare = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=AUDIO_RATE, do_normalize=True)
    return HubertAudioEncoder(HubertModel(config), prepare)


def write_noise_wav(path: Path, seconds: float, rng: np.random.Generator) -> Path:
    """Mono 16-bit noise at 16 kHz: decoding costs what a real clip's sound costs."""
    samples = rng.integers(-8000, 8000, size=(1, round(seconds * AUDIO_RATE)), dtype=np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=AUDIO_RATE)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def run_one(family: str, args: argparse.Namespace) -> Result:
    """Time one encoder on ``args.clips`` generated clips; meant to run in its own process."""
    preset = PRESETS[args.preset]
    device = torch.device(args.device)
    torch.manual_seed(0)
    if family == "audio":
        return run_audio(args, device)
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
        seconds = timed_extraction(extract, model, clips, clips[: args.batch_size], tmp, device, args)
    peak, kind = peak_memory_mib(device)
    length = f"{args.frames_per_clip} frames"
    return Result(preset[family], str(device), args.batch_size, args.clips, length, seconds, peak, kind)


def timed_extraction(
    extract: Callable,
    encoder: torch.nn.Module,
    clips: list[Path],
    warmup: list[Path],
    tmp: Path,
    device: torch.device,
    args: argparse.Namespace,
) -> float:
    """Seconds ``extract`` takes for ``clips`` after a run on ``warmup`` (kernels, allocator,
    page cache); a GPU's peak memory is counted from after the warm-up."""
    options = {"device": device, "batch_size": args.batch_size, "num_workers": args.num_workers, "progress": False}
    extract(encoder, warmup, tmp / "warmup", **options)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    extract(encoder, clips, tmp / "out", **options)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run_audio(args: argparse.Namespace, device: torch.device) -> Result:
    encoder = hubert_encoder(args.preset)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = [write_noise_wav(tmp / f"clip_{i:04d}.wav", args.audio_seconds, rng) for i in range(args.clips)]
        seconds = timed_extraction(extract_audio_features, encoder, clips, clips[:1], tmp, device, args)
    peak, kind = peak_memory_mib(device)
    name = f"hubert_{'large' if args.preset == 'full' else 'tiny'}"
    return Result(name, str(device), args.batch_size, args.clips, f"{args.audio_seconds:g} s", seconds, peak, kind)


COLUMNS = [
    ("encoder", "encoder", ""),
    ("device", "device", ""),
    ("batch", "batch_size", "d"),
    ("clips", "clips", "d"),
    ("clip length", "clip_length", ""),
    ("clips/s", "clips_per_second", ".2f"),
    ("peak MiB", "peak_mib", ".0f"),
    ("memory", "memory_kind", ""),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default=None, help="default: cuda for 'full' when available, else cpu")
    parser.add_argument("--encoders", nargs="+", choices=["face", "video", "audio"], default=["face", "video", "audio"])
    parser.add_argument("--clips", type=int, default=16, help="timed clips per encoder")
    parser.add_argument("--frames_per_clip", type=int, default=32, help="FaceMAE encodes them all; VideoMAE samples 16")
    parser.add_argument("--audio_seconds", type=float, default=10.0, help="length of each generated sound clip")
    parser.add_argument("--batch_size", type=int, default=4, help="clips per forward pass")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
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
    rows = [{**asdict(r), "clips_per_second": r.clips_per_second} for r in results]
    print(format_table(rows, COLUMNS))
    if args.json:
        write_result(args.json, {"preset": args.preset, "results": rows, "machine": machine_info(args.device)})


if __name__ == "__main__":
    main()
