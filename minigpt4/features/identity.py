"""The identity of dumped features: what must be the same for two feature vectors to mean the same.

A detector fitted on a dump can only be applied to features made the same way, so the export
records, and ``python -m minigpt4.detect`` checks before it decodes anything:

* ``model``: the model config the dump ran with, without paths and without settings that do
  not change numbers (devices, checkpointing, loading options);
* ``weights``: every weight file by content (size and SHA-256, :mod:`minigpt4.common.file_digest`):
  the LLaMA folder's files, ``vit_checkpoint`` and ``ckpt``; paths alone do not identify weights;
* ``seed``: weights no file provides (the demo's projectors without ``ckpt``) are drawn from it;
* ``encoders``: what each vector folder's ``extraction.json`` recorded (encoder, a digest of its
  weights, level, sampling), and ``prepare`` what minigpt4.prepare recorded for the clips;
* ``instruction``, ``image_processor``, ``positions`` (name, index, token), ``layers``,
  ``pools``, ``num_video_streams`` and ``dtype`` (of the dumped files).

:func:`needed_identity` keeps the part a feature set depends on (a FaceMAE set does not depend
on the LLM's positions), and :func:`first_difference` names the first key that differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

from minigpt4.common.file_digest import file_identity
from minigpt4.features.writer import EXTRACTION_RECORD

# model config keys that never change a feature's numbers
NOT_IDENTITY = (
    "llama_model", "vit_checkpoint", "ckpt",  # paths: the files count by content, under "weights"
    "low_resource", "trust_checkpoint", "strict_ckpt", "use_grad_checkpoint", "llm_grad_checkpoint",
    "drop_path_rate", "freeze_vit", "precision", "legacy_generate_context", "device",
    "build_vision", "llm_layers",  # which parts are built changes which features exist, not their values
)
WEIGHT_KEYS = ("llama_model", "vit_checkpoint", "ckpt")
LLAMA_FILES = (".safetensors", ".bin", ".json", ".model")  # weights, configs, the tokenizer
STREAMS = ("facemae", "videomae", "audio")  # rows of video_features, in order
STREAM_DIRS = {"facemae": "facemae_dir", "videomae": "videomae_dir", "audio": "audio_dir"}


def weight_identity(model_cfg: Mapping) -> dict:
    """Each weight path of the model config by content; a folder (``llama_model``) file by file."""
    weights = {}
    for key in WEIGHT_KEYS:
        path = model_cfg.get(key) or ""
        if not path:
            weights[key] = None
            continue
        path = Path(path).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in LLAMA_FILES)
            weights[key] = {p.name: file_identity(p) for p in files}
        else:
            weights[key] = file_identity(path)
    return weights


def model_identity(model_cfg: Mapping) -> dict:
    return {key: value for key, value in model_cfg.items() if key not in NOT_IDENTITY}


def read_extraction_record(folder: Path) -> dict | None:
    record = folder / EXTRACTION_RECORD
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except ValueError:
        return None


def dump_identity(manifest: Mapping) -> dict:
    """The identity of a dump's features, from its ``manifest.json`` and the files it names."""
    fingerprint = manifest["fingerprint"]
    model_cfg, dataset_cfg = fingerprint["model"], fingerprint["dataset"]
    info = dataset_cfg.get("build_info", {})
    feature_root = Path(info.get("feature_root") or "")
    encoders = {}
    for stream in STREAMS[: model_cfg.get("num_video_streams", 2)]:
        folder = info.get(STREAM_DIRS[stream]) or ""
        encoders[stream] = read_extraction_record(feature_root / folder) if folder and info.get("feature_root") else None
    annotation = Path(info.get("annotation") or "")
    prepare = read_extraction_record(annotation.parent) if info.get("annotation") else None
    return {
        "model": model_identity(model_cfg),
        "weights": weight_identity(model_cfg),
        "seed": fingerprint.get("seed"),
        "encoders": encoders,
        "prepare": prepare,
        "instruction": manifest.get("instruction", dataset_cfg.get("instruction")),
        "image_processor": dataset_cfg.get("vis_processor", {}).get("eval"),
        "positions": manifest.get("llama_feature_positions", []),
        "layers": manifest.get("llama_feature_layers", [-1]),
        "pools": manifest.get("llama_feature_pools", []),
        "num_video_streams": model_cfg.get("num_video_streams", 2),
        "dtype": manifest.get("dtype"),
    }


def needed_identity(identity: Mapping, streams: Iterable[str], vision: bool, llm: bool) -> dict:
    """The part of ``identity`` that features from these parts depend on.

    ``streams``: the encoder streams used (``facemae``...); ``vision``: the image tokens;
    ``llm``: LLM states, which read every stream, the image and the prompt.  The projectors
    come from ``ckpt``; without one they are drawn from ``seed`` after the vision encoder and
    the LLM are built, so then those files count too.
    """
    streams = list(STREAMS[: identity["num_video_streams"]]) if llm else list(streams)
    vision = vision or llm
    model = identity["model"]
    weights = identity["weights"]
    needed = {
        "dtype": identity["dtype"],
        "model": {key: model.get(key) for key in ("arch", "model_type", "video_feature_dim", "image_token_merge")},
        "weights": {"ckpt": weights.get("ckpt")},
        "encoders": {stream: identity["encoders"].get(stream) for stream in streams},
    }
    if weights.get("ckpt") is None:  # random projectors: reproduced only by the same seed and build
        needed["seed"] = identity["seed"]
        needed["weights"] = dict(weights)
        needed["model"] = dict(model)
    if vision:
        needed["weights"]["vit_checkpoint"] = weights.get("vit_checkpoint")
        needed["image_processor"] = identity["image_processor"]
        needed["model"].update({key: model.get(key) for key in ("vit_model", "image_size")})
    if llm:
        needed["weights"]["llama_model"] = weights.get("llama_model")
        needed["model"] = dict(model)
        for key in ("instruction", "positions", "layers", "pools", "num_video_streams"):
            needed[key] = identity[key]
    return needed


def first_difference(recorded, current, prefix: str = "") -> str | None:
    """The dotted key of the first value that differs (in the recorded order), or None."""
    if isinstance(recorded, Mapping) and isinstance(current, Mapping):
        for key in [*recorded, *(k for k in current if k not in recorded)]:
            found = first_difference(recorded.get(key), current.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if recorded == current else prefix.rstrip(".")
