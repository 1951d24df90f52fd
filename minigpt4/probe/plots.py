"""PNG plots of a probe: ROC curves of the best sets and a heat map of the chosen metric over
LLM layer x position.  Figures are drawn without pyplot (no display, no global state)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from minigpt4.common.atomic_io import write_through_tmp
from minigpt4.probe.run import ProbeResult, ranked

ROC_PNG, HEATMAP_PNG = "roc_curves.png", "heatmap_layer_position.png"


def _save(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_through_tmp(path, lambda handle: handle.write(buffer.getvalue()))


def roc_curves(result: ProbeResult, path: Path) -> Path | None:
    """Out-of-fold ROC curves (each row scored by the fold that held it out) of the best
    ``probe.roc_sets`` sets; legend AUC = mean over folds."""
    y = result.labels.y
    figure = Figure(figsize=(6, 6))
    axes = figure.add_subplot()
    drawn = 0
    for s in ranked(result)[: result.cfg.roc_sets]:
        scored = np.isfinite(s.out_of_fold)
        if len(np.unique(y[scored])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[scored], s.out_of_fold[scored])
        auc = s.summary["roc_auc"]["mean"]
        axes.plot(fpr, tpr, label=f"{s.feature_set.name} (AUC {auc:.3f})" if auc is not None else s.feature_set.name)
        drawn += 1
    if not drawn:
        return None
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate (NonMW called MW)", ylabel="true positive rate (MW found)", title="held-out ROC, best sets")
    axes.legend(loc="lower right", fontsize="small")
    _save(figure, path)
    return path


def layer_position_heatmap(result: ProbeResult, path: Path) -> Path | None:
    """The metric's fold mean for every ``llama/L{layer}/{position}`` set."""
    cells = {(s.feature_set.layer, s.feature_set.position): s.summary[result.cfg.metric]["mean"]
             for s in result.sets if s.feature_set.kind == "llama_features"}
    if not cells:
        return None
    layers = list(dict.fromkeys(layer for layer, _ in cells))
    positions = list(dict.fromkeys(position for _, position in cells))
    grid = np.array([[cells.get((l, p)) if cells.get((l, p)) is not None else np.nan for p in positions] for l in layers])
    figure = Figure(figsize=(1.2 + 0.9 * len(positions), 1.2 + 0.6 * len(layers)))
    axes = figure.add_subplot()
    image = axes.imshow(grid, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(positions)), positions, rotation=45, ha="right")
    axes.set_yticks(range(len(layers)), [str(l) for l in layers])
    axes.set(xlabel="position", ylabel="layer", title=f"{result.cfg.metric} (mean over held-out folds)")
    for (row, col), value in np.ndenumerate(grid):
        if np.isfinite(value):
            axes.text(col, row, f"{value:.2f}", ha="center", va="center", color="white", fontsize="small")
    figure.colorbar(image, ax=axes)
    _save(figure, path)
    return path


def write_plots(result: ProbeResult, out: Path) -> list[Path]:
    made = [roc_curves(result, out / ROC_PNG), layer_position_heatmap(result, out / HEATMAP_PNG)]
    return [path for path in made if path is not None]
