"""Importing this package registers the processors with the registry."""

from minigpt4.processors import blip_processors  # noqa: F401  (registration side effect)
