"""The hcmw feature dump end to end (SPEC section 7): ``eval_emotion.py --dataset hcmw_caption``
with ``eval_configs/demo.yaml`` on the tiny generated assets.

The command runs in-process (``eval_emotion.main``); the values are checked against
references computed here from the clip's own files and an independent full-sequence forward
of the LLM.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
from PIL import Image

from minigpt4.datasets.errors import DataError
from minigpt4.features.writer import FeatureOutputError, FeatureWriter
from minigpt4.models.prompt_layout import parse_positions
from minigpt4.processors.blip_processors import Blip2ImageEvalProcessor
from minigpt4.tasks.base_task import BaseTask
from minigpt4.tasks.feature_dump import FeatureDumpTask

from killed_dump import Killed, die_after_batches

ROOT = Path(__file__).resolve().parents[1]
DEMO_CFG = ROOT / "eval_configs" / "demo.yaml"
DATASET = "evaluation_datasets.hcmw_caption"

# The demo's sizes: 24 clips, hidden 64, a 224 image -> 16x16 patches / 4 = 64 image tokens.
N_CLIPS, HIDDEN, IMAGE_TOKENS, IMAGE_SIZE = 24, 64, 64, 224
# demo.yaml's positions, as eval_emotion.yaml's: image tokens 2..5 with no chat template, which
# are indices 6..9 when the prompt splits as LLaMA-2's (SPEC section 4: [BOS] + "▁< video >").
POSITION_NAMES = ["image:2", "image:3", "image:4", "image:5"]
POSITIONS = [6, 7, 8, 9]
EVAL_EMOTION_CFG = ROOT / "eval_configs" / "eval_emotion.yaml"
SHAPES = {
    "facemae_projected_features": (N_CLIPS, HIDDEN),
    "videomae_projected_features": (N_CLIPS, HIDDEN),
    "image_projected_features": (N_CLIPS, IMAGE_TOKENS, HIDDEN),
    "llama_features": (N_CLIPS, len(POSITIONS), HIDDEN),
    "audio_projected_features": (N_CLIPS, HIDDEN),  # demo.yaml reads three streams
}
KINDS = tuple(SHAPES)
INSTRUCTION = (
    "<video><VideoHere></video> <feature><FeatureHere></feature> [classification] "
    "Please classify the video into one of these categories: mind wandering or non-mind wandering. "
)
TOLERANCE = 1e-5  # float32 dump against float32 references


def _load_entry_point():
    spec = importlib.util.spec_from_file_location("eval_emotion", ROOT / "eval_emotion.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


eval_emotion = _load_entry_point()


def dump(out_dir: Path, *options: str, overwrite: bool = False) -> dict:
    """``python eval_emotion.py --cfg-path eval_configs/demo.yaml --dataset hcmw_caption ...``."""
    argv = ["--cfg-path", str(DEMO_CFG), "--dataset", "hcmw_caption"]
    argv += ["--overwrite"] if overwrite else []
    argv += ["--options", f"run.output_dir={out_dir}", *options]
    return eval_emotion.main(argv)["hcmw_caption"]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def load(folder: Path) -> dict[str, np.ndarray]:
    return {kind: np.load(folder / f"{kind}.npy") for kind in KINDS}


def csv_clips(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return [row["uuid"].removesuffix(".mp4") for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def demo_env(tiny_assets):
    """The demo config's environment: the tiny assets and their FaceMAE/VideoMAE folders."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINY_ASSETS", str(tiny_assets["llama_dir"].parent))
        patch.setenv("DEMO_FEATURES", str(tiny_assets["hcmw_feature_root"]))
        patch.delenv("DEMO_CKPT", raising=False)
        yield tiny_assets


@pytest.fixture(scope="module")
def clean_dump(demo_env, tmp_path_factory) -> Path:
    """The demo command with its defaults (float16, stacked)."""
    out = tmp_path_factory.mktemp("clean") / "features"
    dump(out)
    return out


@pytest.fixture(scope="module")
def float32_dump(demo_env, tmp_path_factory):
    """A float32 dump and the model that made it (kept from the run, not rebuilt)."""
    built = []
    build_model = BaseTask.build_model

    def build_and_keep(model_cfg):
        built.append(build_model(model_cfg))
        return built[-1]

    out = tmp_path_factory.mktemp("float32") / "features"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseTask, "build_model", staticmethod(build_and_keep))
        dump(out, "run.feature_dtype=float32")
    (model,) = built
    return out, model


@pytest.fixture(scope="module")
def clip_inputs(demo_env):
    """Each clip's inputs read straight from its files, in CSV order."""
    clips = csv_clips(demo_env["hcmw_csv"])
    process = Blip2ImageEvalProcessor(image_size=IMAGE_SIZE)
    images, vectors = [], []
    for clip in clips:
        with Image.open(demo_env["hcmw_image_root"] / clip / f"{clip}_peak_frame.png") as image:
            images.append(process(image.convert("RGB")))
        face = np.load(demo_env["hcmw_feature_root"] / "mae_340_UTT" / f"{clip}.npy")  # (D,)
        video = np.load(demo_env["hcmw_feature_root"] / "maeV_199_UTT" / f"{clip}.npy")  # (1, D)
        audio = np.load(demo_env["hcmw_feature_root"] / "HL-UTT" / f"{clip}.npy")  # (D,)
        vectors.append(np.stack([face.reshape(-1), video.reshape(-1), audio.reshape(-1)]))
    return {"clips": clips, "image": torch.stack(images), "video_features": torch.from_numpy(np.stack(vectors))}


@pytest.fixture(scope="module")
def tokenizer_file(demo_env) -> Path:
    return demo_env["llama_dir"] / "tokenizer.model"


def reference_sequence(model, tokenizer_file: Path, image: torch.Tensor, video_features: torch.Tensor, chat_template=False):
    """The dump's LLM input built by hand: ``[BOS] <video>`` + 64 image tokens +
    ``</video> <feature>`` + FaceMAE, VideoMAE, CLS + ``</feature> ...`` + ``</s>`` (answer ""),
    each text piece plain SentencePiece; ``chat_template`` wraps the instruction in
    ``[INST] ... [/INST]`` first.  Returns (embeds [B, T, H], token names)."""
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_file))
    text = f"[INST] {INSTRUCTION} [/INST]" if chat_template else INSTRUCTION
    before, rest = text.split("<VideoHere>")
    between, after = rest.split("<FeatureHere>")
    text_ids = [[sp.bos_id(), *sp.encode(before)], sp.encode(between), [*sp.encode(after), sp.eos_id()]]

    visual = model.encode_visual(image, video_features)
    embed = model.llama_model.get_input_embeddings()
    batch = image.shape[0]

    def text(ids):
        return embed(torch.tensor(ids)).expand(batch, -1, -1)

    slots = [visual.image, torch.cat([visual.streams, visual.cls], dim=1)]
    embeds = torch.cat([text(text_ids[0]), slots[0], text(text_ids[1]), slots[1], text(text_ids[2])], dim=1)
    names = [sp.id_to_piece(i) for i in text_ids[0]] + [f"<image {k}>" for k in range(IMAGE_TOKENS)]
    streams = [f"<stream {k}>" for k in range(model.num_video_streams)]
    names += [sp.id_to_piece(i) for i in text_ids[1]] + streams + ["<cls>"]
    names += [sp.id_to_piece(i) for i in text_ids[2]]
    return embeds, names


def full_forward_hidden(model, embeds: torch.Tensor) -> torch.Tensor:
    """Last hidden states (after the final norm, LoRA applied) of the whole sequence, by the
    LLM's own causal-LM forward -> [B, T, H]."""
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    output = model.llama_model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
    return output.hidden_states[-1]


# ------------------------------------------------------------------------------ files and layout


def test_demo_dump_writes_the_four_files_with_spec_shapes(clean_dump, demo_env):
    arrays = load(clean_dump)
    for kind, shape in SHAPES.items():
        assert arrays[kind].shape == shape, kind
        assert arrays[kind].dtype == np.float16, kind
        assert np.isfinite(arrays[kind]).all(), kind
    assert (clean_dump / "names.txt").read_text().splitlines() == csv_clips(demo_env["hcmw_csv"])
    assert not (clean_dump / ".rows_done.npy").exists()
    assert not (clean_dump / "skipped.tsv").exists()

    manifest = json.loads((clean_dump / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == N_CLIPS and manifest["skipped"] == 0
    assert manifest["dtype"] == "float16" and manifest["layout"] == "stacked"
    assert {kind: tuple(entry["shape"]) for kind, entry in manifest["files"].items()} == SHAPES
    assert [entry["name"] for entry in manifest["llama_feature_positions"]] == POSITION_NAMES
    assert [entry["index"] for entry in manifest["llama_feature_positions"]] == POSITIONS
    assert manifest["weights"]["llama_model"] == str(demo_env["llama_dir"])
    assert manifest["instruction"] == INSTRUCTION


def test_manifest_names_the_token_at_each_position(clean_dump, float32_dump, clip_inputs, tokenizer_file):
    _, model = float32_dump
    _, names = reference_sequence(model, tokenizer_file, clip_inputs["image"][:1], clip_inputs["video_features"][:1])
    manifest = json.loads((clean_dump / "manifest.json").read_text())
    image_indices = [names.index(f"<image {k}>") for k in range(2, 6)]
    assert image_indices == POSITIONS  # the tokenizer splits the prompt as LLaMA-2 does
    assert manifest["llama_feature_positions"] == [
        {"name": name, "index": i, "token": names[i]} for name, i in zip(POSITION_NAMES, image_indices)
    ]


def test_demo_dump_follows_the_layout_of_eval_emotion_yaml():
    """The shipped extraction config reproduces the original's dump; the demo uses the same layout."""
    from omegaconf import OmegaConf

    shipped, demo = OmegaConf.load(EVAL_EMOTION_CFG).model, OmegaConf.load(DEMO_CFG).model
    assert shipped.chat_template is False and list(shipped.llama_feature_positions) == POSITION_NAMES
    for key in ("chat_template", "llama_feature_positions"):
        assert demo[key] == shipped[key], key


def test_every_default_position_holds_an_image_token_and_features_differ_between_clips(clean_dump):
    manifest = json.loads((clean_dump / "manifest.json").read_text())
    assert [entry["token"] for entry in manifest["llama_feature_positions"]] == [f"<image {k}>" for k in range(2, 6)]
    features = load(clean_dump)["llama_features"].astype(np.float32)  # (N, P, H)
    distances = np.abs(features[:, None] - features[None]).max(axis=(2, 3))  # clip x clip
    assert (distances + np.eye(N_CLIPS) > 1e-3).all()  # no two clips share their features


def test_two_runs_write_byte_identical_files(clean_dump, tmp_path):
    dump(tmp_path / "again")
    assert folder_bytes(tmp_path / "again") == folder_bytes(clean_dump)


def test_float16_output_is_the_float32_output_cast(clean_dump, float32_dump):
    out32, _ = float32_dump
    half, single = load(clean_dump), load(out32)
    for kind in KINDS:
        assert single[kind].dtype == np.float32
        np.testing.assert_array_equal(half[kind], single[kind].astype(np.float16), err_msg=kind)


# ------------------------------------------------------------------------------ values


@torch.no_grad()
def test_stream_rows_are_the_projectors_applied_to_each_clips_vectors(float32_dump, clip_inputs):
    """Row i of facemae/videomae = feats_llama_proj1/2 of clip i's FaceMAE/VideoMAE .npy
    (the seed dumped VideoMAE and CLS under these names)."""
    out, model = float32_dump
    arrays = load(out)
    vectors = clip_inputs["video_features"]
    facemae = model.feats_llama_proj1(vectors[:, 0]).numpy()
    videomae = model.feats_llama_proj2(vectors[:, 1]).numpy()
    np.testing.assert_allclose(arrays["facemae_projected_features"], facemae, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(arrays["videomae_projected_features"], videomae, atol=TOLERANCE, rtol=0)
    assert not np.allclose(facemae, videomae, atol=1e-2)  # the two rows cannot stand in for each other


@torch.no_grad()
def test_three_stream_dump_holds_the_audio_projection_and_slot_order(float32_dump, clip_inputs):
    """With num_video_streams 3 the audio row is feats_llama_proj3 of clip i's audio .npy, and
    the feature slot holds FaceMAE, VideoMAE, audio, CLS in that order (SPEC section 4)."""
    out, model = float32_dump
    assert model.num_video_streams == 3
    vectors = clip_inputs["video_features"]
    audio = model.feats_llama_proj3(vectors[:, 2]).numpy()
    np.testing.assert_allclose(load(out)["audio_projected_features"], audio, atol=TOLERANCE, rtol=0)
    # the named positions keep their meaning: stream:2 is the audio token, right before CLS
    slots = model.layout.resolve_positions(INSTRUCTION, parse_positions(["stream:0", "stream:1", "stream:2", "cls"]))
    assert [slot.token for slot in slots] == ["<stream 0>", "<stream 1>", "<stream 2>", "<cls>"]
    assert [slot.index for slot in slots] == list(range(slots[0].index, slots[0].index + 4))
    samples = {"image": clip_inputs["image"][:2], "video_features": vectors[:2], "instruction_input": [INSTRUCTION] * 2}
    visual, layout = model.feature_layout(samples)
    embeds = model.embed_layout(layout, visual.sequence())  # the dump's LLM input
    projectors = [model.feats_llama_proj1, model.feats_llama_proj2, model.feats_llama_proj3]
    for slot, projector, k in zip(slots, projectors, range(3)):
        torch.testing.assert_close(embeds[:, slot.index], projector(vectors[:2, k]), rtol=0, atol=1e-6)
    torch.testing.assert_close(embeds[:, slots[3].index], visual.cls[:, 0], rtol=0, atol=1e-6)


@torch.no_grad()
def test_image_rows_are_the_projected_image_tokens_of_each_peak_frame(float32_dump, clip_inputs):
    out, model = float32_dump
    visual = model.encode_visual(clip_inputs["image"], clip_inputs["video_features"])
    assert visual.image.shape == (N_CLIPS, IMAGE_TOKENS, HIDDEN)
    np.testing.assert_allclose(load(out)["image_projected_features"], visual.image.numpy(), atol=TOLERANCE, rtol=0)


@torch.no_grad()
def test_llama_features_equal_the_full_sequence_forward_at_the_positions(float32_dump, clip_inputs, tokenizer_file):
    out, model = float32_dump
    embeds, names = reference_sequence(model, tokenizer_file, clip_inputs["image"], clip_inputs["video_features"])
    image_indices = [names.index(f"<image {k}>") for k in range(2, 6)]  # where image tokens 2..5 sit
    reference = full_forward_hidden(model, embeds)[:, image_indices]
    np.testing.assert_allclose(load(out)["llama_features"], reference.numpy(), atol=TOLERANCE, rtol=0)


@torch.no_grad()
def test_truncated_prefix_equals_the_full_forward_at_every_position(float32_dump, clip_inputs, tokenizer_file):
    """Every slot holds what it should (image tokens, then FaceMAE, VideoMAE, CLS) and the
    prefix path agrees with the full forward anywhere, not only at the default positions."""
    _, model = float32_dump
    image, video_features = clip_inputs["image"][:3], clip_inputs["video_features"][:3]
    embeds, _ = reference_sequence(model, tokenizer_file, image, video_features)
    reference = full_forward_hidden(model, embeds)
    samples = {"image": image, "video_features": video_features, "instruction_input": [INSTRUCTION] * 3}
    everywhere = list(range(embeds.shape[1]))
    for full_sequence in (False, True):
        features = model.extract_features(samples, positions=everywhere, full_sequence=full_sequence)
        torch.testing.assert_close(features.llama_features, reference, atol=TOLERANCE, rtol=0)


# ------------------------------------------------------------------------------ resume and refusal


def test_interrupted_run_resumes_and_ends_identical_to_an_uninterrupted_one(clean_dump, tmp_path, monkeypatch):
    out = tmp_path / "features"
    step = FeatureDumpTask.step
    die_after_batches(monkeypatch, 2)
    with pytest.raises(Killed):
        dump(out)
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    assert np.load(out / ".rows_done.npy").tolist() == [1] * 16 + [0] * 8  # 2 batches of 8

    rows_redone = []

    def step_and_record(model, batch, writer):
        rows_redone.extend(batch["row"])
        step(model, batch, writer)

    monkeypatch.setattr(FeatureDumpTask, "step", staticmethod(step_and_record))
    dump(out)
    assert rows_redone == list(range(16, 24))  # only what the killed run had not finished
    assert folder_bytes(out) == folder_bytes(clean_dump)


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("model.llama_feature_positions=[5,6]", "model.llama_feature_positions"),
        ("model.lora_alpha=32", "model.lora_alpha"),
        ("run.seed=7", "seed"),
        ("run.feature_dtype=float32", "dtype"),
    ],
    ids=["positions", "model-setting", "seed", "dtype"],
)
def test_rerun_with_other_settings_is_refused_naming_what_differs(clean_dump, tmp_path, option, named):
    out = tmp_path / "features"
    shutil.copytree(clean_dump, out)
    with pytest.raises(FeatureOutputError, match=rf"differs in: [^)]*\b{named}\b.*--overwrite"):
        dump(out, option)
    assert folder_bytes(out) == folder_bytes(clean_dump)


def test_overwrite_replaces_the_files_of_other_settings(clean_dump, tmp_path):
    out = tmp_path / "features"
    shutil.copytree(clean_dump, out)
    manifest = dump(out, "model.llama_feature_positions=[5,6]", overwrite=True)

    assert [entry["index"] for entry in manifest["llama_feature_positions"]] == [5, 6]
    clean, new = load(clean_dump), load(out)
    assert new["llama_features"].shape == (N_CLIPS, 2, HIDDEN)
    # position 6 of a 7-token prefix = position 6 of a 10-token prefix (causal), to float16 precision
    np.testing.assert_allclose(new["llama_features"][:, 1], clean["llama_features"][:, 0], rtol=2e-3, atol=2e-3)
    for kind in KINDS[:3]:
        np.testing.assert_array_equal(new[kind], clean[kind], err_msg=kind)


@pytest.mark.parametrize(
    "positions, problem",
    [("[image:2,prompt:999]", r"'prompt:999' is out of range: the input has \d+ prompt tokens \(prompt:0\.\.prompt:"),
     ("[image:2,500]", r"position 500 is beyond the input: indices are 0\.\.\d+ "),
     ("[image:64]", r"'image:64' is out of range: the input has 64 image tokens \(image:0\.\.image:63"),
     ("[image2]", "'image2' is not a position")],
    ids=["prompt-range", "index-range", "image-range", "malformed"],
)  # fmt: skip
def test_a_bad_position_name_stops_the_run_naming_the_key_before_the_model_is_built(
    demo_env, tmp_path, monkeypatch, positions, problem
):
    from minigpt4.common.config import ConfigError

    def refuse_to_build(model_cfg):
        raise AssertionError("the model was built before the positions were checked")

    monkeypatch.setattr(BaseTask, "build_model", staticmethod(refuse_to_build))
    out = tmp_path / "features"
    with pytest.raises(ConfigError, match=rf"^model\.llama_feature_positions: {problem}"):
        dump(out, f"model.llama_feature_positions={positions}")
    assert not out.exists()


def test_per_clip_layout_holds_the_stacked_rows(clean_dump, tmp_path, demo_env):
    out = tmp_path / "features"
    manifest = dump(out, "run.feature_layout=per_clip")
    assert manifest["layout"] == "per_clip"
    clips = csv_clips(demo_env["hcmw_csv"])
    stacked = load(clean_dump)
    for kind in KINDS:
        assert sorted(p.name for p in (out / kind).iterdir()) == sorted(f"{clip}.npy" for clip in clips)
        for row, clip in enumerate(clips):
            clip_array = np.load(out / kind / f"{clip}.npy")
            assert clip_array.dtype == np.float16
            np.testing.assert_array_equal(clip_array, stacked[kind][row], err_msg=f"{kind}/{clip}")


def test_per_clip_resume_recomputes_whole_batches_and_ends_identical(demo_env, tmp_path, monkeypatch):
    # a batch's numbers can round differently in a smaller batch: resume must redo whole ones
    clean = tmp_path / "clean"
    dump(clean, "run.feature_layout=per_clip")
    out = tmp_path / "features"
    write = FeatureWriter.write
    calls = []

    def write_then_die(self, rows, arrays):
        calls.append(list(rows))
        if len(calls) == 3:  # killed inside batch 3: only its first 3 clips reach the disk
            write(self, rows[:3], {kind: batch[:3] for kind, batch in arrays.items()})
            raise Killed
        write(self, rows, arrays)

    monkeypatch.setattr(FeatureWriter, "write", write_then_die)
    with pytest.raises(Killed):
        dump(out, "run.feature_layout=per_clip")
    monkeypatch.setattr(FeatureWriter, "write", write)
    rows_redone = []
    step = FeatureDumpTask.step

    def step_and_record(model, batch, writer):
        rows_redone.extend(batch["row"])
        step(model, batch, writer)

    monkeypatch.setattr(FeatureDumpTask, "step", staticmethod(step_and_record))
    dump(out, "run.feature_layout=per_clip")
    assert rows_redone == list(range(16, 24))  # batch 3 as a whole (8 rows), not its last 5
    assert folder_bytes(out) == folder_bytes(clean)


@pytest.mark.parametrize("option", ["run.batch_size=0", "run.num_workers=-1"])
def test_bad_loader_setting_stops_before_any_output(demo_env, tmp_path, option):
    from minigpt4.common.config import ConfigError

    out = tmp_path / "features"
    with pytest.raises(ConfigError, match=option.split("=")[0].replace(".", r"\.")):
        dump(out, option)
    assert not out.exists()


@pytest.mark.slow
def test_two_processes_write_the_files_of_one(clean_dump, tmp_path, demo_env):
    out = tmp_path / "features"
    env = dict(
        os.environ,
        TINY_ASSETS=str(demo_env["llama_dir"].parent),
        DEMO_FEATURES=str(demo_env["hcmw_feature_root"]),
        OMP_NUM_THREADS="1",
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(ROOT / "eval_emotion.py"), "--cfg-path", str(DEMO_CFG), "--dataset", "hcmw_caption",
        "--options", f"run.output_dir={out}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert folder_bytes(out) == folder_bytes(clean_dump)


# ------------------------------------------------------------------------------ bad input


@pytest.fixture
def hcmw_copy(tmp_path, demo_env) -> dict[str, Path]:
    """The demo's annotation, peak frames and vectors, copied so a test can break them."""
    root = tmp_path / "hcmw"
    shutil.copytree(demo_env["hcmw_image_root"], root / "images")
    shutil.copytree(demo_env["hcmw_feature_root"], root / "features")
    shutil.copy(demo_env["hcmw_csv"], root / "annotations.csv")
    return {"csv": root / "annotations.csv", "images": root / "images", "features": root / "features"}


def data_options(data: dict[str, Path], *more: str) -> list[str]:
    return [
        f"{DATASET}.build_info.annotation={data['csv']}",
        f"{DATASET}.build_info.image_root={data['images']}",
        f"{DATASET}.build_info.feature_root={data['features']}",
        *more,
    ]


def rewrite_csv(path: Path, edit) -> None:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    header, rows = edit(list(rows[0]), rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def peak_frame(data, clip):
    return data["images"] / clip / f"{clip}_peak_frame.png"


def facemae(data, clip):
    return data["features"] / "mae_340_UTT" / f"{clip}.npy"


def videomae(data, clip):
    return data["features"] / "maeV_199_UTT" / f"{clip}.npy"


def missing_peak_frame(data, clip):
    peak_frame(data, clip).unlink()
    return peak_frame(data, clip), "missing image"


def unreadable_png(data, clip):
    path = peak_frame(data, clip)
    path.write_bytes(path.read_bytes()[:200])  # truncated
    return path, "unreadable image"


def missing_vector(data, clip):
    facemae(data, clip).unlink()
    return facemae(data, clip), "missing feature vector"


def vector_of_wrong_length(data, clip):
    np.save(videomae(data, clip), np.zeros((1, HIDDEN - 1), dtype=np.float32))
    return videomae(data, clip), r"vector of shape \(1, 63\); expected \(64,\) or \(1, 64\)"


def nan_in_vector(data, clip):
    vector = np.load(facemae(data, clip))
    vector[3] = np.nan
    np.save(facemae(data, clip), vector)
    return facemae(data, clip), "1 NaN or inf value"


def unknown_label(data, clip):
    def edit(header, rows):
        for row in rows:
            if row["uuid"].removesuffix(".mp4") == clip:
                row["mw_label"] = "Bored"
        return header, rows

    rewrite_csv(data["csv"], edit)
    return data["csv"], "unknown mw_label 'Bored'"


CLIP_BREAKERS = {
    "missing-peak-frame": missing_peak_frame,
    "unreadable-png": unreadable_png,
    "missing-npy": missing_vector,
    "wrong-length": vector_of_wrong_length,
    "nan": nan_in_vector,
    "unknown-label": unknown_label,
}


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


@pytest.mark.parametrize("breaker", CLIP_BREAKERS.values(), ids=CLIP_BREAKERS.keys())
def test_bad_clip_stops_the_run_naming_clip_file_and_problem(demo_env, hcmw_copy, tmp_path, breaker):
    path, problem = breaker(hcmw_copy, "clip_005")
    out = tmp_path / "features"
    with pytest.raises(DataError, match=rf"clip_005: {re.escape(str(path))}: {problem}") as error:
        dump(out, *data_options(hcmw_copy))
    assert "on_error: skip" in str(error.value)  # the message says how to go on
    assert_nothing_written(out)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_annotation_without_a_required_column_stops_the_run(demo_env, hcmw_copy, tmp_path, on_error):
    rewrite_csv(hcmw_copy["csv"], lambda header, rows: ([c for c in header if c != "test_fold_num"], rows))
    out = tmp_path / "features"
    with pytest.raises(DataError, match=rf"{re.escape(str(hcmw_copy['csv']))}: no column 'test_fold_num'"):
        dump(out, *data_options(hcmw_copy, f"{DATASET}.on_error={on_error}"))
    assert_nothing_written(out)


def test_skip_leaves_bad_clips_out_reports_them_and_keeps_every_other_row(clean_dump, demo_env, hcmw_copy, tmp_path):
    broken = dict(zip(["clip_001", "clip_004", "clip_009", "clip_013", "clip_017", "clip_022"], CLIP_BREAKERS.values()))
    expected = [(clip, *breaker(hcmw_copy, clip)) for clip, breaker in broken.items()]
    expected.insert(2, ("clip_004", *missing_vector(hcmw_copy, "clip_004")))  # a second problem of one clip
    out = tmp_path / "features"
    manifest = dump(out, *data_options(hcmw_copy, f"{DATASET}.on_error=skip"))

    clips = csv_clips(demo_env["hcmw_csv"])
    kept = [clip for clip in clips if clip not in broken]
    assert (out / "names.txt").read_text().splitlines() == kept
    assert manifest["skipped"] == len(broken) and manifest["rows"] == len(kept)  # clips, not problems
    with (out / "skipped.tsv").open(newline="") as handle:
        header, *report = csv.reader(handle, delimiter="\t")
    assert header == ["clip", "file", "problem"]
    assert len(report) == len(expected)
    for (clip, file, problem), (bad_clip, path, pattern) in zip(report, expected):
        assert (clip, file) == (bad_clip, str(path))
        assert re.search(pattern, problem), (problem, pattern)

    # The kept rows are the clean run's rows of those clips.  The batches hold other
    # neighbours, so float32 rounding may differ: allow one float16 step.
    clean, rows = load(clean_dump), [clips.index(clip) for clip in kept]
    for kind, array in load(out).items():
        assert array.shape == (len(kept), *SHAPES[kind][1:])
        np.testing.assert_allclose(array, clean[kind][rows], rtol=1e-3, atol=1e-3, err_msg=kind)


def test_skip_report_survives_a_refused_rerun_and_goes_with_overwrite(demo_env, hcmw_copy, tmp_path):
    missing_peak_frame(hcmw_copy, "clip_002")
    out = tmp_path / "features"
    skip = f"{DATASET}.on_error=skip"
    dump(out, *data_options(hcmw_copy, skip))
    report = (out / "skipped.tsv").read_bytes()

    missing_vector(hcmw_copy, "clip_003")  # one more bad clip: other rows, other fingerprint
    with pytest.raises(FeatureOutputError, match="names_sha256"):
        dump(out, *data_options(hcmw_copy, skip))
    assert (out / "skipped.tsv").read_bytes() == report

    manifest = dump(out, overwrite=True)  # the clean demo data
    assert manifest["skipped"] == 0 and manifest["rows"] == N_CLIPS
    assert not (out / "skipped.tsv").exists()
