"""Importing this package registers the dataset builders with the registry."""

from minigpt4.datasets import builders  # noqa: F401  (registration side effect)
