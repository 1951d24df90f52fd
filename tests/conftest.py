"""Fixtures shared by the test suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["detect_fixtures"]  # the detectors exported once for the detect tests (session fixture)


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


@pytest.fixture(scope="session")
def demo_chain(tiny_assets, tmp_path_factory):
    """scripts/demo.sh's prepare step, in process: eval_configs/demo_prepare.yaml on the generated
    sessions, the three extraction commands on its output, eval_emotion.py with demo_prepared.yaml.
    Shared by the prepare and detect tests (the sessions' faces take a while to find)."""
    import eval_emotion
    import extract_audio_embedding
    import extract_mae_embedding
    import extract_maeVideo_embedding
    from minigpt4.prepare.__main__ import main as prepare_main

    out = tmp_path_factory.mktemp("demo")
    prepared = out / "prepared"
    assets = tiny_assets["llama_dir"].parent
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINY_ASSETS", str(assets))
        patch.setenv("DEMO_PREPARED", str(prepared))
        patch.setenv("DEMO_OUT", str(out))
        patch.delenv("DEMO_CKPT", raising=False)
        # with the encoders run in process too, into folders beside the scripts' (compared below)
        in_process = ["encoders.run=true", f"encoders.audio.model_dir={tiny_assets['hubert_dir']}", "encoders.audio.dir=audio_in_process"]
        for key, model, ckpt in (("face_mae", "face_mae_tiny", "face_mae_ckpt"), ("video_mae", "video_mae_tiny", "video_mae_ckpt")):
            in_process += [f"encoders.{key}.model={model}", f"encoders.{key}.checkpoint={tiny_assets[ckpt]}", f"encoders.{key}.dir={key}_in_process"]
        argv = ["--cfg-path", str(REPO_ROOT / "eval_configs" / "demo_prepare.yaml"), "--overwrite"]
        assert prepare_main([*argv, "--options", "progress=false", *in_process]) == 0
        common = ["--device", "cpu", "--num_workers", "0"]
        assert extract_mae_embedding.main(
            ["--input", str(prepared / "face_frames"), "--output", str(prepared / "features" / "mae_340_UTT"), "--checkpoint",
             str(tiny_assets["face_mae_ckpt"]), "--model", "face_mae_tiny", *common]
        ) == 0
        assert extract_maeVideo_embedding.main(
            ["--input", str(prepared / "face_arrays"), "--output", str(prepared / "features" / "maeV_199_UTT"), "--checkpoint",
             str(tiny_assets["video_mae_ckpt"]), "--model", "video_mae_tiny", *common]
        ) == 0
        assert extract_audio_embedding.main(
            ["--input", str(prepared / "audio"), "--output", str(prepared / "features" / "HL-UTT"),
             "--model_dir", str(tiny_assets["hubert_dir"]), *common]
        ) == 0
        eval_emotion.main(["--cfg-path", str(REPO_ROOT / "eval_configs" / "demo_prepared.yaml"), "--dataset", "hcmw_caption"])
    return prepared, out / "prepared_features"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
