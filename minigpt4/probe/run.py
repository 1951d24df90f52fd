"""The probe end to end: check the inputs, then every feature set, one at a time, through
every held-out fold (true labels and the permuted ones), then the report and plots."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

from minigpt4.probe.config import BEST, ProbeConfig, export_names
from minigpt4.probe.dump import Dump
from minigpt4.probe.dump_check import non_finite_rows
from minigpt4.probe.feature_sets import FeatureSet, SetLoader, enumerate_sets, temporal_sets
from minigpt4.probe.fitting import FoldFit, fit_held_out_fold, permuted_labels
from minigpt4.probe.labels import ProbeInputError, RowLabels, align_labels
from minigpt4.probe.metrics import METRICS, family_p_values, mean_sd, permutation_p_value, summarise
from minigpt4.probe.sequence import fit_sequence_fold

logger = logging.getLogger(__name__)


@dataclass
class SetResult:
    feature_set: FeatureSet
    dim: int
    folds: list[FoldFit]  # the true labels, one per held-out fold
    chance: list[list[FoldFit]]  # per permutation, one per held-out fold
    out_of_fold: np.ndarray  # [N] P(MW) of every row from the fold that held it out (nan: not scored)
    summary: dict = field(init=False)  # metric -> {"mean", "sd"} over folds
    chance_summary: dict = field(init=False)  # metric -> {"mean", "sd"} over permutations of the fold means
    p_values: dict = field(init=False)  # metric -> permutation p-value of the fold mean (None: not defined)

    def __post_init__(self):
        self.summary = summarise(f.metrics for f in self.folds if f.metrics)
        per_permutation = [summarise(f.metrics for f in folds if f.metrics) for folds in self.chance]
        self.chance_summary, self.p_values = {}, {}
        for metric in METRICS:
            chance_means = [p[metric]["mean"] for p in per_permutation]
            mean, sd = mean_sd(chance_means)
            self.chance_summary[metric] = {"mean": mean, "sd": sd}
            self.p_values[metric] = permutation_p_value(self.summary[metric]["mean"], chance_means)

    @property
    def permutations(self) -> int:
        return len(self.chance)

    def chance_means(self, metric: str) -> list[float | None]:
        """The fold mean of ``metric`` under each permutation."""
        return [summarise(f.metrics for f in folds if f.metrics)[metric]["mean"] for folds in self.chance]


@dataclass
class NotProbed:
    """A feature set the probe could not fit, and why (e.g. NaN in some clips' rows)."""

    feature_set: FeatureSet
    dim: int
    reason: str


@dataclass
class ProbeResult:
    cfg: ProbeConfig
    dump: Dump
    labels: RowLabels
    left_out: list[str]
    sets: list[SetResult]
    not_probed: list[NotProbed] = field(default_factory=list)
    short_windows: dict[int, int] = field(default_factory=dict)  # window size -> rows whose window is shorter

    def family_p_values(self, metric: str) -> dict[str, float | None]:
        """Set name -> p-value corrected over every set probed with the same permutations
        (:func:`~minigpt4.probe.metrics.family_p_values`): the logistic sets form one family,
        the sequence-model sets, with their own permutation count, another."""
        corrected = {}
        for count in {s.permutations for s in self.sets}:
            family = [s for s in self.sets if s.permutations == count]
            values = family_p_values([s.summary[metric]["mean"] for s in family], [s.chance_means(metric) for s in family])
            corrected.update({s.feature_set.name: p for s, p in zip(family, values)})
        return corrected

    @property
    def warnings(self) -> list[str]:
        """What the reader must know before reading any number (printed at the report's top)."""
        return [self.labels.fold_warning] if self.labels.fold_warning else []


def prepare(cfg: ProbeConfig) -> tuple[Dump, RowLabels, list[str], list[FeatureSet]]:
    """Everything that can be wrong with the inputs is found here, before any output exists."""
    dump = Dump(cfg.dump_dir)
    dump.check_files(cfg.kinds)
    left_out = dump.left_out()
    labels = align_labels(dump.names, cfg.annotation, dump.folder, left_out, cfg.allow_split_participants)
    if len(np.unique(labels.folds)) < 2:
        raise ProbeInputError(f"{cfg.annotation}: the dumped clips span one test fold; a held-out probe needs two or more")
    sets = enumerate_sets(dump, cfg.kinds, cfg.concatenations)
    if not sets:
        raise ProbeInputError(f"{dump.folder}: none of probe.kinds {cfg.kinds} is in the dump ({', '.join(dump.kinds)})")
    sets += temporal_sets(sets, cfg, labels)
    for key, names in (("timeline_sets", cfg.timeline_sets), ("export", export_names(cfg))):
        unknown = [name for name in names if name != BEST and name not in {s.name for s in sets}]
        if unknown:
            raise ProbeInputError(f"probe.{key}: {unknown} are not feature sets of this probe (nor {BEST!r})")
    return dump, labels, left_out, sets


def set_result(feature_set: FeatureSet, dim: int, per_fold: list[list[FoldFit]], held_out: np.ndarray, folds: np.ndarray, n: int) -> SetResult:
    """A set's result from each held-out fold's fits (the true labels first, then the permuted)."""
    out_of_fold = np.full(n, np.nan)
    for fold, fits in zip(held_out, per_fold):
        if fits[0].mw_score is not None:
            out_of_fold[folds == fold] = fits[0].mw_score
    return SetResult(
        feature_set=feature_set,
        dim=dim,
        folds=[fits[0] for fits in per_fold],
        chance=[[fits[p] for fits in per_fold] for p in range(1, len(per_fold[0]))],
        out_of_fold=out_of_fold,
    )


def run_probe(cfg: ProbeConfig, progress: bool = True) -> ProbeResult:
    dump, labels, left_out, sets = prepare(cfg)
    y, folds = labels.y, labels.folds
    permutations = max(cfg.permutations, cfg.gru.permutations if cfg.sequence_model else 0)
    in_time = dict(videos=labels.videos, times=labels.start_s) if labels.timed else {}
    labellings = np.stack([y] + [permuted_labels(y, folds, p, cfg.seed, **in_time) for p in range(permutations)])
    load = SetLoader(dump, sets, labels)
    held_out = np.unique(folds)
    probed: list[tuple[FeatureSet, int]] = []  # (set, dim) in the order their folds were handed out
    not_probed: list[NotProbed] = []

    def fold_fits():
        """Every probed set's held-out folds as one stream of jobs: the workers start on the next
        set while the last folds of this one finish (5 folds on 2 processes would otherwise
        leave one idle a sixth of the time), and the sets are read as the jobs are handed out."""
        for feature_set in sets:
            X = load(feature_set)  # with the next set's, the only feature matrices held at a time
            reason = non_finite_rows(X, dump.names)
            if reason:
                logger.warning("feature set %s not probed: %s", feature_set.name, reason)
                not_probed.append(NotProbed(feature_set, X.shape[1], reason))
                continue
            probed.append((feature_set, X.shape[1]))
            for fold in held_out:
                if feature_set.is_sequence:
                    windows = load.windows(feature_set.window)
                    yield delayed(fit_sequence_fold)(X, windows, labellings[: 1 + cfg.gru.permutations], y, folds, fold, cfg)
                else:
                    yield delayed(fit_held_out_fold)(X, labellings[: 1 + cfg.permutations], y, folds, fold, cfg)

    results = []
    with Parallel(n_jobs=cfg.n_jobs, return_as="generator") as parallel:
        fits_stream = parallel(fold_fits())
        with tqdm(total=len(sets), desc="feature sets", unit="set", disable=not progress) as bar:
            while True:
                per_fold = [fits for _, fits in zip(held_out, fits_stream)]
                if not per_fold:
                    break
                feature_set, dim = probed[len(results)]
                results.append(set_result(feature_set, dim, per_fold, held_out, folds, len(y)))
                bar.n = len(results) + len(not_probed)
                bar.refresh()
    short = {k: load.short_windows(k) for k in cfg.context.windows}
    return ProbeResult(
        cfg=cfg, dump=dump, labels=labels, left_out=left_out, sets=results, not_probed=not_probed, short_windows=short
    )


def ranked(result: ProbeResult) -> list[SetResult]:
    """Best first by ``probe.metric``; sets without a value last."""
    metric = result.cfg.metric
    return sorted(result.sets, key=lambda s: (s.summary[metric]["mean"] is None, -(s.summary[metric]["mean"] or 0.0)))

