"""Emotion-LLaMA (MiniGPT-v2 style) for mind-wandering research.

Importing the package registers every model, encoder, processor, dataset builder, task and
runner, so configs can name them.
"""

from minigpt4 import datasets, models, processors, runners, tasks  # noqa: F401
