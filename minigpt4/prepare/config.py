"""The prepare job's configuration as typed data: one definition gives defaults, types and
allowed values.

``load_prepare_config`` merges the user's YAML and ``--options a.b=c`` overrides over these
defaults; an unknown key, a value of the wrong type or a name outside a choice stops the run
with a message naming the key, before any video is opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Mapping, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from minigpt4.common.config import ConfigError


class TrackRule(str, Enum):
    LARGEST = "largest"  # the track with the largest mean box area
    MOST_PRESENT = "most_present"  # the track detected in the most frames (ties: the larger)


class PeakRule(str, Enum):
    EXPRESSION = "expression"  # the aligned face farthest from the clip's median face (peak.py)
    OPENFACE = "openface"  # the row of highest summed AU*_r intensity in an OpenFace CSV
    MIDDLE = "middle"
    FIRST = "first"


class PeakImage(str, Enum):
    FACE = "face"  # the aligned face crop of the peak frame
    FRAME = "frame"  # the whole upright video frame


@dataclass
class InputConfig:
    videos: str = "???"  # a folder of clip videos, or of session videos when `segments` is set
    segments: Optional[str] = None  # CSV: video, clip, start_s, end_s[, mw_label, test_fold_num]
    labels: Optional[str] = None  # for a folder of clips: CSV clip, mw_label, test_fold_num


@dataclass
class SamplingConfig:
    fps: Optional[float] = None  # frames per second kept from each clip; null keeps every frame


@dataclass
class DetectorConfig:
    name: str = "mtcnn"
    min_face_size: int = 40  # pixels, in the frame the detector sees
    min_score: float = 0.9  # boxes below this confidence are dropped
    max_side: Optional[int] = None  # frames are shrunk to this longer side for detection only
    detect_every: int = 1  # detect on every k-th kept frame; the track is interpolated between
    batch_size: int = 16  # frames per detector call
    device: str = "cpu"


@dataclass
class TrackConfig:
    rule: TrackRule = TrackRule.LARGEST
    iou_threshold: float = 0.3  # a box continues a track when it overlaps the track's last box this much
    # longest time (s) between two detections of the person that is bridged by interpolation;
    # a longer gap (the face turned away, covered, out of the picture) is left out of the output
    max_gap_s: float = 0.25
    min_coverage: float = 0.5  # share of detection frames that must show the face, else the clip is skipped


@dataclass
class AlignConfig:
    size: int = 224  # side of the aligned face: the 112-pixel 5-point template scaled to it


@dataclass
class PeakConfig:
    rule: PeakRule = PeakRule.EXPRESSION
    openface_dir: Optional[str] = None  # `openface` rule: <openface_dir>/<clip>.csv per clip
    image: PeakImage = PeakImage.FACE


@dataclass
class EncoderConfig:
    model: str  # registered encoder name
    dir: str  # folder under <output>/features, the name the hcmw dataset config expects
    checkpoint: Optional[str] = None  # the encoder's weight file; needed when encoders.run


@dataclass
class AudioEncoderConfig:
    model_dir: Optional[str] = None  # a Hugging Face HuBERT folder; null: no audio vectors
    dir: str = "HL-UTT"  # folder under <output>/features: the hcmw dataset's audio_dir


@dataclass
class EncodersConfig:
    run: bool = False  # run FaceMAE and VideoMAE (and HuBERT with audio.model_dir) on the prepared clips at the end
    face_mae: EncoderConfig = field(
        default_factory=lambda: EncoderConfig("face_mae_vit_large", "mae_340_UTT")
    )
    video_mae: EncoderConfig = field(
        default_factory=lambda: EncoderConfig("video_mae_vit_large", "maeV_199_UTT")
    )
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    device: str = "cpu"
    batch_size: int = 1
    trust_checkpoint: bool = False


@dataclass
class PrepareConfig:
    input: InputConfig = field(default_factory=InputConfig)
    output: str = "???"  # the data root written in the SPEC section 6 layout
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    peak: PeakConfig = field(default_factory=PeakConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    skip_bad: bool = False  # list unusable clips in skipped.tsv instead of stopping
    threads: Optional[int] = None  # torch CPU threads for detection and alignment; null: torch's setting
    progress: bool = True


def load_prepare_config(path: str | Path | None, options: Sequence[str] = ()) -> PrepareConfig:
    """Defaults <- the YAML at ``path`` <- ``options`` (``a.b=c``), checked, as a PrepareConfig."""
    try:
        cfg = OmegaConf.structured(PrepareConfig)
        if path is not None:
            if not Path(path).is_file():
                raise ConfigError(f"--cfg-path: config file not found: {path}")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(options)))
        prepare_cfg = OmegaConf.to_object(cfg)  # resolves ${oc.env:...}; raises on missing "???"
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"prepare config: {key + ': ' if key else ''}{_first_line(exc)}") from None
    _check_ranges(prepare_cfg)
    return prepare_cfg


FACE_SECTIONS = ("sampling", "detector", "track", "align", "peak")  # what the per-clip face pipeline reads


def face_pipeline_config(*sections: Mapping, where: str = "faces") -> PrepareConfig:
    """The per-clip face pipeline's settings for a caller that writes no data root (the detect
    job): the defaults <- each mapping of ``FACE_SECTIONS`` in turn, checked like a prepare
    config; an unknown section or key is a ConfigError naming ``where``."""
    try:
        cfg = OmegaConf.structured(PrepareConfig(input=InputConfig(videos=""), output=""))
        for section in sections:
            unknown = [key for key in section if key not in FACE_SECTIONS]
            if unknown:
                raise ConfigError(f"{where}: unknown section(s) {unknown}; the face pipeline reads {', '.join(FACE_SECTIONS)}")
            cfg = OmegaConf.merge(cfg, OmegaConf.create(dict(section)))
        prepare_cfg = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{where}: {key + ': ' if key else ''}{_first_line(exc)}") from None
    _check_ranges(prepare_cfg)
    return prepare_cfg


def _check_ranges(cfg: PrepareConfig) -> None:
    checks = {
        "sampling.fps": cfg.sampling.fps is None or cfg.sampling.fps > 0,
        "detector.min_face_size": cfg.detector.min_face_size >= 12,  # MTCNN's smallest window
        "detector.min_score": 0 <= cfg.detector.min_score <= 1,
        "detector.max_side": cfg.detector.max_side is None or cfg.detector.max_side >= 32,
        "detector.detect_every": cfg.detector.detect_every >= 1,
        "detector.batch_size": cfg.detector.batch_size >= 1,
        "threads": cfg.threads is None or cfg.threads >= 1,
        "track.iou_threshold": 0 < cfg.track.iou_threshold <= 1,
        "track.max_gap_s": cfg.track.max_gap_s >= 0,
        "track.min_coverage": 0 <= cfg.track.min_coverage <= 1,
        "align.size": cfg.align.size >= 16,
        "encoders.batch_size": cfg.encoders.batch_size >= 1,
    }
    for key, ok in checks.items():
        if not ok:
            value = OmegaConf.select(OmegaConf.structured(cfg), key)
            raise ConfigError(f"prepare config: {key} = {value} is out of range (see docs/prepare.md)")
    if cfg.peak.rule is PeakRule.OPENFACE and cfg.peak.openface_dir is None:
        raise ConfigError("prepare config: peak.rule = openface needs peak.openface_dir (a folder of <clip>.csv)")
    for name, encoder in (("face_mae", cfg.encoders.face_mae), ("video_mae", cfg.encoders.video_mae)):
        if cfg.encoders.run and encoder.checkpoint is None:
            raise ConfigError(f"prepare config: encoders.run = true needs encoders.{name}.checkpoint")


def written_settings(cfg: PrepareConfig) -> dict:
    """The settings that change what a clip's files hold: a rerun into the same output with any
    of them different is refused unless told to overwrite (run.py), so clips of two settings
    never mix.  Speed and reporting settings (batch sizes, devices, threads) are left out."""
    detector = cfg.detector
    return {
        "sampling": {"fps": cfg.sampling.fps},
        "detector": {
            "name": detector.name,
            "min_face_size": detector.min_face_size,
            "min_score": detector.min_score,
            "max_side": detector.max_side,
            "detect_every": detector.detect_every,
        },
        "track": {
            "rule": cfg.track.rule.value,
            "iou_threshold": cfg.track.iou_threshold,
            "max_gap_s": cfg.track.max_gap_s,
            "min_coverage": cfg.track.min_coverage,
        },
        "align": {"size": cfg.align.size},
        "peak": {"rule": cfg.peak.rule.value, "openface_dir": cfg.peak.openface_dir, "image": cfg.peak.image.value},
    }


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
