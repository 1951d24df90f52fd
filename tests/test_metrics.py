import logging

import numpy as np
import pytest
from sklearn import metrics as skm

from minigpt4.tasks.metrics import (
    binary_classification_metrics,
    format_metrics_table,
    multiclass_metrics,
    summarize_folds,
)

MW, NON = "mind wandering", "non-mind wandering"


def mw_metrics(y_true, y_pred, p_mw):
    return binary_classification_metrics(y_true, y_pred, p_mw, positive_label=MW, labels=[MW, NON])


Y_TRUE = [MW, MW, MW, NON, NON, NON, NON, MW]
Y_PRED = [MW, NON, MW, NON, MW, NON, NON, MW]
P_MW = [0.9, 0.4, 0.7, 0.2, 0.6, 0.1, 0.3, 0.8]


def test_binary_metrics_equal_sklearn():
    result = mw_metrics(Y_TRUE, Y_PRED, P_MW)
    assert result["n"] == 8
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(Y_TRUE, Y_PRED))
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(Y_TRUE, Y_PRED))
    assert result["precision"] == pytest.approx(skm.precision_score(Y_TRUE, Y_PRED, pos_label=MW))
    assert result["recall"] == pytest.approx(skm.recall_score(Y_TRUE, Y_PRED, pos_label=MW))
    assert result["f1"] == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, pos_label=MW))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, average="macro"))
    y_mw = [label == MW for label in Y_TRUE]
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y_mw, P_MW))
    assert result["confusion_labels"] == [MW, NON]
    assert result["confusion_matrix"] == skm.confusion_matrix(Y_TRUE, Y_PRED, labels=[MW, NON]).tolist()
    assert result["confusion_matrix"] == [[3, 1], [1, 3]]
    assert result["support"] == {MW: 4, NON: 4}
    assert result["positive_label"] == MW


def test_binary_metrics_hand_values():
    # 3 of 4 MW found, 3 of 4 predicted MW correct.
    result = mw_metrics(Y_TRUE, Y_PRED, P_MW)
    assert (result["precision"], result["recall"], result["balanced_accuracy"]) == pytest.approx((0.75, 0.75, 0.75))


def test_single_class_has_no_auc_nor_balanced_accuracy(caplog):
    with caplog.at_level(logging.WARNING, logger="minigpt4.tasks.metrics"):
        result = mw_metrics([NON, NON, NON], [NON, NON, NON], [0.1, 0.3, 0.2])
    # sklearn's balanced accuracy would be 1.0 here: the recall of the one class present
    assert result["roc_auc"] is None and result["balanced_accuracy"] is None
    assert result["single_class"] is True and mw_metrics(Y_TRUE, Y_PRED, P_MW)["single_class"] is False
    assert "balanced accuracy and ROC AUC undefined" in caplog.text
    assert result["support"] == {MW: 0, NON: 3}
    assert result["precision"] == 0.0 and result["recall"] == 0.0
    assert result["accuracy"] == 1.0


def test_binary_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="outside"):
        mw_metrics([MW, "mw"], [MW, MW], [0.5, 0.5])
    with pytest.raises(ValueError, match="p_positive"):
        mw_metrics([MW, NON], [MW, MW], [0.5])


def test_summarize_folds_population_std():
    folds = [
        {"balanced_accuracy": 0.6, "roc_auc": 0.7, "n": 10, "confusion_matrix": [[1]], "positive_label": MW},
        {"balanced_accuracy": 0.8, "roc_auc": None, "n": 12, "confusion_matrix": [[1]], "positive_label": MW},
        {"balanced_accuracy": 0.7, "roc_auc": 0.9, "n": 11, "confusion_matrix": [[1]], "positive_label": MW},
    ]
    summary = summarize_folds(folds)
    assert set(summary) == {"balanced_accuracy", "roc_auc", "n"}
    assert summary["balanced_accuracy"]["mean"] == pytest.approx(0.7)
    assert summary["balanced_accuracy"]["std"] == pytest.approx(np.std([0.6, 0.8, 0.7], ddof=0))
    assert summary["roc_auc"] == pytest.approx({"mean": 0.8, "std": 0.1, "n_folds": 2})
    assert summary["n"]["n_folds"] == 3


def test_format_metrics_table():
    per_fold = {
        "fold 0": mw_metrics(Y_TRUE, Y_PRED, P_MW),
        "fold 1": mw_metrics([NON, NON], [NON, MW], [0.2, 0.6]),
    }
    table = format_metrics_table(per_fold, summarize_folds(list(per_fold.values())))
    lines = table.splitlines()
    assert len(lines) == 5  # header, rule, two folds, mean±std
    assert len({len(line) for line in lines}) == 1  # fixed width
    assert "balanced_accuracy" in lines[0] and "roc_auc" in lines[0]
    assert lines[3].split()[:2] == ["fold", "1"] and "n/a" in lines[3]
    assert lines[4].lstrip().startswith("mean±std")
    assert "0.6250±0.1250" in lines[4]  # balanced accuracy: folds 0.75 and 0.5


def test_multiclass_metrics_with_unparsed():
    labels = ["neutral", "happy", "sad"]
    y_true = ["happy", "happy", "sad", "neutral", "neutral", "sad", "happy"]
    y_pred = ["happy", "unparsed", "sad", "happy", "neutral", "unparsed", "happy"]
    result = multiclass_metrics(y_true, y_pred, labels)
    assert result["n"] == 7 and result["n_unparsed"] == 2
    assert result["accuracy"] == pytest.approx(4 / 7)
    for ours, average in (("precision_weighted", "precision"), ("recall_weighted", "recall"), ("f1_weighted", "f1")):
        expected = getattr(skm, f"{average}_score")(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        assert result[ours] == pytest.approx(expected)
    assert result["recall_weighted"] == pytest.approx(result["accuracy"])  # an unparsed answer is a miss
    assert result["confusion_columns"] == labels + ["unparsed"]
    assert result["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 1], [0, 0, 1, 1]]
    assert result["support"] == {"neutral": 2, "happy": 3, "sad": 2}


def test_multiclass_rejects_unknown_prediction():
    with pytest.raises(ValueError, match="y_pred"):
        multiclass_metrics(["sad"], ["glad"], ["sad", "happy"])


def test_binary_metrics_follow_the_configured_answers_and_positive_class():
    """Any wording works, and the positive class need not come first in ``labels``."""
    yes, no = "wandering", "on task"
    y_true = [no, yes, yes, no, no]
    y_pred = [no, yes, no, yes, no]
    p_yes = [0.2, 0.9, 0.4, 0.6, 0.1]
    result = binary_classification_metrics(y_true, y_pred, p_yes, positive_label=yes, labels=[no, yes])
    truth = np.array(y_true) == yes
    assert result["positive_label"] == yes
    assert result["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, pos_label=yes))
    assert result["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, pos_label=yes))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, p_yes))
    assert result["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=[no, yes]).tolist()
