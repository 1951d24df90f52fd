"""Evaluation metrics as pure functions of label lists (numpy + scikit-learn).

Labels are the answer strings themselves (the configured answer texts, ``"happy"``), so a
metrics dict can be read without a lookup table.  Every dict is plain data (floats, ints, lists),
ready for ``json.dump``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from minigpt4.common.text_table import format_table

logger = logging.getLogger(__name__)


def _check_labels(values: Sequence[str], allowed: Sequence[str], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=object)
    unexpected = sorted(set(array.tolist()) - set(allowed))
    if unexpected:
        raise ValueError(f"{what} holds label(s) {unexpected} outside {list(allowed)}")
    return array


def _check_lengths(y_true: Sequence, y_pred: Sequence) -> None:
    if len(y_true) == 0:
        raise ValueError("no samples to score: y_true is empty")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")


def binary_classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    p_positive: Sequence[float],
    positive_label: str,
    labels: Sequence[str],
) -> dict[str, Any]:
    """Metrics of a two-class task; ``precision``/``recall``/``f1`` are those of ``positive_label``.

    ``p_positive`` is each sample's probability of ``positive_label`` (for ROC AUC).  When
    ``y_true`` holds a single class, ``single_class`` is True and ROC AUC and balanced accuracy
    are ``None``: the first is undefined, the second would be the recall of the one class
    present (1.0 for a model that always answers it).  The confusion matrix has rows = true
    label, columns = predicted label, both in ``labels`` order.
    """
    _check_lengths(y_true, y_pred)
    if len(p_positive) != len(y_true):
        raise ValueError(f"y_true has {len(y_true)} labels but p_positive has {len(p_positive)} scores")
    if len(labels) != 2 or positive_label not in labels:
        raise ValueError(f"labels must be two names including positive_label {positive_label!r}, got {list(labels)}")
    from sklearn import metrics as sk  # here: every command imports this module (the runners), few compute metrics

    labels = list(labels)
    y_true = _check_labels(y_true, labels, "y_true")
    y_pred = _check_labels(y_pred, labels, "y_pred")

    precision, recall, f1, _ = sk.precision_recall_fscore_support(
        y_true, y_pred, labels=[positive_label], average=None, zero_division=0
    )
    present = set(y_true.tolist())
    single_class = len(present) < 2
    if single_class:
        logger.warning("balanced accuracy and ROC AUC undefined: every true label is %r", next(iter(present)))
        roc_auc = balanced_accuracy = None
    else:
        roc_auc = float(sk.roc_auc_score(y_true == positive_label, np.asarray(p_positive, dtype=float)))
        balanced_accuracy = float(sk.balanced_accuracy_score(y_true, y_pred))

    return {
        "n": int(len(y_true)),
        "accuracy": float(sk.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced_accuracy,
        "precision": float(precision[0]),
        "recall": float(recall[0]),
        "f1": float(f1[0]),
        "macro_f1": float(sk.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "roc_auc": roc_auc,
        "positive_label": positive_label,
        "confusion_matrix": sk.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "confusion_labels": labels,
        "support": {label: int((y_true == label).sum()) for label in labels},
        "single_class": single_class,
    }


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def summarize_folds(fold_metrics: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Mean and standard deviation of every numeric metric across folds.

    The standard deviation is the population one (``ddof=0``): the folds are the whole set
    being described, not a sample of possible folds.  A metric that is ``None`` in a fold
    (ROC AUC of a single-class fold) is averaged over the folds that have it; ``n_folds``
    says how many that was.  Non-numeric entries (confusion matrices, label names) are skipped.
    """
    if not fold_metrics:
        raise ValueError("summarize_folds needs at least one fold's metrics")
    names = [name for name, value in fold_metrics[0].items() if value is None or _is_scalar(value)]
    summary: dict[str, dict[str, float | int | None]] = {}
    for name in names:
        values = [fold[name] for fold in fold_metrics if _is_scalar(fold.get(name))]
        if len(values) < len(fold_metrics):
            logger.info("%s: available in %d of %d folds", name, len(values), len(fold_metrics))
        if not values:
            summary[name] = {"mean": None, "std": None, "n_folds": 0}
            continue
        array = np.asarray(values, dtype=float)
        summary[name] = {"mean": float(array.mean()), "std": float(array.std(ddof=0)), "n_folds": len(values)}
    return summary


def _format_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.4f}"


def format_metrics_table(per_fold: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Mapping[str, Any]]) -> str:
    """A fixed-width table: one row per fold, a ``mean±std`` row, one column per metric."""
    columns = list(summary)
    rows = [[str(fold)] + [_format_value(metrics.get(name)) for name in columns] for fold, metrics in per_fold.items()]
    summary_cells = []
    for name in columns:
        stats = summary[name]
        if stats["mean"] is None:
            summary_cells.append("n/a")
        else:
            summary_cells.append(f"{stats['mean']:.4f}±{stats['std']:.4f}")
    rows.append(["mean±std"] + summary_cells)

    return format_table(["fold"] + columns, rows, rule=True)


def multiclass_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str], unparsed_label: str = "unparsed"
) -> dict[str, Any]:
    """Accuracy, support-weighted precision/recall/F1 and a confusion matrix for emotion labels.

    ``y_pred`` may hold ``unparsed_label`` where a generated answer named no known label; such
    a prediction is wrong for its sample (it lowers recall of the true class) but counts
    against no other class's precision.  The confusion matrix has one row per label (true)
    and one column per label plus a last ``unparsed_label`` column (predicted).
    """
    _check_lengths(y_true, y_pred)
    labels = list(labels)
    if unparsed_label in labels:
        raise ValueError(f"unparsed_label {unparsed_label!r} must not be one of the labels {labels}")
    y_true = _check_labels(y_true, labels, "y_true")
    y_pred = _check_labels(y_pred, labels + [unparsed_label], "y_pred")
    from sklearn import metrics as sk

    precision, recall, f1, _ = sk.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=0
    )
    columns = labels + [unparsed_label]
    # The square matrix over ``columns`` has an all-zero last row (no true label is unparsed).
    matrix = sk.confusion_matrix(y_true, y_pred, labels=columns)[:-1]
    return {
        "n": int(len(y_true)),
        "n_unparsed": int((y_pred == unparsed_label).sum()),
        "accuracy": float(sk.accuracy_score(y_true, y_pred)),
        "precision_weighted": float(precision),
        "recall_weighted": float(recall),
        "f1_weighted": float(f1),
        "confusion_matrix": matrix.tolist(),
        "confusion_labels": labels,
        "confusion_columns": columns,
        "support": {label: int((y_true == label).sum()) for label in labels},
    }
