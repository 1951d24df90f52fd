"""Feature sets per minute and peak memory of the probe (``python -m minigpt4.probe``).

A synthetic dump is written to a temporary folder in the feature writer's stacked layout:
``llama_features.npy`` of shape (clips, layers, positions, hidden) in float16, filled a clip
at a time (never held in memory), with the label carried by one (layer, position).  The clips
are ``--sessions`` session videos (one participant each) of consecutive 10 s windows, and the
folds hold whole participants (``--folds`` of them, both labels in each), so context windows
(``--context-windows``, ``--context-stats``) can be probed too.  The probe then runs in this
process on every layer x position set (and their context sets), reading each through a memory
map, exactly as the command does.

    python -m benchmarks.bench_probe                       # 1,000 clips, H 4096, 10 x 4 sets, 5 folds
    python -m benchmarks.bench_probe --layers 1            # 4 sets only: a quicker per-set figure
    python -m benchmarks.bench_probe --context-windows 3 5 --context-stats mean slope   # 40 + 160 sets

Reported: wall time, feature sets per minute, CPU seconds (this process and its workers; less
sensitive to other work on a shared machine), and peak resident memory of this process and of
the largest worker (their sum bounds the probe's footprint).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from joblib.externals.loky import get_reusable_executor

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import MIB, format_table, machine_info, write_result
from minigpt4.probe.config import ContextConfig, ProbeConfig
from minigpt4.probe.run import ranked, run_probe

# What tests/test_benchmarks.py runs: a small dump, two sets, one worker, seconds.
SMOKE_ARGS = [
    "--clips", "40", "--hidden", "16", "--layers", "1", "--positions", "2", "--folds", "2", "--permutations", "1",
    "--n-jobs", "1", "--sessions", "4", "--context-windows", "3", "--context-stats", "slope",
]
COLUMNS = [
    ("sets", "sets", "d"),
    ("wall s", "wall_s", ".1f"),
    ("sets/min", "sets_per_minute", ".2f"),
    ("CPU s per set", "cpu_s_per_set", ".2f"),
    ("peak RSS MiB main", "peak_rss_mib_main", "d"),
    ("peak RSS MiB largest worker", "peak_rss_mib_largest_worker", "d"),
    ("best set", "best_set", ""),
    ("its balanced accuracy", "best_balanced_accuracy", ".3f"),
]


def write_dump(
    folder: Path, clips: int, layers: int, positions: int, hidden: int, folds: int, sessions: int, seed: int
) -> Path:
    """The synthetic dump and its annotation; returns the annotation path."""
    rng = np.random.default_rng(seed)
    session_of = np.arange(clips) * sessions // clips  # consecutive clips share a session
    fold_of = session_of % folds  # a participant (one session each) in one fold
    y = np.zeros(clips, dtype=np.int64)
    for session in range(sessions):
        rows = np.flatnonzero(session_of == session)
        y[rng.permutation(rows)[: len(rows) // 2]] = 1
    names = [f"clip_{i:05d}" for i in range(clips)]
    shape = (clips, layers, positions, hidden)
    array = np.lib.format.open_memmap(folder / "llama_features.npy", mode="w+", dtype=np.float16, shape=shape)
    for row in range(clips):
        values = rng.normal(size=shape[1:]).astype(np.float32)
        values[-1, 0, :8] += 0.8 * (2 * y[row] - 1)  # the last layer's first position carries the label
        array[row] = values
    array.flush()
    del array
    manifest = {
        "llama_feature_positions": [{"name": f"prompt:{p - positions}", "index": 100 + p} for p in range(positions)],
        "llama_feature_layers": list(range(-layers, 0)),
        "llama_feature_pools": [],
        "rows": clips,
        "files": {"llama_features": {"path": "llama_features.npy", "shape": list(shape)}},
        "dtype": "float16",
        "layout": "stacked",
        "complete": True,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "names.txt").write_text("".join(f"{n}\n" for n in names))
    annotation = folder / "annotations.csv"
    with annotation.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uuid", "mw_label", "test_fold_num", "participant", "video", "start_s", "end_s"])
        start = np.arange(clips) - np.searchsorted(session_of, session_of)  # the clip's place in its session
        writer.writerows(
            (n, "MW" if label else "NonMW", f, f"p{s}", f"session_{s}.mp4", 10.0 * k, 10.0 * k + 5)
            for n, label, f, s, k in zip(names, y, fold_of, session_of, start)
        )
    return annotation


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--positions", type=int, default=4)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=40, help="participants (one session each); folds hold whole ones")
    parser.add_argument("--context-windows", type=int, nargs="*", default=[], help="probe.context.windows, e.g. 3 5")
    parser.add_argument("--context-stats", nargs="*", default=["mean", "slope"], help="probe.context.stats")
    parser.add_argument("--permutations", type=int, default=ProbeConfig.permutations)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_probe_") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        annotation = write_dump(
            folder, args.clips, args.layers, args.positions, args.hidden, args.folds, args.sessions, seed=0
        )
        written = time.perf_counter() - started
        cfg = ProbeConfig(
            dump_dir=str(folder),
            annotation=str(annotation),
            output_dir=str(folder / "probe"),
            kinds=["llama_features"],
            permutations=args.permutations,
            n_jobs=args.n_jobs,
            plots=False,
            context=ContextConfig(windows=list(args.context_windows), stats=list(args.context_stats)),
        )
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu_before = os.times()
        started = time.perf_counter()
        result = run_probe(cfg)
        wall = time.perf_counter() - started
        get_reusable_executor().shutdown(wait=True)  # workers exit, so their usage is counted
        cpu = os.times()
        cpu_s = sum(getattr(cpu, f) - getattr(cpu_before, f) for f in ("user", "system", "children_user", "children_system"))
        sets = len(result.sets)
        report = {
            "clips": args.clips,
            "sessions": args.sessions,
            "context_windows": list(args.context_windows),
            "context_stats": list(args.context_stats) if args.context_windows else [],
            "hidden": args.hidden,
            "sets": sets,
            "folds": args.folds,
            "permutations": args.permutations,
            "n_jobs": args.n_jobs,
            "dump_write_s": round(written, 1),
            "wall_s": round(wall, 1),
            "sets_per_minute": round(60 * sets / wall, 2),
            "minutes_per_40_sets": round(40 * wall / sets / 60, 1),
            "cpu_s": round(cpu_s, 1),
            "cpu_s_per_set": round(cpu_s / sets, 2),
            "peak_rss_mib_main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB),
            "peak_rss_mib_main_before_probe": round(rss_before * 1024 / MIB),
            "peak_rss_mib_largest_worker": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / MIB),
            "best_set": ranked(result)[0].feature_set.name,
            "best_balanced_accuracy": round(ranked(result)[0].summary["balanced_accuracy"]["mean"], 3),
            "machine": machine_info("cpu"),
        }
    context = f", context windows {args.context_windows} x {args.context_stats}" if args.context_windows else ""
    print(
        f"{args.clips} clips in {args.sessions} sessions, H {args.hidden}, {args.folds} folds{context}, "
        f"{args.permutations} permutations, n_jobs {args.n_jobs}; dump written in {report['dump_write_s']} s"
    )
    print(format_table([report], COLUMNS))
    print(f"load average: {os.getloadavg()[0]:.1f}; 40 sets at this rate: {report['minutes_per_40_sets']} minutes")
    if args.json:
        write_result(args.json, report)
    return report


if __name__ == "__main__":
    main()
