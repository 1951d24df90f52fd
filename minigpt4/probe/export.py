"""``probe.export``: the chosen sets refitted on every labelled row, written as detectors.

For each exported set (a name, or ``best``: the set ranked first):

1. C is chosen by the same inner leave-one-fold-out as in the probe, now over every fold; a
   ``StandardScaler`` and a class-balanced ``LogisticRegression`` at that C are fitted on
   every row (the GRU: its epochs and weight decay likewise, then refitted on every row);
2. the decision threshold is chosen on the probe's out-of-fold P(MW) (each clip scored by the
   fold that held it out) by ``probe.export_threshold``, and a Platt calibration is fitted on
   the same scores, with the Brier score before and after;
3. ``detector.json``, ``detector.safetensors`` (:mod:`minigpt4.probe.artifact`), a model card
   ``detector.md`` and ``reliability.png`` go to ``<output_dir>/detector/`` (one set) or
   ``<output_dir>/detector/<set>/`` (several).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.preprocessing import StandardScaler

from minigpt4.common.atomic_io import write_text_atomic
from minigpt4.features.identity import dump_identity
from minigpt4.probe.artifact import (
    ARRAYS_NAME, CARD_NAME, FORMAT, JSON_NAME, RELIABILITY_PNG, Detector, platt, set_definition, threshold_for,
)
from minigpt4.probe.config import BEST, ProbeConfig, export_names
from minigpt4.probe.feature_sets import FeatureSet, SetLoader
from minigpt4.probe.fitting import chosen_c, logistic, span_coordinates
from minigpt4.probe.labels import MW, ProbeInputError, RowLabels
from minigpt4.probe.metrics import METRICS
from minigpt4.probe.plots import save_png
from minigpt4.probe.run import ProbeResult, SetResult, ranked
from minigpt4.probe.sequence import fit_final_gru

DETECTOR_DIR = "detector"


def exported_sets(result: ProbeResult) -> list[SetResult]:
    """The sets ``probe.export`` names, in order, once each (``best``: ranked first)."""
    by_name = {s.feature_set.name: s for s in result.sets}
    chosen = []
    for name in export_names(result.cfg):
        s = ranked(result)[0] if name == BEST else by_name.get(name)
        if s is None:
            raise ProbeInputError(f"probe.export: {name!r} was not scored (not probed, or not a set of this probe)")
        if s not in chosen:
            chosen.append(s)
    return chosen


def needs(feature_set: FeatureSet, sets: dict[str, FeatureSet], num_streams: int) -> dict:
    """What computing the set from a recording takes: encoder streams, the image, LLM layers
    (whose input holds every stream and the image)."""
    streams, vision, layers = [], False, []

    def visit(fs: FeatureSet) -> None:
        nonlocal vision
        if fs.kind in ("concat",):
            for part in fs.parts:
                visit(sets[part])
        elif fs.base is not None:
            visit(sets[fs.base])
        elif fs.kind.endswith("_projected_features") and fs.kind != "image_projected_features":
            streams.append(fs.kind.split("_")[0])
        elif fs.kind == "image_projected_features":
            vision = True
        else:  # llama_features, llama_pooled_features
            layers.append(fs.layer)

    visit(feature_set)
    if layers:
        streams, vision = ["facemae", "videomae", "audio"][:num_streams], True
    return {"streams": sorted(set(streams)), "vision": vision, "llm_layers": sorted(set(layers)), "llm": bool(layers)}


def members(feature_set: FeatureSet, sets: dict[str, FeatureSet]) -> dict[str, dict]:
    """The definitions of the set and of every set it is made of."""
    found = {feature_set.name: set_definition(feature_set)}
    for name in [*feature_set.parts, *([feature_set.base] if feature_set.base else [])]:
        found |= members(sets[name], sets)
    return found


def fit_logistic(X: np.ndarray, y: np.ndarray, folds: np.ndarray, cfg: ProbeConfig) -> tuple[dict, float]:
    """(arrays, C): C by leave-one-fold-out over every fold (in the rows' span, as the probe
    chooses it), then scaler and logistic regression on every standardised row."""
    z, _ = span_coordinates(X, X[:1])  # the rows in their own span; the one "test" row is not used
    C = chosen_c(cfg, z, y, folds)
    scaler = StandardScaler().fit(X)
    model = logistic(cfg, C).fit(scaler.transform(X), y)
    arrays = {
        "scaler.mean": scaler.mean_.astype(np.float64),
        "scaler.scale": scaler.scale_.astype(np.float64),
        "logreg.coef": model.coef_[0].astype(np.float64),
        "logreg.intercept": model.intercept_.astype(np.float64),
    }
    return arrays, C


def export_detectors(result: ProbeResult, out: Path) -> list[Path]:
    """Write a detector per exported set; returns their folders."""
    chosen = exported_sets(result)
    if not chosen:
        return []
    load = SetLoader(result.dump, [s.feature_set for s in result.sets] + _members_not_probed(result), result.labels)
    identity = dump_identity(result.dump.manifest)
    family = {metric: result.family_p_values(metric) for metric in METRICS}
    folders = []
    for s in chosen:
        folder = out / DETECTOR_DIR if len(chosen) == 1 else out / DETECTOR_DIR / safe_name(s.feature_set.name)
        detector = build_detector(result, s, load, identity, {m: family[m][s.feature_set.name] for m in METRICS})
        detector.save(folder)
        write_card(detector, folder / CARD_NAME)
        reliability_plot(detector, s, result.labels, folder / RELIABILITY_PNG)
        folders.append(folder)
    return folders


def _members_not_probed(result: ProbeResult) -> list[FeatureSet]:
    return [skipped.feature_set for skipped in result.not_probed]


def safe_name(name: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", name)


def build_detector(result: ProbeResult, s: SetResult, load: SetLoader, identity: dict, p_all_sets: dict) -> Detector:
    cfg, labels = result.cfg, result.labels
    fs = s.feature_set
    y, folds = labels.y, labels.folds
    X = load(fs)
    if fs.is_sequence:
        windows = load.windows(fs.window)
        fitted = fit_final_gru(X, windows, y, folds, cfg)
        arrays = fitted["arrays"]
        model = {"kind": "gru", "epochs": fitted["epochs"], "weight_decay": fitted["weight_decay"], "hidden": cfg.gru.hidden,
                 "dim": int(arrays["pca.components"].shape[0]), "lr": cfg.gru.lr, "seed": cfg.seed}
    else:
        arrays, C = fit_logistic(X, y, folds, cfg)
        model = {"kind": "logistic_regression", "C": C, "class_weight": "balanced", "solver": "lbfgs",
                 "max_iter": cfg.max_iter, "standardised": True}
    scored = np.isfinite(s.out_of_fold)
    oof, y_oof = s.out_of_fold[scored], y[scored]
    sets = load.every
    info = {
        "format": FORMAT,
        "set": fs.name,
        "sets": members(fs, sets),
        "feature_dim": int(X.shape[1]),
        "needs": needs(fs, sets, identity["num_video_streams"]),
        "model": model,
        "classes": {"positive": MW, "negative": "NonMW"},
        "threshold": threshold_for(oof, y_oof, cfg.export_threshold),
        "calibration": platt(oof, y_oof),
        "metrics": {
            "out_of_fold": s.summary,
            "chance": s.chance_summary,
            "p_values": s.p_values,
            "p_values_all_sets": p_all_sets,
            "permutations": s.permutations,
            "permuted_labels": "rotated in time within each video" if labels.timed else "shuffled within each fold",
        },
        "training": training_data(result),
        "identity": identity,
        "model_config": result.dump.manifest["fingerprint"]["model"],  # paths as on the machine that made the dump
        "arrays": sorted(arrays),
    }
    return Detector(info, arrays)


def training_data(result: ProbeResult) -> dict:
    labels = result.labels
    people = {p for p in labels.participants if p is not None}
    return {
        "dump": str(result.dump.folder),
        "annotation": str(result.cfg.annotation),
        "clips": int(len(labels.y)),
        "mw_clips": int(labels.y.sum()),
        "participants": len(people) or None,
        "videos": len({v for v in labels.videos if v is not None}) or None,
        "folds": sorted(int(f) for f in np.unique(labels.folds)),
        "warnings": result.warnings,
    }


def reliability_plot(detector: Detector, s: SetResult, labels: RowLabels, path: Path) -> Path:
    """Observed share of MW against predicted P(MW), out of fold, before and after calibration."""
    scored = np.isfinite(s.out_of_fold)
    y, raw = labels.y[scored], s.out_of_fold[scored]
    figure = Figure(figsize=(5.5, 5.5))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    bins = max(2, min(10, len(y) // 10))
    for scores, name, style in ((raw, "out-of-fold P(MW)", "o-"), (detector.calibrated(raw), "after Platt calibration", "s--")):
        observed, predicted = calibration_curve(y, scores, n_bins=bins, strategy="quantile")
        axes.plot(predicted, observed, style, label=f"{name} (Brier {np.mean((scores - y) ** 2):.3f})")
    axes.axhline(y.mean(), color="tab:red", linewidth=0.8, linestyle=":", label=f"share of MW clips ({y.mean():.2f})")
    axes.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="predicted P(MW)", ylabel="observed share of MW",
             title=f"reliability of {detector.info['set']} ({len(y)} clips, {bins} bins of equal count)")
    axes.title.set_fontsize("small")
    axes.legend(loc="upper left", fontsize="small")
    save_png(figure, path)
    return path


def write_card(detector: Detector, path: Path) -> None:
    write_text_atomic(path, model_card(detector))


def model_card(detector: Detector) -> str:
    info = detector.info
    training, metrics, model = info["training"], info["metrics"], info["model"]
    threshold, calibration = info["threshold"], info["calibration"]
    lines = [f"# Mind-wandering detector: `{info['set']}`", ""]
    lines += [f"**WARNING: {warning}**" for warning in training["warnings"]]
    lines += [
        "## Data",
        f"- dump `{training['dump']}`, annotation `{training['annotation']}`",
        f"- {training['clips']} clips ({training['mw_clips']} MW)"
        + (f" of {training['participants']} participants" if training["participants"] else "")
        + f", folds {', '.join(map(str, training['folds']))}",
        "",
        "## Model",
        f"- feature set `{info['set']}` ({info['feature_dim']} dimensions); needs: "
        + ", ".join(_needs_text(info["needs"])),
        "- " + (f"standardised, class-balanced logistic regression, C = {model['C']} (inner leave-one-fold-out)"
                if model["kind"] == "logistic_regression"
                else f"GRU (state {model['hidden']}, {model['dim']} components), {model['epochs']} epochs, "
                     f"weight decay {model['weight_decay']} (inner leave-one-fold-out)"),
        f"- refitted on every labelled clip; files `{JSON_NAME}`, `{ARRAYS_NAME}`",
        f"- decision threshold {threshold['value']:.4f} on P(MW), chosen by {threshold['rule']} on {threshold['chosen_on']} "
        f"(balanced accuracy there {threshold['out_of_fold_balanced_accuracy']:.3f})",
        f"- Platt calibration fitted on {calibration['fitted_on']}: Brier {calibration['brier_before']:.4f} before, "
        f"{calibration['brier_after']:.4f} after (in sample for the calibration itself)",
        "",
        "## Held-out performance (each clip scored by a model that never saw its fold)",
        "",
        "| metric | mean ± sd over folds | chance: mean ± sd over permutations | p | p over all sets |",
        "|---|---|---|---|---|",
    ]
    for metric in METRICS:
        summary, chance = metrics["out_of_fold"][metric], metrics["chance"][metric]
        lines.append(
            f"| {metric} | {_pm(summary)} | {_pm(chance)} | {_num(metrics['p_values'][metric])} | "
            f"{_num(metrics['p_values_all_sets'][metric])} |"
        )
    lines += [
        "",
        f"Chance: {metrics['permutations']} label permutations ({metrics['permuted_labels']}).",
        "",
        "## Limits",
        "- The numbers above are out of fold; the exported model is refitted on every clip, so it has seen every "
        "person of this study: judge it on people it has not seen.",
        f"- It applies only to features made as these were (`identity` in {JSON_NAME}: weights by content, encoder "
        "settings, positions, layers, pools, streams, dtype); `python -m minigpt4.detect` refuses others.",
        "- A window without enough face gets no probability.",
    ]
    if info["sets"][info["set"]]["window"]:
        lines.append(f"- It reads each window with its {info['sets'][info['set']]['window'] - 1} predecessors of the "
                     "same recording: the first windows of a recording have fewer.")
    return "\n".join(lines) + "\n"


def _needs_text(needs: dict) -> list[str]:
    parts = [f"{stream} encoder" for stream in needs["streams"]]
    if needs["vision"] or needs["llm"]:
        parts.append("EVA image encoder")
    if needs["llm"]:
        parts.append(f"LLM layers {needs['llm_layers']}")
    return parts


def _pm(summary: dict) -> str:
    return "n/a" if summary["mean"] is None else f"{summary['mean']:.3f} ± {summary['sd']:.3f}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def scores_on_dump(detector: Detector, dump_dir: str | Path, annotation: str | Path) -> tuple[list[str], np.ndarray]:
    """(clip names, P(MW)) of a detector applied to every row of a dump: its set built from the
    dump as the probe builds it (context windows from the annotation's videos and times)."""
    from minigpt4.probe.dump import Dump
    from minigpt4.probe.labels import align_labels

    dump = Dump(dump_dir)
    labels = align_labels(dump.names, annotation, dump.folder, dump.left_out(), allow_split_participants=True)
    fs = detector.feature_set
    load = SetLoader(dump, list(detector.sets.values()), labels)
    X = load(fs)
    return dump.names, detector.p_mw(X, load.windows(fs.window) if fs.is_sequence else None)
