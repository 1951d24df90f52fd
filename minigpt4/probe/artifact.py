"""The mind-wandering detector as files: ``detector.json`` + ``detector.safetensors`` (no pickle).

``detector.json`` holds everything a reader needs: the feature set (and the sets it is made
of), the model (a logistic regression with its C, or a GRU with its training choices), the
class names, the decision threshold and how it was chosen, a Platt calibration, the
out-of-fold metrics with their chance reference, the training data, and the identity of the
features (:mod:`minigpt4.features.identity`).  ``detector.safetensors`` holds the arrays:

* logistic regression: ``scaler.mean``, ``scaler.scale`` [D], ``logreg.coef`` [D],
  ``logreg.intercept`` [1];
* GRU: ``scaler.mean``, ``scaler.scale`` [D], ``pca.mean`` [D], ``pca.components`` [d, D],
  ``inputs.spread`` [d] and the network's tensors under ``gru.``.

:meth:`Detector.p_mw` applies it with numpy (and torch for the GRU) to the feature set's
rows; a scikit-learn ``LogisticRegression`` with the same C fitted on the same standardised
rows gives the same probabilities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from minigpt4.common.atomic_io import write_text_atomic, write_through_tmp
from minigpt4.probe.feature_sets import FeatureSet

FORMAT = "minigpt4-mw-detector/1"
JSON_NAME, ARRAYS_NAME, CARD_NAME, RELIABILITY_PNG = "detector.json", "detector.safetensors", "detector.md", "reliability.png"


class DetectorFileError(ValueError):
    """A detector folder cannot be used; the message names the file and the problem."""


def set_definition(feature_set: FeatureSet) -> dict:
    return {
        "name": feature_set.name, "kind": feature_set.kind, "index": list(feature_set.index),
        "token_mean": feature_set.token_mean, "layer": feature_set.layer, "position": feature_set.position,
        "parts": list(feature_set.parts), "base": feature_set.base, "window": feature_set.window, "stat": feature_set.stat,
    }


def set_from_definition(entry: dict) -> FeatureSet:
    return FeatureSet(
        name=entry["name"], kind=entry["kind"], index=tuple(entry["index"]), token_mean=entry["token_mean"],
        layer=entry["layer"], position=entry["position"], parts=tuple(entry["parts"]), base=entry["base"],
        window=entry["window"], stat=entry["stat"],
    )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


@dataclass
class Detector:
    info: dict  # detector.json
    arrays: dict[str, np.ndarray]  # detector.safetensors

    # ---- what it is --------------------------------------------------------------------------
    @property
    def feature_set(self) -> FeatureSet:
        return set_from_definition(self.info["sets"][self.info["set"]])

    @property
    def sets(self) -> dict[str, FeatureSet]:
        """The set and every set it is made of, by name."""
        return {name: set_from_definition(entry) for name, entry in self.info["sets"].items()}

    @property
    def threshold(self) -> float:
        return float(self.info["threshold"]["value"])

    # ---- applying it ---------------------------------------------------------------------------
    def standardised(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float64) - self.arrays["scaler.mean"]) / self.arrays["scaler.scale"]

    def p_mw(self, X: np.ndarray, windows: np.ndarray | None = None) -> np.ndarray:
        """P(MW) [N] of the feature set's rows X [N, D]; a GRU detector reads X as its base
        set's rows and ``windows`` [N, K] (row indices into X, left-padded with PAD)."""
        if self.info["model"]["kind"] == "logistic_regression":
            return sigmoid(self.standardised(X) @ self.arrays["logreg.coef"] + self.arrays["logreg.intercept"][0])
        from minigpt4.probe.sequence import gru_p_mw  # torch model code lives beside its fitting

        return gru_p_mw(self, X, windows)

    def calibrated(self, p_mw: np.ndarray) -> np.ndarray:
        """Platt's calibration fitted on the out-of-fold scores: sigmoid(a * logit(p) + b)."""
        calibration = self.info["calibration"]
        return sigmoid(calibration["a"] * logit(np.asarray(p_mw, np.float64)) + calibration["b"])

    # ---- files -----------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {name: np.ascontiguousarray(array) for name, array in self.arrays.items()}
        write_through_tmp(folder / ARRAYS_NAME, lambda handle: handle.write(_safetensors_bytes(arrays)))
        write_text_atomic(folder / JSON_NAME, json.dumps(self.info, indent=1, ensure_ascii=False, allow_nan=False) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "Detector":
        """Read a detector folder; anything missing, damaged or foreign is one named error."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DetectorFileError(f"detector {folder}: no such folder (a folder written by the probe's export)")
        json_path, arrays_path = folder / JSON_NAME, folder / ARRAYS_NAME
        for path in (json_path, arrays_path):
            if not path.is_file():
                raise DetectorFileError(f"detector {folder}: {path.name} is missing; export the detector again")
        try:
            info = json.loads(json_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DetectorFileError(f"{json_path}: not JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise DetectorFileError(f"{json_path}: not a detector of format {FORMAT} (format: {info.get('format') if isinstance(info, dict) else None!r})")
        if arrays_path.read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK"):
            raise DetectorFileError(f"{arrays_path}: a pickle (or a torch.save zip), not safetensors; detectors load no pickle")
        try:
            arrays = load_file(arrays_path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise DetectorFileError(f"{arrays_path}: not a safetensors file ({str(exc).splitlines()[0]})") from None
        missing = [name for name in info.get("arrays", []) if name not in arrays]
        if missing:
            raise DetectorFileError(f"{arrays_path}: lacks {', '.join(missing)} that {JSON_NAME} lists")
        return cls(info, arrays)


def _safetensors_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save(arrays)


def platt(scores: np.ndarray, y: np.ndarray) -> dict:
    """Platt's scaling of ``scores`` (probabilities) against ``y``: a, b of
    sigmoid(a * logit(p) + b), by maximum likelihood on Platt's (1999) smoothed targets
    (N+ + 1) / (N+ + 2) for MW and 1 / (N- + 2) for NonMW, which keep a and b finite when the
    scores separate the classes; with the Brier score before and after."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=np.int64)
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    target = np.where(y == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    z = logit(scores)[:, None]
    # soft targets as two weighted copies of every row: label 1 with weight t, label 0 with 1 - t
    fitted = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000).fit(
        np.concatenate([z, z]), np.r_[np.ones(len(y)), np.zeros(len(y))], sample_weight=np.r_[target, 1 - target]
    )
    a, b = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
    after = sigmoid(a * z[:, 0] + b)
    return {
        "method": "platt",
        "a": a,
        "b": b,
        "brier_before": float(np.mean((scores - y) ** 2)),
        "brier_after": float(np.mean((after - y) ** 2)),
        "fitted_on": f"the out-of-fold P(MW) of {len(y)} clips (each from the fold that held it out)",
    }


def threshold_for(scores: np.ndarray, y: np.ndarray, rule: str) -> dict:
    """The decision threshold on P(MW) chosen on the out-of-fold ``scores`` by ``rule``:
    ``balanced_accuracy`` or ``f1`` (the cut between two neighbouring scores that maximises it;
    ties: the cut nearest 0.5), or ``half`` (0.5)."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    if rule == "half":
        value = 0.5
    else:
        ordered = np.unique(scores)
        cuts = np.concatenate([[0.0], (ordered[1:] + ordered[:-1]) / 2, [1.0]])
        score = balanced_accuracy_score if rule == "balanced_accuracy" else (lambda t, p: f1_score(t, p, zero_division=0))
        values = np.array([score(y, (scores >= cut).astype(int)) for cut in cuts])
        best = np.flatnonzero(values == values.max())
        value = float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])
    predicted = (scores >= value).astype(int)
    return {
        "value": value,
        "rule": rule,
        "chosen_on": f"the out-of-fold P(MW) of {len(y)} clips",
        "out_of_fold_balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
    }


