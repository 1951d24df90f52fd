"""Throughput and peak memory of the hcmw feature dump against the original method.

Both methods run on the same weights (same seed, same files) and the same clips, each in its
own worker process so that each peak memory is that method's own:

* ``original``: the upstream Emotion-LLaMA dump, re-implemented here for comparison (it is
  not in the library): one clip at a time, the full input through the causal LM with
  ``output_hidden_states=True`` (all hidden states and the logits of every position
  computed), every result kept in Python lists and stacked at the end.
* ``ours``: ``eval_emotion.py``'s path: ``model.extract_features`` in batches (the LLM runs
  on the first max(position) + 1 tokens only, no logits), rows streamed through
  ``FeatureWriter`` into a temporary folder.

    python -m benchmarks.bench_extract --preset tiny
    python -m benchmarks.bench_extract --preset medium --clips 8 --batch-size 4
    python -m benchmarks.bench_extract --preset full --device cuda --clips 64 --batch-size 8
    python -m benchmarks.bench_extract --scale            # resident memory, 200 vs 2000 clips

Presets:

* ``tiny``: the generated tiny assets (scripts/make_tiny_assets.py).
* ``medium``: real widths, few layers, in the full model's proportion (EVA-CLIP ViT-g width
  1408 with 2 of its 39 blocks at 448x448 -> 256 image tokens; LLaMA-2-7B width 4096, MLP
  11008, 32 heads, 2 of its 32 layers, the full 32000-row vocabulary so the original's logits
  cost what they cost); random weights saved to a temporary LLaMA folder.  Fits 2 CPU cores.
* ``full``: EVA-CLIP ViT-g (39 blocks) and LLaMA-2-7B, bf16, random weights built directly on
  the GPU (nothing written to disk).

Peak memory: on the CPU the worker's peak resident memory (max RSS), and the peak above what
the loaded model occupies ("working" = peak during extraction minus resident memory before
it); on a GPU ``torch.cuda.max_memory_allocated``.  Timings exclude loading and one warm-up
batch; each method dumps every clip ``--repeats`` times and the fastest pass counts.  The
worker's CPU time per pass (all threads) is reported beside the wall time: where other jobs
share the cores it moves far less than wall time does.

Agreement: each method's last pass is kept, and every array the original writes is compared
with the same file of ours (both float16): the largest absolute difference must stay within
a tolerance relative to the largest value (``AGREEMENT_RTOL``, by the model's precision).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from omegaconf import OmegaConf

from benchmarks.common import (
    LLAMA2_7B,
    format_table,
    machine_info,
    make_tiny_assets,
    max_rss_mib,
    memory_in_use_mib,
    peak_memory_since_reset_mib,
    random_llm_on_device,
    register_eva_g_depth,
    reset_peak_memory,
    run_worker,
    write_hcmw_dataset,
    write_llama_folder,
    write_result,
)

METHODS = ("original", "ours")
# What tests/test_benchmarks.py runs: the tiny preset, small enough for seconds.
SMOKE_ARGS = ["--preset", "tiny", "--clips", "4", "--batch-size", "2", "--repeats", "1"]
# The feature kinds the original writes; ours writes them under the same names (SPEC section 7).
COMPARED_KINDS = ("facemae_projected_features", "videomae_projected_features", "image_projected_features", "llama_features")
# Largest |ours - original| over the largest |original| of a kind.  fp32: both files are
# float16, so a value computed a hair differently (batch 8 vs 1, a prefix vs the full
# sequence) may round to the neighbouring float16, 2**-10 of it; half precision also rounds
# inside the model.
AGREEMENT_RTOL = {"fp32": 2e-3, "half": 5e-2}
SCALE_CLIPS = (200, 2000)
SCALE_TOLERANCE = 0.10  # acceptance: peak resident memory at 2000 clips within 10% of 200
WORKER_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Preset:
    image_size: int
    feature_dim: int
    clips: int
    batch_size: int
    device: str
    eva_depth: int | None = None  # None: the tiny assets' encoder
    llama_layers: int | None = None  # None: the tiny assets' LLaMA
    llm_on_device: bool = False  # build random LLM weights on the device instead of reading a folder
    model: dict = field(default_factory=dict)  # further model.* settings


PRESETS = {
    "tiny": Preset(image_size=224, feature_dim=64, clips=96, batch_size=8, device="cpu"),
    "medium": Preset(
        image_size=448, feature_dim=1024, clips=8, batch_size=4, device="cpu", eva_depth=2, llama_layers=2
    ),
    "full": Preset(
        image_size=448, feature_dim=1024, clips=64, batch_size=8, device="cuda", eva_depth=39, llama_layers=32,
        llm_on_device=True, model={"precision": "bf16"},
    ),
}


# ---------------------------------------------------------------------------------- set-up (parent)


def prepare_run(preset_name: str, clips: int, batch_size: int, device: str, work_dir: Path) -> Path:
    """Generate weights and data for ``preset_name`` under ``work_dir``; returns the run config
    (an ``eval_emotion.py`` YAML) both methods read."""
    preset = PRESETS[preset_name]
    assets = make_tiny_assets(work_dir / "tiny_assets")
    data = write_hcmw_dataset(work_dir / "hcmw", assets, clips, preset.feature_dim)
    if preset.llama_layers is None:
        model = {
            "arch": "minigpt_v2",
            "model_type": "tiny",
            "llama_model": str(assets["llama_dir"]),
            "vit_checkpoint": str(assets["eva_ckpt"]),
        }
    else:
        llama_config = dict(LLAMA2_7B, num_hidden_layers=preset.llama_layers)
        llama_dir = write_llama_folder(
            work_dir / "llama", assets["tokenizer_dir"], llama_config, with_weights=not preset.llm_on_device
        )
        model = {
            "arch": "minigpt_v2",
            "model_type": "pretrain",
            "vit_model": register_eva_g_depth(preset.eva_depth),
            "vit_checkpoint": "",  # random EVA weights, drawn from run.seed
            "image_size": preset.image_size,
            "llama_model": str(llama_dir),
            "video_feature_dim": preset.feature_dim,
            "ckpt": "",
        }
    model.update(preset.model)
    size = preset.image_size
    config = {
        "model": model,
        "evaluation_datasets": {
            "hcmw_caption": {
                "build_info": {
                    "annotation": str(data["csv"]),
                    "image_root": str(data["images"]),
                    "feature_root": str(data["features"]),
                },
                "feature_dim": preset.feature_dim,
                "vis_processor": {
                    "train": {"name": "blip2_image_train", "image_size": size},
                    "eval": {"name": "blip2_image_eval", "image_size": size},
                },
            }
        },
        "run": {"device": device, "batch_size": batch_size, "num_workers": 0, "output_dir": str(work_dir / "features")},
    }
    path = work_dir / "run_config.yaml"
    OmegaConf.save(OmegaConf.create(config), path)
    return path


# ---------------------------------------------------------------------------------- measuring (worker)


def load_for_benchmark(cfg_path: Path, preset: Preset):
    """Config, dataset and model exactly as ``eval_emotion.py`` builds them (seeded)."""
    from minigpt4.common.config import Config
    from minigpt4.runners.common import seed_everything, select_device
    from minigpt4.tasks.base_task import BaseTask

    if preset.eva_depth is not None:
        register_eva_g_depth(preset.eva_depth)
    cfg = Config(argparse.Namespace(cfg_path=str(cfg_path), options=[]), default_runner="runner_eval")
    section = cfg.evaluation_datasets_cfg.hcmw_caption
    seed_everything(cfg.run_cfg.seed)
    dataset = BaseTask.build_dataset("hcmw_caption", section, "all")
    device = select_device(cfg.run_cfg.device)
    if preset.llm_on_device:
        with torch.device(device), random_llm_on_device(device):
            model = BaseTask.build_model(cfg.model_cfg)
    else:
        model = BaseTask.build_model(cfg.model_cfg)
    return cfg, section, dataset, model.to(device).eval(), device


def original_dump(model, loader, out_dir: Path) -> int:
    """The upstream method (for comparison only): batch 1, full-sequence causal-LM forward
    with all hidden states and the logits, results collected in lists, stacked at the end.

    It reads the positions the model resolves for the batch's instruction (names such as
    ``image:2`` become indices there) and the last hidden state (after the final norm), the
    one layer the upstream dump had and the benchmark's configs leave as the model's default."""
    results = {kind: [] for kind in COMPARED_KINDS}
    for batch in loader:
        positions = model.batch_feature_positions(batch["instruction_input"])
        visual, layout = model.feature_layout(batch)
        embeds = model.embed_layout(layout, visual.sequence())
        with model.maybe_autocast():
            output = model.llama_model(
                inputs_embeds=embeds, attention_mask=layout.attention_mask.to(model.device), output_hidden_states=True
            )
        results["facemae_projected_features"].append(visual.streams[:, 0].float().cpu().numpy())
        results["videomae_projected_features"].append(visual.streams[:, 1].float().cpu().numpy())
        results["image_projected_features"].append(visual.image.float().cpu().numpy())
        results["llama_features"].append(output.hidden_states[-1][:, positions].float().cpu().numpy())
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, arrays in results.items():
        np.save(out_dir / f"{kind}.npy", np.concatenate(arrays).astype(np.float16))
    return sum(len(array) for array in results["llama_features"])


def streamed_dump(model, dataset, cfg, section, out_dir: Path, batch_size: int) -> int:
    """What ``eval_emotion.py --dataset hcmw_caption`` runs for one dataset."""
    from minigpt4.runners.common import row_loader
    from minigpt4.tasks.feature_dump import FeatureDumpTask

    task = FeatureDumpTask.setup_task(cfg.run_cfg)
    writer, rows = task.open_writer(model, dataset, out_dir, cfg.model_cfg, section)
    for batch in row_loader(dataset, rows, batch_size, cfg.run_cfg.num_workers):
        task.step(model, batch, writer)
    return writer.finish()["rows"]


def measure(method: str, preset_name: str, cfg_path: Path, repeats: int, out_dir: Path) -> dict:
    """Load once, warm up on one batch, then time ``repeats`` whole dumps; the best counts
    (other load on the machine only ever slows a pass down).  The last pass's files stay in
    ``out_dir``."""
    from minigpt4.runners.common import row_loader

    preset = PRESETS[preset_name]
    start = time.perf_counter()
    cfg, section, dataset, model, device = load_for_benchmark(cfg_path, preset)
    load_seconds = time.perf_counter() - start
    batch_size = 1 if method == "original" else cfg.run_cfg.batch_size

    with torch.inference_mode():
        warm_up = next(iter(row_loader(dataset, range(min(batch_size, len(dataset))), batch_size, 0)))
        model.extract_features(warm_up, full_sequence=method == "original")
        resident_before = memory_in_use_mib(device)
        load_peak = max_rss_mib()  # read before the reset, which also lowers getrusage's answer
        peak_reset = reset_peak_memory(device)
        passes, cpu_passes = [], []
        for _ in range(repeats):
            shutil.rmtree(out_dir, ignore_errors=True)  # every pass dumps into a new folder
            _synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            if method == "original":
                loader = row_loader(dataset, range(len(dataset)), 1, cfg.run_cfg.num_workers)
                clips = original_dump(model, loader, out_dir)
            else:
                clips = streamed_dump(model, dataset, cfg, section, out_dir, batch_size)
            _synchronize(device)
            passes.append(time.perf_counter() - start)
            cpu_passes.append(time.process_time() - cpu_start)
        peak = peak_memory_since_reset_mib(device) if peak_reset else None
    return {
        "method": method,
        "preset": preset_name,
        "clips": clips,
        "batch_size": batch_size,
        "seconds": min(passes),
        "seconds_per_pass": passes,
        "samples_per_s": clips / min(passes),
        # this process's CPU time, all threads: on a CPU run barely moved by other work on the machine
        "cpu_seconds": min(cpu_passes),
        "cpu_seconds_per_pass": cpu_passes,
        "load_seconds": load_seconds,
        "precision": str(model.compute_dtype).removeprefix("torch."),  # what ran: a CPU runs fp32
        "memory_kind": "CUDA max allocated" if device.type == "cuda" else "max RSS",
        "peak_mib": peak if device.type == "cuda" else max(load_peak, peak or 0.0, max_rss_mib()),
        "working_mib": None if peak is None or resident_before is None else peak - resident_before,
        "machine": machine_info(device),
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------- reports (parent)


def run_measurement(method: str, preset_name: str, cfg_path: Path, repeats: int, out_dir: Path) -> dict:
    """:func:`measure` in a fresh worker process."""
    argv = ["--worker", method, "--preset", preset_name, "--cfg", str(cfg_path), "--repeats", str(repeats)]
    return run_worker("benchmarks.bench_extract", [*argv, "--out", str(out_dir)], WORKER_TIMEOUT_S)


def agreement(original_dir: Path, ours_dir: Path, precision: str) -> list[dict]:
    """Per feature kind: the largest |ours - original| against the tolerance for ``precision``."""
    rtol = AGREEMENT_RTOL["fp32" if precision == "float32" else "half"]
    rows = []
    for kind in COMPARED_KINDS:
        original = np.load(original_dir / f"{kind}.npy").astype(np.float32)
        ours = np.load(ours_dir / f"{kind}.npy").astype(np.float32)
        if ours.shape != original.shape:
            raise RuntimeError(f"{kind}: ours has shape {ours.shape}, the original {original.shape}")
        tolerance = rtol * float(np.abs(original).max())
        difference = float(np.abs(ours - original).max())
        rows.append({"what": kind, "max_abs_diff": difference, "tolerance": tolerance, "agree": difference <= tolerance})
    return rows


COLUMNS = [
    ("method", "method", ""),
    ("clips", "clips", "d"),
    ("batch", "batch_size", "d"),
    ("seconds", "seconds", ".2f"),
    ("samples/s", "samples_per_s", ".3f"),
    ("CPU s", "cpu_seconds", ".2f"),
    ("peak MiB", "peak_mib", ".0f"),
    ("working MiB", "working_mib", ".1f"),
]


def compare(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        cfg_path = prepare_run(args.preset, args.clips, args.batch_size, args.device, Path(tmp))
        outputs = {method: Path(tmp) / "dumps" / method for method in METHODS}
        results = [run_measurement(method, args.preset, cfg_path, args.repeats, outputs[method]) for method in METHODS]
        agreed = agreement(outputs["original"], outputs["ours"], results[0]["precision"])
    by_method = {r["method"]: r for r in results}
    speedup = by_method["ours"]["samples_per_s"] / by_method["original"]["samples_per_s"]
    # both dump the same clips, so the CPU seconds compare directly
    cpu_speedup = by_method["original"]["cpu_seconds"] / by_method["ours"]["cpu_seconds"]
    machine = results[0]["machine"]
    loads = ", ".join(f"{r['machine']['load_average_1min']:.1f}" for r in results if r["machine"]["load_average_1min"])
    print(
        f"\npreset {args.preset} on {machine['device']} ({machine.get('gpu') or machine['cpu']}, "
        f"{machine['cpu_cores_usable']} cores, load average {loads or '-'}), peak memory = {results[0]['memory_kind']}"
    )
    print(format_table(results, COLUMNS))
    print(f"speed-up (ours / original samples/s): {speedup:.2f}x (best of {args.repeats} passes each)")
    if machine["device"] == "cpu":
        print(f"speed-up in CPU time (original / ours CPU s): {cpu_speedup:.2f}x (the fair one when other work shares the cores)")
    for row in agreed:
        verdict = "agree" if row["agree"] else "DIFFER"
        print(f"{row['what']}: {verdict}, max |ours - original| {row['max_abs_diff']:.3g} (tolerance {row['tolerance']:.3g})")
    return {"preset": args.preset, "results": results, "speedup": speedup, "cpu_speedup": cpu_speedup, "agreement": agreed}


def scale(args) -> dict:
    """Peak resident memory of the streamed dump at 200 and 2000 tiny clips."""
    results = []
    for clips in SCALE_CLIPS:
        with tempfile.TemporaryDirectory(prefix="bench_extract_scale_") as tmp:
            cfg_path = prepare_run("tiny", clips, args.batch_size, "cpu", Path(tmp))
            results.append(run_measurement("ours", "tiny", cfg_path, 1, Path(tmp) / "dump"))
    small, large = results
    growth = large["peak_mib"] / small["peak_mib"] - 1
    print(f"\nscale check (tiny, ours) on {small['machine']['cpu']}")
    print(format_table(results, COLUMNS))
    print(f"working memory during the dump: {small['working_mib']:.1f} -> {large['working_mib']:.1f} MiB")
    verdict = "PASS" if growth <= SCALE_TOLERANCE else "FAIL"
    print(
        f"peak RSS at {SCALE_CLIPS[1]} clips vs {SCALE_CLIPS[0]}: {growth:+.1%} "
        f"(limit +{SCALE_TOLERANCE:.0%}): {verdict}"
    )
    return {"scale": results, "peak_rss_growth": growth, "pass": growth <= SCALE_TOLERANCE}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--clips", type=int, help="clips to dump (default: the preset's)")
    parser.add_argument(
        "--batch-size", type=int, help="batch size of ours; the original always runs 1 (default: the preset's)"
    )
    parser.add_argument("--device", help="cpu or cuda (default: the preset's)")
    parser.add_argument(
        "--scale", action="store_true", help=f"peak memory of ours at {SCALE_CLIPS[0]} vs {SCALE_CLIPS[1]} tiny clips"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per method; the best counts (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--cfg", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)  # the worker's last pass stays here
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    args.clips = args.clips or preset.clips
    args.batch_size = args.batch_size or preset.batch_size
    args.device = args.device or preset.device
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        write_result(args.result, measure(args.worker, args.preset, args.cfg, args.repeats, args.out))
        return
    report = scale(args) if args.scale else compare(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
