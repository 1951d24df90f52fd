"""Importing this package registers every dataset builder with the registry."""

from minigpt4.datasets.builders import hcmw_builder, mer_builder  # noqa: F401  (registration side effect)
