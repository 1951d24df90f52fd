"""The MW detector (SPEC section 15): export, one code path with the dump, only the parts needed,
the identity check."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from detect_fixtures import EXPORTED, detect_config, one_session_segments, read_timeline
from minigpt4.detect.features import DetectorMismatchError, FeatureParts
from minigpt4.detect.run import detect
from minigpt4.probe.artifact import ARRAYS_NAME, CARD_NAME, JSON_NAME, RELIABILITY_PNG, Detector, platt, threshold_for
from minigpt4.probe.export import scores_on_dump
from minigpt4.probe.feature_sets import SetLoader


@pytest.mark.parametrize("name", EXPORTED)
def test_detect_on_the_prepared_segments_gives_the_detector_on_the_dump_rows(session_detectors, tiny_assets, tmp_path, name):
    """One code path: windows cut by the segments the demo prepared give, through prepare's face
    pipeline, the encoders and the model parts, the P(MW) of the dump's rows (fp32, 1e-5)."""
    _, folders, dump, prepared = session_detectors
    detector = Detector.load(folders[name])
    names, expected = scores_on_dump(detector, dump, prepared / "annotations.csv")
    segments = one_session_segments(tiny_assets, tmp_path)
    cfg = detect_config(folders[name], tiny_assets, tmp_path / "out", input__segments=str(segments))
    summary = detect(cfg)
    assert (summary.recordings, summary.windows, summary.windows_with_estimate) == (1, 5, 5)
    rows = read_timeline(tmp_path / "out" / "session_0" / "timeline.csv")
    by_clip = dict(zip(names, expected))
    clips = [f"s0_probe{k}" for k in range(5)]
    got = np.array([float(row["p_mw"]) for row in rows])
    np.testing.assert_allclose(got, [by_clip[clip] for clip in clips], rtol=0, atol=1e-5)
    calibrated = detector.calibrated(got)
    np.testing.assert_allclose([float(row["p_mw_calibrated"]) for row in rows], calibrated, atol=1e-7)
    assert [row["mw"] for row in rows] == [str(int(p >= detector.threshold)) for p in got]


def test_the_export_refit_is_scikit_learns_logistic_regression_at_the_recorded_c(session_detectors):
    result, folders, dump, prepared = session_detectors
    detector = Detector.load(folders["facemae"])
    assert sorted(p.name for p in folders["facemae"].iterdir()) == sorted([JSON_NAME, ARRAYS_NAME, CARD_NAME, RELIABILITY_PNG])
    info = detector.info
    assert info["model"]["kind"] == "logistic_regression" and info["model"]["C"] in (0.1, 1.0)
    X = SetLoader(result.dump, [s.feature_set for s in result.sets], result.labels)(detector.feature_set)
    scaler = StandardScaler().fit(X)
    reference = LogisticRegression(C=info["model"]["C"], class_weight="balanced", max_iter=info["model"]["max_iter"])
    reference.fit(scaler.transform(X), result.labels.y)
    names, scores = scores_on_dump(detector, dump, prepared / "annotations.csv")
    assert names == result.dump.names
    np.testing.assert_allclose(scores, reference.predict_proba(scaler.transform(X))[:, 1], rtol=0, atol=1e-6)
    # the threshold and the calibration come from the probe's out-of-fold scores
    probed = next(s for s in result.sets if s.feature_set.name == "facemae")
    y = result.labels.y
    assert info["threshold"] == threshold_for(probed.out_of_fold, y, "balanced_accuracy")
    assert info["calibration"] == platt(probed.out_of_fold, y)
    assert info["metrics"]["out_of_fold"] == probed.summary
    assert info["needs"] == {"streams": ["facemae"], "vision": False, "llm_layers": [], "llm": False}
    assert set(detector.arrays) == {"scaler.mean", "scaler.scale", "logreg.coef", "logreg.intercept"}


def test_the_detector_records_its_features_identity_by_content(session_detectors, tiny_assets):
    _, folders, _, _ = session_detectors
    identity = Detector.load(folders["llama/L0/image:2"]).info["identity"]
    ckpt = tiny_assets["emotion_llama_ckpt"]
    assert identity["weights"]["ckpt"] == {"size": ckpt.stat().st_size, "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}
    assert set(identity["weights"]["llama_model"]) >= {"config.json", "model.safetensors", "tokenizer.model"}
    assert "llama_model" not in identity["model"] and "ckpt" not in identity["model"]  # no paths
    assert [p["name"] for p in identity["positions"]] == ["image:2", "image:3", "image:4", "image:5"]
    assert identity["layers"] == [0, -1] and identity["dtype"] == "float32" and identity["num_video_streams"] == 3
    assert identity["encoders"]["facemae"]["model"] == "face_mae_tiny"
    assert identity["prepare"]["detector"]["detect_every"] == 2


# --------------------------------------------------------------------------- only what is needed


def count_parameters(module) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def test_a_facemae_detector_builds_no_eva_and_no_llm(session_detectors, tiny_assets, tmp_path, caplog):
    _, folders, _, _ = session_detectors
    with caplog.at_level("INFO"):
        parts = FeatureParts(Detector.load(folders["facemae"]), detect_config(folders["facemae"], tiny_assets, tmp_path))
    assert parts.model.visual_encoder is None and parts.model.llama_model is None
    assert count_parameters(parts.model) == sum(count_parameters(p) for p in (
        parts.model.llama_proj, parts.model.cls_tk_llama_proj, *parts.model.stream_projectors))
    assert list(parts.encoders) == ["facemae"]
    assert "model built: projectors; not built: vision encoder eva_clip_tiny, LLM" in caplog.text


def test_an_image_detector_builds_eva_but_no_llm(session_detectors, tiny_assets, tmp_path):
    _, folders, _, _ = session_detectors
    parts = FeatureParts(Detector.load(folders["image_mean"]), detect_config(folders["image_mean"], tiny_assets, tmp_path))
    assert count_parameters(parts.model.visual_encoder) > 0 and parts.model.llama_model is None and not parts.encoders


@pytest.mark.parametrize("name, layers_built", [("llama/L0/image:2", 1), ("llama/L-1/image:3", 2)])
def test_an_llm_detector_runs_the_decoder_layers_it_reads_and_no_more(session_detectors, tiny_assets, tmp_path, name, layers_built):
    _, folders, _, _ = session_detectors
    parts = FeatureParts(Detector.load(folders[name]), detect_config(folders[name], tiny_assets, tmp_path))
    decoder = parts.model.causal_lm.model
    assert len(decoder.layers) == layers_built and parts.model.llm_depth == 2
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: calls.append(1) if type(module) is type(decoder.layers[0]) else None
    )
    try:
        segments = one_session_segments(tiny_assets, tmp_path)
        detect(detect_config(folders[name], tiny_assets, tmp_path / "out", input__segments=str(segments)))
    finally:
        handle.remove()
    assert len(calls) == 5 * layers_built  # five windows, each through the built layers once


# --------------------------------------------------------------------------- identity


def refusal(cfg) -> str:
    with pytest.raises(DetectorMismatchError) as caught:
        detect(cfg)
    return str(caught.value)


def test_other_positions_are_refused_naming_them(session_detectors, tiny_assets, tmp_path):
    _, folders, _, _ = session_detectors
    cfg = detect_config(folders["llama/L0/image:2"], tiny_assets, tmp_path / "out",
                        model={"llama_feature_positions": ["image:3", "image:4", "image:5", "cls"]})
    message = refusal(cfg)
    assert message.startswith(
        "detector llama/L0/image:2: its features were made with another model.llama_feature_positions than the configured "
        "model and encoders give (['image:2', 'image:3', 'image:4', 'image:5'] vs ['image:3', 'image:4', 'image:5', 'cls'])"
    )
    assert message.endswith("refusing before any video is read") and not (tmp_path / "out").exists()


def test_a_weight_file_with_other_bytes_at_the_same_path_is_refused(session_detectors, tiny_assets, tmp_path):
    """The detector names the checkpoint's path; the file there now holds other numbers (same size)."""
    _, folders, _, _ = session_detectors
    ckpt = tmp_path / "emotion_llama.pth"
    data = bytearray(tiny_assets["emotion_llama_ckpt"].read_bytes())
    bias = torch.load(tiny_assets["emotion_llama_ckpt"], weights_only=True)["model"]["feats_llama_proj1.bias"]
    at = bytes(data).index(bias.numpy().tobytes())
    data[at] ^= 1  # one bit of the FaceMAE projector's bias
    ckpt.write_bytes(bytes(data))
    detector = tmp_path / "detector"
    shutil.copytree(folders["facemae"], detector)
    info = json.loads((detector / JSON_NAME).read_text())
    info["model_config"]["ckpt"] = str(ckpt)  # as if exported from a dump that read it from here
    (detector / JSON_NAME).write_text(json.dumps(info))
    message = refusal(detect_config(detector, tiny_assets, tmp_path / "out"))
    assert message.startswith("detector facemae: its features were made with another weights.ckpt.sha256 than the configured")
    assert not (tmp_path / "out").exists()


def test_facemae_vectors_from_another_checkpoint_are_refused(session_detectors, tiny_assets, tmp_path):
    _, folders, _, _ = session_detectors
    other = tmp_path / "face.pth"
    state = torch.load(tiny_assets["face_mae_ckpt"], weights_only=True)
    key = next(k for k in state["model"] if k.endswith("norm.weight"))
    state["model"][key] = state["model"][key] * 1.01
    torch.save(state, other)
    cfg = detect_config(folders["facemae"], tiny_assets, tmp_path / "out", encoders__face_mae=str(other))
    assert "another encoders.facemae.weights_sha256 than" in refusal(cfg)
    assert not (tmp_path / "out").exists()


def test_the_same_weights_at_another_path_are_accepted(session_detectors, tiny_assets, tmp_path):
    _, folders, _, _ = session_detectors
    moved = tmp_path / "moved"
    shutil.copytree(tiny_assets["llama_dir"], moved / "llama")
    shutil.copy(tiny_assets["emotion_llama_ckpt"], moved / "ckpt.pth")
    shutil.copy(tiny_assets["face_mae_ckpt"], moved / "face.pth")
    cfg = detect_config(folders["facemae"], tiny_assets, tmp_path / "out", input__segments=str(one_session_segments(tiny_assets, tmp_path)),
                        model={"llama_model": str(moved / "llama"), "ckpt": str(moved / "ckpt.pth")}, encoders__face_mae=str(moved / "face.pth"))
    assert detect(cfg).windows_with_estimate == 5
