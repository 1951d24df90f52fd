"""Bad inputs of a model built with only some parts (``model.build_vision``,
``model.llm_layers``): each ends as one line naming the key or what is missing, before any
output; a checkpoint's tensor for a part the model has is never skipped."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from minigpt4.common.checkpoint_io import CheckpointError
from minigpt4.common.config import ConfigError
from minigpt4.models.minigpt_base import decoder_layers_needed
from test_feature_dump import demo_env, dump  # noqa: F401
from test_model_parts import DEEP, LORA_PREFIX, POSITIONS, checkpoint, run_config, samples, truncated  # noqa: F401
from tiny_model import HCMW_INSTRUCTION, HIDDEN, build_model


def test_a_stream_the_model_does_not_read_is_refused(tiny_assets, samples):
    model = build_model(tiny_assets, build_vision=False, llm_layers=0)
    with pytest.raises(ValueError, match=r"^stream 2 is not one of this model's 2 streams \(model\.num_video_streams\)$"):
        model.project_stream(2, samples["video_features"][:, 2])


def test_what_a_model_without_vision_or_llm_cannot_do_is_one_line(tiny_assets, samples):
    model = build_model(tiny_assets, build_vision=False, llm_layers=0)
    with pytest.raises(ValueError, match=r"^encoding images needs the vision encoder, but this model was built without it "
                                         r"\(model\.build_vision: false\)$"):
        model.project_image(samples["image"])
    with pytest.raises(ValueError, match=r"^model\.llama_feature_positions needs the LLM's first decoder layer, but this "
                                         r"model was built without the LLM \(model\.llm_layers: 0\)$"):
        model.feature_positions(HCMW_INSTRUCTION)


@pytest.mark.parametrize("layers", [[-1], [1], [0, 1]])
def test_truncated_model_refuses_layers_it_does_not_hold(truncated, samples, layers):
    visual = truncated.encode_visual(samples["image"], samples["video_features"])
    with pytest.raises(ValueError, match=rf"^model\.llama_feature_layers {re.escape(str(layers))} needs the whole LLM, but "
                                         r"this model was built with 1 of its 2 decoder layers \(model\.llm_layers: 1\)$"):
        truncated.llama_states(visual, samples["instruction_input"], POSITIONS, layers)


def test_what_needs_the_whole_llm_stops_on_a_truncated_model(truncated, samples):
    with_answers = {**samples, "answer": ["mind wandering"] * 3}
    for run, what in (
        (lambda: truncated(with_answers), "the training loss"),
        (lambda: truncated.generate(samples, max_new_tokens=2), "generation"),
        (lambda: truncated.score_candidates(samples, ["mind wandering"]), "scoring answers"),
        (lambda: truncated.extract_features(samples, POSITIONS, full_sequence=True), "full_sequence"),
    ):
        with pytest.raises(ValueError, match=rf"^{what} needs the whole LLM, but this model was built with 1 of its 2"):
            run()


def test_truncated_model_checkpoint_rules_stay_strict(tiny_assets, truncated, checkpoint, tmp_path):
    """Only tensors of layers not built are skipped; a built layer's LoRA is still required and checked."""
    missing = {n: t for n, t in checkpoint.items() if n != f"{LORA_PREFIX}.0.self_attn.q_proj.lora_A.weight"}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing from the file: .*layers\.0\.self_attn\.q_proj\.lora_A"):
        copy.deepcopy(truncated).load_released_checkpoint(str(tmp_path / "missing.pth"))
    beyond = checkpoint | {f"{LORA_PREFIX}.5.self_attn.q_proj.lora_A.weight": torch.zeros(8, HIDDEN)}  # no layer 5 at all
    torch.save({"model": beyond}, tmp_path / "beyond.pth")
    with pytest.raises(CheckpointError, match=r"not used by the model: .*layers\.5\.self_attn\.q_proj\.lora_A"):
        copy.deepcopy(truncated).load_released_checkpoint(str(tmp_path / "beyond.pth"))


def test_decoder_layers_needed_refuses_layers_beyond_the_llm():
    with pytest.raises(ValueError, match=r"model\.llama_feature_layers \[4\] out of range: the LLM has 4 decoder layers"):
        decoder_layers_needed([4], DEEP)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"llm_layers": 3}, r"^model\.llm_layers: 3 is not a number of decoder layers from 0 to 2 \(the LLM's depth\), "
                            r"or -1 for all of them$"),
        ({"llm_layers": 1}, r"^model\.llama_feature_layers \[-1\] need the LLM's first 2 decoder layers but "
                            r"model\.llm_layers is 1; name layers below 1 or build more$"),
    ],
)
def test_bad_llm_layers_stop_the_build_in_one_line(tiny_assets, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_model(tiny_assets, **overrides)


@pytest.mark.parametrize(
    "written, message",
    [("two", r"expected int \(default -1\), got str 'two'"), ("true", r"expected int \(default -1\), got bool True"),
     ("-2", r"must be at least -1, got -2")],
)
def test_llm_layers_of_the_wrong_kind_are_refused_by_config_validation(tiny_assets, tmp_path, written, message):
    with pytest.raises(ConfigError, match=rf"^model\.llm_layers: {message}$"):
        run_config(tiny_assets, tmp_path, f"llm_layers: {written}")


@pytest.mark.parametrize(
    "option, message",
    [("model.build_vision=false", "model.build_vision: false builds no vision encoder"),
     ("model.llm_layers=0", "model.llm_layers: 0 builds no LLM")],
)
def test_a_feature_dump_of_a_partial_model_stops_before_any_output(demo_env, tmp_path, option, message):
    out = tmp_path / "features"
    with pytest.raises(ConfigError, match=rf"^{message}, but the LLM states at model\.llama_feature_positions need the "
                                          r"image tokens and the LLM; build both for a feature dump$"):
        dump(out, option)
    assert not out.exists()
