"""One registry that maps the names used in YAML configs to the classes that implement them.

Each kind (builder, model, processor, task, runner, lr_scheduler, encoder) has its own
namespace; classes join it through a decorator at import time, e.g.
``@registry.register("model", "minigpt_v2")`` or the per-kind shortcut
``@registry.register_model("minigpt_v2")``.  Looking up a name that nobody registered raises
an error that lists the names that do exist, so a typo in a config is easy to fix.
"""

from __future__ import annotations

import functools
import typing
from typing import Any, Callable

KINDS = ("builder", "model", "processor", "task", "runner", "lr_scheduler", "encoder")


class RegistryError(KeyError):
    """A name was registered twice or looked up without being registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry:
    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            setattr(self, f"register_{kind}", self._shortcut(kind))

    def _shortcut(self, kind: str) -> Callable[[str], Callable]:
        def register_kind(name: str) -> Callable:
            return self.register(kind, name)

        register_kind.__name__ = f"register_{kind}"
        register_kind.__doc__ = f"Decorator registering a {kind} under ``name``."
        return register_kind

    def _table(self, kind: str) -> dict[str, Any]:
        if kind not in self._entries:
            raise RegistryError(f"unknown registry kind {kind!r}; kinds are {', '.join(KINDS)}")
        return self._entries[kind]

    def register(self, kind: str, name: str) -> Callable:
        table = self._table(kind)

        def add(obj: Any) -> Any:
            if name in table:
                raise RegistryError(
                    f"{kind} name {name!r} is already registered by {table[name].__module__}."
                    f"{table[name].__qualname__}"
                )
            table[name] = obj
            return obj

        return add

    def register_variants(self, kind: str, variants: dict[str, dict[str, Any]], build: Callable) -> None:
        """Register ``build`` with each variant's settings under the variant's name, timm-style:
        ``registry.get(kind, name)(**overrides)`` builds that variant."""
        for name, settings in variants.items():
            self.register(kind, name)(functools.partial(build, **settings))

    def get(self, kind: str, name: str) -> Any:
        table = self._table(kind)
        if name not in table:
            choices = ", ".join(sorted(table)) or "(none registered)"
            raise RegistryError(f"unknown {kind} {name!r}; registered {kind}s: {choices}")
        return table[name]

    def names(self, kind: str, builds: type | None = None) -> list[str]:
        """The registered names; with ``builds``, only those whose builder makes that class (or a subclass)."""
        table = self._table(kind)
        return sorted(name for name in table if builds is None or self.builds(kind, name, builds))

    def builds(self, kind: str, name: str, family: type) -> bool:
        """Whether the builder registered as ``name`` makes a ``family`` (or a subclass)."""
        builder = self.get(kind, name)
        # a builder's return annotation says what it builds, without building it; registered
        # variants are partials of their family's build function
        try:
            built = typing.get_type_hints(getattr(builder, "func", builder)).get("return")
        except (NameError, TypeError):  # an annotation that cannot be resolved here
            return False
        return isinstance(built, type) and issubclass(built, family)

    def has(self, kind: str, name: str) -> bool:
        return name in self._table(kind)


registry = Registry()
