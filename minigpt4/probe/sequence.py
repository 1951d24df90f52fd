"""A learned sequence model as a probe: a one-layer GRU over each clip's context window.

Per held-out fold, like the logistic probe (fitting.py): the base set is standardised and
reduced to ``gru.dim`` principal components fitted on the training rows only; each row
becomes the sequence of its window's clips (oldest first, the clip itself last; windows never
cross videos or folds, so a training row's window holds training rows only); the GRU's last
state goes through a linear head to P(MW).  The loss is class-balanced binary cross-entropy,
trained full-batch with AdamW; the number of epochs and the weight decay are chosen by the
same inner leave-one-fold-out as the logistic probe's C, then the model is refitted on every
training fold.  Every fit starts from the same seeded initial weights on one CPU thread, so a
run is deterministic for a given ``probe.seed``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from torch import nn

from minigpt4.probe.config import GRUConfig, ProbeConfig
from minigpt4.probe.context import PAD
from minigpt4.probe.fitting import RANK_TOLERANCE, FoldFit, inner_splits
from minigpt4.probe.metrics import fold_metrics, inner_score


SPREAD_FLOOR = 1e-3  # of the largest component's spread: the smallest an input is divided by


class WindowGRU(nn.Module):
    """[B, K, dim] windows (left-padded with zeros, the clip itself last) -> [B] MW logits."""

    def __init__(self, inputs: int, hidden: int):
        super().__init__()
        self.gru = nn.GRU(inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(windows)  # [1, B, hidden]: the state after the window's last clip
        return self.head(last[0]).squeeze(-1)


@contextlib.contextmanager
def one_thread():
    """Small full-batch fits run fastest on one thread, and the probe's folds run in parallel."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class WindowInputs:
    """How a base set's rows become the GRU's input, learnt on the training rows only.

    Each row is standardised and reduced to principal components; a window [K] of rows
    becomes [K, dim]: each clip's code minus its window's mean, zeros where the window is
    padded, each input scaled to unit spread over the training rows' windows.

    Centring on the window keeps what changes within it and drops the person's resting
    level: with a few dozen people in the training folds, a GRU given the level learns to
    tell the people apart (training accuracy 1.0, held-out at chance on the synthetic
    sessions of the tests), while the level itself is what the ``ctx{K}/mean`` sets probe.
    """

    scaler_mean: np.ndarray  # [D]
    scaler_scale: np.ndarray  # [D]
    pca_mean: np.ndarray  # [D]
    components: np.ndarray  # [dim, D]
    spread: np.ndarray  # [dim]

    ARRAYS = ("scaler.mean", "scaler.scale", "pca.mean", "pca.components", "inputs.spread")

    @classmethod
    def fit(cls, X: np.ndarray, windows: np.ndarray, train_rows: np.ndarray, dim: int) -> "WindowInputs":
        scaler = StandardScaler().fit(X[train_rows])
        dim = min(dim, len(train_rows), X.shape[1])
        pca = PCA(n_components=dim, svd_solver="full").fit(scaler.transform(X[train_rows]))
        # components without variance (n rows span at most n - 1 directions) would scale rounding noise up
        kept = pca.explained_variance_ > pca.explained_variance_.max() * RANK_TOLERANCE
        inputs = cls(scaler.mean_, scaler.scale_, pca.mean_, pca.components_[kept], np.ones(int(kept.sum())))
        changes, present = inputs.changes(X, windows[train_rows])
        counts = np.maximum(np.broadcast_to(present, changes.shape).sum(axis=(0, 1)), 1)
        spread = np.sqrt((changes**2).sum(axis=(0, 1)) / counts)
        # a component that hardly changes within windows is not blown up to unit spread
        inputs.spread = np.maximum(spread, spread.max() * SPREAD_FLOOR)
        return inputs

    def changes(self, X: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([len(windows), K, dim] unscaled changes, [.., K, 1] which places hold a clip)."""
        codes = ((np.asarray(X, np.float64) - self.scaler_mean) / self.scaler_scale - self.pca_mean) @ self.components.T
        present = (windows != PAD)[..., None]
        clips = np.where(present, codes[np.where(windows != PAD, windows, 0)], 0.0)
        mean = clips.sum(axis=1, keepdims=True) / present.sum(axis=1, keepdims=True)
        return np.where(present, clips - mean, 0.0), present

    def __call__(self, X: np.ndarray, windows: np.ndarray) -> torch.Tensor:
        """The GRU's input [len(windows), K, dim] for the windows over the rows of X."""
        changes, _ = self.changes(X, windows)
        return torch.from_numpy((changes / self.spread).astype(np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        values = (self.scaler_mean, self.scaler_scale, self.pca_mean, self.components, self.spread)
        return {name: np.asarray(value, np.float64) for name, value in zip(self.ARRAYS, values)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "WindowInputs":
        return cls(*(arrays[name] for name in cls.ARRAYS))


def train_gru(
    sequences: torch.Tensor, y: np.ndarray, gru: GRUConfig, weight_decay: float, seed: int, checkpoints: list[int], evaluate,
) -> dict[int, object]:
    """Train on (sequences, y) full-batch for ``max(checkpoints)`` epochs; after each epoch in
    ``checkpoints`` return ``evaluate(model)``."""
    torch.manual_seed(seed)
    model = WindowGRU(sequences.shape[-1], gru.hidden)
    optimizer = torch.optim.AdamW(model.parameters(), lr=gru.lr, weight_decay=weight_decay)
    target = torch.from_numpy(y.astype(np.float32))
    counts = np.bincount(y, minlength=2)
    weights = torch.from_numpy((len(y) / (2.0 * counts[y])).astype(np.float32))  # class-balanced
    loss_fn = nn.BCEWithLogitsLoss(weight=weights)
    results = {}
    for epoch in range(1, max(checkpoints) + 1):
        model.train()
        optimizer.zero_grad()
        loss_fn(model(sequences), target).backward()
        optimizer.step()
        if epoch in checkpoints:
            model.eval()
            with torch.no_grad():
                results[epoch] = evaluate(model)
    return results


def choose_training(sequences: torch.Tensor, y: np.ndarray, train_folds: np.ndarray, cfg: ProbeConfig) -> tuple[int, float]:
    """(epochs, weight decay) with the best mean inner score over leave-one-training-fold-out."""
    gru = cfg.gru
    epochs = sorted(set(gru.epochs))
    scores = {(e, wd): [] for e in epochs for wd in gru.weight_decay}
    for fit_rows, val_rows in inner_splits(train_folds, y, cfg.seed):
        if len(np.unique(y[fit_rows])) < 2:
            continue
        for wd in gru.weight_decay:
            def evaluate(model, rows=val_rows):
                return torch.sigmoid(model(sequences[rows])).numpy()

            predictions = train_gru(sequences[fit_rows], y[fit_rows], gru, wd, cfg.seed, epochs, evaluate)
            for e, p_mw in predictions.items():
                scores[(e, wd)].append(inner_score(cfg.inner_scoring, y[val_rows], p_mw))
    means = {key: np.nanmean(values) if values and not np.isnan(values).all() else -np.inf for key, values in scores.items()}
    return max(means, key=lambda key: (means[key], -key[0], -key[1]))  # ties: fewer epochs, less decay


def fit_sequence_fold(
    X: np.ndarray, windows: np.ndarray, labellings: np.ndarray, y_true: np.ndarray, folds: np.ndarray, held_out: int,
    cfg: ProbeConfig,
) -> list[FoldFit]:
    """One :class:`FoldFit` per row of ``labellings`` (the true labels, then permuted ones),
    as :func:`minigpt4.probe.fitting.fit_held_out_fold` does for the logistic probe."""
    train, test = folds != held_out, folds == held_out
    y_test = y_true[test]
    sizes = dict(fold=int(held_out), n_train=int(train.sum()), n_test=int(test.sum()), n_test_mw=int(y_test.sum()))
    one_class_held_out = len(np.unique(y_test)) < 2
    train_rows, test_rows = np.flatnonzero(train), np.flatnonzero(test)
    # a row's window lies in its own fold: training windows never read held-out clips
    sequences = WindowInputs.fit(X, windows, train_rows, cfg.gru.dim)(X, windows)
    fits = []
    with one_thread():
        for labels in labellings:
            y_fit = labels[train]
            if len(np.unique(y_fit)) < 2:
                fits.append(FoldFit(**sizes, metrics=None, note="the training folds hold one class; no probe fitted"))
                continue
            epochs, weight_decay = choose_training(sequences[train_rows], y_fit, folds[train], cfg)

            def evaluate(model):
                return torch.sigmoid(model(sequences[test_rows])).numpy().astype(np.float64)

            mw_score = train_gru(sequences[train_rows], y_fit, cfg.gru, weight_decay, cfg.seed, [epochs], evaluate)[epochs]
            fits.append(
                FoldFit(
                    **sizes,
                    metrics=fold_metrics(y_test, (mw_score >= 0.5).astype(np.int64), mw_score),
                    params={"epochs": int(epochs), "weight_decay": float(weight_decay)},
                    note="the held-out fold holds one class; AUCs not computed" if one_class_held_out else None,
                    mw_score=mw_score,
                )
            )
    return fits


def fit_final_gru(X: np.ndarray, windows: np.ndarray, y: np.ndarray, folds: np.ndarray, cfg: ProbeConfig) -> dict:
    """The GRU refitted on every row (epochs and weight decay by leave-one-fold-out over all
    folds), as the arrays and choices a detector stores."""
    rows = np.arange(len(y))
    inputs = WindowInputs.fit(X, windows, rows, cfg.gru.dim)
    sequences = inputs(X, windows)
    with one_thread():
        epochs, weight_decay = choose_training(sequences, y, folds, cfg)
        state = train_gru(sequences, y, cfg.gru, weight_decay, cfg.seed, [epochs], lambda model: model.state_dict())[epochs]
    arrays = inputs.arrays() | {f"gru.{name}": tensor.numpy().astype(np.float32) for name, tensor in state.items()}
    return {"arrays": arrays, "epochs": int(epochs), "weight_decay": float(weight_decay)}


def gru_p_mw(detector, X: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """P(MW) of a GRU detector for each window [N, K] over the base set's rows X."""
    arrays = detector.arrays
    state = {name.removeprefix("gru."): torch.from_numpy(np.array(array)) for name, array in arrays.items() if name.startswith("gru.")}
    model = WindowGRU(state["gru.weight_ih_l0"].shape[1], detector.info["model"]["hidden"])
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad(), one_thread():
        return torch.sigmoid(model(WindowInputs.from_arrays(arrays)(X, windows))).numpy().astype(np.float64)
