"""Run configuration: defaults merged under the user's YAML, checked before anything is built.

Merge order (later wins): the model's default YAML (picked by ``model.arch`` and
``model.model_type``), each named dataset's default YAML, the runner's default ``run``
section, the user's file, then ``--options a.b=c`` overrides.  The merged config is checked
against those defaults: an unknown section or key, an unknown registered name, a value of
the wrong type or a required path that does not exist stops the run with a message that
names the key, before any weights are read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from minigpt4.common.registry import RegistryError, registry

logger = logging.getLogger(__name__)

SECTIONS = ("model", "datasets", "evaluation_datasets", "run")
DEFAULT_RUNNER = "runner_base"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and the fix."""


def _load_yaml(path: str | Path, what: str) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: config file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends; their text says where
        raise ConfigError(f"{what}: {path} is not valid YAML: {exc}") from exc
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{what}: {path} must hold a mapping at the top level")
    return cfg


def _lookup(kind: str, name: Any, key: str) -> Any:
    try:
        return registry.get(kind, str(name))
    except RegistryError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _type_name(value: Any) -> str:
    return "list" if isinstance(value, (list, ListConfig)) else type(value).__name__


def _type_matches(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def check_against_defaults(values: dict, defaults: dict, prefix: str, open_keys: Iterable[str] = ()) -> None:
    """Every key of ``values`` must exist in ``defaults`` with a value of the same type.

    ``open_keys`` names sub-mappings whose keys are free (their values are not checked).
    """
    open_keys = set(open_keys)
    for key, value in values.items():
        dotted = f"{prefix}.{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "(none)"
            raise ConfigError(f"{dotted}: unknown key; known keys of {prefix}: {known}")
        default = defaults[key]
        if not _type_matches(default, value):
            raise ConfigError(
                f"{dotted}: expected {_type_name(default)} (default {default!r}), got {_type_name(value)} {value!r}"
            )
        if isinstance(default, dict) and isinstance(value, dict) and dotted not in open_keys:
            check_against_defaults(value, default, dotted, open_keys)


class Config:
    """The merged, validated configuration of one run.

    ``args`` needs ``cfg_path`` and ``options`` (a list of ``a.b=c`` strings or None).
    """

    def __init__(self, args: Any, default_runner: str = DEFAULT_RUNNER):
        self.args = args
        user = _load_yaml(args.cfg_path, "--cfg-path")
        overrides = self._parse_options(getattr(args, "options", None))
        wanted = OmegaConf.merge(user, overrides)

        unknown = [key for key in wanted if key not in SECTIONS]
        if unknown:
            raise ConfigError(
                f"{unknown[0]}: unknown config section; a run config holds only {', '.join(SECTIONS)}"
            )
        if "model" not in wanted or "arch" not in wanted.model:
            raise ConfigError("model.arch: missing; name a registered model, e.g. minigpt_v2")

        defaults = [self._model_defaults(wanted), self._dataset_defaults(wanted), self._run_defaults(wanted, default_runner)]
        self.config = OmegaConf.merge(*defaults, user, overrides)
        self._validate(defaults)

    @staticmethod
    def _parse_options(options: Sequence[str] | None) -> DictConfig:
        options = list(options or [])
        for item in options:
            if "=" not in item:
                raise ConfigError(f"--options {item!r}: expected key=value, e.g. run.batch_size_train=2")
        parsed = []
        for item in options:  # one by one, so the error names the item
            try:
                parsed.append(OmegaConf.from_dotlist([item]))
            except (OmegaConfBaseException, yaml.YAMLError) as exc:  # a value YAML cannot read: "[1,2", '"'
                problem = str(exc).strip().splitlines()[0]
                raise ConfigError(
                    f"--options {item!r}: the value is not valid YAML ({problem}); close brackets and quotes"
                ) from None
        return OmegaConf.merge(*parsed) if parsed else OmegaConf.create()

    @staticmethod
    def _model_defaults(wanted: DictConfig) -> DictConfig:
        model_cls = _lookup("model", wanted.model.arch, "model.arch")
        model_type = wanted.model.get("model_type", getattr(model_cls, "DEFAULT_MODEL_TYPE", "pretrain"))
        types = getattr(model_cls, "PRETRAINED_MODEL_CONFIG_DICT", {})
        if model_type not in types:
            raise ConfigError(
                f"model.model_type: unknown type {model_type!r} for {wanted.model.arch}; choices: {', '.join(sorted(types))}"
            )
        return OmegaConf.create({"model": OmegaConf.load(model_cls.default_config_path(model_type))["model"]})

    @staticmethod
    def _dataset_defaults(wanted: DictConfig) -> DictConfig:
        merged = OmegaConf.create()
        for section in ("datasets", "evaluation_datasets"):
            for name in wanted.get(section) or {}:
                builder = _lookup("builder", name, f"{section}.{name}")
                default = OmegaConf.load(builder.default_config_path())["datasets"][name]
                merged = OmegaConf.merge(merged, {section: {name: default}})
        return merged

    @staticmethod
    def _run_defaults(wanted: DictConfig, default_runner: str) -> DictConfig:
        run = wanted.get("run") or {}
        runner_cls = _lookup("runner", run.get("runner", default_runner), "run.runner")
        task = run.get("task", getattr(runner_cls, "DEFAULT_TASK", None))
        if task:  # the evaluation runner takes each dataset's task from its builder instead
            _lookup("task", task, "run.task")
        return OmegaConf.create({"run": OmegaConf.load(runner_cls.default_config_path())["run"]})

    def _validate(self, defaults: list[DictConfig]) -> None:
        try:
            resolved = OmegaConf.to_container(self.config, resolve=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{exc.full_key if hasattr(exc, 'full_key') else 'config'}: {exc}") from exc
        reference = OmegaConf.to_container(OmegaConf.merge(*defaults), resolve=False)
        for section in ("model", "run"):
            check_against_defaults(resolved.get(section) or {}, reference.get(section) or {}, section)
        for section in ("datasets", "evaluation_datasets"):
            for name, values in (resolved.get(section) or {}).items():
                check_against_defaults(values or {}, reference[section][name], f"{section}.{name}")

        model_cls = registry.get("model", resolved["model"]["arch"])
        # The model's own checks of its values (e.g. the syntax of named feature positions).
        check_model = getattr(model_cls, "check_config", None)
        if check_model is not None:
            check_model(resolved["model"])
        self._check_paths(resolved["model"], getattr(model_cls, "REQUIRED_PATHS", ()), "model")
        self._check_paths(resolved["model"], getattr(model_cls, "OPTIONAL_PATHS", ()), "model", required=False)
        for section in ("datasets", "evaluation_datasets"):
            for name, values in (resolved.get(section) or {}).items():
                builder = registry.get("builder", name)
                self._check_paths(values, getattr(builder, "REQUIRED_PATHS", ()), f"{section}.{name}")
        for key, kind in (("run.task", "task"), ("run.lr_sched", "lr_scheduler")):
            value = OmegaConf.select(self.config, key)
            if value:
                _lookup(kind, value, key)
        for section in ("datasets", "evaluation_datasets"):
            for name, values in (resolved.get(section) or {}).items():
                for split, proc in (values.get("vis_processor") or {}).items():
                    _lookup("processor", proc["name"], f"{section}.{name}.vis_processor.{split}.name")
                for split, proc in (values.get("text_processor") or {}).items():
                    _lookup("processor", proc["name"], f"{section}.{name}.text_processor.{split}.name")

    @staticmethod
    def _check_paths(values: dict, keys: Iterable[str], prefix: str, required: bool = True) -> None:
        """Each path must exist; an empty optional one is allowed (it means "none")."""
        for dotted in keys:
            node: Any = values
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            key = f"{prefix}.{dotted}"
            if not node and not required:
                continue
            if not node:
                raise ConfigError(f"{key}: required path is not set; set it in your config or with --options {key}=PATH")
            if not str(node).startswith(("http://", "https://")) and not Path(str(node)).expanduser().exists():
                raise ConfigError(f"{key}: path not found: {node}; set it in your config or with --options {key}=PATH")

    @property
    def model_cfg(self) -> DictConfig:
        return self.config.model

    @property
    def run_cfg(self) -> DictConfig:
        return self.config.run

    @property
    def datasets_cfg(self) -> DictConfig:
        return self.config.get("datasets") or OmegaConf.create()

    @property
    def evaluation_datasets_cfg(self) -> DictConfig:
        return self.config.get("evaluation_datasets") or OmegaConf.create()

    def pretty(self) -> str:
        """The merged config as YAML, interpolations resolved, one block per section."""
        resolved = OmegaConf.to_container(self.config, resolve=True)
        blocks = []
        for section in SECTIONS:
            if resolved.get(section):
                blocks.append(f"===== {section} =====\n{OmegaConf.to_yaml({section: resolved[section]}).rstrip()}")
        return "\n".join(blocks)

    def to_dict(self) -> dict:
        return OmegaConf.to_container(self.config, resolve=True)
