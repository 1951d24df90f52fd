"""Speed of the mind-wandering detector (``python -m minigpt4.detect``): seconds per window by
stage and the real-time factor, offline and live.

A detector is made the way a study makes one, at the preset's sizes with random weights:
generated face clips -> the FaceMAE and VideoMAE extraction functions (their
``extraction.json``) -> the hcmw feature dump as ``eval_emotion.py`` runs it (its manifest)
-> the probe -> ``probe.export``, one detector per set (``facemae`` and
``llama/L{layer}/image:2``).  The projectors come from a checkpoint file, so detect builds only
the parts a set needs, as it does with the released weights.  Then a generated recording (a
drawn face swaying across the frame, ``benchmarks/bench_prepare.py``'s video) goes through
``minigpt4.detect`` in this process:

* offline, once per set and ``--threads`` value (``detect.threads``): the stage seconds of its
  ``summary.json`` per window (``decode``; ``faces`` = MTCNN detection, tracking, alignment and
  the peak frame; ``encoders``; ``model`` = EVA, the projectors and the LLM layers; ``detector``)
  and the real-time factor (processing time / recording time; < 1 keeps up);
* live (``--live``): ``scripts/stream_recording.py`` writes the recording into a growing
  Matroska file at real-time pace while ``detect --follow`` (``live.behind: drop``) reads it;
  latency p50 / p95 / max (last frame of a window in -> its line out) and the share of windows
  dropped to keep up.

For the ``facemae`` rows the arithmetic of the face path is printed too: the face encoder's
floating-point operations per frame (``torch.utils.flop_counter``), frames per window, the
throughput the encoder reached and a plain matrix product's on as many threads, MTCNN's
seconds per frame, and the sampling rate (``faces.sampling.fps``) at which the factor would
reach 1.

    python -m benchmarks.bench_detect --preset tiny --live              # seconds to minutes
    python -m benchmarks.bench_detect --preset medium --repeats 3 --live
    python -m benchmarks.bench_detect --preset face_large --seconds 20  # the full-size FaceMAE on 2 threads
    python -m benchmarks.bench_detect --preset full --device cuda --live

Presets (random weights; nothing is downloaded):

* ``tiny``: the tiny assets' sizes (scripts/make_tiny_assets.py), a 320x180 recording.
* ``medium``: real widths, few layers, in the full model's proportion (as bench_extract's):
  FaceMAE and VideoMAE ViT-L width 1024 with 2 of their 24 blocks, EVA-CLIP ViT-g width 1408
  with 2 of its 39 blocks at 448, LLaMA-2-7B width 4096 with 2 of its 32 layers; 640x360.
* ``face_large``: ``medium`` with the full FaceMAE (``face_mae_vit_large``, ViT-L/16 at 224),
  the ``facemae`` set on 2 threads: the acceptance case.
* ``full``: every part at full size (LLaMA-2-7B built at random on the device), bf16, GPU.

Everything runs in this process (memory is not measured here): the stage seconds come from
detect's own clock, and each run starts a new detect (parts built again, not timed).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from benchmarks.bench_extract import load_for_benchmark, streamed_dump
from benchmarks.bench_prepare import write_test_video
from benchmarks.common import (
    LLAMA2_7B,
    REPO_ROOT,
    format_table,
    load_script,
    machine_info,
    random_llm_on_device,
    register_eva_g_depth,
    register_mae_depth,
    write_llama_folder,
    write_result,
)
from minigpt4.common.registry import registry
from minigpt4.detect.config import DetectConfig, EncodersConfig, InputConfig, LiveConfig, WindowConfig, check_config
from minigpt4.detect.outputs import STAGES, SUMMARY_JSON
from minigpt4.detect.run import detect, output_name
from minigpt4.features.encoder_extract import build_encoder, extract_face_mae_features, extract_video_mae_features
from minigpt4.features.writer import EXTRACTION_RECORD
from minigpt4.models.face_mae import FaceMAE
from minigpt4.models.video_mae import VideoMAE
from minigpt4.prepare.run import torch_threads
from minigpt4.probe.config import ProbeConfig, check_config as check_probe_config
from minigpt4.probe.export import export_detectors
from minigpt4.probe.run import run_probe

# What tests/test_benchmarks.py runs: the tiny preset on a 4 s recording, one live run (seconds).
SMOKE_ARGS = ["--preset", "tiny", "--seconds", "2", "--threads", "1", "--live", "--live-sets", "llama", "--live-threads", "1"]
SETS = ("facemae", "llama")
SEED = 0
DUMP_CLIPS = 6  # labels alternate MW / NonMW, folds cycle 0..2: each fold holds both labels
CLIP_FRAMES = 2  # frames of each generated face clip (VideoMAE repeats them to its 16)
FACE_SIZE = 224  # the aligned faces prepare writes
POSITION = "image:2"  # the llama set's position
SWAY_S = 10.0  # the recorded face sways across the frame and back in this time (0.1 frame widths per second at most)
LIVE_STALL_S = 2.0  # the growing file ends the live run after this long without growth
STREAMER = REPO_ROOT / "scripts" / "stream_recording.py"


@dataclass(frozen=True)
class Preset:
    face_encoder: str  # a registered FaceMAE variant
    video_encoder: str  # a registered VideoMAE variant
    image_size: int
    feature_dim: int
    size: str  # the recording's WIDTHxHEIGHT
    sets: tuple[str, ...] = SETS
    threads: tuple[int, ...] = (1, 2)
    device: str = "cpu"
    encoder_depth: int | None = None  # blocks of both encoders (None: the variant's own)
    face_depth: int | None = None  # overrides encoder_depth for FaceMAE
    eva_depth: int | None = None  # None: the tiny model's EVA
    llama_layers: int | None = None  # None: the tiny LLaMA
    llm_on_device: bool = False  # random LLM weights built on the device instead of read from a folder
    model: dict = field(default_factory=dict)  # further model.* settings

    @property
    def tiny(self) -> bool:
        return self.llama_layers is None


MEDIUM = dict(
    face_encoder="face_mae_vit_large", video_encoder="video_mae_vit_large", image_size=448, feature_dim=1024,
    size="640x360", encoder_depth=2, eva_depth=2, llama_layers=2,
)
PRESETS = {
    "tiny": Preset(face_encoder="face_mae_tiny", video_encoder="video_mae_tiny", image_size=224, feature_dim=64, size="320x180"),
    "medium": Preset(**MEDIUM),
    "face_large": Preset(**dict(MEDIUM, face_depth=24), sets=("facemae",), threads=(2,)),
    "full": Preset(
        face_encoder="face_mae_vit_large", video_encoder="video_mae_vit_large", image_size=448, feature_dim=1024,
        size="640x360", threads=(4,), device="cuda", eva_depth=39, llama_layers=32, llm_on_device=True,
        model={"precision": "bf16"},
    ),
}


@dataclass
class Setup:
    """What the measurements read: the detectors, the weights detect needs, the recording."""

    detectors: dict[str, Path]  # set name -> detector folder
    encoders: dict[str, Path]  # facemae / videomae -> checkpoint
    face_encoder: str  # registered name
    recording: Path
    llm_on_device: bool


# ---------------------------------------------------------------------------------- the detectors


def write_encoder_checkpoint(name: str, path: Path, seed: int) -> Path:
    """Random weights for the registered FaceMAE / VideoMAE ``name`` in the released file's layout."""
    tiny = load_script("make_tiny_assets")
    arch = registry.get("encoder", name).keywords
    mlp_hidden = int(arch["width"] * arch["mlp_ratio"])
    if "num_frames" in arch:
        shapes = tiny.video_mae_shapes(arch["width"], arch["depth"], mlp_hidden, arch["patch_size"], arch["tubelet_size"])
    else:
        grid = arch["img_size"] // arch["patch_size"]
        shapes = tiny.face_mae_shapes(arch["width"], arch["depth"], mlp_hidden, arch["patch_size"], grid)
    torch.save({"model": tiny.random_state_dict(shapes, torch.Generator().manual_seed(seed))}, path)
    return path


def write_llama(preset: Preset, work: Path) -> Path:
    """The preset's LLaMA folder (with the tiny assets' tokenizer)."""
    tiny = load_script("make_tiny_assets")
    tokenizer = tiny.build_tokenizer()
    folder = work / "llama"
    if preset.tiny:
        tiny.write_tokenizer_files(folder, tokenizer.serialized_model_proto())
        tiny.write_tiny_llama(folder, tokenizer.vocab_size(), SEED)
        return folder
    tiny.write_tokenizer_files(work / "tokenizer", tokenizer.serialized_model_proto())
    config = dict(LLAMA2_7B, num_hidden_layers=preset.llama_layers)
    return write_llama_folder(folder, work / "tokenizer", config, with_weights=not preset.llm_on_device, seed=SEED)


def write_vectors(names: dict[str, str], checkpoints: dict[str, Path], work: Path, device: str) -> Path:
    """Generated aligned-face clips through the extraction functions (the commands' path):
    ``<root>/features/<folder>/<clip>.npy`` and each folder's ``extraction.json``; peak frames;
    the annotation.  Returns the data root."""
    root = work / "hcmw"
    rng = np.random.default_rng(SEED)
    clips, rows = [], []
    for index in range(DUMP_CLIPS):
        clip = f"clip_{index:02d}"
        frames = rng.integers(0, 256, size=(CLIP_FRAMES, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
        (root / "face_arrays").mkdir(parents=True, exist_ok=True)
        np.save(root / "face_arrays" / f"{clip}.npy", frames)
        clips.append(root / "face_arrays" / f"{clip}.npy")
        (root / "images" / clip).mkdir(parents=True)
        Image.fromarray(frames[0]).save(root / "images" / clip / f"{clip}_peak_frame.png")
        rows.append((f"{clip}.mp4", ("MW", "NonMW")[index % 2], index % 3))
    for stream, family, extract, folder in (
        ("facemae", FaceMAE, extract_face_mae_features, "mae_340_UTT"),
        ("videomae", VideoMAE, extract_video_mae_features, "maeV_199_UTT"),
    ):
        encoder = build_encoder(names[stream], family, checkpoints[stream], trust_checkpoint=False)
        extract(encoder, clips, root / "features" / folder, device=device, progress=False, source={"model": names[stream]})
        del encoder
    with (root / "annotations.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uuid", "mw_label", "test_fold_num"])
        writer.writerows(rows)
    return root


def dump_config(preset: Preset, llama: Path, data: Path, work: Path, device: str, layer: int) -> Path:
    """The ``eval_emotion.py`` config of the dump (hcmw_caption at the preset's sizes)."""
    model = {"arch": "minigpt_v2", "llama_model": str(llama), "vit_checkpoint": "", "ckpt": "", "llama_feature_layers": [layer]}
    if preset.tiny:
        model["model_type"] = "tiny"
    else:
        model |= {"model_type": "pretrain", "vit_model": register_eva_g_depth(preset.eva_depth),
                  "image_size": preset.image_size, "video_feature_dim": preset.feature_dim}
    model.update(preset.model)
    size = preset.image_size
    config = {
        "model": model,
        "evaluation_datasets": {
            "hcmw_caption": {
                "build_info": {"annotation": str(data / "annotations.csv"), "image_root": str(data / "images"),
                               "feature_root": str(data / "features")},
                "feature_dim": preset.feature_dim,
                "vis_processor": {"train": {"name": "blip2_image_train", "image_size": size},
                                  "eval": {"name": "blip2_image_eval", "image_size": size}},
            }
        },
        "run": {"device": device, "batch_size": 2, "num_workers": 0, "output_dir": str(work / "dump")},
    }
    path = work / "dump_config.yaml"
    OmegaConf.save(OmegaConf.create(config), path)
    return path


def dump_features(preset: Preset, cfg_path: Path, work: Path) -> Path:
    """The feature dump as ``eval_emotion.py`` runs it.  The model is built with fresh
    projectors (and LoRA), which are then saved as its ``model.ckpt``: the dump records that
    file by content, so detect loads the same projectors and builds only what a set needs."""
    cfg, section, dataset, model, _ = load_for_benchmark(cfg_path, preset)  # a random LLM on the device with llm_on_device
    trainable = {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}
    ckpt = work / "emotion_llama.pth"
    torch.save({"model": trainable}, ckpt)
    cfg.model_cfg.ckpt = str(ckpt)
    out = Path(cfg.run_cfg.output_dir)
    with torch.inference_mode():
        streamed_dump(model, dataset, cfg, section, out, cfg.run_cfg.batch_size)
    return out


def export_sets(dump: Path, data: Path, work: Path, set_names: list[str]) -> dict[str, Path]:
    """The probe on the dump (one C, no permutations: the weights are what is timed) and
    ``probe.export`` of ``set_names``."""
    kinds = ["facemae_projected_features"] + (["llama_features"] if any(s.startswith("llama/") for s in set_names) else [])
    cfg = ProbeConfig(
        dump_dir=str(dump), annotation=str(data / "annotations.csv"), output_dir=str(work / "probe"), kinds=kinds,
        c_grid=[1.0], permutations=0, n_jobs=1, plots=False, timeline_sets=[], export=list(set_names),
    )
    check_probe_config(cfg)
    folders = export_detectors(run_probe(cfg, progress=False), Path(cfg.output_dir))
    return dict(zip(set_names, folders))


def set_name(kind: str, layer: int) -> str:
    return "facemae" if kind == "facemae" else f"llama/L{layer}/{POSITION}"


def build_setup(preset: Preset, args, work: Path) -> Setup:
    depth = {"facemae": preset.face_depth or preset.encoder_depth, "videomae": preset.encoder_depth}
    registered = {"facemae": preset.face_encoder, "videomae": preset.video_encoder}
    names = {stream: register_mae_depth(name, depth[stream]) if depth[stream] else name for stream, name in registered.items()}
    started = time.perf_counter()
    (work / "weights").mkdir(parents=True)
    checkpoints = {
        stream: write_encoder_checkpoint(name, work / "weights" / f"{name}.pth", SEED + k)
        for k, (stream, name) in enumerate(names.items())
    }
    llama = write_llama(preset, work)
    data = write_vectors(names, checkpoints, work, args.device)
    dump = dump_features(preset, dump_config(preset, llama, data, work, args.device, args.llm_layer), work)
    kinds = sorted(set(args.sets) | set(args.live_sets if args.live else []), key=SETS.index)
    detectors = export_sets(dump, data, work, [set_name(kind, args.llm_layer) for kind in kinds])
    width, height = (int(side) for side in args.size.split("x"))
    recording = work / "recording" / "session.mp4"
    recording.parent.mkdir()
    # one frame past the last window's end: it closes that window live, as a camera's next frame would
    frames = round(args.seconds * args.video_fps) + 1
    write_test_video(recording, frames, height, width, args.video_fps, sway_frames=round(SWAY_S * args.video_fps))
    print(f"set-up (weights, extraction, dump, probe, export, a {args.seconds:g} s recording): "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    return Setup({kind: detectors[set_name(kind, args.llm_layer)] for kind in kinds}, checkpoints, names["facemae"],
                 recording, preset.llm_on_device)


# ---------------------------------------------------------------------------------- measuring


def detect_config(setup: Setup, detector: Path, source: Path, out: Path, threads: int, args, follow: bool = False) -> DetectConfig:
    faces = {"sampling": {"fps": args.sampling_fps}}
    if args.device != "cpu":
        faces["detector"] = {"device": args.device}
    cfg = DetectConfig(
        detector=str(detector),
        input=InputConfig(path=str(source)),
        output_dir=str(out),
        window=WindowConfig(length_s=args.window, hop_s=args.window, short_last="drop"),
        encoders=EncodersConfig(face_mae=str(setup.encoders["facemae"]), video_mae=str(setup.encoders["videomae"])),
        faces=faces,
        device=args.device,
        threads=threads,
        progress=False,
        live=LiveConfig(follow=follow, behind="drop", stall_s=LIVE_STALL_S),
    )
    check_config(cfg)
    return cfg


def run_detect(setup: Setup, cfg: DetectConfig):
    with random_llm_on_device(cfg.device) if setup.llm_on_device else contextlib.nullcontext():
        return detect(cfg)


def check_every_window_scored(summary: dict, kind: str) -> None:
    """Windows without an estimate skip the encoders and the model: their times would not be the detector's."""
    if summary["windows_with_estimate"] != summary["windows"]:
        raise SystemExit(
            f"bench_detect: the {kind} detector scored {summary['windows_with_estimate']} of {summary['windows']} windows "
            "(the generated face was not found or tracked in the others); choose a larger --size"
        )


def per_window(summary: dict) -> dict:
    """Seconds per window of each stage, their sum and the real-time factor of one run."""
    windows = summary["windows"]
    row = {stage: summary["seconds"][stage] / windows for stage in STAGES}
    row["total"] = sum(row[stage] for stage in STAGES)
    row["real_time_factor"] = summary["real_time_factor"]
    row["dominant"] = max(STAGES, key=lambda stage: row[stage])
    return row


def measure_offline(setup: Setup, kind: str, threads: int, args, work: Path) -> dict:
    """``repeats`` offline runs; the run of median real-time factor gives the stage columns."""
    runs = []
    for repeat in range(args.repeats):
        out = work / "offline" / f"{kind}_{threads}_{repeat}"
        cfg = detect_config(setup, setup.detectors[kind], setup.recording, out, threads, args)
        started = time.perf_counter()
        run_detect(setup, cfg)
        wall = time.perf_counter() - started
        summary = json.loads((out / output_name(setup.recording) / SUMMARY_JSON).read_text())
        check_every_window_scored(summary, kind)
        processing = sum(summary["seconds"].values())
        runs.append({"summary": summary, "startup_s": wall - processing})
        print(f"  offline {kind}, {threads} threads, run {repeat + 1}: real-time factor {summary['real_time_factor']:.3f}",
              flush=True)
    factors = [run["summary"]["real_time_factor"] for run in runs]
    median = sorted(runs, key=lambda run: run["summary"]["real_time_factor"])[(len(runs) - 1) // 2]
    summary = median["summary"]
    return {
        "set": kind, "detector_set": json.loads((setup.detectors[kind] / "detector.json").read_text())["set"],
        "threads": threads, "windows": summary["windows"], "with_estimate": summary["windows_with_estimate"],
        **per_window(summary), "real_time_factors": factors, "startup_s": median["startup_s"],
    }


@contextlib.contextmanager
def streaming_when_ready(record: Path, recording: Path, target: Path, seconds: float):
    """Start ``scripts/stream_recording.py`` once detect has recorded its settings in
    ``record`` (its parts are built then and it opens the source next), so the recording
    starts when a camera would be switched on for a detector that is ready."""
    stop = threading.Event()
    started: list[subprocess.Popen] = []

    def watch() -> None:
        while not stop.is_set():
            if record.is_file():
                command = [sys.executable, str(STREAMER), str(recording), str(target)]
                started.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        for streamer in started:
            if streamer.wait(timeout=seconds + 60) != 0:  # it has written the whole recording by now
                raise RuntimeError(f"{STREAMER.name} exited {streamer.returncode}")


def measure_live(setup: Setup, kind: str, threads: int, args, work: Path) -> dict:
    """One live run: the recording streamed into a growing file at real-time pace."""
    out = work / "live" / f"{kind}_{threads}"
    target = work / "live" / f"{kind}_{threads}.mkv"
    cfg = detect_config(setup, setup.detectors[kind], target, out, threads, args, follow=True)
    lines = io.StringIO()
    streaming = streaming_when_ready(out / EXTRACTION_RECORD, setup.recording, target, args.seconds)
    with streaming, contextlib.redirect_stdout(lines):
        run_detect(setup, cfg)
    emitted = [json.loads(line) for line in lines.getvalue().splitlines() if line.startswith("{")]
    latencies = [line["latency_s"] for line in emitted if "latency_s" in line]
    summary = json.loads((out / target.stem / SUMMARY_JSON).read_text())
    check_every_window_scored(summary, kind)
    dropped = len(summary["dropped_behind"])
    return {
        "set": kind, "threads": threads, "windows": summary["windows"], "dropped": dropped,
        "dropped_share": dropped / (summary["windows"] + dropped) if summary["windows"] + dropped else None,
        "latency_p50": float(np.quantile(latencies, 0.5)) if latencies else None,
        "latency_p95": float(np.quantile(latencies, 0.95)) if latencies else None,
        "latency_max": max(latencies, default=None),
        **{stage: summary["seconds"][stage] / summary["windows"] for stage in STAGES if summary["windows"]},
        "real_time_factor": summary["real_time_factor"],
    }


# ---------------------------------------------------------------------------------- arithmetic


def encoder_gflop_per_frame(name: str, device: str) -> float:
    """Floating-point operations (2 per multiply-add) of one FaceMAE frame, counted by torch.

    timm's attention runs as its plain matrix products here: the counter has no formula for
    the fused CPU attention kernel, which computes the same products."""
    from torch.utils.flop_counter import FlopCounterMode

    encoder = registry.get("encoder", name)().to(device).eval()
    for module in encoder.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        encoder(torch.zeros(1, 3, encoder.img_size, encoder.img_size, device=device))
    return counter.get_total_flops() / 1e9


def matmul_gflops(threads: int, device: str, n: int = 2048, repeats: int = 5) -> float:
    """A float32 n x n matrix product's throughput on ``threads`` threads (best of ``repeats``)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    with torch_threads(threads):
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            if device != "cpu":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def face_path_arithmetic(row: dict, gflop_per_frame: float, args) -> dict:
    """Where the face path's time goes per frame, and the sampling rate at which a window
    takes as long to process as it lasts (the factor reaches 1): the stages that grow with the
    frames kept (faces, encoders) against those that do not (decode, model, detector)."""
    frames = min(args.sampling_fps or args.video_fps, args.video_fps) * args.window
    faces_s, encoder_s = row["faces"] / frames, row["encoders"] / frames
    fixed_s = row["decode"] + row["model"] + row["detector"]
    return {
        "frames_per_window": frames,
        "encoder_gflop_per_frame": gflop_per_frame,
        "encoder_gflop_per_window": gflop_per_frame * frames,
        "encoder_gflops_reached": gflop_per_frame / encoder_s if encoder_s else None,
        "matmul_gflops": matmul_gflops(row["threads"], args.device),
        "faces_s_per_frame": faces_s,
        "encoder_s_per_frame": encoder_s,
        "fixed_s_per_window": fixed_s,
        "fps_at_factor_1": max(args.window - fixed_s, 0.0) / (args.window * (faces_s + encoder_s)),
    }


# ---------------------------------------------------------------------------------- reports


OFFLINE_COLUMNS = [
    ("set", "detector_set", ""),
    ("threads", "threads", "d"),
    ("windows", "windows", "d"),
    ("with face", "with_estimate", "d"),
    *[(f"{stage} s", stage, ".3f") for stage in STAGES],
    ("total s", "total", ".3f"),
    ("real-time factor", "real_time_factor", ".3f"),
    ("dominant", "dominant", ""),
    ("start-up s", "startup_s", ".1f"),
]
LIVE_COLUMNS = [
    ("set", "set", ""),
    ("threads", "threads", "d"),
    ("windows", "windows", "d"),
    ("dropped", "dropped", "d"),
    ("dropped share", "dropped_share", ".2f"),
    ("latency p50 s", "latency_p50", ".3f"),
    ("latency p95 s", "latency_p95", ".3f"),
    ("latency max s", "latency_max", ".3f"),
    ("real-time factor", "real_time_factor", ".3f"),
]


def arithmetic_line(row: dict, face_encoder: str, args) -> str:
    a = row["arithmetic"]
    fps = a["fps_at_factor_1"]
    verdict = f"every frame ({args.video_fps} fps) keeps up" if fps >= args.video_fps else f"keeps up at {fps:.2f} frames/s"
    return (
        f"{row['set']}, {row['threads']} threads: {a['frames_per_window']:g} frames per {args.window:g} s window x "
        f"{a['encoder_gflop_per_frame']:.3g} GFLOP ({face_encoder}) = {a['encoder_gflop_per_window']:.3g} GFLOP, at "
        f"{a['encoder_gflops_reached']:.3g} GFLOP/s reached (a float32 matrix product: {a['matmul_gflops']:.3g} GFLOP/s) "
        f"= {row['encoders']:.3g} s; faces {a['faces_s_per_frame']:.3g} s/frame, encoder {a['encoder_s_per_frame']:.3g} "
        f"s/frame, decode + model + detector {a['fixed_s_per_window']:.3g} s/window: factor {row['real_time_factor']:.3g} "
        f"at {args.sampling_fps:g} frames/s; factor 1 at {fps:.3g} frames/s ({verdict})"
    )


def frame_size(text: str) -> str:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) >= 64 and int(height) >= 64):
        raise argparse.ArgumentTypeError(f"{text!r}: give WIDTHxHEIGHT in pixels, each at least 64, e.g. 640x360")
    return text


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--sets", nargs="+", choices=SETS, help="detectors timed offline (default: the preset's)")
    parser.add_argument("--llm-layer", type=int, default=-1, help="the llama set's layer (default -1: the last, every layer runs)")
    parser.add_argument("--threads", type=int, nargs="+", help="detect.threads of the offline runs (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=1, help="offline runs per set and thread count; the median counts")
    parser.add_argument("--live", action="store_true", help="also time live runs at real-time pace")
    parser.add_argument("--live-sets", nargs="+", choices=SETS, help="detectors timed live (default: --sets)")
    parser.add_argument("--live-threads", type=int, nargs="+", default=[2], help="detect.threads of the live runs (default 2)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the generated recording (default 60)")
    parser.add_argument("--size", type=frame_size, help="the recording's WIDTHxHEIGHT (default: the preset's)")
    parser.add_argument("--video-fps", type=int, default=25, help="the recording's frame rate (default 25)")
    parser.add_argument("--window", type=float, default=2.0, help="window.length_s = hop_s (default 2)")
    parser.add_argument("--sampling-fps", type=float, default=5.0, help="faces.sampling.fps (default 5)")
    parser.add_argument("--device", help="cpu or cuda (default: the preset's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    args.sets = args.sets or list(preset.sets)
    args.live_sets = args.live_sets or args.sets
    args.threads = args.threads or list(preset.threads)
    args.size = args.size or preset.size
    args.device = args.device or preset.device
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    with tempfile.TemporaryDirectory(prefix="bench_detect_") as tmp:
        work = Path(tmp)
        setup = build_setup(preset, args, work)
        offline = [measure_offline(setup, kind, threads, args, work) for kind in args.sets for threads in args.threads]
        live_runs = [(kind, threads) for kind in args.live_sets for threads in args.live_threads] if args.live else []
        live = [measure_live(setup, kind, threads, args, work) for kind, threads in live_runs]
        gflop = encoder_gflop_per_frame(setup.face_encoder, args.device) if "facemae" in args.sets else None
    for row in offline:
        if row["set"] == "facemae":
            row["arithmetic"] = face_path_arithmetic(row, gflop, args)
    machine = machine_info(args.device)
    print(
        f"\npreset {args.preset} on {machine['device']} ({machine.get('gpu') or machine['cpu']}, {machine['cpu_cores_usable']} "
        f"cores, load average {machine['load_average_1min']:.1f}); recording {args.seconds:g} s of {args.size} at "
        f"{args.video_fps} fps, windows of {args.window:g} s, faces.sampling.fps {args.sampling_fps:g}"
    )
    print(f"offline: seconds per window by stage, median of {args.repeats} run(s)")
    print(format_table(offline, OFFLINE_COLUMNS))
    for row in offline:
        if "arithmetic" in row:
            print(arithmetic_line(row, setup.face_encoder, args))
    if live:
        print("live (real-time pace, a growing Matroska file, live.behind: drop): latency from a window's last frame "
              "to its line")
        print(format_table(live, LIVE_COLUMNS))
    if args.json:
        settings = {key: value for key, value in vars(args).items() if key != "json"}
        write_result(args.json, {"preset": args.preset, "settings": settings, "face_encoder": setup.face_encoder,
                                 "offline": offline, "live": live, "machine": machine})


if __name__ == "__main__":
    main()
