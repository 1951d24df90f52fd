"""The interface every processor shares: built from its config entry, called on one item."""

from __future__ import annotations

import inspect
from typing import Any, Mapping


class BaseProcessor:
    """Turns one raw item (an image, a caption) into what the model consumes.

    The config keys of a processor are the keyword arguments of its ``__init__`` (with their
    defaults there); ``from_config`` rejects any other key, so a misspelt option fails
    loudly instead of being ignored.
    """

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None = None) -> "BaseProcessor":
        options = dict(cfg or {})
        options.pop("name", None)  # the registry name that chose this class
        known = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown config key(s) {', '.join(unknown)}; "
                f"known keys: {', '.join(known) or '(none)'}"
            )
        return cls(**options)

    def __call__(self, item: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__")
