"""The hcmw feature dump's data path from WebDataset shards against the folder layout, and packing.

What the shards change is how a dump reads its clips, not the model, so this measures the
dump's reading end to end as ``eval_emotion.py`` runs it, without the model: the dataset is
built (every clip checked, as before any dump), then every row is loaded in dump order
through the dump's own row loader (peak frame decoded and resized by the eval processor,
vectors read), batch after batch.  Each source runs in its own worker process, so each peak
resident memory is its own.

    python -m benchmarks.bench_shards                      # 2,000 clips, shards of 200
    python -m benchmarks.bench_shards --clips 500 --shard-size 100

Clips reuse the tiny assets' peak frames and vectors under new names (symlinks in the
folders; real bytes in the shards).  ``pack`` is the time to write the shards and index;
``check`` the dataset build; ``read`` loading every row once; ``CPU s`` the worker's CPU time
for both (the fair comparison on a shared machine).  Memory: each worker's peak resident
memory (max RSS) at ``--clips`` and at a tenth of it (under 10 clips: ``--clips`` only); flat
means the same.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    format_table,
    machine_info,
    make_tiny_assets,
    max_rss_mib,
    run_worker,
    write_hcmw_dataset,
    write_result,
)
from minigpt4.datasets.shards.layout import brace_pattern
from minigpt4.datasets.shards.pack import pack_hcmw

SOURCES = ("folders", "shards")
FEATURE_DIM, IMAGE_SIZE, BATCH_SIZE = 64, 224, 8  # the tiny model's, as the demo dumps
WORKER_TIMEOUT_S = 3600
# What tests/test_benchmarks.py runs: a few clips in shards of a few (one size), seconds.
SMOKE_ARGS = ["--clips", "5", "--shard-size", "2"]


def dataset_section(data: dict, shards: Path | None) -> dict:
    info = {"annotation": str(data["csv"]), "image_root": str(data["images"]), "feature_root": str(data["features"])}
    if shards is not None:
        info = {"shards": str(shards / brace_pattern(len(list(shards.glob("*.tar")))))}
    size = {"image_size": IMAGE_SIZE}
    return {"build_info": info, "feature_dim": FEATURE_DIM,
            "vis_processor": {"train": {"name": "blip2_image_train", **size},
                              "eval": {"name": "blip2_image_eval", **size}}}


def read_all(section: dict, num_workers: int) -> dict:
    """Worker: build the dataset as the dump does and load every row in dump order."""
    from minigpt4.runners.common import row_loader
    from minigpt4.tasks.base_task import BaseTask

    started, cpu_started = time.perf_counter(), cpu_seconds()
    dataset = BaseTask.build_dataset("hcmw_caption", section, "all")
    built = time.perf_counter()
    loaded = sum(len(batch["row"]) for batch in row_loader(dataset, range(len(dataset)), BATCH_SIZE, num_workers))
    done = time.perf_counter()
    return {"clips": loaded, "check_s": built - started, "read_s": done - built, "cpu_s": cpu_seconds() - cpu_started,
            "peak_rss_mib": max_rss_mib()}


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: unlike wall time, barely moved by
    other work sharing the cores."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(data: dict, shards: Path | None, num_workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        section_file = Path(tmp) / "section.json"
        section_file.write_text(json.dumps(dataset_section(data, shards)))
        argv = ["--worker", str(section_file), "--num-workers", str(num_workers)]
        return run_worker("benchmarks.bench_shards", argv, timeout=WORKER_TIMEOUT_S)


def run(clips: int, shard_size: int, num_workers: int, work_dir: Path) -> dict:
    assets = make_tiny_assets(work_dir / "tiny_assets")
    results = {"machine": machine_info("cpu"), "clips": clips, "shard_size": shard_size, "rows": []}
    for n in sorted({clips // 10, clips} - {0}):  # a tenth of no clips is not a run
        data = write_hcmw_dataset(work_dir / f"hcmw_{n}", assets, n, FEATURE_DIM)
        shards = work_dir / f"shards_{n}"
        summary = pack_hcmw(data["csv"], data["images"], data["features"], shards,
                            facemae_dir="mae_340_UTT", videomae_dir="maeV_199_UTT", shard_size=shard_size)
        megabytes = sum(p.stat().st_size for p in shards.iterdir()) / 2**20
        results["rows"].append({"source": "pack", "clips": n, "total_s": summary["seconds"],
                                "clips_per_s": n / summary["seconds"], "megabytes": megabytes})
        for source in SOURCES:
            measured = measure(data, shards if source == "shards" else None, num_workers)
            total = measured["check_s"] + measured["read_s"]
            results["rows"].append({"source": source, **measured, "total_s": total, "clips_per_s": n / total,
                                    "clips_per_cpu_s": n / measured["cpu_s"]})
    return results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--clips", type=int, default=2000, help="clips of the larger run; the smaller has a tenth (default 2000)"
    )
    parser.add_argument("--shard-size", type=int, default=200, help="clips per shard (default 200)")
    parser.add_argument("--num-workers", type=int, default=0, help="loader workers, as run.num_workers (default 0)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        write_result(args.result, read_all(json.loads(args.worker.read_text()), args.num_workers))
        return
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        results = run(args.clips, args.shard_size, args.num_workers, Path(tmp))
    columns = [("source", "source", ""), ("clips", "clips", "d"), ("check s", "check_s", ".2f"),
               ("read s", "read_s", ".2f"), ("total s", "total_s", ".2f"), ("clips/s", "clips_per_s", ".0f"),
               ("CPU s", "cpu_s", ".2f"), ("clips/CPU s", "clips_per_cpu_s", ".0f"),
               ("peak RSS MiB", "peak_rss_mib", ".0f"), ("shards MiB", "megabytes", ".1f")]
    print(format_table(results["rows"], columns))
    print(f"machine: {results['machine']}")
    if args.json:
        write_result(args.json, results)


if __name__ == "__main__":
    main()
