"""Run configuration: defaults merged under the user's YAML, checked before anything is built.

Merge order (later wins): the model's default YAML (picked by ``model.arch`` and
``model.model_type``), each named dataset's default YAML, the runner's default ``run``
section, the user's file, then ``--options a.b=c`` overrides.  The merged config is checked
against those defaults: an unknown section or key, a value of the wrong type, a value its
rule in :mod:`minigpt4.common.config_schema` refuses (a choice, a registered name, a range),
keys that disagree or required paths that do not exist stop the run with a one-line message
that names the key, before any weights are read.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from minigpt4.common.config_schema import DATASET_SECTIONS, element_matches, element_types, rule_for, type_name
from minigpt4.common.registry import RegistryError, registry

logger = logging.getLogger(__name__)

SECTIONS = ("model", "datasets", "evaluation_datasets", "run")
ENV_VARIABLE = re.compile(r"oc\.env:([A-Za-z_][A-Za-z0-9_]*)")
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


def _merge(*configs: DictConfig) -> DictConfig:
    try:
        return OmegaConf.merge(*configs)
    except OmegaConfBaseException as exc:  # e.g. a section given as a value and as a mapping
        raise ConfigError(f"{getattr(exc, 'full_key', None) or 'config'}: {str(exc).splitlines()[0]}") from None


def _lookup(kind: str, name: Any, key: str) -> Any:
    try:
        return registry.get(kind, str(name))
    except RegistryError as exc:
        raise ConfigError(f"{key}: {exc}") from None


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
                f"{dotted}: expected {type_name(default)} (default {default!r}), got {type_name(value)} {value!r}"
            )
        types = element_types(dotted, default) if isinstance(default, list) and isinstance(value, list) else ()
        if types:
            wrong = [item for item in value if not element_matches(types, item)]
            if wrong:
                names = " or ".join(t.__name__ for t in types)
                raise ConfigError(f"{dotted}: every element must be {names}, got {type_name(wrong[0])} {wrong[0]!r}")
        if isinstance(default, dict) and isinstance(value, dict) and dotted not in open_keys:
            check_against_defaults(value, default, dotted, open_keys)


def select_dotted(values: dict, dotted: str) -> Any:
    """The value at ``a.b.c`` of nested plain dicts, or None."""
    node: Any = values
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def check_values(resolved: dict, reference: dict) -> None:
    """Every value of a merged config (plain data) against the defaults it was merged from:
    its type, its rule, and the keys that must agree with each other."""
    for section in ("model", "run"):
        check_against_defaults(resolved.get(section) or {}, reference.get(section) or {}, section)
    for section in DATASET_SECTIONS:
        for name, values in (resolved.get(section) or {}).items():
            check_against_defaults(values or {}, reference[section][name], f"{section}.{name}")
    for section in SECTIONS:
        check_rules(resolved.get(section) or {}, resolved, section)
    check_agreement(resolved)


def check_rules(values: dict, root: dict, prefix: str) -> None:
    """Each value against its rule in :data:`minigpt4.common.config_schema.RULES` (types are
    checked before, by :func:`check_against_defaults`)."""
    for key, value in values.items():
        dotted = f"{prefix}.{key}"
        if isinstance(value, dict):
            check_rules(value, root, dotted)
            continue
        if isinstance(value, float) and not math.isfinite(value):
            # YAML's .nan and .inf are floats, and NaN slips through every range check (nan < 0 is false)
            raise ConfigError(f"{dotted}: must be a finite number, got {value!r}")
        rule = rule_for(dotted)
        problem = rule.problem(value, root, values) if rule is not None and value is not None else None
        if problem:
            raise ConfigError(f"{dotted}: {problem}")


def check_agreement(resolved: dict) -> None:
    """Keys that must agree with each other."""
    image_size = resolved["model"].get("image_size")
    for section in DATASET_SECTIONS:
        for name, values in (resolved.get(section) or {}).items():
            prefix = f"{section}.{name}"
            for split, proc in ((values or {}).get("vis_processor") or {}).items():
                size = (proc or {}).get("image_size")
                if image_size is not None and size is not None and size != image_size:
                    raise ConfigError(
                        f"{prefix}.vis_processor.{split}.image_size: {size} differs from model.image_size {image_size}; "
                        "the processors must resize images to the ViT's input size"
                    )
            answers = (values or {}).get("answers")
            if isinstance(answers, dict):
                texts = [str(text).strip() for text in answers.values()]
                if not all(texts) or len(set(texts)) != len(texts):
                    raise ConfigError(f"{prefix}.answers: the answer texts must be distinct and not empty, got {answers}")
            # the third stream is audio: a model that reads it needs every clip's audio vector,
            # never the zeros an empty audio_dir stands for
            build_info = (values or {}).get("build_info") or {}
            streams = resolved["model"].get("num_video_streams") or 0
            if "audio_dir" in build_info and not build_info["audio_dir"] and streams >= 3:
                raise ConfigError(
                    f"{prefix}.build_info.audio_dir: empty, but model.num_video_streams is {streams} "
                    "(FaceMAE, VideoMAE, audio); set it to the folder of "
                    "the clips' audio vectors (extract_audio_embedding.py), or use num_video_streams: 2"
                )


class Config:
    """The merged, validated configuration of one run.

    ``args`` needs ``cfg_path`` and ``options`` (a list of ``a.b=c`` strings or None).
    """

    def __init__(self, args: Any, default_runner: str = DEFAULT_RUNNER):
        self.args = args
        user = _load_yaml(args.cfg_path, "--cfg-path")
        overrides = self._parse_options(getattr(args, "options", None))
        wanted = _merge(user, overrides)
        self._check_sections(wanted)
        defaults = [self._model_defaults(wanted), self._dataset_defaults(wanted), self._run_defaults(wanted, default_runner)]
        self.config = _merge(*defaults, user, overrides)
        self._validate(defaults)

    @staticmethod
    def _check_sections(wanted: DictConfig) -> None:
        """Only the known sections, each a mapping; every dataset section maps names to mappings."""
        unknown = [key for key in wanted if key not in SECTIONS]
        if unknown:
            raise ConfigError(
                f"{unknown[0]}: unknown config section; a run config holds only {', '.join(SECTIONS)}"
            )
        for section in SECTIONS:
            value = wanted.get(section)
            if value is not None and not isinstance(value, DictConfig):
                raise ConfigError(f"{section}: expected a mapping of keys to values, got {type_name(value)} {value!r}")
        for section in DATASET_SECTIONS:
            for name, value in (wanted.get(section) or {}).items():
                if value is not None and not isinstance(value, DictConfig):
                    raise ConfigError(f"{section}.{name}: expected a mapping of the dataset's keys, got {value!r}")
        if "model" not in wanted or "arch" not in wanted.model:
            raise ConfigError("model.arch: missing; name a registered model, e.g. minigpt_v2")

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
        if not isinstance(model_type, str) or model_type not in types:
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
        if task is not None:  # the evaluation runner takes each dataset's task from its builder instead
            _lookup("task", task, "run.task")
        return OmegaConf.create({"run": OmegaConf.load(runner_cls.default_config_path())["run"]})

    def _validate(self, defaults: list[DictConfig]) -> None:
        """Types, then allowed values, then keys that must agree, then paths: a wrong value is
        reported as such even when a path of the same run is missing too."""
        try:
            resolved = OmegaConf.to_container(self.config, resolve=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{getattr(exc, 'full_key', None) or 'config'}: {str(exc).splitlines()[0]}") from None
        check_values(resolved, OmegaConf.to_container(OmegaConf.merge(*defaults), resolve=False))
        # The model's own checks of its values (e.g. the syntax of named feature positions).
        check_model = getattr(registry.get("model", resolved["model"]["arch"]), "check_config", None)
        if check_model is not None:
            check_model(resolved["model"])
        self._check_paths(resolved)

    def _path_keys(self, resolved: dict) -> list[tuple[str, bool]]:
        """(dotted key, required) of every path the model and the datasets read."""
        model_cls = registry.get("model", resolved["model"]["arch"])
        keys = [(f"model.{key}", True) for key in getattr(model_cls, "REQUIRED_PATHS", ())]
        keys += [(f"model.{key}", False) for key in getattr(model_cls, "OPTIONAL_PATHS", ())]
        for section in DATASET_SECTIONS:
            for name, values in (resolved.get(section) or {}).items():
                builder = registry.get("builder", name)
                keys += [(f"{section}.{name}.{key}", True) for key in builder.required_paths(values or {})]
        return keys

    def _check_paths(self, resolved: dict) -> None:
        """Every path must exist (an empty optional one means "none").  All missing paths are
        named in one message, each with the environment variable its value reads, so a new
        machine is set up in one go."""
        raw = OmegaConf.to_container(self.config, resolve=False)
        problems, variables = [], []
        for key, required in self._path_keys(resolved):
            value = select_dotted(resolved, key)
            if not value and not required:
                continue
            if value and (str(value).startswith(("http://", "https://")) or Path(str(value)).expanduser().exists()):
                continue
            names = ENV_VARIABLE.findall(str(select_dotted(raw, key) or ""))
            variables += [name for name in names if name not in variables]
            where = f" (environment variable {', '.join(names)})" if names else ""
            problems.append(f"{key}: path not found: {value}{where}" if value else f"{key}: required path is not set{where}")
        if problems:
            how = "set each in your config or with --options KEY=PATH"
            if variables:
                how += f", or export {', '.join(variables)}"
            raise ConfigError(f"{'; '.join(problems)}; {how}")

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


def load_typed_config(path: str | Path, options: Sequence[str], schema: type, error: type[Exception] = ConfigError):
    """A job config typed by a dataclass (the probe's, the detect job's): ``schema``'s defaults
    <- the YAML at ``path`` <- ``a.b=c`` options, as the dataclass object.  A missing file, an
    unknown key or a value of the wrong type is one ``error`` naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise error(f"--cfg-path: config file not found: {path}")
    # ``key=-`` (standard input) would be read as YAML, a list of one null
    options = [f"{option[:-1]}'-'" if option.endswith("=-") else option for option in options]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path), OmegaConf.from_dotlist(options))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise error(f"{path}: {key}: {str(exc).strip().splitlines()[0]}") from None
