"""Pack the hcmw folder layout into WebDataset tar shards plus ``index.json`` (SPEC section 14).

    python -m minigpt4.datasets.shards.pack --cfg-path eval_configs/eval_emotion.yaml --output shards/
    python -m minigpt4.datasets.shards.pack --annotation A.csv --image_root images --feature_root features \
        --output shards/ --shard_size 1000

One sample per clip, in annotation order: the peak frame's PNG bytes and the vectors' ``.npy``
bytes exactly as read (nothing is decoded or re-encoded), and a JSON with clip id, label and
fold; ``index.json`` keeps every member's SHA-256, which readers verify.  Every tar header is
fixed (mtime 0, owner 0, mode 0444), so the same input gives byte-identical shards.  Every
clip's files must exist before anything is written; the files' contents are checked by whoever
reads the shards, under the dataset's ``on_error``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tarfile
import time
from pathlib import Path
from typing import BinaryIO

from omegaconf import OmegaConf

from minigpt4.common.atomic_io import write_text_atomic, write_through_tmp
from minigpt4.datasets.builders.hcmw_builder import HCMWBuilder
from minigpt4.datasets.datasets.hcmw_dataset import TIME_COLUMNS, HCMWRow, read_annotation
from minigpt4.datasets.errors import SHOWN_IN_MESSAGE, BadClip, DataError
from minigpt4.datasets.shards.layout import (
    IMAGE, INDEX_NAME, META, SHARD_PREFIX, SHARD_SUFFIX, VECTORS, index_text, member_digest, sample_key, shard_name,
)


DATASET = "hcmw_caption"
SOURCE_KEYS = ("annotation", "image_root", "feature_root", "facemae_dir", "videomae_dir", "audio_dir")


class ClipFiles:
    """Where one clip's files are in the folder layout (SPEC section 6)."""

    def __init__(self, image_root: Path, feature_root: Path, vector_dirs: dict[str, str]):
        self.image_root = image_root
        self.vector_dirs = {kind: feature_root / folder for kind, folder in vector_dirs.items()}

    def of(self, clip: str) -> dict[str, Path]:
        """Member suffix -> file."""
        files = {IMAGE: self.image_root / clip / f"{clip}_peak_frame.png"}
        files.update({VECTORS[kind]: folder / f"{clip}.npy" for kind, folder in self.vector_dirs.items()})
        return files


def pack_hcmw(
    annotation: str | Path,
    image_root: str | Path,
    feature_root: str | Path,
    output: str | Path,
    *,
    facemae_dir: str,
    videomae_dir: str,
    audio_dir: str = "",
    shard_size: int = 1000,
    overwrite: bool = False,
) -> dict:
    """Write ``hcmw-NNNNNN.tar`` of ``shard_size`` clips each and ``index.json`` into ``output``."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    annotation, output = Path(annotation).expanduser(), Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise DataError(f"--output {output}: is a file, not a folder; name a folder for the shards and index.json")
    vector_dirs = {"facemae": facemae_dir, "videomae": videomae_dir} | ({"audio": audio_dir} if audio_dir else {})
    layout = ClipFiles(Path(image_root).expanduser(), Path(feature_root).expanduser(), vector_dirs)
    rows = read_annotation(annotation)
    _check_files_exist(rows, layout, annotation)
    _prepare_output(output, overwrite)

    started = time.perf_counter()
    shards = []
    for number, first in enumerate(range(0, len(rows), shard_size)):
        samples = [
            {"key": sample_key(position), "clip": row.clip, "label": row.label, "fold": row.fold, "when": time_fields(row)}
            for position, row in enumerate(rows[first:first + shard_size], start=first)
        ]
        name = shard_name(number)
        write_through_tmp(output / name, lambda handle: _write_shard(handle, samples, layout))
        shards.append({"name": name, "samples": samples})
    write_text_atomic(output / INDEX_NAME, index_text(shards, audio=bool(audio_dir)))
    seconds = time.perf_counter() - started
    return {"clips": len(rows), "shards": len(shards), "output": str(output), "seconds": seconds}


def _check_files_exist(rows: list[HCMWRow], layout: ClipFiles, annotation: Path) -> None:
    """Every missing file of every clip, at once, before anything is written."""
    bad = [
        BadClip(row.clip, str(path), "missing")
        for row in rows
        for path in layout.of(row.clip).values()
        if not path.is_file()
    ]
    if bad:
        lines = [f"  {b.clip}: {b.file}: {b.problem}" for b in bad[:SHOWN_IN_MESSAGE]]
        more = [f"  ... and {len(bad) - SHOWN_IN_MESSAGE} more"] if len(bad) > SHOWN_IN_MESSAGE else []
        clips = len({b.clip for b in bad})
        raise DataError(f"{annotation}: {clips} clip(s) cannot be packed:\n" + "\n".join(lines + more))


def _prepare_output(output: Path, overwrite: bool) -> None:
    earlier = sorted(output.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}")) + sorted(output.glob(INDEX_NAME))
    if earlier and not overwrite:
        raise DataError(
            f"{output} already holds shards ({earlier[0].name}); pass --overwrite or choose another --output"
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a parent folder should be, no permission
        raise DataError(f"--output {output}: cannot create the folder: {exc.strerror}") from None
    for path in earlier:
        path.unlink()


def time_fields(row: HCMWRow) -> dict:
    """The annotation's who-and-when columns the row has (none for a three-column annotation,
    whose shards stay byte for byte what they were)."""
    return {column: getattr(row, column) for column in TIME_COLUMNS if getattr(row, column) is not None}


def _write_shard(handle: BinaryIO, samples: list[dict], layout: ClipFiles) -> None:
    """Write the samples' members; each sample gets ``sha256`` (suffix -> digest) for the index."""
    with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            meta = {"clip": sample["clip"], "label": sample["label"], "fold": sample["fold"], **sample["when"]}
            members = {META: json.dumps(meta, sort_keys=True).encode()}
            members |= {suffix: path.read_bytes() for suffix, path in layout.of(sample["clip"]).items()}
            sample["sha256"] = {suffix: member_digest(data) for suffix, data in members.items()}
            for suffix, data in members.items():
                tar.addfile(_fixed_header(f"{sample['key']}.{suffix}", len(data)), io.BytesIO(data))


def _fixed_header(name: str, size: int) -> tarfile.TarInfo:
    """A header that depends only on name and size: no time, owner or permissions of this machine."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# ---- command line --------------------------------------------------------------------------------
def _source_from_config(path: str) -> dict:
    """``build_info`` of hcmw_caption in a run config (evaluation_datasets or datasets), over the defaults."""
    defaults = OmegaConf.load(HCMWBuilder.default_config_path()).datasets[DATASET].build_info
    config = OmegaConf.load(path)
    for section in ("evaluation_datasets", "datasets"):
        found = OmegaConf.select(config, f"{section}.{DATASET}.build_info")
        if found is not None:
            return OmegaConf.to_container(OmegaConf.merge(defaults, found), resolve=True)
    raise DataError(f"{path}: no {DATASET} section under evaluation_datasets or datasets")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", help=f"a run config whose {DATASET}.build_info names the folder layout")
    for key in SOURCE_KEYS:
        parser.add_argument(f"--{key}", help="overrides the config's build_info." + key)
    parser.add_argument("--output", required=True, help="folder for hcmw-NNNNNN.tar and index.json")
    parser.add_argument("--shard_size", type=int, default=1000, help="clips per shard (default 1000)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    source = _source_from_config(args.cfg_path) if args.cfg_path else dict(
        OmegaConf.load(HCMWBuilder.default_config_path()).datasets[DATASET].build_info
    )
    source.update({key: getattr(args, key) for key in SOURCE_KEYS if getattr(args, key) is not None})
    missing = [key for key in ("annotation", "image_root", "feature_root") if not source.get(key)]
    if missing:
        parser.error(f"set {', '.join('--' + key for key in missing)} (or give --cfg-path)")
    try:
        summary = pack_hcmw(
            source["annotation"], source["image_root"], source["feature_root"], args.output,
            facemae_dir=source["facemae_dir"], videomae_dir=source["videomae_dir"], audio_dir=source["audio_dir"],
            shard_size=args.shard_size, overwrite=args.overwrite,
        )
    except (DataError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(f"packed {summary['clips']} clips into {summary['shards']} shard(s) in {summary['output']} "
          f"({summary['seconds']:.1f} s); read them with build_info.shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
