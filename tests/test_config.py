"""Config merging and validation (SPEC section 3) and the registry."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import pytest

import minigpt4  # noqa: F401  (fills the registry)
from minigpt4.common.config import Config, ConfigError
from minigpt4.common.registry import Registry, RegistryError, registry


@pytest.fixture
def assets_env(tiny_assets, monkeypatch):
    monkeypatch.setenv("TINY_ASSETS", str(Path(tiny_assets["llama_dir"]).parent))
    return tiny_assets


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def hcmw_section(assets) -> str:
    return f"""
datasets:
  hcmw_caption:
    build_info:
      annotation: {assets['hcmw_csv']}
      image_root: {assets['hcmw_image_root']}
      feature_root: {assets['hcmw_feature_root']}
    feature_dim: 64
    vis_processor:
      train: {{name: blip2_image_train, image_size: 224}}
      eval: {{name: blip2_image_eval, image_size: 224}}
"""


def load(path: Path, *options: str) -> Config:
    return Config(Namespace(cfg_path=str(path), options=list(options)))


def test_precedence_defaults_then_user_file_then_options(assets_env, tmp_path):
    path = write_config(
        tmp_path, "model:\n  arch: minigpt_v2\n  model_type: tiny\n  lora_r: 4\n  max_txt_len: 32\n" + hcmw_section(assets_env)
    )
    cfg = load(path, "model.max_txt_len=16", "run.max_epoch=7")
    assert cfg.model_cfg.lora_alpha == 16  # model default YAML
    assert cfg.model_cfg.lora_r == 4  # user file beats the default (8)
    assert cfg.model_cfg.max_txt_len == 16  # --options beat the user file
    assert cfg.run_cfg.max_epoch == 7
    assert cfg.run_cfg.init_lr == pytest.approx(1e-5)  # runner default
    assert cfg.datasets_cfg.hcmw_caption.build_info.facemae_dir == "mae_340_UTT"  # dataset default
    assert cfg.datasets_cfg.hcmw_caption.feature_dim == 64
    assert "===== model =====" in cfg.pretty()


def test_environment_variables_resolve_in_paths(assets_env, tmp_path):
    path = write_config(tmp_path, "model:\n  arch: minigpt_v2\n  model_type: tiny\n")
    cfg = load(path)
    assert cfg.to_dict()["model"]["llama_model"] == str(assets_env["llama_dir"])


@pytest.mark.parametrize(
    ("text", "options", "fragment"),
    [
        ("model:\n  arch: minigpt_v2\n  model_type: tiny\nrunn:\n  seed: 1\n", [], "runn: unknown config section"),
        ("model:\n  arch: minigpt_v3\n", [], "registered models: minigpt_v2"),
        ("model:\n  arch: minigpt_v2\n  model_type: huge\n", [], "model.model_type: unknown type 'huge'"),
        ("model:\n  arch: minigpt_v2\n  model_type: tiny\n  lora_r: many\n", [], "model.lora_r: expected int"),
        ("model:\n  arch: minigpt_v2\n  model_type: tiny\n  lora_rank: 4\n", [], "model.lora_rank: unknown key"),
        ("model:\n  arch: minigpt_v2\n  model_type: tiny\n", ["run.max_epoch=three"], "run.max_epoch: expected int"),
        ("model:\n  arch: minigpt_v2\n  model_type: tiny\n", ["run.lr_sched=cosine"], "registered lr_schedulers:"),
        ("model:\n  arch: minigpt_v2\n  model_type: tiny\n", ["run.task=dump"], "registered tasks:"),
        ("model:\n  arch: minigpt_v2\n  model_type: tiny\ndatasets:\n  hcmw_captions: {}\n", [], "registered builders: "),
        ("model:\n  arch: minigpt_v2\n  model_type: tiny\n", ["model.llama_model=/nonexistent/llama"], "model.llama_model: path not found"),
        ("model:\n  arch: minigpt_v2\n  model_type: tiny\n", ["run.seed"], "expected key=value"),
    ],
)
def test_bad_configs_stop_with_the_key_named(assets_env, tmp_path, text, options, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        load(write_config(tmp_path, text), *options)
    assert fragment in str(info.value)


def test_dataset_paths_and_types_are_checked(assets_env, tmp_path):
    base = "model:\n  arch: minigpt_v2\n  model_type: tiny\n"
    missing = hcmw_section(assets_env).replace(str(assets_env["hcmw_csv"]), str(tmp_path / "nope.csv"))
    with pytest.raises(ConfigError, match=r"datasets.hcmw_caption.build_info.annotation: path not found"):
        load(write_config(tmp_path, base + missing))
    wrong_type = hcmw_section(assets_env).replace("feature_dim: 64", "feature_dim: [64]")
    with pytest.raises(ConfigError, match=r"datasets.hcmw_caption.feature_dim: expected int"):
        load(write_config(tmp_path, base + wrong_type))


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(write_config(tmp_path, "model: [unclosed\n"))


def test_registry_duplicates_and_unknown_names():
    reg = Registry()

    @reg.register_task("alpha")
    class Alpha:
        pass

    assert reg.get("task", "alpha") is Alpha
    with pytest.raises(RegistryError, match="task name 'alpha' is already registered"):
        reg.register("task", "alpha")(type("Other", (), {}))
    with pytest.raises(RegistryError, match=r"unknown task 'beta'; registered tasks: alpha"):
        reg.get("task", "beta")
    with pytest.raises(RegistryError, match="unknown registry kind"):
        reg.get("widget", "alpha")


def test_global_registry_lists_the_project_names():
    assert "minigpt_v2" in registry.names("model")
    assert {"eva_clip_g", "eva_clip_tiny"} <= set(registry.names("encoder"))
    assert {"blip2_image_eval", "blip2_image_train", "blip_caption"} <= set(registry.names("processor"))
    assert {"linear_warmup_cosine_lr", "linear_warmup_step_lr"} <= set(registry.names("lr_scheduler"))
    assert {"runner_base", "runner_eval"} <= set(registry.names("runner"))
    assert {"hcmw_caption", "feature_face_caption", "mer2024_caption"} <= set(registry.names("builder"))
