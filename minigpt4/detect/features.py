"""The parts a detector's features need, built once, and a window's features through them.

A detector's set names what it reads (``needs`` in ``detector.json``): encoder streams
(FaceMAE, VideoMAE, audio), the image tokens, LLM layers.  Only those are built: a FaceMAE set
builds the FaceMAE encoder and the projectors, never EVA or the LLM; ``image_mean`` adds EVA;
``llama/L{l}/...`` builds the LLM's first l+1 decoder layers (all of them for the last layer,
read after the final norm) and runs it up to the last position it needs.

How each part was made for the training dump is recorded in the detector (its ``identity``):
the model config, the encoders' names and settings, the face pipeline.  The parts are built
from those records, with the weights found where this config says; :meth:`FeatureParts.check_identity`
then compares what was built with the record (weights by content, not path) and refuses the
first difference, before any recording is opened.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from minigpt4.common.config import ConfigError
from minigpt4.common.registry import registry
from minigpt4.datasets.frames import ClipReadError
from minigpt4.features.audio_vectors import audio_settings, audio_vector
from minigpt4.features.clip_vectors import face_mae_settings, face_mae_vector, video_mae_settings, video_mae_vector
from minigpt4.features.encoder_extract import build_encoder
from minigpt4.features.writer import fingerprint_differences
from minigpt4.features.identity import STREAMS, model_identity, needed_identity, first_difference, weight_identity
from minigpt4.models.face_mae import FaceMAE
from minigpt4.models.hubert_encoder import HubertAudioEncoder
from minigpt4.models.base_model import llm_config
from minigpt4.models.minigpt_base import decoder_layers_needed
from minigpt4.models.video_mae import VideoMAE
from minigpt4.prepare.config import FACE_SECTIONS, PrepareConfig, face_pipeline_config, written_settings
from minigpt4.prepare.faces import ClipFaces
from minigpt4.probe.artifact import Detector
from minigpt4.runners.common import model_config_for, seed_everything, select_device

logger = logging.getLogger(__name__)

STREAM_KINDS = {f"{stream}_projected_features": index for index, stream in enumerate(STREAMS)}


class DetectorMismatchError(ValueError):
    """The detector was fitted on features made otherwise than the configured parts make them."""


def face_settings(faces: PrepareConfig) -> dict:
    return written_settings(faces)


class FeatureParts:
    """The encoders and model parts of one detector, and its leaf features for a window."""

    def __init__(self, detector: Detector, cfg):
        self.detector = detector
        self.identity = detector.info["identity"]
        self.needs = detector.info["needs"]
        self.device = select_device(cfg.device)
        recorded_faces = {key: value for key, value in (self.identity.get("prepare") or {}).items() if key in FACE_SECTIONS}
        self.faces = face_pipeline_config(recorded_faces, cfg.faces, where="detect.faces")
        if recorded_faces:
            trained = written_settings(face_pipeline_config(recorded_faces, where="the detector's face pipeline"))
            changed = fingerprint_differences(trained, written_settings(self.faces))
            if changed:  # allowed (another frame rate for speed, say), but the features are not the training ones
                logger.warning("detect.faces: the face pipeline differs from the one the detector's clips were prepared "
                               "with in %s; its estimates may differ from what it was validated on", ", ".join(changed))
        self.leaves = [fs for fs in detector.sets.values() if fs.kind not in ("concat", "context", "sequence")]
        self.encoders, self.encoder_settings = {}, {}
        self.model_cfg, self.model = self.model_config(cfg), None
        self.check_identity()  # the weight files by content, before anything is built from them
        for stream in self.needs["streams"]:
            self._build_encoder(stream, cfg)
        self.model = self._build_model()
        processor = self.identity.get("image_processor")
        self.image_processor = (
            registry.get("processor", processor["name"]).from_config(OmegaConf.create(processor))
            if self.needs["vision"] or self.needs["llm"] else None
        )
        unused = [stream for stream in STREAMS[: self.identity["num_video_streams"]] if stream not in self.encoders]
        logger.info("detector %s: encoders built: %s; not built: %s (the model's own line says which of its parts)",
                    detector.info["set"], ", ".join(self.encoders) or "none", ", ".join(unused) or "none")

    # ---- building ------------------------------------------------------------------------------
    def _recorded_encoder(self, stream: str) -> dict:
        recorded = self.identity["encoders"].get(stream)
        if recorded is None:
            raise DetectorMismatchError(
                f"detector {self.detector.info['set']}: it does not record how its {stream} vectors were made (no "
                "extraction.json beside them when it was exported); export it from a dump of vectors made by this project's "
                "extraction commands"
            )
        return recorded

    def _build_encoder(self, stream: str, cfg) -> None:
        recorded = self._recorded_encoder(stream)
        paths = {"facemae": cfg.encoders.face_mae, "videomae": cfg.encoders.video_mae, "audio": cfg.encoders.audio}
        key = {"facemae": "face_mae", "videomae": "video_mae", "audio": "audio"}[stream]
        if not paths[stream]:
            raise ConfigError(f"detect.encoders.{key}: the detector reads {stream} vectors; name the weights to make them with")
        trust = cfg.encoders.trust_checkpoint
        if stream == "facemae":
            model = build_encoder(recorded["model"], FaceMAE, paths[stream], trust, global_pool=recorded["global_pool"],
                                  fresh_fc_norm=cfg.encoders.fresh_fc_norm)
            settings = face_mae_settings(model, feature_level=recorded["feature_level"], max_frames=recorded["max_frames"],
                                         source={"model": recorded["model"]})
        elif stream == "videomae":
            model = build_encoder(recorded["model"], VideoMAE, paths[stream], trust)
            settings = video_mae_settings(model, feature_level=recorded["feature_level"], source={"model": recorded["model"]})
        else:
            window_seconds = recorded["window_samples"] / recorded["sample_rate"]
            model = HubertAudioEncoder.from_pretrained(paths[stream], layer=recorded["layer"], window_seconds=window_seconds,
                                                       trust_checkpoint=trust)
            settings = audio_settings(model, feature_level=recorded["feature_level"])
        self.encoders[stream] = model.to(self.device).eval()
        self.encoder_settings[stream] = settings

    def model_config(self, cfg) -> dict:
        """The dump's model config with this config's ``model`` overrides (where the weights are)."""
        recorded = self.detector.info["model_config"]
        unknown = [key for key in cfg.model if key not in recorded]
        if unknown:
            raise ConfigError(f"detect.model: unknown key(s) {unknown}; the detector's model config has {', '.join(recorded)}")
        return {**recorded, **cfg.model}

    def _build_model(self):
        model_cfg = dict(self.model_cfg)
        depth = llm_config(model_cfg["llama_model"]).num_hidden_layers if self.needs["llm"] else 0
        layers = decoder_layers_needed(self.needs["llm_layers"], depth) if self.needs["llm"] else 0
        model_cfg |= {"build_vision": self.needs["vision"] or self.needs["llm"], "llm_layers": layers,
                      "llama_feature_layers": self.needs["llm_layers"] or [-1]}
        if not model_cfg.get("ckpt"):  # projectors drawn from the seed after the whole model: build it whole
            logger.warning("model.ckpt is empty: the projectors are drawn at random from seed %s after the vision encoder and "
                           "the LLM, as the dump drew them, so both are built", self.identity["seed"])
            model_cfg |= {"build_vision": True, "llm_layers": -1}
            seed_everything(self.identity["seed"])
        config = model_config_for(OmegaConf.create(model_cfg), self.device)
        return registry.get("model", model_cfg["arch"]).from_config(config).to(self.device).eval()

    # ---- identity --------------------------------------------------------------------------------
    def current_identity(self) -> dict:
        """This config's parts described as :func:`~minigpt4.features.identity.dump_identity`
        describes a dump; before the parts are built, the recorded encoders and positions stand
        in for theirs (only the files and the config are compared then)."""
        model_cfg = dict(self.model_cfg)
        identity = {
            "model": model_identity(model_cfg),
            "weights": weight_identity(model_cfg),
            "seed": self.identity["seed"],
            "encoders": {
                stream: self.encoder_settings.get(stream, self.identity["encoders"].get(stream))
                for stream in STREAMS[: self.identity["num_video_streams"]]
            },
            "instruction": self.identity["instruction"],
            "image_processor": self.identity["image_processor"],
            "positions": self.identity["positions"],
            "layers": self.identity["layers"],
            "pools": self.identity["pools"],
            "num_video_streams": model_cfg.get("num_video_streams", 2),
            "dtype": self.identity["dtype"],
        }
        if self.needs["llm"] and self.model is not None:
            instruction = self.identity["instruction"]
            resolved = self.model.feature_positions(instruction)
            identity["positions"] = [{"name": p.name, "index": p.index, "token": p.token} for p in resolved]
        return identity

    def check_identity(self) -> None:
        """Refuse, naming the first differing key, when the parts would make other features."""
        needs = self.needs
        recorded = needed_identity(self.identity, needs["streams"], needs["vision"], needs["llm"])
        current = needed_identity(self.current_identity(), needs["streams"], needs["vision"], needs["llm"])
        key = first_difference(recorded, current)
        if key is not None:
            raise DetectorMismatchError(
                f"detector {self.detector.info['set']}: its features were made with another {key} than the configured "
                f"model and encoders give ({_short(_select(recorded, key))} vs {_short(_select(current, key))}); refusing "
                "before any video is read"
            )

    # ---- a window's features ----------------------------------------------------------------------
    @property
    def audio_rate(self) -> int | None:
        """The sample rate the audio encoder reads (None: the set reads no sound)."""
        return self.encoders["audio"].sample_rate if "audio" in self.encoders else None

    def features(self, faces: ClipFaces, audio, clock) -> dict[str, np.ndarray] | None:
        """The leaf sets' vectors (D,) of one window with a face; ``audio()`` gives its sound
        (None: the set reads sound and the window holds too little)."""
        started = time.perf_counter()
        vectors = {}
        for stream, encoder in self.encoders.items():
            recorded = self.identity["encoders"][stream]
            if stream == "facemae":
                vectors[stream] = face_mae_vector(encoder, faces.faces, feature_level=recorded["feature_level"],
                                                  max_frames=recorded["max_frames"], device=self.device)
            elif stream == "videomae":
                vectors[stream] = video_mae_vector(encoder, faces.faces, device=self.device)
            else:
                decoding = time.perf_counter()
                try:
                    waveform = audio()
                except ClipReadError as exc:
                    logger.info("a window without sound gets no estimate: %s", exc)
                    return None
                clock.seconds["decode"] += time.perf_counter() - decoding
                if waveform is None or len(waveform) < encoder.min_samples:
                    return None
                vectors[stream] = audio_vector(encoder, waveform, feature_level=recorded["feature_level"], device=self.device)
        started = clock.add("encoders", started)
        leaves = self._leaf_vectors(faces, vectors)
        clock.add("model", started)
        return leaves

    def as_dumped(self, values: torch.Tensor) -> np.ndarray:
        """Values as a dump of the detector's dtype stores them, back in float32: a window then
        gives exactly the numbers its row in such a dump would."""
        return values.float().cpu().numpy().astype(self.identity["dtype"] or "float32").astype(np.float32)

    @torch.inference_mode()
    def _leaf_vectors(self, faces: ClipFaces, vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        model, out = self.model, {}
        dim = self.identity["model"]["video_feature_dim"]
        rows = [vectors.get(stream, np.zeros(dim, np.float32)) for stream in STREAMS]  # zeros: a stream not read
        video_features = torch.from_numpy(np.stack(rows).astype(np.float32))[None].to(self.device)  # [1, 3, D]
        image = None
        if self.image_processor is not None:
            image = self.image_processor(Image.fromarray(faces.peak_image))[None].to(self.device)
        llm = [fs for fs in self.leaves if fs.kind in ("llama_features", "llama_pooled_features")]
        if llm:
            samples = {"image": image, "video_features": video_features, "instruction_input": [self.identity["instruction"]]}
            layers = self.needs["llm_layers"]
            clip = model.extract_features(samples, layers=layers, pools=self.identity["pools"] or None)
            states = clip.llama_features if len(layers) > 1 else clip.llama_features[:, None]  # [1, L, P, H]
            for fs in llm:
                li = layers.index(fs.layer)
                source = states if fs.kind == "llama_features" else clip.llama_pooled_features
                out[fs.name] = self.as_dumped(source[0, li, fs.index[-1]])
        for fs in self.leaves:
            if fs.kind in STREAM_KINDS:
                k = STREAM_KINDS[fs.kind]
                out[fs.name] = self.as_dumped(model.project_stream(k, video_features[:, k])[0])
            elif fs.kind == "image_projected_features":  # the probe's image_mean: the mean of the dumped tokens
                out[fs.name] = self.as_dumped(model.project_image(image)[0]).mean(axis=1, dtype=np.float32)[0]
        return out


def _select(values, dotted: str):
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
