"""The probe's written results: ``probe.json`` (everything, per fold), ``probe.csv`` (one row
per feature set) and ``probe.md`` (the ranked table, also printed)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from minigpt4.common.atomic_io import write_text_atomic
from minigpt4.probe.fitting import FoldFit
from minigpt4.probe.metrics import METRICS
from minigpt4.probe.run import NotProbed, ProbeResult, SetResult, ranked

JSON, CSV, MARKDOWN = "probe.json", "probe.csv", "probe.md"


def _fold_entry(fit: FoldFit) -> dict:
    entry = asdict(fit)
    entry.pop("mw_score")
    return entry


def _set_entry(result: SetResult) -> dict:
    fs = result.feature_set
    return {
        "name": fs.name,
        "kind": fs.kind,
        "layer": fs.layer,
        "position": fs.position,
        "parts": list(fs.parts),
        "dim": result.dim,
        "summary": result.summary,
        "chance": result.chance_summary,
        "folds": [_fold_entry(f) for f in result.folds],
        "chance_folds": [[f.metrics for f in folds] for folds in result.chance],
    }


def _not_probed_entry(skipped: NotProbed) -> dict:
    fs = skipped.feature_set
    return {"name": fs.name, "kind": fs.kind, "layer": fs.layer, "position": fs.position, "dim": skipped.dim, "reason": skipped.reason}


def to_json(result: ProbeResult) -> dict:
    folds = {}
    for fold in np.unique(result.labels.folds):
        rows = result.labels.folds == fold
        folds[str(int(fold))] = {"clips": int(rows.sum()), "mw": int(result.labels.y[rows].sum())}
    return {
        "config": asdict(result.cfg),
        "dump": {
            "folder": str(result.dump.folder),
            "layers": result.dump.layers,
            "positions": result.dump.position_labels(),
            "pools": result.dump.pools,
            "left_out_by_the_dump": result.left_out,
        },
        "clips": len(result.labels.y),
        "folds": folds,
        "metric": result.cfg.metric,
        "sets": [_set_entry(s) for s in ranked(result)],
        "not_probed": [_not_probed_entry(s) for s in result.not_probed],
    }


def csv_rows(result: ProbeResult) -> list[dict]:
    rows = []
    for s in ranked(result):
        fs = s.feature_set
        row = {"feature_set": fs.name, "kind": fs.kind, "layer": fs.layer, "position": fs.position, "dim": s.dim}
        for metric in METRICS:
            row[f"{metric}_mean"] = s.summary[metric]["mean"]
            row[f"{metric}_sd"] = s.summary[metric]["sd"]
            row[f"{metric}_chance"] = s.chance_summary[metric]["mean"]
        row["folds_with_one_class"] = sum(1 for f in s.folds if f.note)
        row["fits_not_converged"] = sum(1 for f in s.folds if not f.converged)
        row["not_probed"] = ""
        rows.append(row)
    for skipped in result.not_probed:  # the same columns, no metrics, the reason last
        fs = skipped.feature_set
        row = {"feature_set": fs.name, "kind": fs.kind, "layer": fs.layer, "position": fs.position, "dim": skipped.dim}
        row.update({f"{metric}_{part}": None for metric in METRICS for part in ("mean", "sd", "chance")})
        row.update(folds_with_one_class=None, fits_not_converged=None, not_probed=skipped.reason)
        rows.append(row)
    return rows


def _cell(summary: dict, chance: dict | None = None) -> str:
    if summary["mean"] is None:
        return "n/a"
    text = f"{summary['mean']:.3f} ± {summary['sd']:.3f}"
    if chance is not None and chance["mean"] is not None:
        text += f" ({chance['mean']:.3f})"
    return text


def markdown_table(result: ProbeResult) -> str:
    """Ranked by ``probe.metric``; each cell mean ± sd over folds, (chance reference mean)."""
    metric = result.cfg.metric
    header = ["rank", "feature set", "dim", *METRICS, "notes"]
    lines = [
        f"Probe of {result.dump.folder}: {len(result.labels.y)} clips, {len(np.unique(result.labels.folds))} held-out folds, "
        f"sorted by {metric}; mean ± sd over folds (permutation chance mean, {result.cfg.permutations} permutations)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for rank, s in enumerate(ranked(result), start=1):
        notes = []
        one_class = [str(f.fold) for f in s.folds if f.note]
        if one_class:
            notes.append(f"fold {', '.join(one_class)}: one class")
        if not all(f.converged for f in s.folds):
            notes.append("not converged in some fold (raise max_iter)")
        cells = [str(rank), s.feature_set.name, str(s.dim)]
        cells += [_cell(s.summary[m], s.chance_summary[m] if result.cfg.permutations else None) for m in METRICS]
        cells.append("; ".join(notes))
        lines.append("| " + " | ".join(cells) + " |")
    for skipped in result.not_probed:
        cells = ["-", skipped.feature_set.name, str(skipped.dim), *["n/a"] * len(METRICS), f"not probed: {skipped.reason}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(result: ProbeResult, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON, "csv": out / CSV, "markdown": out / MARKDOWN}
    write_text_atomic(paths["json"], json.dumps(to_json(result), indent=2) + "\n")
    rows = csv_rows(result)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(paths["csv"], buffer.getvalue())
    write_text_atomic(paths["markdown"], markdown_table(result))
    return paths
