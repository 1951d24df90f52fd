"""The probe's configuration as typed data: one dataclass gives defaults, types and the
allowed keys; the user's YAML (section ``probe``) and ``--options`` are merged over it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from minigpt4.probe.metrics import METRICS

# Dumped file stems the probe knows how to turn into feature sets (feature_sets.py).
KINDS = (
    "facemae_projected_features",
    "videomae_projected_features",
    "audio_projected_features",
    "image_projected_features",
    "llama_features",
    "llama_pooled_features",
)
INNER_SCORING = ("balanced_accuracy", "roc_auc", "neg_log_loss", "f1")


class ProbeConfigError(ValueError):
    """The probe config cannot be used; the message names the key."""


@dataclass
class ProbeConfig:
    dump_dir: str = MISSING  # folder written by the feature dump (manifest.json, names.txt, *.npy)
    annotation: str = MISSING  # hcmw CSV: uuid, mw_label, test_fold_num
    output_dir: str = "probe"
    kinds: list[str] = field(default_factory=lambda: list(KINDS))  # dumped kinds to probe (absent ones are skipped)
    concatenations: list[list[str]] = field(default_factory=list)  # e.g. [[facemae, videomae]]
    metric: str = "balanced_accuracy"  # sorts the table and colours the heat map
    c_grid: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0])  # inverse L2 strengths tried
    inner_scoring: str = "balanced_accuracy"  # what the inner cross-validation maximises
    max_iter: int = 300  # lbfgs iterations per fit
    permutations: int = 5  # label permutations for the chance reference (0 = none)
    seed: int = 0
    n_jobs: int = 1  # processes fitting folds in parallel (-1 = every core)
    roc_sets: int = 5  # best sets drawn in roc_curves.png
    plots: bool = True


@dataclass
class ProbeRunConfig:
    probe: ProbeConfig = field(default_factory=ProbeConfig)


def load_config(path: str | Path, options: Sequence[str] = ()) -> ProbeConfig:
    """Defaults <- the YAML file <- ``a.b=c`` options, checked; a bad key stops here, named."""
    path = Path(path)
    if not path.is_file():
        raise ProbeConfigError(f"--cfg-path: config file not found: {path}")
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(ProbeRunConfig), OmegaConf.load(path), OmegaConf.from_dotlist(list(options))
        )
        cfg: ProbeConfig = OmegaConf.to_object(merged).probe
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ProbeConfigError(f"{path}: {key}: {exc.msg if hasattr(exc, 'msg') else exc}".splitlines()[0]) from None
    check_config(cfg)
    return cfg


def check_config(cfg: ProbeConfig) -> None:
    def bad(key: str, problem: str):
        raise ProbeConfigError(f"probe.{key}: {problem}")

    unknown = [kind for kind in cfg.kinds if kind not in KINDS]
    if unknown:
        bad("kinds", f"unknown kind(s) {unknown}; choices: {', '.join(KINDS)}")
    if cfg.metric not in METRICS:
        bad("metric", f"{cfg.metric!r} is not one of {', '.join(METRICS)}")
    if cfg.inner_scoring not in INNER_SCORING:
        bad("inner_scoring", f"{cfg.inner_scoring!r} is not one of {', '.join(INNER_SCORING)}")
    if not cfg.c_grid or any(c <= 0 for c in cfg.c_grid):
        bad("c_grid", f"needs one or more positive values, got {cfg.c_grid}")
    if cfg.permutations < 0:
        bad("permutations", f"must be 0 or more, got {cfg.permutations}")
    if cfg.max_iter < 1:
        bad("max_iter", f"must be at least 1, got {cfg.max_iter}")
    if any(len(parts) < 2 for parts in cfg.concatenations):
        bad("concatenations", f"each entry lists two or more feature sets, got {cfg.concatenations}")
    if cfg.n_jobs == 0:
        bad("n_jobs", "0 processes cannot fit anything; use 1 or more, or -1 for every core")
    out = Path(cfg.output_dir)
    existing = next((path for path in (out, *out.parents) if path.exists()), out)  # found now, not after the fits
    if existing.exists() and not existing.is_dir():
        where = f"{out} is a file, not a folder" if existing == out else f"{out} cannot be made: {existing} is a file"
        bad("output_dir", f"{where}; choose another output_dir")
