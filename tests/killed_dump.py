"""A feature dump killed between two batches, for the resume tests."""

from __future__ import annotations

from minigpt4.tasks.feature_dump import FeatureDumpTask


class Killed(Exception):
    """Stands for the run being killed between two batches."""


def die_after_batches(monkeypatch, batches: int) -> None:
    """Make the dump's step raise :class:`Killed` once ``batches`` batches are written."""
    step, written = FeatureDumpTask.step, []

    def step_then_die(model, batch, writer):
        if len(written) == batches:
            raise Killed
        step(model, batch, writer)
        written.append(batch["row"])

    monkeypatch.setattr(FeatureDumpTask, "step", staticmethod(step_then_die))
