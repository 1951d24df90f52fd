"""The probe's written results: ``probe.json`` (everything, per fold), ``probe.csv`` (one row
per feature set) and ``probe.md`` (the ranked table, also printed).

A reader must not mistake noise for a finding: every metric comes with its chance reference
as mean +- sd over label permutations and a permutation p-value, the rows that do not beat
chance at ``probe.alpha`` on ``probe.metric`` are marked, and what limits the reading (a
participant in several folds, too few permutations to reach ``alpha``) heads the report."""

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


def _set_entry(result: SetResult, p_all_sets: dict) -> dict:
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
        "p_values": result.p_values,
        "p_values_all_sets": p_all_sets,
        "permutations": result.permutations,
        "base": fs.base,
        "window": fs.window,
        "stat": fs.stat,
        "folds": [_fold_entry(f) for f in result.folds],
        "chance_folds": [[f.metrics for f in folds] for folds in result.chance],
    }


def _not_probed_entry(skipped: NotProbed) -> dict:
    fs = skipped.feature_set
    return {"name": fs.name, "kind": fs.kind, "layer": fs.layer, "position": fs.position, "dim": skipped.dim, "reason": skipped.reason}


def to_json(result: ProbeResult) -> dict:
    family = {metric: result.family_p_values(metric) for metric in METRICS}
    folds = {}
    for fold in np.unique(result.labels.folds):
        rows = result.labels.folds == fold
        folds[str(int(fold))] = {"clips": int(rows.sum()), "mw": int(result.labels.y[rows].sum())}
    return {
        "warnings": result.warnings + permutation_notes(result),
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
        "participants": len({p for p in result.labels.participants if p is not None}) or None,
        "short_context_windows": {str(k): n for k, n in result.short_windows.items()},
        "metric": result.cfg.metric,
        "alpha": result.cfg.alpha,
        "permuted_labels": chance_scheme(result),
        "sets": [_set_entry(s, {m: family[m][s.feature_set.name] for m in METRICS}) for s in ranked(result)],
        "not_probed": [_not_probed_entry(s) for s in result.not_probed],
    }


def csv_rows(result: ProbeResult) -> list[dict]:
    rows = []
    family = {metric: result.family_p_values(metric) for metric in METRICS}
    for s in ranked(result):
        fs = s.feature_set
        row = {"feature_set": fs.name, "kind": fs.kind, "layer": fs.layer, "position": fs.position, "dim": s.dim}
        for metric in METRICS:
            row[f"{metric}_mean"] = s.summary[metric]["mean"]
            row[f"{metric}_sd"] = s.summary[metric]["sd"]
            row[f"{metric}_chance"] = s.chance_summary[metric]["mean"]
            row[f"{metric}_chance_sd"] = s.chance_summary[metric]["sd"]
            row[f"{metric}_p"] = s.p_values[metric]
            row[f"{metric}_p_all_sets"] = family[metric][fs.name]
        row["permutations"] = s.permutations
        row["beats_chance"] = beats_chance(family[result.cfg.metric][fs.name], result.cfg.alpha)
        row["folds_with_one_class"] = sum(1 for f in s.folds if f.note)
        row["fits_not_converged"] = sum(1 for f in s.folds if not f.converged)
        row["not_probed"] = ""
        rows.append(row)
    for skipped in result.not_probed:  # the same columns, no metrics, the reason last
        fs = skipped.feature_set
        row = {"feature_set": fs.name, "kind": fs.kind, "layer": fs.layer, "position": fs.position, "dim": skipped.dim}
        row.update({f"{metric}_{part}": None for metric in METRICS for part in ("mean", "sd", "chance", "chance_sd", "p", "p_all_sets")})
        row.update(permutations=None, beats_chance=None, folds_with_one_class=None, fits_not_converged=None)
        row["not_probed"] = skipped.reason
        rows.append(row)
    return rows


def beats_chance(p_all_sets: float | None, alpha: float) -> bool | None:
    """Whether a set's p-value corrected over every set probed (``ProbeResult.family_p_values``)
    is at most ``alpha``; None without a p-value."""
    return None if p_all_sets is None else p_all_sets <= alpha


def permutation_notes(result: ProbeResult) -> list[str]:
    """When the permutations are too few for any p-value to reach ``alpha``, say so."""
    alpha, notes = result.cfg.alpha, []
    needed = int(np.ceil(1 / alpha)) - 1  # (1 + 0) / (1 + n) <= alpha
    for count in sorted({s.permutations for s in result.sets}):
        if count == 0:
            notes.append("no label permutations were run: there is no chance reference, and no set can be shown to beat chance")
        elif 1 / (1 + count) > alpha:
            notes.append(
                f"with {count} permutation(s) the smallest possible p-value is {1 / (1 + count):.3f}, above alpha {alpha}: "
                f"no set can be shown to beat chance; use {needed} or more permutations"
            )
    return notes


def chance_scheme(result: ProbeResult) -> str:
    if result.labels.timed:
        return "each video's labels rotated in time by a random offset (runs of MW kept)"
    return "shuffled within each fold"


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _cell(s: SetResult, metric: str) -> str:
    """mean ± sd over folds (chance mean ± sd over permutations; p)."""
    summary, chance = s.summary[metric], s.chance_summary[metric]
    if summary["mean"] is None:
        return "n/a"
    text = f"{summary['mean']:.3f} ± {summary['sd']:.3f}"
    if chance["mean"] is not None:
        text += f" ({chance['mean']:.3f} ± {chance['sd']:.3f}; p {_number(s.p_values[metric])})"
    return text


def markdown_table(result: ProbeResult) -> str:
    """Ranked by ``probe.metric``; the warnings first, then one row per set."""
    cfg, metric = result.cfg, result.cfg.metric
    lines = [f"**WARNING: {warning}**" for warning in result.warnings + permutation_notes(result)]
    if lines:
        lines.append("")
    participants = len({p for p in result.labels.participants if p is not None})
    lines.append(
        f"Probe of {result.dump.folder}: {len(result.labels.y)} clips"
        + (f" of {participants} participants" if participants else "")
        + f", {len(np.unique(result.labels.folds))} held-out folds, sorted by {metric}. Each cell: mean ± sd over "
        f"folds (chance: mean ± sd over label permutations; permutation p-value of this set). \"p all sets\": "
        f"how often the best of all {len(result.sets)} sets scored as well on permuted labels (max-T); \"beats chance\": "
        f"that p at most {cfg.alpha}, on {metric}. Permuted labels: {chance_scheme(result)}."
    )
    for window, short in result.short_windows.items():
        lines.append(f"Context window {window}: {short} of {len(result.labels.y)} clips had fewer predecessors (the first clips of a video).")
    header = ["rank", "feature set", "dim", "beats chance", "p all sets", *METRICS, "notes"]
    family = result.family_p_values(metric)
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, s in enumerate(ranked(result), start=1):
        notes = []
        one_class = [str(f.fold) for f in s.folds if f.note]
        if one_class:
            notes.append(f"fold {', '.join(one_class)}: one class")
        if not all(f.converged for f in s.folds):
            notes.append("not converged in some fold (raise max_iter)")
        if s.permutations != cfg.permutations:
            notes.append(f"chance from {s.permutations} permutation(s)")
        p_all = family[s.feature_set.name]
        verdict = {True: "yes", False: "no", None: "n/a"}[beats_chance(p_all, cfg.alpha)]
        cells = [str(rank), s.feature_set.name, str(s.dim), verdict, _number(p_all)]
        cells += [_cell(s, m) for m in METRICS]
        cells.append("; ".join(notes))
        lines.append("| " + " | ".join(cells) + " |")
    for skipped in result.not_probed:
        cells = ["-", skipped.feature_set.name, str(skipped.dim), "n/a", "n/a", *["n/a"] * len(METRICS), f"not probed: {skipped.reason}"]
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
