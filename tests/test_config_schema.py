"""Every key of every default YAML is checked before anything loads (README: "wrong types ...
stop the run before anything is loaded"), allowed values and ranges come from one table, and
the reference table in docs/configuration.md is generated from the same code."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import minigpt4  # noqa: F401  (fills the registry)
from minigpt4.common import config_reference
from minigpt4.common.config import Config, ConfigError, check_values
from minigpt4.common.config_schema import rule_for
from minigpt4.common.registry import registry

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"arch": "minigpt_v2", "model_type": "tiny"}


@pytest.fixture
def assets_env(tiny_assets, monkeypatch):
    monkeypatch.setenv("TINY_ASSETS", str(Path(tiny_assets["llama_dir"]).parent))
    monkeypatch.setenv("DEMO_FEATURES", str(tiny_assets["hcmw_feature_root"]))
    return tiny_assets


def load(tmp_path: Path, config: dict, runner: str = "runner_base", options=()) -> Config:
    path = tmp_path / "run.yaml"
    OmegaConf.save(OmegaConf.create(config), path)
    return Config(Namespace(cfg_path=str(path), options=list(options)), default_runner=runner)


def wrong_type(value):
    """A value of another type than the default ``value``."""
    if isinstance(value, str):
        return 123
    if isinstance(value, (bool, int, float, list, dict)):
        return "not-a-" + type(value).__name__
    raise AssertionError(f"no wrong value for {value!r}")


def keys_of(values: dict, prefix: str):
    """Every dotted key of a default section, mappings included."""
    for key, value in values.items():
        dotted = f"{prefix}.{key}"
        yield dotted, value
        if isinstance(value, dict):
            yield from keys_of(value, dotted)


def nested(dotted: str, value) -> dict:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def default_sections():
    """(file name, section, defaults, resolved defaults) of every default YAML the registry knows."""
    for _, path in config_reference.default_files():
        config = OmegaConf.load(path)
        ((section, _),) = config.items()
        yield path.name, section, OmegaConf.to_container(config), OmegaConf.to_container(config, resolve=True)


def base_config(section: str, raw: dict, resolved: dict) -> tuple[dict, dict]:
    """(merged values, defaults) of a run whose ``section`` holds the file's defaults, the
    other sections those of the full-size model and of runner_base."""
    files = {name: (raw_, res) for name, sec, raw_, res in default_sections()}
    values = {"model": files["minigpt_v2.yaml"][1]["model"], "run": files["runner_base.yaml"][1]["run"]}
    defaults = {"model": files["minigpt_v2.yaml"][0]["model"], "run": files["runner_base.yaml"][0]["run"]}
    values[section] = resolved[section]
    defaults[section] = raw[section]
    return values, defaults


@pytest.mark.parametrize(("name", "section", "raw", "resolved"), list(default_sections()), ids=lambda v: v if isinstance(v, str) and v.endswith(".yaml") else "")
def test_every_default_key_refuses_a_wrong_type_naming_the_key(name, section, raw, resolved):
    """For each key of the default YAMLs, a wrong-typed value (and a wrong list element) is a
    ConfigError that starts with the key, from the checks Config runs before anything loads."""
    values, defaults = base_config(section, raw, resolved)
    check_values(values, defaults)  # the defaults themselves pass
    unnamed = []
    for dotted, default in keys_of(values[section], section):
        if section == "datasets" and dotted.count(".") < 2:
            continue  # datasets.<name> is a dataset name, checked by the registry
        wrong_values = [wrong_type(default)]
        if isinstance(default, list) and default:
            wrong_values.append([{"nested": 1}])
        for wrong in wrong_values:
            changed = OmegaConf.to_container(OmegaConf.merge(values, nested(dotted, wrong)))
            try:
                check_values(changed, defaults)
            except ConfigError as exc:
                if not str(exc).startswith(f"{dotted}:"):
                    unnamed.append(f"{dotted}={wrong!r}: {exc}")
            else:
                unnamed.append(f"{dotted}={wrong!r}: accepted")
    assert not unnamed, "\n".join(unnamed)


@pytest.mark.parametrize("dotted", ["model.arch", "model.model_type", "run.runner", "run.task"])
def test_keys_that_pick_the_defaults_refuse_a_wrong_type_naming_the_key(tmp_path, dotted):
    """These are read through Config itself, before the defaults they select are merged."""
    config = OmegaConf.to_container(OmegaConf.merge({"model": dict(TINY_MODEL)}, nested(dotted, [1])))
    with pytest.raises(ConfigError) as info:
        load(tmp_path, config)
    assert str(info.value).startswith(f"{dotted}:"), str(info.value)


@pytest.mark.parametrize(
    ("runner", "option", "message"),
    [
        ("runner_base", "model.precision=fp8", "model.precision: 'fp8' is not one of bf16, fp16, fp32"),
        ("runner_base", "model.vit_model=eva_clip_huge", "model.vit_model: 'eva_clip_huge' is not one of eva_clip_g, eva_clip_tiny"),
        # registered encoders, but not of the EVA family whose tokens the model reads
        ("runner_base", "model.vit_model=face_mae_tiny", "model.vit_model: 'face_mae_tiny' is not one of eva_clip_g, eva_clip_tiny"),
        ("runner_base", "model.vit_model=video_mae_vit_large", "model.vit_model: 'video_mae_vit_large' is not one of eva_clip_g"),
        ("runner_base", "model.num_video_streams=1", "model.num_video_streams: 1 is not one of 2, 3"),
        ("runner_base", "model.num_video_streams=4", "model.num_video_streams: 4 is not one of 2, 3"),
        ("runner_base", "model.llama_feature_positions=[6,1.5]", "model.llama_feature_positions: every element must be int or str"),
        ("runner_base", "model.lora_target_modules=[q_proj,1]", "model.lora_target_modules: every element must be str, got int 1"),
        ("runner_base", "model.llama_feature_pools=[image,cls]", "model.llama_feature_pools: 'cls' is not one of image, streams, prompt"),
        ("runner_base", "model.lora_dropout=1.5", "model.lora_dropout: must be at most 1.0"),
        ("runner_base", "run.folds=[0,one]", "run.folds: every element must be int, got str 'one'"),
        ("runner_base", "run.device=gpu", "run.device: 'gpu' does not have the form cpu|cuda(:\\d+)?"),
        ("runner_base", "run.seed=-1", "run.seed: must be at least 0, got -1"),
        ("runner_base", "run.lr_sched=cosine", "run.lr_sched: unknown lr_scheduler 'cosine'"),
        ("runner_base", "run.best_metric=auc", "run.best_metric: 'auc' is not one of accuracy, balanced_accuracy"),
        ("runner_base", "run.batch_size_train=0", "run.batch_size_train: must be at least 1, got 0"),
        ("runner_base", "run.batch_size_eval=-2", "run.batch_size_eval: must be at least 1, got -2"),
        ("runner_base", "run.log_level=LOUD", "run.log_level: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR"),
        ("runner_base", "datasets.hcmw_caption.on_error=ignore", "datasets.hcmw_caption.on_error: 'ignore' is not one of raise, skip"),
        # a registered processor, but one for captions: it cannot turn a peak frame into a tensor
        ("runner_base", "datasets.hcmw_caption.vis_processor.eval.name=blip_caption",
         "datasets.hcmw_caption.vis_processor.eval.name: 'blip_caption' is not one of blip2_image_eval, blip2_image_train"),
        ("runner_base", "datasets.hcmw_caption.positive_label=Maybe", "datasets.hcmw_caption.positive_label: 'Maybe' is not one of MW, NonMW"),
        ("runner_base", "datasets.hcmw_caption.answers.NonMW=mind wandering", "datasets.hcmw_caption.answers: the answer texts must be distinct"),
        ("runner_base", "datasets.hcmw_caption.vis_processor.eval.name=resize", "datasets.hcmw_caption.vis_processor.eval.name: 'resize' is not one of blip2_image_eval, blip2_image_train"),
        ("runner_base", "datasets.hcmw_caption.vis_processor.eval.image_size=448",
         "datasets.hcmw_caption.vis_processor.eval.image_size: 448 differs from model.image_size 224"),
        ("runner_eval", "run.feature_dtype=float64", "run.feature_dtype: 'float64' is not one of float16, float32"),
        ("runner_eval", "run.feature_layout=flat", "run.feature_layout: 'flat' is not one of stacked, per_clip"),
        ("runner_eval", "run.batch_size=0", "run.batch_size: must be at least 1, got 0"),
    ],
)
def test_values_outside_the_allowed_ones_stop_before_loading(assets_env, tmp_path, runner, option, message):
    hcmw = {"vis_processor": {"train": {"image_size": 224}, "eval": {"image_size": 224}}}
    config = {"model": dict(TINY_MODEL), "evaluation_datasets" if runner == "runner_eval" else "datasets": {"hcmw_caption": hcmw}}
    with pytest.raises(ConfigError) as info:
        load(tmp_path, config, runner, [option])
    assert str(info.value).startswith(message), str(info.value)


def test_processor_sizes_follow_the_model_and_positions_may_be_names(assets_env, tmp_path):
    """What the checks must let through: matching sizes, position names next to ints."""
    hcmw = {
        "build_info": {
            "annotation": str(assets_env["hcmw_csv"]),
            "image_root": str(assets_env["hcmw_image_root"]),
            "feature_root": str(assets_env["hcmw_feature_root"]),
        },
        "vis_processor": {"train": {"image_size": 224}, "eval": {"image_size": 224}},
        "positive_label": "NonMW",
    }
    config = {"model": {**TINY_MODEL, "llama_feature_positions": [6, "image:2", "cls"]}, "datasets": {"hcmw_caption": hcmw}}
    cfg = load(tmp_path, config, options=["run.log_level=warning"])
    assert list(cfg.model_cfg.llama_feature_positions) == [6, "image:2", "cls"]
    assert cfg.datasets_cfg.hcmw_caption.positive_label == "NonMW"


def test_missing_paths_are_named_together_with_their_environment_variables(assets_env, tmp_path, monkeypatch):
    for name in ("LLAMA_MODEL", "EVA_VIT_G_CKPT", "EMOTION_LLAMA_CKPT", "HCMW_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        Config(Namespace(cfg_path=str(REPO_ROOT / "eval_configs" / "eval_emotion.yaml"), options=[]), default_runner="runner_eval")
    message = str(info.value)
    assert "\n" not in message
    for key, variable in [
        ("model.llama_model", "LLAMA_MODEL"), ("model.vit_checkpoint", "EVA_VIT_G_CKPT"), ("model.ckpt", "EMOTION_LLAMA_CKPT"),
        ("evaluation_datasets.hcmw_caption.build_info.annotation", "HCMW_ROOT"),
        ("evaluation_datasets.hcmw_caption.build_info.image_root", "HCMW_ROOT"),
        ("evaluation_datasets.hcmw_caption.build_info.feature_root", "HCMW_ROOT"),
    ]:
        assert f"{key}: path not found" in message
        assert variable in message
    assert message.endswith("export LLAMA_MODEL, EVA_VIT_G_CKPT, EMOTION_LLAMA_CKPT, HCMW_ROOT")


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "train_configs").glob("*.yaml")) + sorted((REPO_ROOT / "eval_configs").glob("*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_pass_every_check_but_absent_weights(assets_env, path):
    """The example configs hold only allowed values; on this machine only the real weights and
    data paths may be missing."""
    if not set(OmegaConf.load(path)) <= {"model", "datasets", "evaluation_datasets", "run"}:
        pytest.skip("not a train.py / eval_emotion.py config")
    runner = "runner_eval" if path.parent.name == "eval_configs" else "runner_base"
    try:
        Config(Namespace(cfg_path=str(path), options=[]), default_runner=runner)
    except ConfigError as exc:
        problems = str(exc).split("; set each in your config")[0].split("; ")
        assert all(": path not found" in p or ": required path is not set" in p for p in problems), str(exc)


def test_schema_choices_are_the_ones_the_code_accepts():
    """The table's allowed values equal the lists the modules that use them hold."""
    from minigpt4.datasets.datasets.base_dataset import ON_ERROR_CHOICES
    from minigpt4.features.writer import DTYPES, LAYOUTS
    from minigpt4.models.base_model import PRECISIONS
    from minigpt4.models.eva_vit import EVA_VARIANTS
    from minigpt4.models.minigpt_base import POOL_SPANS

    assert set(rule_for("model.precision").choices) == set(PRECISIONS)
    assert set(rule_for("model.llama_feature_pools").choices) == set(POOL_SPANS)
    assert set(rule_for("run.feature_dtype").choices) == set(DTYPES)
    assert set(rule_for("run.feature_layout").choices) == set(LAYOUTS)
    assert set(rule_for("evaluation_datasets.x.on_error").choices) == set(ON_ERROR_CHOICES)
    # the model reads EVA tokens: of the registered encoders, only the EVA variants
    assert rule_for("model.vit_model").allowed({}, {"arch": "minigpt_v2"}) == tuple(sorted(EVA_VARIANTS))
    assert {"face_mae_tiny", "video_mae_tiny"} <= set(registry.names("encoder"))


def test_reference_table_in_the_docs_is_the_generated_one():
    """docs/configuration.md holds exactly what the validation code generates; regenerate with
    ``python -m minigpt4.common.config_reference``."""
    doc = REPO_ROOT / "docs" / "configuration.md"
    assert config_reference.main([str(doc), "--check"]) == 0


def test_reference_lists_every_default_key_and_notices_drift(tmp_path):
    section = config_reference.render()
    for _, path in config_reference.default_files():
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for dotted, value in keys_of(raw, ""):
            parts = dotted.strip(".").split(".")
            short = ".".join(parts[2:] if parts[0] == "datasets" else parts[1:])
            if short and not (isinstance(value, dict) and value):
                assert f"| `{short}` |" in section, short
    assert "| `precision` | str | `bf16` | bf16 \\| fp16 \\| fp32 |" in section
    doc = tmp_path / "configuration.md"
    doc.write_text((REPO_ROOT / "docs" / "configuration.md").read_text().replace("| `precision` | str | `bf16`", "| `precision` | str | `fp16`"))
    assert config_reference.main([str(doc), "--check"]) == 1
    assert config_reference.main([str(doc)]) == 0
    assert config_reference.main([str(doc), "--check"]) == 0
