"""Assign test folds stratified by label and grouped by participant, as a new annotation file.

    python -m minigpt4.datasets.assign_folds --annotation annotations.csv --output annotations_folds.csv --folds 5

Every column and row of the input is kept; ``test_fold_num`` is replaced (or added).  The
input is never written; see :mod:`minigpt4.datasets.folds`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from minigpt4.datasets.datasets.hcmw_dataset import read_annotation
from minigpt4.datasets.errors import DataError
from minigpt4.datasets.folds import build_folds, fold_table, write_with_folds


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt4.datasets.assign_folds",
        description="Assign test folds stratified by label and grouped by participant; writes a new annotation file.",
    )
    parser.add_argument("--annotation", required=True, help="hcmw annotation CSV (uuid, mw_label, participant or video, ...)")
    parser.add_argument("--output", required=True, help="the new annotation file (never the input)")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the assignment (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    args = parser.parse_args(argv)
    source, output = Path(args.annotation), Path(args.output)
    if not source.is_file():
        raise DataError(f"--annotation {source}: no such file")
    if output.resolve() == source.resolve():
        raise DataError(f"--output {output}: is the input annotation; folds are written to a new file")
    if output.is_dir():
        raise DataError(f"--output {output}: is a folder, not a file")
    if output.exists() and not args.overwrite:
        raise DataError(f"--output {output}: exists; pass --overwrite to replace it")
    rows = read_annotation(source, folds_required=False)
    folds = build_folds(rows, args.folds, args.seed, source)
    write_with_folds(source, output, rows, folds)
    return f"{len(rows)} clips of {len({r.participant for r in rows})} participants in {args.folds} folds -> {output}\n" + fold_table(rows, folds)


if __name__ == "__main__":
    try:
        print(main())
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from exc
