"""Where shards live: brace patterns of local paths, URLs (through iopath) and ``pipe:`` commands.

Everything here reads bytes; what the bytes must hold is checked by the dataset.  Problems
with a shard as a whole (a pattern matching nothing, a shard that cannot be opened or ends
early) raise :class:`ShardError` naming the shard and the last key read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO, Iterator

from braceexpand import braceexpand
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from minigpt4.common.checkpoint_io import CheckpointError, resolve_path
from minigpt4.datasets.errors import DataError
from minigpt4.datasets.shards.layout import INDEX_FORMAT, INDEX_NAME, UNCHECKED_FORMATS

PIPE = "pipe:"


class ShardError(DataError):
    """A shard, the shard pattern or the index cannot be used; the message names which and why."""


def is_remote(url: str) -> bool:
    return url.startswith(PIPE) or "://" in url


def expand_pattern(pattern: str) -> list[str]:
    """Every shard ``pattern`` names (``data/hcmw-{000000..000009}.tar``), in order.

    Local paths must exist; URLs and ``pipe:`` commands are only found out when opened.
    """
    urls = [url if is_remote(url) else str(Path(url).expanduser()) for url in braceexpand(pattern)]
    missing = [url for url in urls if not is_remote(url) and not Path(url).is_file()]
    if len(missing) == len(urls):
        raise ShardError(f"build_info.shards: {pattern!r} matches no file")
    if missing:
        raise ShardError(
            f"build_info.shards: {pattern!r} names {len(missing)} missing shard(s), first {missing[0]}"
        )
    return urls


def index_location(urls: list[str], shard_index: str) -> str:
    """``shard_index`` when set; else ``index.json`` beside the first shard (not knowable for ``pipe:``)."""
    if shard_index:
        return shard_index if is_remote(shard_index) else str(Path(shard_index).expanduser())
    if urls[0].startswith(PIPE):
        raise ShardError("build_info.shard_index: must be set when the shards are read through pipe: commands")
    return f"{urls[0].rsplit('/', 1)[0]}/{INDEX_NAME}" if "/" in urls[0] else INDEX_NAME


def open_binary(url: str) -> BinaryIO:
    """A readable binary stream of a local file, a URL (downloaded once through iopath) or a pipe."""
    if url.startswith(PIPE):
        return gopen(url, "rb")
    if "://" in url:
        try:
            return open(resolve_path(url, "shard"), "rb")
        except CheckpointError as exc:
            raise ShardError(str(exc)) from exc
    try:
        return open(url, "rb")
    except OSError as exc:
        raise ShardError(f"{url}: cannot open: {exc.strerror}") from exc


def read_index(url: str) -> dict:
    try:
        with open_binary(url) as handle:
            index = json.loads(handle.read())
    except (OSError, ValueError) as exc:
        raise ShardError(f"{url}: not a readable shard index: {exc}") from exc
    if isinstance(index, dict) and index.get("format") in UNCHECKED_FORMATS:
        raise ShardError(
            f"{url}: written by an earlier pack, without the members' SHA-256 checksums a reader verifies; "
            "pack the shards again (python -m minigpt4.datasets.shards.pack ... --overwrite)"
        )
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise ShardError(f"{url}: not an hcmw shard index (format {INDEX_FORMAT!r}); write it with the pack command")
    return index


def iter_samples(url: str) -> Iterator[dict]:
    """The samples of one shard in order: ``{"__key__": key, suffix: bytes, ...}``."""
    last_key = None
    try:
        with open_binary(url) as stream:
            members = tar_file_expander([{"url": url, "stream": stream}])
            for sample in group_by_keys(members):
                last_key = sample["__key__"]
                yield sample
    except ShardError:
        raise
    except Exception as exc:  # tarfile, the pipe and webdataset raise what the damage makes them raise
        where = f"after key {last_key}" if last_key is not None else "before the first sample"
        reason = exc.args[0] if exc.args else exc
        raise ShardError(f"{url}: unreadable {where} (truncated or not a tar?): {reason}") from exc
