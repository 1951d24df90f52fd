"""What the detect tests share: detectors exported from the demo's session dump, and configs.

The demo chain (conftest ``demo_chain``) prepares the generated sessions; here they are dumped
once more in float32 with LLM layers 0 and -1, probed, and several sets exported, each of a
kind the detect job computes differently (an encoder stream, the image, an LLM layer that
needs one decoder layer and one that needs them all, a context set, a GRU, a concatenation).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from minigpt4.detect.config import DetectConfig, EncodersConfig, InputConfig, LiveConfig, WindowConfig
from minigpt4.probe.config import ContextConfig, GRUConfig, ProbeConfig
from minigpt4.probe.export import export_detectors, safe_name
from minigpt4.probe.run import run_probe

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = (
    "facemae", "audio", "image_mean", "llama/L0/image:2", "llama/L-1/image:3", "ctx2/slope/facemae", "gru2/facemae",
    "facemae+videomae",
)


@pytest.fixture(scope="session")
def session_detectors(demo_chain, tiny_assets, tmp_path_factory):
    """(the probe's result, {set name: detector folder}, the float32 dump, the prepared root)."""
    import eval_emotion

    prepared, _ = demo_chain
    root = tmp_path_factory.mktemp("detectors")
    dump = root / "dump32"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINY_ASSETS", str(tiny_assets["llama_dir"].parent))
        patch.setenv("DEMO_PREPARED", str(prepared))
        patch.delenv("DEMO_CKPT", raising=False)
        eval_emotion.main([
            "--cfg-path", str(ROOT / "eval_configs" / "demo_prepared.yaml"), "--dataset", "hcmw_caption", "--options",
            "run.feature_dtype=float32", "model.llama_feature_layers=[0,-1]", f"run.output_dir={dump}",
        ])
    cfg = ProbeConfig(
        dump_dir=str(dump), annotation=str(prepared / "annotations.csv"), output_dir=str(root / "probe"), c_grid=[0.1, 1.0],
        permutations=0, n_jobs=1, plots=False, concatenations=[["facemae", "videomae"]],
        context=ContextConfig(windows=[2], stats=["slope"], sets=["facemae"]), sequence_model="gru",
        gru=GRUConfig(epochs=[10], weight_decay=[0.01], permutations=0), export=list(EXPORTED),
    )
    result = run_probe(cfg, progress=False)
    folders = export_detectors(result, Path(cfg.output_dir))
    return result, {name: root / "probe" / "detector" / safe_name(name) for name in EXPORTED}, dump, prepared


def one_session_segments(tiny_assets, folder: Path, video: str = "session_0.mp4") -> Path:
    """The demo segments of one session video (five windows): a quicker input than all four."""
    with open(tiny_assets["sessions_segments"], newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["video"] == video]
    path = folder / f"segments_{Path(video).stem}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def detect_config(detector: Path, tiny_assets, out: Path, **changes) -> DetectConfig:
    """A detect config for the tiny weights, one thread (the demo prepared its clips so)."""
    assets = tiny_assets["llama_dir"].parent
    cfg = DetectConfig(
        detector=str(detector),
        input=InputConfig(path=str(assets / "sessions" / "videos")),
        output_dir=str(out),
        window=WindowConfig(length_s=1.6, hop_s=0.8, short_last="keep"),
        encoders=EncodersConfig(
            face_mae=str(tiny_assets["face_mae_ckpt"]), video_mae=str(tiny_assets["video_mae_ckpt"]),
            audio=str(tiny_assets["hubert_dir"]),
        ),
        threads=1,
        progress=False,
        live=LiveConfig(behind="queue", stall_s=3.0, plot_every_s=1.0),
    )
    for key, value in changes.items():
        target = cfg
        *path, last = key.split("__")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return cfg


def read_timeline(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def subprocess_env(tiny_assets) -> dict[str, str]:
    return {**os.environ, "TINY_ASSETS": str(tiny_assets["llama_dir"].parent), "PYTHONUNBUFFERED": "1"}
