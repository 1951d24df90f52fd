"""The one way this project reads weight files.

Every checkpoint goes through :func:`load_checkpoint`: local paths are read directly, URLs are
fetched once into a cache through iopath (only when the user configured a URL; nothing is
downloaded otherwise).  Files are unpickled with ``weights_only=True`` so a checkpoint cannot
run code; a file that needs full unpickling is refused unless the user opts in with
``trust_checkpoint: true``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

URL_PREFIXES = ("http://", "https://")


class CheckpointError(RuntimeError):
    """A weight file is missing, unreadable, unsafe or does not fit the model."""


def is_url(path: str | os.PathLike) -> bool:
    return str(path).startswith(URL_PREFIXES)


def default_cache_dir() -> Path:
    root = os.environ.get("MINIGPT4_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "minigpt4"
    )
    return Path(root)


def resolve_path(path: str | os.PathLike, what: str = "checkpoint", cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a local path for ``path``, downloading a URL into the cache on first use."""
    if is_url(path):
        from iopath.common.file_io import HTTPURLHandler, PathManager

        manager = PathManager()
        handler = HTTPURLHandler()
        handler.cache_dir = str(cache_dir or default_cache_dir())
        manager.register_handler(handler)
        try:
            return Path(manager.get_local_path(str(path)))
        except Exception as exc:  # iopath raises plain exceptions for network failures
            raise CheckpointError(f"{what}: could not download {path}: {exc}") from exc
    local = Path(path).expanduser()
    if not local.is_file():
        raise CheckpointError(f"{what}: file not found: {local}")
    return local


def load_checkpoint(
    path: str | os.PathLike,
    what: str = "checkpoint",
    trust_checkpoint: bool = False,
    map_location: str | torch.device = "cpu",
) -> Any:
    """Read a ``torch.save`` file safely; ``what`` names the config key in error messages."""
    local = resolve_path(path, what)
    with open(local, "rb") as handle:
        # torch.save writes a zip archive (PK), older versions a pickle (protocol opcode 0x80);
        # other bytes (a text file) would make the unpickler fail with any exception at all
        head = handle.read(2)
        if head != b"PK" and head[:1] != b"\x80":
            raise CheckpointError(f"{what}: {local} is not a readable torch checkpoint (not a torch.save file)")
    try:
        return torch.load(local, map_location=map_location, weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as exc:
        # weights_only refuses a class it would have to import ("Unsupported global"); any
        # other unpickling failure means the bytes are not a checkpoint at all.
        if "global" not in str(exc).lower():
            raise CheckpointError(f"{what}: {local} is not a readable torch checkpoint: {exc}") from exc
        raise CheckpointError(
            f"{what}: {local} holds objects that cannot be read safely (weights_only=True; {_unsafe_global(exc)}). "
            "If you trust this file, set model.trust_checkpoint: true in the config (--trust-checkpoint on the "
            "encoder commands)"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{what}: {local} is not a readable torch checkpoint: {exc}") from exc


def _unsafe_global(exc: pickle.UnpicklingError) -> str:
    """What torch's many-line refusal is about, in a few words: the class the file needs."""
    match = re.search(r"GLOBAL (\S+)", str(exc))
    return f"it needs {match.group(1)}" if match else "it needs full unpickling"


def unwrap_state_dict(obj: Any, what: str, keys: tuple[str, ...] = ("model", "module", "state_dict")) -> dict[str, torch.Tensor]:
    """Return the tensor dict inside ``obj``: one of ``keys`` or the object itself."""
    if isinstance(obj, dict):
        for key in keys:
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointError(f"{what}: expected a state dict (or one under {', '.join(keys)}), got {type(obj).__name__}")


def read_state_dict(path: str | os.PathLike, kind: str, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of the weight file ``path`` of ``kind`` (``"FaceMAE checkpoint"``, the name
    errors give it), read safely: ``{"model"|"module"|"state_dict": ...}`` or a raw state dict."""
    return unwrap_state_dict(load_checkpoint(path, kind, trust_checkpoint), f"{kind} {path}")


class LoadReport:
    """What happened when a state dict was put into a module.

    Besides what :func:`apply_state_dict` finds, a loader may record tensors it left out on
    purpose (``skipped``: name -> why, e.g. upstream-only modules, or parts of a model built
    without them) and model tensors that
    keep their fresh initialisation because the file's layout never holds them
    (``initialised``).  Neither is a problem, so neither makes the report unclean.
    """

    def __init__(
        self,
        loaded: list[str],
        missing: list[str],
        unexpected: list[str],
        mismatched: list[str],
        skipped: dict[str, str] | None = None,
        initialised: list[str] | None = None,
    ):
        self.loaded = loaded
        self.missing = missing  # model tensors the file did not provide
        self.unexpected = unexpected  # file tensors with no place in the model
        self.mismatched = mismatched  # "name: file shape vs model shape"
        self.skipped = dict(skipped or {})  # file tensors left out on purpose -> the reason
        self.initialised = list(initialised or [])  # model tensors the file's layout never holds

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        """The problems by name (for error messages)."""
        def head(items: list[str]) -> str:
            more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.missing:
            parts.append(f"missing from the file: {head(self.missing)}")
        if self.unexpected:
            parts.append(f"not used by the model: {head(self.unexpected)}")
        if self.mismatched:
            parts.append(f"wrong shape: {head(self.mismatched)}")
        return "; ".join(parts)

    def summary(self, group_of: Callable[[str], str]) -> str:
        """One line with counts per group (``group_of(name)``), e.g. for a log line per file.

        ``loaded 40 (LoRA 32, projectors 8); skipped 2 (upstream-only, not used: attention 2)``
        """
        def counts(names: Iterable[str]) -> str:
            tally = Counter(group_of(name) for name in names)
            return ", ".join(f"{group} {count}" for group, count in sorted(tally.items()))

        parts = [f"loaded {len(self.loaded)} ({counts(self.loaded)})" if self.loaded else "loaded 0"]
        by_reason: dict[str, list[str]] = {}
        for name, reason in self.skipped.items():
            by_reason.setdefault(reason, []).append(name)
        for reason, names in by_reason.items():
            parts.append(f"skipped {len(names)} ({reason}: {counts(names)})")
        if self.initialised:
            parts.append(f"newly initialised {len(self.initialised)} ({counts(self.initialised)})")
        for label, names in (("missing from the file", self.missing), ("not used by the model", self.unexpected)):
            if names:
                parts.append(f"{label} {len(names)} ({counts(names)})")
        return "; ".join(parts)


def group_by_prefix(prefixes: Iterable[str]) -> Callable[[str], str]:
    """A ``group_of`` for :meth:`LoadReport.summary`: a name under one of ``prefixes`` counts
    under that prefix (without its trailing ``.`` or ``_``, so ``decoder_blocks.0.x`` is
    ``decoder``), any other name under its top module."""
    ordered = sorted(prefixes, key=len, reverse=True)  # the most specific prefix names the group

    def group_of(name: str) -> str:
        for prefix in ordered:
            if name.startswith(prefix):
                return prefix.rstrip("._")
        return name.split(".")[0]

    return group_of


def apply_state_dict(
    module: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    what: str,
    require_all: bool = True,
    strict_unexpected: bool = True,
    required: Iterable[str] | None = None,
) -> LoadReport:
    """Copy ``state_dict`` (already in the module's names) into ``module`` and report.

    A wrongly shaped tensor is always an error (it can never be right).  ``required`` names
    the module tensors the file should provide (default: all of them); ``require_all`` makes
    one the file lacks an error; ``strict_unexpected`` does the same for a file tensor the
    model has no place for.  Nothing is skipped silently: the report lists it.
    """
    own = module.state_dict()
    loaded, mismatched, unexpected = [], [], []
    for name, tensor in state_dict.items():
        if name not in own:
            unexpected.append(name)
        elif tuple(own[name].shape) != tuple(tensor.shape):
            mismatched.append(f"{name}: file {tuple(tensor.shape)} vs model {tuple(own[name].shape)}")
        else:
            loaded.append(name)
    missing = [name for name in (own if required is None else required) if name not in state_dict]
    report = LoadReport(loaded, missing, unexpected, mismatched)
    problems = mismatched or (require_all and missing) or (strict_unexpected and unexpected)
    if problems:
        raise CheckpointError(f"{what}: the file does not fit the model: {report.describe()}")
    module.load_state_dict({name: state_dict[name] for name in loaded}, strict=False)
    return report
