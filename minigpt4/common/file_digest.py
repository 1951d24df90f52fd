"""Weight files by content: size and SHA-256, computed once and cached.

A path does not identify weights (a file is replaced at the same path, or copied to another),
so a detector records what it was made with by content.  The real files weigh 14 GB, so a
digest is kept in a cache keyed by the file's absolute path, size and modification time
(``<cache>/sha256.json``, the cache folder of :mod:`minigpt4.common.checkpoint_io`): a file
is hashed again only when one of the three changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from minigpt4.common.atomic_io import write_text_atomic
from minigpt4.common.checkpoint_io import default_cache_dir

CACHE_NAME = "sha256.json"
BLOCK = 1 << 24  # 16 MiB read at a time: memory stays flat on files of gigabytes


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: str | os.PathLike, cache: Path | None = None) -> dict:
    """``{"size": bytes, "sha256": hex}`` of the file at ``path``, from the cache when the
    file's path, size and modification time are those recorded."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = (cache or default_cache_dir()) / CACHE_NAME
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key not in known:
        known = {k: v for k, v in known.items() if not k.startswith(f"{path}|")}  # the file's older versions go
        known[key] = sha256_of(path)
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(cache_file, json.dumps(known, indent=0, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only cache only costs hashing again next time
    return {"size": stat.st_size, "sha256": known[key]}
