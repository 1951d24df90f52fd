import csv
import logging
import unicodedata

import av
import numpy as np
import pytest
import torch
from PIL import Image

import minigpt4.datasets  # noqa: F401  (registers the builders)
from minigpt4.common.registry import registry
from minigpt4.datasets.data_utils import collate_clips
from minigpt4.datasets.errors import DataError

DIM = 8
SIZE = 16
QUESTION = (
    "Please determine which emotion label in the video represents: "
    "happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt."
)
# The original's MER2024 question (SPEC section 6) names six labels.
QUESTIONS = {
    "feature_face_caption": QUESTION,
    "mer2024_caption": "Please determine which emotion label in the video represents: happy, sad, neutral, angry, worried, surprise.",
}


def original_instruction(sentence: str, question: str) -> str:
    """The original's MER instruction, built with its own format string and arguments."""
    character_line = "The person in video says: {}. ".format(sentence)
    return "<video><VideoHere></video> <feature><FeatureHere></feature> {} [{}] {} ".format(
        character_line, "emotion", question
    )

FIRST_COLOUR, LATER_COLOUR = (200, 40, 40), (40, 40, 200)
# name, emotion, video suffix, what the person says
CLIPS = [
    ("s0", "happy", ".mp4", "I love it"),
    ("s1", "sad", ".avi", "Leave me alone"),
    ("s2", "doubt", ".mp4", "Are you sure"),
]
FEATURE_DIRS = ("mae_340_UTT", "maeV_399_UTT", "HL-UTT")


def write_video(path, n_frames=3, size=32):
    """A red first frame, then blue frames (MPEG-4 part 2; the container follows the suffix)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        for t in range(n_frames):
            frame = np.full((size, size, 3), FIRST_COLOUR if t == 0 else LATER_COLOUR, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_transcript(path, rows, header=("name", "sentence")):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def vector_file(root, folder, clip):
    return root / folder / f"{clip}.npy"


@pytest.fixture
def mer(tmp_path):
    """Three clips laid out as MER ships them: vectors beside the annotation."""
    rng = np.random.default_rng(0)
    (tmp_path / "videos").mkdir()
    for folder in FEATURE_DIRS:
        (tmp_path / folder).mkdir()
    for name, _, suffix, _ in CLIPS:
        write_video(tmp_path / "videos" / f"{name}{suffix}")
        for folder in FEATURE_DIRS:
            np.save(vector_file(tmp_path, folder, name), rng.normal(size=DIM).astype(np.float32))
    (tmp_path / "annotation.txt").write_text("".join(f"{name} 3 {emotion}\n" for name, emotion, _, _ in CLIPS))
    write_transcript(tmp_path / "transcript.csv", [(name, said) for name, _, _, said in CLIPS])
    return tmp_path


def builder(root, name="feature_face_caption", **overrides):
    cfg = {
        "build_info": {
            "annotation": str(root / "annotation.txt"),
            "video_root": str(root / "videos"),
            "transcript": str(root / "transcript.csv"),
        },
        "feature_dim": DIM,
        "vis_processor": {"train": {"image_size": SIZE}, "eval": {"image_size": SIZE}},
    }
    for key, value in overrides.items():
        section = cfg["build_info"] if key in ("feature_root", "audio_dir") else cfg
        section[key] = value
    return registry.get("builder", name)(cfg)


@pytest.mark.parametrize("name", ["feature_face_caption", "mer2024_caption"])
def test_defaults(name):
    cfg = registry.get("builder", name)().config
    assert list(cfg.labels) == "neutral angry happy sad worried surprise fear contempt doubt".split()
    assert cfg.question == QUESTIONS[name]
    info = cfg.build_info
    assert (info.facemae_dir, info.videomae_dir, info.audio_dir) == ("mae_340_UTT", "maeV_399_UTT", "HL-UTT")


def test_items(mer):
    dataset = builder(mer).build("eval")
    assert dataset.names == ["s0", "s1", "s2"]
    assert dataset.labels == ["happy", "sad", "doubt"]
    assert dataset.candidate_answers == "neutral angry happy sad worried surprise fear contempt doubt".split()
    item = dataset[0]
    assert item["instruction_input"] == original_instruction("I love it", QUESTION)
    assert "I love it.  [emotion]" in item["instruction_input"]  # two spaces, as the original
    assert item["answer"] == item["label"] == "happy"
    assert item["video_id"] == item["image_id"] == "s0"
    assert item["class_weight"] == 1.0
    features = item["video_features"]
    assert features.shape == (3, DIM) and features.dtype == torch.float32
    for row, folder in enumerate(FEATURE_DIRS):  # audio comes from its file too
        assert torch.equal(features[row], torch.from_numpy(np.load(vector_file(mer, folder, "s0"))))


@pytest.mark.parametrize("index", [0, 1])  # an .mp4 and an .avi clip
def test_image_is_the_first_frame(mer, index):
    eval_processor = registry.get("processor", "blip2_image_eval").from_config({"image_size": SIZE})
    image = builder(mer).build("eval")[index]["image"]
    first = eval_processor(Image.new("RGB", (32, 32), FIRST_COLOUR))
    later = eval_processor(Image.new("RGB", (32, 32), LATER_COLOUR))
    assert image.shape == (3, SIZE, SIZE)
    assert (image - first).abs().mean() < 0.1 < (image - later).abs().mean()  # lossy codec: close, not equal


def test_mp4_preferred_to_avi(mer):
    write_video(mer / "videos" / "s0.avi")
    assert builder(mer).build("eval").video_file("s0") == mer / "videos" / "s0.mp4"


def test_sentence_en_column_and_configured_labels_and_question(mer):
    write_transcript(mer / "transcript.csv", [(n, f"{s}!") for n, _, _, s in CLIPS], header=("name", "sentence_en"))
    dataset = builder(mer, labels=["happy", "sad", "doubt"], question="Which one?").build("train")
    assert dataset[1]["instruction_input"].endswith("The person in video says: Leave me alone!.  [emotion] Which one? ")
    assert dataset.candidate_answers == ["happy", "sad", "doubt"]
    assert dataset.vis_processor is not builder(mer).vis_processors["eval"]


def test_feature_root_and_dirs_configurable(mer, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("features")
    (mer / "HL-UTT").rename(elsewhere / "audio")
    for folder in FEATURE_DIRS[:2]:
        (mer / folder).rename(elsewhere / folder)
    item = builder(mer, feature_root=str(elsewhere), audio_dir="audio").build("eval")[2]
    assert torch.equal(item["video_features"][2], torch.from_numpy(np.load(elsewhere / "audio" / "s2.npy")))


def test_collater(mer):
    dataset = builder(mer).build("eval")
    batch = collate_clips([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["video_features"].shape == (2, 3, DIM)
    assert batch["class_weight"].tolist() == [1.0, 1.0]
    assert batch["answer"] == ["happy", "sad"]


def corrupt(path):
    path.write_bytes(b"\x00" * 64)


BAD_INPUTS = {
    "missing video": (lambda root: (root / "videos" / "s1.avi").unlink(), "videos/s1.mp4", "missing video"),
    "unreadable video": (lambda root: corrupt(root / "videos" / "s1.avi"), "videos/s1.avi", "unreadable first frame"),
    "no transcript line": (
        lambda root: write_transcript(root / "transcript.csv", [(n, said) for n, _, _, said in CLIPS if n != "s1"]),
        "transcript.csv",
        "no transcript line",
    ),
    "label outside the set": (
        lambda root: (root / "annotation.txt").write_text("s0 3 happy\ns1 3 bored\ns2 3 doubt\n"),
        "annotation.txt",
        "label 'bored' is not one of neutral angry",
    ),
    "missing audio vector": (
        lambda root: vector_file(root, "HL-UTT", "s1").unlink(), "HL-UTT/s1.npy", "missing feature vector"
    ),
    "wrong length": (
        lambda root: np.save(vector_file(root, "mae_340_UTT", "s1"), np.zeros(DIM - 1)),
        "mae_340_UTT/s1.npy",
        f"expected ({DIM},)",
    ),
    "nan": (
        lambda root: np.save(vector_file(root, "maeV_399_UTT", "s1"), np.full((1, DIM), np.nan)),
        "maeV_399_UTT/s1.npy",
        "NaN or inf",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_clip_raises(mer, case):
    breaks, file, problem = BAD_INPUTS[case]
    breaks(mer)
    with pytest.raises(DataError) as error:
        builder(mer).build("eval")
    message = str(error.value)
    assert "1 bad clip(s), 1 problem(s)" in message and f"s1: {mer / file}: " in message and problem in message


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_clip_skipped(mer, case, caplog):
    breaks, file, problem = BAD_INPUTS[case]
    breaks(mer)
    with caplog.at_level(logging.WARNING):
        dataset = builder(mer, "mer2024_caption", on_error="skip").build("eval")
    assert "skipped 1 bad clip" in caplog.text
    assert dataset.names == ["s0", "s2"]
    assert [(bad.clip, bad.file) for bad in dataset.skipped] == [("s1", str(mer / file))]
    assert problem in dataset.skipped[0].problem
    assert dataset[1]["label"] == "doubt" and "Are you sure" in dataset[1]["instruction_input"]


def test_transcript_without_a_sentence_column(mer):
    write_transcript(mer / "transcript.csv", [("s0", "a")], header=("name", "text"))
    expected = r"transcript\.csv: no column 'sentence' or 'sentence_en'; columns found: name, text"
    with pytest.raises(DataError, match=expected):
        builder(mer).build("eval")


def test_transcript_without_a_name_column(mer):
    write_transcript(mer / "transcript.csv", [("s0", "a")], header=("clip", "sentence"))
    with pytest.raises(DataError, match=r"transcript\.csv: no column 'name'; columns found: clip, sentence"):
        builder(mer).build("eval")


def test_annotation_line_with_too_few_fields(mer):
    (mer / "annotation.txt").write_text("s0 3 happy\ns1 3\n")
    with pytest.raises(DataError, match=r"annotation\.txt line 2: expected '<name> <n_frames> <emotion> \.\.\.'"):
        builder(mer).build("eval")


def test_no_folds_and_known_splits_only(mer):
    with pytest.raises(ValueError, match="feature_face_caption has one train/validation split, fold 0; got fold 1"):
        builder(mer).build("eval", 1)
    with pytest.raises(ValueError, match="unknown split 'test'; splits: train, eval, all"):
        builder(mer).build("test")


def test_on_tiny_assets(tiny_assets):
    b = registry.get("builder", "feature_face_caption")(
        {
            "build_info": {
                "annotation": str(tiny_assets["mer_annotation"]),
                "video_root": str(tiny_assets["mer_video_root"]),
                "transcript": str(tiny_assets["mer_transcript"]),
            },
            "feature_dim": 64,
            "vis_processor": {"eval": {"image_size": 28}},
        }
    )
    dataset = b.build("eval")
    assert len(dataset) == 12
    item = dataset[3]  # written as .avi
    assert item["video_features"].shape == (3, 64) and item["image"].shape == (3, 28, 28)
    assert item["instruction_input"].startswith(
        "<video><VideoHere></video> <feature><FeatureHere></feature> The person in video says: "
    )


@pytest.mark.parametrize("name", ["feature_face_caption", "mer2024_caption"])
def test_instruction_is_the_originals_character_for_character(mer, name):
    """Each dataset with its default question, for a clip whose transcript is known."""
    cfg = registry.get("builder", name)().config
    dataset = builder(mer, question=cfg.question).build("eval")
    for index, (_, _, _, sentence) in enumerate(CLIPS):
        assert dataset[index]["instruction_input"] == original_instruction(sentence, QUESTIONS[name])


def test_the_second_space_before_emotion_is_one_more_token(tiny_assets, mer):
    """With a tokenizer that keeps whitespace as LLaMA-2's does, the double space is a lone '▁' piece."""
    from minigpt4.models.llama_tokenizer import LlamaTokenizer

    tokenizer = LlamaTokenizer.from_folder(tiny_assets["llama_dir"])
    after_feature = builder(mer).build("eval")[0]["instruction_input"].split("<FeatureHere>")[1]
    single_space = after_feature.replace(".  [emotion]", ". [emotion]")
    pieces = [tokenizer.convert_ids_to_tokens(i) for i in tokenizer.encode(after_feature)]
    assert len(tokenizer.encode(after_feature)) == len(tokenizer.encode(single_space)) + 1
    start = pieces.index("em") - 2
    assert pieces[start - 1 : start + 5] == [".", "▁", "▁[", "em", "otion", "]"]


@pytest.mark.parametrize("name", ["eval_mer2023.yaml", "eval_mer2024.yaml"])
def test_shipped_mer_configs_evaluate_as_upstream(name):
    """Upstream's inference layout and generation length, with the dataset's own question."""
    from pathlib import Path

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "eval_configs" / name)
    assert cfg.model.legacy_generate_context is True
    assert cfg.run.max_new_tokens == 500
    for section in cfg.evaluation_datasets.values():
        assert "question" not in section  # the dataset default: the original's question


@pytest.mark.parametrize("files_form, text_form", [("NFD", "NFC"), ("NFC", "NFD")])
def test_clip_names_and_file_names_are_compared_in_nfc(mer, files_form, text_form):
    # macOS stores "é" decomposed (NFD); an annotation typed elsewhere holds it composed (NFC)
    name = "café"
    on_disk, in_text = (unicodedata.normalize(form, name) for form in (files_form, text_form))
    assert on_disk != in_text
    write_video(mer / "videos" / f"{on_disk}.avi")
    vectors = {}
    for folder in FEATURE_DIRS:
        vectors[folder] = np.full(DIM, len(vectors) + 1, dtype=np.float32)
        np.save(vector_file(mer, folder, on_disk), vectors[folder])
    with (mer / "annotation.txt").open("a") as handle:
        handle.write(f"{in_text} 3 happy\n")
    with (mer / "transcript.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow([in_text, "Nice place"])
    (mer / "held_out.txt").write_text(f"{in_text}\n")
    dataset = builder(mer, split={"file": str(mer / "held_out.txt")}).build("eval", 0)  # the split file too
    nfc_name = unicodedata.normalize("NFC", name)
    assert dataset.names == [nfc_name]
    item = dataset[0]
    assert item["video_id"] == nfc_name and "Nice place" in item["instruction_input"]
    assert dataset.video_file(nfc_name).name == f"{on_disk}.avi"
    for row, folder in enumerate(FEATURE_DIRS):
        assert torch.equal(item["video_features"][row], torch.from_numpy(vectors[folder]))
