"""What a config key accepts beyond the type of its default.

A key's type comes from the default YAMLs themselves: its default fixes its type, and a list
default fixes the type of its elements.  A key added to a default YAML is therefore checked
without a change here.  A key that needs more than its type (one of a few values, a
registered name, a range, mixed list elements) has a row in :data:`RULES`.  The validation in
:mod:`minigpt4.common.config` and the reference table in ``docs/configuration.md``
(:mod:`minigpt4.common.config_reference`) both read these two sources, so they cannot drift.

Keys are written with their section: ``model.precision``, ``run.batch_size``, and
``datasets.*.on_error`` for every dataset (under ``datasets`` or ``evaluation_datasets``);
``*`` stands for one name (a dataset, a processor split).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from omegaconf import ListConfig

from minigpt4.common.registry import RegistryError, registry

DATASET_SECTIONS = ("datasets", "evaluation_datasets")


@dataclass(frozen=True)
class Rule:
    """What one key accepts; every field left at its default adds no condition."""

    choices: tuple = ()  # the allowed values
    registered: str = ""  # a registry kind: the value must be a registered name of it
    minimum: float | None = None  # inclusive bounds of a number
    maximum: float | None = None
    items: tuple[type, ...] = ()  # allowed list element types, instead of the default's
    pattern: str = ""  # a regular expression the whole (string) value must match
    ignore_case: bool = False  # compare choices case-insensitively
    # Allowed values that depend on other keys: (whole config, mapping holding the key) -> values.
    choices_of: Callable[[Mapping, Mapping], tuple] | None = None
    depends: str = ""  # for the reference table: what ``choices_of`` reads

    def allowed(self, root: Mapping | None = None, parent: Mapping | None = None) -> tuple:
        """The allowed values (empty: any value of the right type)."""
        if self.registered:
            return tuple(registry.names(self.registered))
        if self.choices_of is not None and root is not None:
            return tuple(self.choices_of(root, parent or {}))
        return self.choices

    def problem(self, value: Any, root: Mapping, parent: Mapping) -> str | None:
        """Why ``value`` is not accepted, or None."""
        if self.registered:
            try:
                registry.get(self.registered, str(value))
            except RegistryError as exc:
                return str(exc)
            return None
        allowed = self.allowed(root, parent)
        if allowed:
            fold = (lambda v: str(v).lower()) if self.ignore_case else (lambda v: v)
            choices = {fold(choice) for choice in allowed}
            # a list key's choices are those of its elements
            for item in value if isinstance(value, list) else [value]:
                if fold(item) not in choices:
                    return f"{item!r} is not one of {', '.join(map(str, allowed))}"
        if self.pattern and not re.fullmatch(self.pattern, str(value)):
            return f"{value!r} does not have the form {self.pattern}"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {self.minimum}, got {value!r}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {self.maximum}, got {value!r}"
        return None

    def describe(self, root: Mapping | None = None, parent: Mapping | None = None) -> str:
        """The allowed values as reference-table text; ``root``/``parent`` (the defaults) give
        the values of a key whose choices depend on other keys."""
        parts = []
        if self.depends:
            example = self.allowed(root, parent) if root is not None and self.choices_of is not None else ()
            parts.append(f"{self.depends} ({', '.join(map(str, example))})" if example else self.depends)
        if self.registered:
            parts.append(f"a registered {self.registered}: " + ", ".join(self.allowed()))
        elif self.choices:
            parts.append(" | ".join(map(str, self.choices)))
        if self.pattern:
            parts.append(f"form: {self.pattern}")
        if self.minimum is not None and self.maximum is not None:
            parts.append(f"{self.minimum} to {self.maximum}")
        elif self.minimum is not None:
            parts.append(f">= {self.minimum}")
        elif self.maximum is not None:
            parts.append(f"<= {self.maximum}")
        if self.items:
            parts.append("elements: " + " or ".join(t.__name__ for t in self.items))
        return "; ".join(parts)


def _task_metrics(root: Mapping, parent: Mapping) -> tuple:
    return tuple(getattr(registry.get("task", parent["task"]), "METRICS", ()))


def _model_types(root: Mapping, parent: Mapping) -> tuple:
    return tuple(getattr(registry.get("model", parent["arch"]), "PRETRAINED_MODEL_CONFIG_DICT", ()))


def _vision_encoders(root: Mapping, parent: Mapping) -> tuple:
    # the registered encoders of the family the model reads (its VISION_ENCODER class)
    family = getattr(registry.get("model", parent["arch"]), "VISION_ENCODER", None)
    return tuple(registry.names("encoder", builds=family))


def _image_processors(root: Mapping, parent: Mapping) -> tuple:
    # a dataset's vis_processor turns peak frames into tensors: a caption processor cannot
    names = registry.names("processor")
    return tuple(name for name in names if getattr(registry.get("processor", name), "takes", "") == "image")


def _answer_codes(root: Mapping, parent: Mapping) -> tuple:
    return tuple(parent.get("answers") or ())


POSITIVE = 1
NON_NEGATIVE = 0
FRACTION = {"minimum": 0.0, "maximum": 1.0}

RULES: dict[str, Rule] = {
    # model
    "model.arch": Rule(registered="model"),
    "model.model_type": Rule(choices_of=_model_types, depends="a type of model.arch"),
    "model.vit_model": Rule(choices_of=_vision_encoders, depends="an image encoder of model.arch's family"),
    "model.precision": Rule(choices=("bf16", "fp16", "fp32")),
    "model.num_video_streams": Rule(choices=(2, 3)),
    "model.image_size": Rule(minimum=POSITIVE),
    "model.image_token_merge": Rule(minimum=POSITIVE),
    "model.video_feature_dim": Rule(minimum=POSITIVE),
    "model.drop_path_rate": Rule(**FRACTION),
    "model.lora_r": Rule(minimum=NON_NEGATIVE),
    "model.llm_layers": Rule(minimum=-1),  # -1 = every decoder layer
    "model.lora_alpha": Rule(minimum=POSITIVE),
    "model.lora_dropout": Rule(**FRACTION),
    "model.lora_target_modules": Rule(items=(str,)),
    "model.max_txt_len": Rule(minimum=POSITIVE),
    "model.max_context_len": Rule(minimum=POSITIVE),
    # ints are positions; names such as image:2 or cls are read by the model
    "model.llama_feature_positions": Rule(items=(int, str)),
    "model.llama_feature_pools": Rule(items=(str,), choices=("image", "streams", "prompt")),
    # run
    "run.runner": Rule(registered="runner"),
    "run.task": Rule(registered="task"),
    "run.lr_sched": Rule(registered="lr_scheduler"),
    "run.device": Rule(pattern=r"cpu|cuda(:\d+)?"),
    "run.seed": Rule(minimum=NON_NEGATIVE),
    "run.best_metric": Rule(choices_of=_task_metrics, depends="a metric of run.task"),
    "run.folds": Rule(items=(int,)),
    "run.max_epoch": Rule(minimum=POSITIVE),
    "run.iters_per_epoch": Rule(minimum=NON_NEGATIVE),
    "run.batch_size": Rule(minimum=POSITIVE),
    "run.batch_size_train": Rule(minimum=POSITIVE),
    "run.batch_size_eval": Rule(minimum=POSITIVE),
    "run.num_workers": Rule(minimum=NON_NEGATIVE),
    "run.accum_grad_iters": Rule(minimum=POSITIVE),
    "run.init_lr": Rule(minimum=NON_NEGATIVE),
    "run.min_lr": Rule(minimum=NON_NEGATIVE),
    "run.warmup_lr": Rule(minimum=NON_NEGATIVE),
    "run.warmup_steps": Rule(minimum=NON_NEGATIVE),
    "run.decay_rate": Rule(minimum=NON_NEGATIVE),
    "run.weight_decay": Rule(minimum=NON_NEGATIVE),
    "run.max_grad_norm": Rule(minimum=NON_NEGATIVE),
    "run.log_freq": Rule(minimum=POSITIVE),
    "run.max_new_tokens": Rule(minimum=POSITIVE),
    "run.feature_dtype": Rule(choices=("float16", "float32")),
    "run.feature_layout": Rule(choices=("stacked", "per_clip")),
    "run.log_level": Rule(choices=("DEBUG", "INFO", "WARNING", "ERROR"), ignore_case=True),
    # every dataset
    "datasets.*.on_error": Rule(choices=("raise", "skip")),
    "datasets.*.feature_dim": Rule(minimum=POSITIVE),
    "datasets.*.fold": Rule(minimum=-1),
    "datasets.*.shuffle_buffer": Rule(minimum=NON_NEGATIVE),
    "datasets.*.labels": Rule(items=(str,)),
    "datasets.*.positive_label": Rule(choices_of=_answer_codes, depends="a key of answers"),
    "datasets.*.vis_processor.*.name": Rule(choices_of=_image_processors, depends="a registered image processor"),
    "datasets.*.vis_processor.*.image_size": Rule(minimum=POSITIVE),
    "datasets.*.vis_processor.*.min_scale": Rule(**FRACTION),
    "datasets.*.vis_processor.*.max_scale": Rule(**FRACTION),
}


def pattern_of(key: str) -> str:
    """``evaluation_datasets.x.on_error`` -> ``datasets.x.on_error`` (one rule for both sections)."""
    section, _, rest = key.partition(".")
    return f"datasets.{rest}" if section in DATASET_SECTIONS else key


def rule_for(key: str) -> Rule | None:
    """The rule of a dotted key; ``*`` in a rule matches one name (no dots)."""
    parts = pattern_of(key).split(".")
    for pattern, rule in RULES.items():
        wanted = pattern.split(".")
        if len(wanted) == len(parts) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted)):
            return rule
    return None


def type_name(value: Any) -> str:
    if isinstance(value, (list, tuple, ListConfig)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def element_types(key: str, default: list) -> tuple[type, ...]:
    """Allowed element types of a list key: its rule's, else those of its default's elements."""
    rule = rule_for(key)
    if rule is not None and rule.items:
        return rule.items
    return tuple(dict.fromkeys(type(item) for item in default))


def element_matches(types: tuple[type, ...], item: Any) -> bool:
    if isinstance(item, bool):
        return bool in types
    if isinstance(item, int) and float in types:
        return True
    return isinstance(item, types)
