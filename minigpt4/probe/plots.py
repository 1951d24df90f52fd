"""PNG plots of a probe: ROC curves of the best sets, a heat map of the chosen metric over
LLM layer x position, and per-video timelines (timelines.py).  Figures are drawn without
pyplot (no display, no global state).

A plot must not mislead: metric axes and colour scales are fixed (0..1), never fitted to the
data; curves that coincide stay visible (each its own line style and marker); the chance
level and its spread are drawn where a reader compares against them.
"""

from __future__ import annotations

import io
from itertools import cycle
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from minigpt4.common.atomic_io import write_through_tmp
from minigpt4.probe.metrics import mean_sd
from minigpt4.probe.run import ProbeResult, ranked

ROC_PNG, HEATMAP_PNG = "roc_curves.png", "heatmap_layer_position.png"
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
# Balanced accuracy and ROC AUC are 0.5 at chance whatever the class balance: a diverging map
# centred there shows chance as neutral.  The other metrics' chance depends on the share of MW
# clips, so they get a sequential map, still over the fixed range 0..1.
CENTRED_AT_HALF = ("balanced_accuracy", "roc_auc")


def save_png(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_through_tmp(path, lambda handle: handle.write(buffer.getvalue()))


def roc_curves(result: ProbeResult, path: Path) -> Path | None:
    """Out-of-fold ROC curves (each row scored by the fold that held it out, pooled) of the
    best ``probe.roc_sets`` sets."""
    y = result.labels.y
    figure = Figure(figsize=(7, 6.5))
    axes = figure.add_subplot()
    styles = zip(cycle(LINE_STYLES), cycle(MARKERS))  # 28 distinct pairs before one repeats
    drawn = 0
    for s in ranked(result)[: result.cfg.roc_sets]:
        scored = np.isfinite(s.out_of_fold)
        if len(np.unique(y[scored])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[scored], s.out_of_fold[scored])
        pooled = roc_auc_score(y[scored], s.out_of_fold[scored])
        folds = s.summary["roc_auc"]
        fold_text = f"; folds {folds['mean']:.3f} ± {folds['sd']:.3f}" if folds["mean"] is not None else ""
        line, marker = next(styles)
        every = max(1, len(fpr) // 8)
        axes.plot(  # markers start at another point on each curve, so curves that coincide show each one's
            fpr, tpr, linestyle=line, marker=marker, markevery=(drawn % every, every), markersize=5, linewidth=1.6,
            alpha=0.85, label=f"{s.feature_set.name}: {pooled:.3f}{fold_text}", clip_on=False, zorder=3,
        )
        drawn += 1
    if not drawn:
        return None
    chance = ranked(result)[0].chance_summary["roc_auc"]  # the best set's fits on permuted labels
    chance_text = f" (best set on permuted labels: {chance['mean']:.3f} ± {chance['sd']:.3f})" if chance["mean"] is not None else ""
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance" + chance_text)
    axes.set(
        xlim=(-0.02, 1.0), ylim=(0.0, 1.02), aspect="equal",  # a perfect curve runs along the edges: keep it in view
        xlabel="false positive rate (NonMW called MW)", ylabel="true positive rate (MW found)",
        title="held-out ROC of the best sets",
    )
    axes.legend(
        loc="lower right", fontsize="small",
        title="AUC: pooled out-of-fold (curve); mean ± sd over folds", title_fontsize="small",
    )
    save_png(figure, path)
    return path


def _text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (relative luminance)."""
    red, green, blue = rgba[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.5 else "white"


def layer_position_heatmap(result: ProbeResult, path: Path) -> Path | None:
    """The metric's fold mean for every scored ``llama/L{layer}/{position}`` set, on a fixed
    0..1 colour scale; cells whose set beats chance (p over all sets <= alpha) carry a star."""
    metric = result.cfg.metric
    scored = [s for s in result.sets if s.feature_set.kind == "llama_features" and s.summary[metric]["mean"] is not None]
    if not scored:
        return None
    cells = {(s.feature_set.layer, s.feature_set.position): s for s in scored}
    layers = list(dict.fromkeys(layer for layer, _ in cells))
    positions = list(dict.fromkeys(position for _, position in cells))
    grid = np.full((len(layers), len(positions)), np.nan)
    for (layer, position), s in cells.items():
        grid[layers.index(layer), positions.index(position)] = s.summary[metric]["mean"]
    cmap = colormaps["RdBu_r" if metric in CENTRED_AT_HALF else "viridis"]
    norm = Normalize(vmin=0.0, vmax=1.0)
    figure = Figure(figsize=(max(6.5, 2.2 + 0.9 * len(positions)), 2.4 + 0.6 * len(layers)))
    axes = figure.add_subplot()
    image = axes.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
    axes.set_xticks(range(len(positions)), positions, rotation=45, ha="right")
    axes.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    chance_mean, chance_sd = mean_sd(s.chance_summary[metric]["mean"] for s in scored)
    chance = f"permuted labels {chance_mean:.2f} ± {chance_sd:.2f}; " if chance_mean is not None else ""
    axes.set(xlabel="position", ylabel="layer",
             title=f"{metric}, mean over held-out folds\n{chance}* beats chance (p over all sets <= {result.cfg.alpha})")
    axes.title.set_fontsize("medium")
    family = result.family_p_values(metric)
    for (layer, position), s in cells.items():
        row, col = layers.index(layer), positions.index(position)
        p_all = family[s.feature_set.name]
        star = "*" if p_all is not None and p_all <= result.cfg.alpha else ""
        axes.text(col, row, f"{grid[row, col]:.2f}{star}", ha="center", va="center", fontsize="small",
                  color=_text_colour(cmap(norm(grid[row, col]))))
    colour_bar = figure.colorbar(image, ax=axes)
    colour_bar.set_label(f"{metric}\n(fixed scale 0..1)")
    save_png(figure, path)
    return path


def write_plots(result: ProbeResult, out: Path) -> list[Path]:
    made = [roc_curves(result, out / ROC_PNG), layer_position_heatmap(result, out / HEATMAP_PNG)]
    return [path for path in made if path is not None]
