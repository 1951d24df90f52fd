"""The probe's configuration as typed data: one dataclass gives defaults, types and the
allowed keys; the user's YAML (section ``probe``) and ``--options`` are merged over it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import MISSING

from minigpt4.common.config import load_typed_config

from minigpt4.probe.context import STATS
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
SEQUENCE_MODELS = ("gru",)
THRESHOLD_RULES = ("balanced_accuracy", "f1", "half")
BEST = "best"  # in timeline_sets: the set ranked first


class ProbeConfigError(ValueError):
    """The probe config cannot be used; the message names the key."""


@dataclass
class ContextConfig:
    windows: list[int] = field(default_factory=list)  # window sizes K (a clip and its K-1 predecessors); empty: none
    stats: list[str] = field(default_factory=lambda: list(STATS))  # how a window is summarised: mean, std, slope
    sets: list[str] = field(default_factory=lambda: ["*"])  # base sets given context (names or patterns like llama/*)


@dataclass
class GRUConfig:
    dim: int = 32  # the base set is standardised and reduced to this many principal components (training rows only)
    hidden: int = 16  # GRU state size
    epochs: list[int] = field(default_factory=lambda: [25, 100])  # full-batch epochs tried by the inner cross-validation
    weight_decay: list[float] = field(default_factory=lambda: [1e-3, 1e-1])  # AdamW weight decays tried likewise
    lr: float = 0.02
    permutations: int = 2  # label permutations of its chance reference (fits cost more than a logistic regression)


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
    alpha: float = 0.05  # a set beats chance when its permutation p-value is at most this
    allow_split_participants: bool = False  # go on when a participant's clips lie in several folds (reported)
    context: ContextConfig = field(default_factory=ContextConfig)  # temporal context sets (off by default)
    sequence_model: Optional[str] = None  # "gru": a GRU over each context window, per context base set and window
    gru: GRUConfig = field(default_factory=GRUConfig)
    timeline_sets: list[str] = field(default_factory=lambda: [BEST])  # per-video P(MW) timelines of these sets
    export: Any = None  # sets refitted and written as detectors: a name, a list of names, or best (null: none)
    export_threshold: str = "balanced_accuracy"  # decision threshold on out-of-fold P(MW): balanced_accuracy | f1 | half


@dataclass
class ProbeRunConfig:
    probe: ProbeConfig = field(default_factory=ProbeConfig)


def export_names(cfg: ProbeConfig) -> list[str]:
    """``probe.export`` as a list of set names (or ``best``)."""
    return [cfg.export] if isinstance(cfg.export, str) else list(cfg.export or [])


def load_config(path: str | Path, options: Sequence[str] = ()) -> ProbeConfig:
    """Defaults <- the YAML file <- ``a.b=c`` options, checked; a bad key stops here, named."""
    cfg = load_typed_config(path, options, ProbeRunConfig, ProbeConfigError).probe
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
    if not 0 < cfg.alpha < 1:
        bad("alpha", f"must lie between 0 and 1, got {cfg.alpha}")
    if any(k < 2 for k in cfg.context.windows):
        bad("context.windows", f"a window holds 2 or more clips, got {cfg.context.windows}")
    if cfg.context.windows and not cfg.context.stats:
        bad("context.stats", "needs one or more of " + ", ".join(STATS))
    unknown = [stat for stat in cfg.context.stats if stat not in STATS]
    if unknown:
        bad("context.stats", f"unknown statistic(s) {unknown}; choices: {', '.join(STATS)}")
    if cfg.sequence_model is not None:
        if cfg.sequence_model not in SEQUENCE_MODELS:
            bad("sequence_model", f"{cfg.sequence_model!r} is not one of {', '.join(SEQUENCE_MODELS)} (or null)")
        if not cfg.context.windows:
            bad("sequence_model", "runs over context windows; set probe.context.windows too")
    gru = cfg.gru
    if gru.dim < 1 or gru.hidden < 1 or gru.lr <= 0 or gru.permutations < 0:
        bad("gru", f"dim and hidden must be at least 1, lr positive, permutations 0 or more; got {gru}")
    if not gru.epochs or any(e < 1 for e in gru.epochs) or not gru.weight_decay or any(w < 0 for w in gru.weight_decay):
        bad("gru", f"epochs need one or more values >= 1 and weight_decay one or more values >= 0; got {gru}")
    if cfg.export is None:
        cfg.export = []
    elif isinstance(cfg.export, str):
        cfg.export = [cfg.export]
    if not isinstance(cfg.export, list) or not all(isinstance(name, str) for name in cfg.export):
        bad("export", f"a set name, a list of set names, or {BEST!r}; got {cfg.export!r}")
    if cfg.export_threshold not in THRESHOLD_RULES:
        bad("export_threshold", f"{cfg.export_threshold!r} is not one of {', '.join(THRESHOLD_RULES)}")
    if cfg.n_jobs == 0:
        bad("n_jobs", "0 processes cannot fit anything; use 1 or more, or -1 for every core")
    out = Path(cfg.output_dir)
    existing = next((path for path in (out, *out.parents) if path.exists()), out)  # found now, not after the fits
    if existing.exists() and not existing.is_dir():
        where = f"{out} is a file, not a folder" if existing == out else f"{out} cannot be made: {existing} is a file"
        bad("output_dir", f"{where}; choose another output_dir")
