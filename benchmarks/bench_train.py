"""Step time and peak memory of one LoRA training step: ours against the original method.

Both methods train the same model (same seed, same weight files) on the same batch (the
first ``--batch-size`` training clips of fold 0, repeated every step), each in its own worker
process so that each peak memory is that method's own.  A step is forward, loss, backward
and an AdamW step over the trainable tensors (LoRA + projectors), as ``train.py`` does.

* ``original``: the upstream Emotion-LLaMA / MiniGPT-v2 training step, re-implemented here
  for comparison only (it is not in the library): the causal LM over the full sequence with
  ``output_hidden_states=True`` and no labels, the logits of EVERY position cast to fp32,
  cross-entropy over all positions (targets -100 outside the answer; the same class weights
  as ours), and the argmax of the batch's logits decoded to text each step, as the upstream
  loop did for its logs.
* ``ours``: ``model(samples).loss`` (``MiniGPTBase.forward``): the decoder's last hidden
  state only, the LM head applied to the answer positions alone.

The first (warm-up) step's loss of both methods is printed side by side: they compute the
same loss, so it must agree.

    python -m benchmarks.bench_train --preset tiny
    python -m benchmarks.bench_train --preset medium --steps 5
    python -m benchmarks.bench_train --preset medium --llm-grad-checkpoint   # both methods with it on
    python -m benchmarks.bench_train --preset full --device cuda --steps 20

Presets:

* ``tiny``: the generated tiny assets (scripts/make_tiny_assets.py), the demo's model.
* ``medium``: real widths, few layers, in the full model's proportion: EVA-CLIP ViT-g (width
  1408, 16 heads, MLP 6144) with 2 of its 39 blocks at 448x448 -> 256 image tokens; LLaMA-2-7B
  width 4096, MLP 11008, 32 heads, 2 of its 32 layers, the full 32000-row vocabulary; LoRA
  r 64 on q_proj, v_proj; fp32; batch 2.  Random weights (the LLaMA saved to a temporary
  folder).  Fits 2 CPU cores.
* ``full``: EVA-CLIP ViT-g (39 blocks) and LLaMA-2-7B, bf16 autocast, LoRA r 64, random
  weights built directly on the GPU.

Timing: the median wall time over ``--steps`` steps after ``--warmup`` steps (the first
allocates the optimizer state); steps/s = 1 / median.  The fastest step and the process's CPU
time per step (all threads; less sensitive to other work on a shared machine) are shown
beside it.  Peak memory: on a GPU
``torch.cuda.max_memory_allocated`` over the timed steps (weights and optimizer state
included); on the CPU the worker's max RSS (model loading included) and, sharper, the
"working" peak: resident memory at its highest during the timed steps minus resident memory
before them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
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
SMOKE_ARGS = ["--preset", "tiny", "--steps", "1", "--warmup", "1", "--batch-size", "2"]
WORKER_TIMEOUT_S = 3600
IGNORE_INDEX = -100
# The two methods' warm-up losses must agree to this relative tolerance (fp32 / half precision).
LOSS_RTOL = {"fp32": 1e-4, "half": 2e-2}


@dataclass(frozen=True)
class Preset:
    image_size: int
    feature_dim: int
    batch_size: int
    steps: int
    warmup: int
    device: str
    eva_depth: int | None = None  # None: the tiny assets' encoder
    llama_layers: int | None = None  # None: the tiny assets' LLaMA
    llm_on_device: bool = False  # build random LLM weights on the device instead of reading a folder
    model: dict = field(default_factory=dict)  # further model.* settings


PRESETS = {
    "tiny": Preset(image_size=224, feature_dim=64, batch_size=4, steps=20, warmup=2, device="cpu"),
    "medium": Preset(
        image_size=448, feature_dim=1024, batch_size=2, steps=5, warmup=1, device="cpu", eva_depth=2, llama_layers=2,
        model={"lora_r": 64, "lora_target_modules": ["q_proj", "v_proj"], "precision": "fp32"},
    ),
    "full": Preset(
        image_size=448, feature_dim=1024, batch_size=4, steps=20, warmup=3, device="cuda", eva_depth=39, llama_layers=32,
        llm_on_device=True, model={"lora_r": 64, "lora_target_modules": ["q_proj", "v_proj"], "precision": "bf16"},
    ),
}


# ---------------------------------------------------------------------------------- set-up (parent)


def prepare_run(preset_name: str, batch_size: int, device: str, work_dir: Path, llm_grad_checkpoint: bool = False) -> Path:
    """Generate weights and data for ``preset_name`` under ``work_dir``; returns the run config
    (a ``train.py`` YAML) both methods read.  ``llm_grad_checkpoint`` sets the model key of
    that name (recompute LLaMA's activations in backward) for both methods."""
    preset = PRESETS[preset_name]
    assets = make_tiny_assets(work_dir / "tiny_assets")
    # three folds; the batch comes from the training rows of fold 0
    data = write_hcmw_dataset(work_dir / "hcmw", assets, max(6, 3 * batch_size), preset.feature_dim)
    if preset.llama_layers is None:
        model = {"arch": "minigpt_v2", "model_type": "tiny", "llama_model": str(assets["llama_dir"]), "vit_checkpoint": str(assets["eva_ckpt"])}
    else:
        llama_config = dict(LLAMA2_7B, num_hidden_layers=preset.llama_layers)
        llama_dir = write_llama_folder(work_dir / "llama", assets["tokenizer_dir"], llama_config, with_weights=not preset.llm_on_device)
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
    model["llm_grad_checkpoint"] = llm_grad_checkpoint
    processor = {"image_size": preset.image_size}
    config = {
        "model": model,
        "datasets": {
            "hcmw_caption": {
                "build_info": {"annotation": str(data["csv"]), "image_root": str(data["images"]), "feature_root": str(data["features"])},
                "feature_dim": preset.feature_dim,
                "vis_processor": {"train": {"name": "blip2_image_train", **processor}, "eval": {"name": "blip2_image_eval", **processor}},
            }
        },
        "run": {"device": device, "folds": [0], "batch_size_train": batch_size, "num_workers": 0, "output_dir": str(work_dir / "train")},
    }
    path = work_dir / "run_config.yaml"
    OmegaConf.save(OmegaConf.create(config), path)
    return path


# ---------------------------------------------------------------------------------- the two steps


def original_step(model, samples: dict, optimizer) -> float:
    """The upstream training step (for comparison only): full-sequence causal LM with all hidden
    states, fp32 logits at every position, loss over all positions, argmax decoded for the log."""
    visual, layout = model.preparing_embedding(samples)
    embeds = model.embed_layout(layout, visual.sequence())
    mask = layout.attention_mask.to(model.device)
    targets = layout.targets.to(model.device)
    with model.maybe_autocast():
        outputs = model.llama_model(inputs_embeds=embeds, attention_mask=mask, labels=None, output_hidden_states=True)
    logits = outputs.logits.float()  # [B, T, V]
    batch, length, vocab = logits.shape
    shifted = targets[:, 1:]
    token_loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), shifted.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(batch, length - 1)
    weights = torch.as_tensor(samples["class_weight"], dtype=torch.float32, device=logits.device)[:, None]
    weights = weights * (shifted != IGNORE_INDEX)
    loss = (token_loss * weights).sum() / weights.sum()
    # The upstream loop decoded the argmax of every position for its logs.  The benchmark's
    # tokenizer is the tiny one (a few hundred pieces) while the LLM has 32000 rows: ids are
    # folded into the tokenizer's range, which keeps the cost (a device sync and the decode).
    pieces = len(model.llama_tokenizer)
    logged = [model.llama_tokenizer.decode([i % pieces for i in row]) for row in logits.argmax(-1).tolist()]
    del logged  # printed upstream; only its cost matters here
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach().item()


def our_step(model, samples: dict, optimizer) -> float:
    """What ``train.py`` runs for one batch: ``task.train_step`` = ``model(samples).loss``."""
    from minigpt4.tasks.mw_classification import MWClassificationTask

    loss = MWClassificationTask.train_step(model, samples)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach().item()


STEPS = {"original": original_step, "ours": our_step}


# ---------------------------------------------------------------------------------- measuring (worker)


def load_for_benchmark(cfg_path: Path, preset: Preset, batch_size: int):
    """Config, model, optimizer and one training batch, built as ``train.py`` builds them (seeded)."""
    from minigpt4.common.config import Config
    from minigpt4.common.optims import build_optimizer_param_groups
    from minigpt4.datasets.data_utils import collate_clips
    from minigpt4.runners.common import seed_everything, select_device
    from minigpt4.tasks.base_task import BaseTask

    if preset.eva_depth is not None:
        register_eva_g_depth(preset.eva_depth)
    cfg = Config(argparse.Namespace(cfg_path=str(cfg_path), options=[]), default_runner="runner_base")
    run = cfg.run_cfg
    dataset = BaseTask.build_dataset("hcmw_caption", cfg.datasets_cfg.hcmw_caption, "train", fold=0)
    samples = collate_clips([dataset[i] for i in range(batch_size)])
    device = select_device(run.device)
    seed_everything(run.seed)
    if preset.llm_on_device:
        with torch.device(device), random_llm_on_device(device):
            model = BaseTask.build_model(cfg.model_cfg)
    else:
        model = BaseTask.build_model(cfg.model_cfg)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(build_optimizer_param_groups(model, run.weight_decay), lr=run.init_lr, betas=(0.9, 0.999))
    return cfg, model, optimizer, samples, device


def measure(method: str, preset_name: str, cfg_path: Path, steps: int, warmup: int, batch_size: int) -> dict:
    preset = PRESETS[preset_name]
    start = time.perf_counter()
    cfg, model, optimizer, samples, device = load_for_benchmark(cfg_path, preset, batch_size)
    load_seconds = time.perf_counter() - start
    step = STEPS[method]

    warmup_losses = [step(model, samples, optimizer) for _ in range(max(warmup, 1))]  # allocates the optimizer state
    resident_before = memory_in_use_mib(device)
    load_peak = max_rss_mib()  # read before the reset, which also lowers getrusage's answer
    peak_reset = reset_peak_memory(device)
    times, cpu_times = [], []
    for _ in range(steps):
        _synchronize(device)
        begin, begin_cpu = time.perf_counter(), time.process_time()
        step(model, samples, optimizer)
        _synchronize(device)
        times.append(time.perf_counter() - begin)
        cpu_times.append(time.process_time() - begin_cpu)
    peak = peak_memory_since_reset_mib(device) if peak_reset else None
    median = statistics.median(times)
    return {
        "method": method,
        "preset": preset_name,
        "batch_size": batch_size,
        "sequence_length": int(model.layout.batch(
            [model.layout.prompt_ids(t) for t in samples["instruction_input"]],
            [model.layout.answer_ids(a) for a in samples["answer"]],
        ).attention_mask.shape[1]),
        "precision": str(model.compute_dtype).removeprefix("torch."),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "steps": steps,
        "warmup": max(warmup, 1),
        "first_loss": warmup_losses[0],
        "median_step_s": median,
        "min_step_s": min(times),
        "max_step_s": max(times),
        "median_cpu_s": statistics.median(cpu_times),  # this process's CPU time, all threads
        "steps_per_s": 1.0 / median,
        "samples_per_s": batch_size / median,
        "load_seconds": load_seconds,
        "memory_kind": "CUDA max allocated" if device.type == "cuda" else "max RSS",
        "peak_mib": peak if device.type == "cuda" else max(load_peak, peak or 0.0, max_rss_mib()),
        "working_mib": None if peak is None or resident_before is None else peak - resident_before,
        "machine": machine_info(device),
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------- reports (parent)

COLUMNS = [
    ("method", "method", ""),
    ("batch", "batch_size", "d"),
    ("seq len", "sequence_length", "d"),
    ("steps", "steps", "d"),
    ("median step s", "median_step_s", ".3f"),
    ("min step s", "min_step_s", ".3f"),
    ("CPU s/step", "median_cpu_s", ".3f"),
    ("steps/s", "steps_per_s", ".3f"),
    ("samples/s", "samples_per_s", ".3f"),
    ("peak MiB", "peak_mib", ".0f"),
    ("working MiB", "working_mib", ".1f"),
    ("first loss", "first_loss", ".6f"),
]


def compare(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        cfg_path = prepare_run(args.preset, args.batch_size, args.device, Path(tmp), args.llm_grad_checkpoint)
        worker_args = ["--preset", args.preset, "--cfg", str(cfg_path), "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
        results = [run_worker("benchmarks.bench_train", ["--worker", method, *worker_args], WORKER_TIMEOUT_S) for method in METHODS]
    by_method = {r["method"]: r for r in results}
    original, ours = by_method["original"], by_method["ours"]
    speedup = ours["steps_per_s"] / original["steps_per_s"]
    memory_ratio = ours["peak_mib"] / original["peak_mib"]
    rtol = LOSS_RTOL["fp32" if ours["precision"] == "float32" else "half"]
    loss_difference, loss_tolerance = abs(ours["first_loss"] - original["first_loss"]), rtol * abs(original["first_loss"])
    losses_agree = loss_difference <= loss_tolerance
    machine = results[0]["machine"]
    print(f"\nmodel.llm_grad_checkpoint: {args.llm_grad_checkpoint}")
    print(f"preset {args.preset} on {machine['device']} ({machine.get('gpu') or machine['cpu']}, "
          f"{machine['cpu_cores_usable']} cores, torch {machine['torch']}), {ours['precision']}, "
          f"{ours['trainable_parameters']:,} trainable parameters; peak memory = {results[0]['memory_kind']}")
    print(format_table(results, COLUMNS))
    print(f"speed-up (ours / original steps/s): {speedup:.2f}x")
    print(f"peak memory ours / original: {memory_ratio:.3f}"
          + (f"; working memory {ours['working_mib']:.0f} vs {original['working_mib']:.0f} MiB"
             if ours["working_mib"] is not None and original["working_mib"] is not None else ""))
    print(f"first-step losses {'agree' if losses_agree else 'DIFFER'} (rtol {rtol}): "
          f"ours {ours['first_loss']:.6f}, original {original['first_loss']:.6f}")
    agreed = {"what": "first-step loss", "max_abs_diff": loss_difference, "tolerance": loss_tolerance, "agree": losses_agree}
    return {"preset": args.preset, "llm_grad_checkpoint": args.llm_grad_checkpoint, "results": results, "speedup": speedup, "peak_memory_ratio": memory_ratio,
            "agreement": [agreed]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--steps", type=int, help="timed steps per method (default: the preset's)")
    parser.add_argument("--warmup", type=int, help="untimed steps first, at least 1 (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="clips per step (default: the preset's)")
    parser.add_argument("--device", help="cpu or cuda (default: the preset's)")
    parser.add_argument("--llm-grad-checkpoint", action="store_true", help="model.llm_grad_checkpoint: true for both methods")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--cfg", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    args.steps = args.steps or preset.steps
    args.warmup = args.warmup if args.warmup is not None else preset.warmup
    args.batch_size = args.batch_size or preset.batch_size
    args.device = args.device or preset.device
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        write_result(args.result, measure(args.worker, args.preset, args.cfg, args.steps, args.warmup, args.batch_size))
        return
    report = compare(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
