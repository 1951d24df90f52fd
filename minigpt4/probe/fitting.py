"""Fits of one held-out fold: a standardised, class-balanced logistic regression whose C is
chosen by an inner cross-validation on the training folds only, scored on the held-out fold.

Leakage: the scaler is fit on the training folds' rows, and the grid search over C sees only
those rows, so no held-out row informs the scaling, the choice of C or the weights.  Inner
splits leave one training fold out at a time (the annotation's folds are the unit of
generalisation); with a single training fold they fall back to a stratified 3-way split.

Speed (benchmarks/bench_probe.py): with more features than training rows (4096 vs ~800) the
L2-penalised weights lie in the span of the training rows (w = X^T a), so every fit of the
fold -- each inner split, each C, the refit, each permuted labelling -- runs exactly as well on
the rows' coordinates in that span: Z = U sqrt(L) from the eigendecomposition of the Gram
matrix Xs Xs^T = U L U^T (n x n instead of n x D), held-out rows mapping to Xs_test Xs^T U / sqrt(L).
The decomposition is computed once per fold and shared by all labellings.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneGroupOut, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from minigpt4.probe.config import ProbeConfig
from minigpt4.probe.metrics import fold_metrics, inner_score

RANK_TOLERANCE = 1e-9  # Gram eigenvalues below this fraction of the largest carry no training variance


@dataclass
class FoldFit:
    fold: int
    n_train: int
    n_test: int
    n_test_mw: int
    metrics: dict | None  # None when no probe could be fitted (see ``note``)
    C: float | None = None
    params: dict | None = None  # what a sequence model's inner cross-validation chose (epochs, weight decay)
    converged: bool = True
    note: str | None = None  # e.g. the held-out rows hold one class
    mw_score: np.ndarray | None = None  # [n_test] P(MW) of the held-out rows, in row order


def permuted_labels(
    y: np.ndarray, folds: np.ndarray, permutation: int, seed: int, videos: Sequence | None = None,
    times: np.ndarray | None = None,
) -> np.ndarray:
    """Labels for the chance reference; every fold keeps its class balance.

    Without ``videos`` the labels are shuffled within each fold.  With each row's video and
    time, each video's labels are rotated in time by a random offset instead: mind wandering
    comes in runs, and features drift, so clips of one video are not exchangeable; a shuffle
    would break the runs and make chance look narrower than it is (a slow drift that happens
    to follow the runs would then pass for a finding).  A rotation keeps every run's length
    and moves it against the features.
    """
    rng = np.random.default_rng([seed, permutation])
    permuted = y.copy()
    if videos is None:
        for fold in np.unique(folds):
            rows = np.flatnonzero(folds == fold)
            permuted[rows] = y[rng.permutation(rows)]
        return permuted
    groups: dict[tuple, list[int]] = {}
    for row, key in enumerate(zip(videos, folds.tolist())):
        groups.setdefault(key, []).append(row)
    for key in sorted(groups, key=str):
        rows = np.asarray(groups[key])[np.argsort(times[groups[key]], kind="stable")]
        if len(rows) > 1:
            permuted[rows] = np.roll(y[rows], int(rng.integers(1, len(rows))))
    return permuted


def inner_splits(train_folds: np.ndarray, y_train: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(np.unique(train_folds)) >= 2:
        return list(LeaveOneGroupOut().split(y_train, y_train, groups=train_folds))
    minority = int(np.bincount(y_train).min())
    stratified = StratifiedKFold(n_splits=max(2, min(3, minority)), shuffle=True, random_state=seed)
    return list(stratified.split(y_train, y_train))


def span_coordinates(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardised rows (scaler fit on ``train`` only), in coordinates of the span of the
    training rows when that is smaller than the feature count -> (Z_train, Z_test)."""
    scaler = StandardScaler().fit(train)
    train, test = scaler.transform(train), scaler.transform(test)
    if train.shape[1] <= train.shape[0]:
        return train, test
    eigenvalues, eigenvectors = np.linalg.eigh((train @ train.T).astype(np.float64))
    keep = eigenvalues > eigenvalues.max() * RANK_TOLERANCE
    eigenvalues, eigenvectors = eigenvalues[keep], eigenvectors[:, keep]
    z_train = eigenvectors * np.sqrt(eigenvalues)  # z_train @ z_train.T == train @ train.T
    z_test = (test @ train.T).astype(np.float64) @ (eigenvectors / np.sqrt(eigenvalues))
    # float32 like the features: the fits move half the bytes (a third less time, same choices)
    return z_train.astype(np.float32), z_test.astype(np.float32)


def logistic(cfg: ProbeConfig, C: float, warm_start: bool = False) -> LogisticRegression:
    return LogisticRegression(C=C, class_weight="balanced", solver="lbfgs", max_iter=cfg.max_iter, warm_start=warm_start)


def choose_c(cfg: ProbeConfig, z: np.ndarray, y: np.ndarray, train_folds: np.ndarray) -> float:
    """The C of ``probe.c_grid`` with the best mean inner score, as ``GridSearchCV`` chooses it
    (a split whose fit fails counts as NaN, which ranks last; ties go to the earlier C in the
    grid), but faster: on each inner split the grid is fitted from the smallest C up, each fit
    starting from the last one's weights, and scored with numpy."""
    grid = [float(c) for c in cfg.c_grid]
    splits = inner_splits(train_folds, y, cfg.seed)
    scores = np.full((len(splits), len(grid)), np.nan)
    for s, (fit_rows, val_rows) in enumerate(splits):
        if len(np.unique(y[fit_rows])) < 2:  # GridSearchCV's fit fails here: error_score NaN
            continue
        model = logistic(cfg, grid[0], warm_start=True)
        for i in np.argsort(grid, kind="stable"):
            model.set_params(C=grid[i]).fit(z[fit_rows], y[fit_rows])
            decision = z[val_rows].astype(np.float64) @ model.coef_[0] + model.intercept_[0]
            scores[s, i] = inner_score(cfg.inner_scoring, y[val_rows], 1 / (1 + np.exp(-decision)))
    means = scores.mean(axis=0)
    return grid[int(np.argmax(np.where(np.isnan(means), -np.inf, means)))]


def chosen_c(cfg: ProbeConfig, z_train: np.ndarray, y_train: np.ndarray, train_folds: np.ndarray) -> float:
    """C chosen by the inner cross-validation over ``probe.c_grid`` (a grid of one value needs no choosing)."""
    return float(cfg.c_grid[0]) if len(cfg.c_grid) == 1 else choose_c(cfg, z_train, y_train, train_folds)


def fit_probe(cfg: ProbeConfig, z_train: np.ndarray, y_train: np.ndarray, train_folds: np.ndarray):
    """(the fitted probe, its C): C chosen on the training rows, the probe refitted on all of them."""
    C = chosen_c(cfg, z_train, y_train, train_folds)
    return logistic(cfg, C).fit(z_train, y_train), C


def fit_held_out_fold(X: np.ndarray, labellings: np.ndarray, y_true: np.ndarray, folds: np.ndarray, held_out: int, cfg: ProbeConfig) -> list[FoldFit]:
    """One :class:`FoldFit` per row of ``labellings`` [V, N] (the true labels, then permuted
    ones): fit on every fold but ``held_out`` with that labelling, score ``held_out`` against
    ``y_true``."""
    train, test = folds != held_out, folds == held_out
    y_test = y_true[test]
    sizes = dict(fold=int(held_out), n_train=int(train.sum()), n_test=int(test.sum()), n_test_mw=int(y_test.sum()))
    one_class_held_out = len(np.unique(y_test)) < 2
    # One BLAS thread per fit: these matrices run faster so, and n_jobs parallelises the folds.
    with threadpool_limits(limits=1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.filterwarnings("ignore", category=UserWarning)  # inner folds holding one class
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        z_train, z_test = span_coordinates(X[train], X[test])
        fits = []
        for labels in labellings:
            y_fit = labels[train]
            if len(np.unique(y_fit)) < 2:
                fits.append(FoldFit(**sizes, metrics=None, note="the training folds hold one class; no probe fitted"))
                continue
            caught.clear()
            probe, C = fit_probe(cfg, z_train, y_fit, folds[train])
            mw_score = probe.predict_proba(z_test)[:, list(probe.classes_).index(1)]
            fits.append(
                FoldFit(
                    **sizes,
                    metrics=fold_metrics(y_test, probe.predict(z_test), mw_score),
                    C=C,
                    converged=not any(issubclass(w.category, ConvergenceWarning) for w in caught),
                    note="the held-out fold holds one class; AUCs not computed" if one_class_held_out else None,
                    mw_score=mw_score,
                )
            )
    return fits
