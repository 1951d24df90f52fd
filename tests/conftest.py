"""Fixtures shared by the test suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (``scripts/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_assets_script():
    """The ``scripts/make_tiny_assets.py`` module."""
    return load_script("make_tiny_assets")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory, tiny_assets_script) -> dict[str, Path]:
    """Tiny weights and datasets generated once per session with seed 0 (paths by name)."""
    return tiny_assets_script.make_tiny_assets(tmp_path_factory.mktemp("tiny_assets"), seed=0)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
