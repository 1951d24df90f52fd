"""Helpers the benchmark scripts share: generated weights and data, memory probes, workers.

Benchmarks never download anything: the tiny preset uses ``scripts/make_tiny_assets.py``;
larger presets use random weights at real widths (written to a temporary LLaMA folder, or
built straight on the device) and clips that reuse the tiny peak frames under new names.

Memory is measured per process: each measured method runs in its own worker process
(:func:`run_worker`), so one method's peak is never another's.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from minigpt4.common import text_table
from minigpt4.common.registry import registry
from minigpt4.models.eva_vit import EVA_VARIANTS, build_eva_vit

REPO_ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20

# LLaMA-2-7B's shape; presets take a number of layers from it.
LLAMA2_7B = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)

# ---------------------------------------------------------------------------------- assets


def load_script(name: str):
    """``scripts/<name>.py`` as a module (``scripts/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def make_tiny_assets(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """The tiny weights and datasets of the tests and the demo, written under ``out_dir``."""
    return load_script("make_tiny_assets").make_tiny_assets(Path(out_dir), seed=seed)


def register_eva_g_depth(depth: int) -> str:
    """Register EVA-CLIP ViT-g at full width with only ``depth`` blocks; returns its encoder name.

    The full encoder has 39 blocks; a benchmark on a small machine keeps the width (and so
    the cost of one block) and runs fewer of them.
    """
    name = "eva_clip_g" if depth == 39 else f"eva_clip_g_depth{depth}"
    if registry.has("encoder", name):
        return name

    registry.register_encoder(name)(partial(build_eva_vit, **dict(EVA_VARIANTS["eva_clip_g"], depth=depth)))
    return name


def register_mae_depth(encoder: str, depth: int) -> str:
    """Register the FaceMAE or VideoMAE variant ``encoder`` (``face_mae_vit_large``, say) with
    only ``depth`` blocks; returns its encoder name (``encoder`` itself at its own depth).

    As for EVA: the width, and so the cost of one block, stays; only the number of blocks shrinks.
    """
    builder = registry.get("encoder", encoder)
    if depth == builder.keywords["depth"]:
        return encoder
    name = f"{encoder}_depth{depth}"
    if not registry.has("encoder", name):
        registry.register_encoder(name)(partial(builder.func, **dict(builder.keywords, depth=depth)))
    return name


def write_llama_folder(
    folder: Path, tokenizer_dir: Path, config: Mapping, with_weights: bool, seed: int = 0, dtype=torch.bfloat16
) -> Path:
    """A Hugging Face LLaMA folder of shape ``config`` with the tokenizer of ``tokenizer_dir``.

    ``with_weights``: random weights saved as safetensors (in ``dtype``, half the disk of
    fp32; the model loads them in its own precision).  Without them the folder holds only
    ``config.json`` and the tokenizer, for :func:`random_llm_on_device`.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    llama_config = LlamaConfig(**config)
    if with_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(llama_config)
        model.to(dtype).save_pretrained(folder)
        del model
    else:
        llama_config.save_pretrained(folder)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(tokenizer_dir) / name).exists():
            shutil.copy(Path(tokenizer_dir) / name, folder / name)
    return folder


@contextlib.contextmanager
def random_llm_on_device(device: torch.device | str) -> Iterator[None]:
    """While active, loading a LLaMA folder builds the model from its ``config.json`` with
    random weights directly on ``device`` (no 13 GB written or read for a 7B benchmark); a
    ``num_hidden_layers`` override (a model of the first layers only) is honoured.
    Random values come from torch's generator, so a seeded process gets the same weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    def build(folder, dtype=None, num_hidden_layers=None, output_loading_info=False, **_ignored):
        config = AutoConfig.from_pretrained(folder)
        if num_hidden_layers is not None:  # the first layers only, as a config override loads them
            config.num_hidden_layers = num_hidden_layers
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        return (model, {"missing_keys": [], "unexpected_keys": []}) if output_loading_info else model

    original = AutoModelForCausalLM.from_pretrained
    AutoModelForCausalLM.from_pretrained = build
    try:
        yield
    finally:
        AutoModelForCausalLM.from_pretrained = original


def write_hcmw_dataset(
    root: Path, tiny_assets: Mapping[str, Path], n_clips: int, feature_dim: int, seed: int = 0
) -> dict[str, Path]:
    """An hcmw annotation of ``n_clips`` clips (``bench_00000`` ...) in the SPEC layout.

    Peak frames are symlinks to the tiny assets' frames, cycled.  Vectors of the tiny width
    are symlinks to the tiny vectors; other widths are drawn once per source clip (seeded)
    and shared the same way.  Labels alternate MW / NonMW, folds cycle 0..2.
    """
    root = Path(root)
    paths = {"csv": root / "annotations.csv", "images": root / "images", "features": root / "features"}
    with Path(tiny_assets["hcmw_csv"]).open(newline="") as handle:
        sources = [row["uuid"].removesuffix(".mp4") for row in csv.DictReader(handle)]
    image_root, vector_root = Path(tiny_assets["hcmw_image_root"]), Path(tiny_assets["hcmw_feature_root"])
    vector_dirs = ("mae_340_UTT", "maeV_199_UTT")
    if np.load(vector_root / vector_dirs[0] / f"{sources[0]}.npy").size != feature_dim:
        rng = np.random.default_rng(seed)
        vector_root = root / "vector_pool"
        for folder in vector_dirs:
            (vector_root / folder).mkdir(parents=True)
            for source in sources:
                np.save(vector_root / folder / f"{source}.npy", rng.normal(size=feature_dim).astype(np.float32))
    for folder in vector_dirs:
        (paths["features"] / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n_clips):
        clip, source = f"bench_{index:05d}", sources[index % len(sources)]
        (paths["images"] / clip).mkdir(parents=True, exist_ok=True)
        os.symlink(image_root / source / f"{source}_peak_frame.png", paths["images"] / clip / f"{clip}_peak_frame.png")
        for folder in vector_dirs:
            os.symlink(vector_root / folder / f"{source}.npy", paths["features"] / folder / f"{clip}.npy")
        rows.append((f"{clip}.mp4", ("MW", "NonMW")[index % 2], index % 3))
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uuid", "mw_label", "test_fold_num"])
        writer.writerows(rows)
    return paths


# ---------------------------------------------------------------------------------- memory


def _status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB; None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def rss_mib() -> float | None:
    """Resident memory of this process now."""
    return _status_mib("VmRSS")


def max_rss_mib() -> float:
    """The process's peak resident memory since it started (``getrusage``; KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak: CUDA's allocator statistics, or Linux's VmHWM (``clear_refs`` 5).

    Returns False where the CPU peak cannot be reset (then only the process peak exists).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_memory_since_reset_mib(device: torch.device) -> float | None:
    """CUDA: max allocated since the reset.  CPU: peak resident memory (VmHWM) since the reset."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / MIB
    return _status_mib("VmHWM")


def memory_in_use_mib(device: torch.device) -> float | None:
    """CUDA: allocated now.  CPU: resident now."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device) / MIB
    return rss_mib()


# ---------------------------------------------------------------------------------- processes


def run_worker(
    module: str, argv: Sequence[str], timeout: float | None = None, env: Mapping[str, str] | None = None
) -> dict:
    """Run ``python -m <module> <argv> --result FILE`` in a fresh process; returns FILE's JSON.

    The worker writes its measurements as JSON to the path after ``--result``.  Its output
    goes to this process's console; a failure raises with its exit status.
    """
    with tempfile.TemporaryDirectory(prefix="bench_worker_") as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, "-m", module, *argv, "--result", str(result)]
        environment = {**os.environ, **(env or {})}
        completed = subprocess.run(command, cwd=REPO_ROOT, env=environment, timeout=timeout, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"benchmark worker failed (exit {completed.returncode}): {' '.join(command)}")
        return json.loads(result.read_text())


def write_result(path: str | os.PathLike, result: Mapping) -> None:
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


def machine_info(device: torch.device | str) -> dict:
    """What a reader of the numbers needs to know about where they were taken."""
    device = torch.device(device)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        # other work on the machine while measuring: CPU timings are only comparable when low
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------- reports


def format_table(rows: Sequence[Mapping], columns: Sequence[tuple[str, str, str]]) -> str:
    """The project's plain-text table of ``rows``; ``columns`` are (header, key, format spec) triples."""
    cells = [[_cell(row.get(key), spec) for _, key, spec in columns] for row in rows]
    return text_table.format_table([header for header, _, _ in columns], cells, rule=True)


def _cell(value, spec: str) -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)
