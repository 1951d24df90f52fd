"""The entry scripts as a user types them: the default eval config, and errors as one line."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from minigpt4.models.base_model import resolve_dtype
from minigpt4.runners.common import run_cli
from minigpt4.tasks.base_task import BaseTask

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHT_VARIABLES = ("LLAMA_MODEL", "EVA_VIT_G_CKPT", "EMOTION_LLAMA_CKPT", "HCMW_ROOT")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO_ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_without_cfg_path_uses_the_default_config_and_names_what_to_set(tmp_path, monkeypatch, capsys):
    """``python eval_emotion.py --dataset hcmw_caption`` on a machine without the weights."""
    for name in WEIGHT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # the config's relative fallbacks (weights/..., data/hcmw) do not exist here
    eval_emotion = load_script("eval_emotion")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(SystemExit) as info:
            run_cli(lambda: eval_emotion.main(["--dataset", "hcmw_caption"]))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    first_line = capsys.readouterr().err.splitlines()[0]
    assert first_line.endswith("config: eval_configs/eval_emotion.yaml (no --cfg-path given)")
    error = str(info.value)
    assert "\n" not in error
    assert error.startswith("error: model.llama_model: path not found: weights/Llama-2-7b-chat-hf")
    for key in ("model.vit_checkpoint", "model.ckpt", "evaluation_datasets.hcmw_caption.build_info.annotation"):
        assert f"{key}: path not found" in error
    assert error.endswith("export LLAMA_MODEL, EVA_VIT_G_CKPT, EMOTION_LLAMA_CKPT, HCMW_ROOT")
    assert not (tmp_path / "features").exists()  # nothing written


def test_train_config_error_is_one_line_before_anything_loads(monkeypatch):
    train = load_script("train")
    built = []
    monkeypatch.setattr(BaseTask, "build_model", staticmethod(lambda cfg: built.append(cfg)))
    argv = ["--cfg-path", str(REPO_ROOT / "train_configs" / "demo.yaml"), "--options", "model.vit_model=eva_clip_huge"]
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: train.main(argv))
    assert str(info.value) == "error: model.vit_model: 'eva_clip_huge' is not one of eva_clip_g, eva_clip_tiny"
    assert "\n" not in str(info.value) and not built


def test_a_value_error_of_the_project_is_one_line_and_any_other_keeps_its_traceback():
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: resolve_dtype("fp8"))
    assert str(info.value) == "error: model.precision: 'fp8' is not one of bf16, fp16, fp32"
    with pytest.raises(ValueError, match="invalid literal"):
        run_cli(lambda: int("not a number"))  # raised outside minigpt4: a bug, not a user error
    assert run_cli(lambda: 7) == 7
