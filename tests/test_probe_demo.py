"""The demo's dump with several layers and pools, and the probe on it (SPEC sections 7, 12).

One dump (``eval_configs/demo.yaml`` with ``model.llama_feature_layers`` and
``model.llama_feature_pools`` set) serves both: its values are checked against Hugging Face's
own ``hidden_states`` of a hand-built input, and the probe (``eval_configs/demo_probe.yaml``)
must find the label the demo's FaceMAE / VideoMAE vectors carry by construction.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minigpt4.probe.__main__ import main as probe_main
from minigpt4.probe.config import load_config
from minigpt4.probe.run import ranked, run_probe
from minigpt4.tasks.base_task import BaseTask
from test_feature_dump import N_CLIPS, ROOT, clip_inputs, demo_env, dump, reference_sequence, tokenizer_file  # noqa: F401
from test_feature_layers import POOLS, span_means

LAYERS = [0, -1]
POSITIONS = [6, 7, 8, 9]
HIDDEN = 64


@pytest.fixture(scope="module")
def layered_dump(demo_env, tmp_path_factory):
    """The demo dump with two layers and three pools (float32), and the model that made it."""
    out, built = tmp_path_factory.mktemp("layered") / "features", []
    build = BaseTask.build_model
    with pytest.MonkeyPatch.context() as patch:  # keep the dump's own model for the reference
        patch.setattr(BaseTask, "build_model", staticmethod(lambda cfg: built.append(build(cfg)) or built[-1]))
        dump(
            out,
            "model.llama_feature_layers=[0,-1]",
            "model.llama_feature_pools=[image,streams,prompt]",
            "run.feature_dtype=float32",
        )
    (model,) = built
    return out, model


def test_dump_writes_layers_and_pools_and_lists_them_in_the_manifest(layered_dump, clip_inputs, tokenizer_file):
    out, model = layered_dump
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["llama_feature_layers"] == LAYERS
    assert manifest["llama_feature_pools"] == POOLS
    assert manifest["files"]["llama_features"]["shape"] == [N_CLIPS, 2, len(POSITIONS), HIDDEN]
    assert manifest["files"]["llama_pooled_features"]["shape"] == [N_CLIPS, 2, 3, HIDDEN]

    with torch.no_grad():
        embeds, names = reference_sequence(
            model, tokenizer_file, clip_inputs["image"][:3], clip_inputs["video_features"][:3], model.layout.chat_template
        )
        states = model.llama_model(inputs_embeds=embeds, output_hidden_states=True).hidden_states
    assert manifest["llama_forward_tokens"] == len(names) - 1  # the prompt pool needs the whole prompt
    features = np.load(out / "llama_features.npy", mmap_mode="r")
    pooled = np.load(out / "llama_pooled_features.npy", mmap_mode="r")
    for index, layer in enumerate(LAYERS):
        expected = states[layer + 1 if layer >= 0 else layer][:, POSITIONS]
        np.testing.assert_allclose(features[:3, index], expected.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(pooled[:3, index], span_means(states, names, layer).numpy(), atol=1e-4, rtol=0)


def test_probe_on_the_demo_dump_finds_the_signal_the_demo_carries(layered_dump, demo_env, tmp_path, capsys):
    out, _ = layered_dump
    options = [
        f"probe.dump_dir={out}",
        f"probe.annotation={demo_env['hcmw_csv']}",
        f"probe.output_dir={tmp_path / 'probe'}",
    ]
    every_set = [*options, "probe.permutations=2"]  # the chance reference is checked below, on fewer sets
    paths = probe_main(["--cfg-path", str(ROOT / "eval_configs" / "demo_probe.yaml"), "--options", *every_set])
    report = json.loads(paths["json"].read_text())
    best = report["sets"][0]
    assert best["name"] in {"facemae", "videomae", "audio", "facemae+videomae"}
    assert all(fold["metrics"]["balanced_accuracy"] >= 0.9 for fold in best["folds"])
    assert "llama/L-1/image:2" in {s["name"] for s in report["sets"]}  # positions by their manifest names
    assert (tmp_path / "probe" / "heatmap_layer_position.png").is_file()
    assert "| 1 | " + best["name"] in capsys.readouterr().out

    # the chance reference of the separable sets, with the demo's 20 permutations
    cfg = load_config(ROOT / "eval_configs" / "demo_probe.yaml", [*options, "probe.concatenations=[]"])
    assert cfg.permutations >= 20
    cfg.kinds = ["facemae_projected_features", "videomae_projected_features"]
    for result in ranked(run_probe(cfg, progress=False)):
        assert abs(result.chance_summary["balanced_accuracy"]["mean"] - 0.5) <= 0.15, result.feature_set.name
