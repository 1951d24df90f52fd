"""Held-out metrics of one fold, and their mean +- sd over folds.

MW is the positive class.  A fold whose held-out rows hold one class has no ROC or PR
curve: its AUCs are ``None`` (reported, never computed) and the fold is flagged.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np

METRICS = ("balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")
CURVE_METRICS = ("roc_auc", "pr_auc")


def fold_metrics(y_true: np.ndarray, y_pred: np.ndarray, mw_score: np.ndarray) -> dict[str, float | None]:
    """``y_true``/``y_pred`` in {0, 1} (1 = MW), ``mw_score`` ranks clips by MW-ness.

    Precision/recall/F1 are those of the MW class (0 where undefined, as scikit-learn's
    ``zero_division=0``); PR AUC is the average precision (step-wise area under the PR curve).
    """
    # here, not at the top: the detector's config imports this module, and detect needs no scikit-learn (1.3 s to import)
    from sklearn.metrics import average_precision_score, balanced_accuracy_score, precision_recall_fscore_support, roc_auc_score

    with warnings.catch_warnings():  # one class held out: balanced accuracy warns, and is still defined
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y_true, y_pred)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=[1], average=None, zero_division=0
    )
    both_classes = len(np.unique(y_true)) == 2
    return {
        "balanced_accuracy": float(balanced),
        "precision": float(precision[0]),
        "recall": float(recall[0]),
        "f1": float(f1[0]),
        "roc_auc": float(roc_auc_score(y_true, mw_score)) if both_classes else None,
        "pr_auc": float(average_precision_score(y_true, mw_score)) if both_classes else None,
    }


def mean_sd(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample sd (ddof 1; 0 for one value) of the values that exist."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return None, None
    sd = float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0
    return float(np.mean(kept)), sd


def inner_score(scoring: str, y: np.ndarray, p_mw: np.ndarray) -> float:
    """What an inner cross-validation maximises (``probe.inner_scoring``), as scikit-learn's scorer
    of that name gives it for a classifier with these probabilities (the predicted class: P(MW)
    above 0.5), computed with numpy: the probe scores thousands of inner fits per set.  NaN where
    the score is undefined (ROC AUC of one class)."""
    y = np.asarray(y)
    p_mw = np.asarray(p_mw, dtype=np.float64)
    predicted = p_mw > 0.5
    if scoring == "balanced_accuracy":  # the recall of each class present, averaged
        return float(np.mean([np.mean(predicted[y == c] == c) for c in np.unique(y)]))
    if scoring == "f1":
        true_positive = np.sum(predicted & (y == 1))
        wrong = np.sum(predicted != (y == 1))
        return float(2 * true_positive / (2 * true_positive + wrong)) if true_positive else 0.0
    if scoring == "roc_auc":
        positives, negatives = int(np.sum(y == 1)), int(np.sum(y == 0))
        if not positives or not negatives:
            return math.nan
        from scipy.stats import rankdata  # scipy comes with scikit-learn

        ranks = rankdata(p_mw)  # ties share their mean rank: Mann-Whitney's U with ties
        return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))
    eps = np.finfo(np.float64).eps
    clipped = np.clip(p_mw, eps, 1 - eps)
    return float(np.mean(np.where(y == 1, np.log(clipped), np.log1p(-clipped))))  # neg_log_loss


def permutation_p_value(observed: float | None, chance: Iterable[float | None]) -> float | None:
    """(1 + permutations scoring at least ``observed``) / (1 + permutations), over the
    permutations that scored; None when nothing can be compared."""
    scored = [value for value in chance if value is not None and not math.isnan(value)]
    if observed is None or math.isnan(observed) or not scored:
        return None
    return (1 + sum(value >= observed for value in scored)) / (1 + len(scored))


def family_p_values(observed: Sequence[float | None], chance: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Permutation p-values corrected for probing many sets (Westfall and Young's max-T).

    ``observed[i]`` is set i's score, ``chance[i][j]`` its score under permutation j (the same
    permuted labels for every set).  Under permutation j the best of all sets scores
    ``max_i chance[i][j]``; set i's p-value is (1 + permutations whose best is at least
    ``observed[i]``) / (1 + permutations).  Ranking sets and reading the first is a choice made
    after looking: this p-value says how often the best of that many sets does as well on
    labels that mean nothing.
    """
    if not chance or not chance[0]:
        return [None] * len(observed)
    best = [max((c[j] for c in chance if c[j] is not None and not math.isnan(c[j])), default=None) for j in range(len(chance[0]))]
    best = [b for b in best if b is not None]
    return [permutation_p_value(value, best) if best else None for value in observed]


def summarise(folds: Iterable[Mapping[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """Per metric: ``{"mean": ..., "sd": ...}`` over folds."""
    folds = list(folds)
    summary = {}
    for metric in METRICS:
        mean, sd = mean_sd(fold[metric] for fold in folds)
        summary[metric] = {"mean": mean, "sd": sd}
    return summary
