import csv
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import minigpt4.datasets  # noqa: F401  (registers the builders)
from minigpt4.common.config import ConfigError
from minigpt4.common.registry import registry
from minigpt4.datasets.data_utils import collate_clips
from minigpt4.datasets.errors import BadClip, DataError

DIM = 8
SIZE = 16  # image_size of both processors, small to keep the tests fast
INSTRUCTION = (
    "<video><VideoHere></video> <feature><FeatureHere></feature> [classification] "
    "Please classify the video into one of these categories: mind wandering or non-mind wandering. "
)
# (uuid, mw_label, test_fold_num); fold 0 trains on c2..c5 = 3 MW + 1 NonMW
ROWS = [
    ("c0.mp4", "MW", 0),
    ("c1.mp4", "NonMW", 0),
    ("c2", "MW", 1),
    ("c3.mp4", "MW", 1),
    ("c4", "NonMW", 2),
    ("c5.mp4", "MW", 2),
]


def write_csv(path, rows, header=("uuid", "mw_label", "test_fold_num")):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def clip_files(root, clip):
    return {
        "png": root / "images" / clip / f"{clip}_peak_frame.png",
        "face": root / "features" / "mae_340_UTT" / f"{clip}.npy",
        "video": root / "features" / "maeV_199_UTT" / f"{clip}.npy",
        "audio": root / "features" / "audio" / f"{clip}.npy",
    }


@pytest.fixture
def hcmw(tmp_path):
    """Six clips: a random 12x10 peak frame, a FaceMAE vector (D,), a VideoMAE vector (1, D), an audio vector (D,)."""
    rng = np.random.default_rng(0)
    for uuid, _, _ in ROWS:
        files = clip_files(tmp_path, uuid.removesuffix(".mp4"))
        for path in files.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(files["png"])
        np.save(files["face"], rng.normal(size=DIM).astype(np.float32))
        np.save(files["video"], rng.normal(size=(1, DIM)).astype(np.float32))
        np.save(files["audio"], rng.normal(size=DIM).astype(np.float32))
    write_csv(tmp_path / "labels.csv", ROWS)
    return tmp_path


def builder(root, **overrides):
    cfg = {
        "build_info": {
            "annotation": str(root / "labels.csv"),
            "image_root": str(root / "images"),
            "feature_root": str(root / "features"),
        },
        "feature_dim": DIM,
        "vis_processor": {"train": {"image_size": SIZE}, "eval": {"image_size": SIZE}},
    }
    for key, value in overrides.items():
        section = cfg["build_info"] if key.endswith("_dir") else cfg
        section[key] = value
    return registry.get("builder", "hcmw_caption")(cfg)


def test_default_config_holds_the_spec_prompt_and_answers():
    section = registry.get("builder", "hcmw_caption")().config
    assert section.instruction == INSTRUCTION
    assert dict(section.answers) == {"MW": "mind wandering", "NonMW": "non-mind wandering"}
    assert section.fold == -1 and section.on_error == "raise" and section.feature_dim == 1024
    assert (section.build_info.facemae_dir, section.build_info.videomae_dir) == ("mae_340_UTT", "maeV_199_UTT")
    assert section.build_info.audio_dir == ""


def test_unknown_key_and_wrong_type_are_rejected(hcmw):
    with pytest.raises(ConfigError, match="datasets.hcmw_caption.folds: unknown key"):
        registry.get("builder", "hcmw_caption")({"folds": 3})
    with pytest.raises(ConfigError, match="datasets.hcmw_caption.feature_dim: expected int"):
        registry.get("builder", "hcmw_caption")({"feature_dim": "big"})


def test_splits_of_a_fold_and_mp4_suffix_stripped(hcmw):
    b = builder(hcmw)
    assert b.build("all").names == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert b.build("train", 0).names == ["c2", "c3", "c4", "c5"]
    assert b.build("eval", 0).names == ["c0", "c1"]
    assert b.build("eval", 2).labels == ["non-mind wandering", "mind wandering"]


def test_class_weights_from_the_train_rows_of_the_fold(hcmw):
    b = builder(hcmw)
    # fold 0 trains on 3 MW + 1 NonMW: 4 / (2 * 3) and 4 / (2 * 1)
    fold0 = {"mind wandering": 4 / 6, "non-mind wandering": 2.0}
    assert b.build("train", 0).class_weights == pytest.approx(fold0)
    assert b.build("eval", 0).class_weights == pytest.approx(fold0)
    assert [item["class_weight"] for item in b.build("eval", 0)] == pytest.approx([4 / 6, 2.0])
    # every row: 4 MW + 2 NonMW
    assert b.build("all").class_weights == pytest.approx({"mind wandering": 6 / 8, "non-mind wandering": 6 / 4})


def test_fold_from_config_and_processor_per_split(hcmw):
    b = builder(hcmw, fold=1)
    assert b.build("eval").names == ["c2", "c3"]
    assert b.build("all").names == ["c0", "c1", "c2", "c3", "c4", "c5"]  # 'all' ignores the config's fold
    assert b.build("train").vis_processor is b.vis_processors["train"]
    assert b.build("eval").vis_processor is b.vis_processors["eval"]
    assert b.build("all").vis_processor is b.vis_processors["eval"]


def test_item_values(hcmw):
    dataset = builder(hcmw).build("eval", 0)
    assert dataset.candidate_answers == ["mind wandering", "non-mind wandering"]
    item = dataset[1]
    files = clip_files(hcmw, "c1")
    assert set(item) == {
        "image", "video_features", "instruction_input", "answer", "label", "class_weight", "video_id", "image_id"
    }
    eval_processor = registry.get("processor", "blip2_image_eval").from_config({"image_size": SIZE})
    assert torch.equal(item["image"], eval_processor(Image.open(files["png"])))
    assert item["image"].shape == (3, SIZE, SIZE)
    features = item["video_features"]
    assert features.shape == (3, DIM) and features.dtype == torch.float32
    assert torch.equal(features[0], torch.from_numpy(np.load(files["face"])))
    assert torch.equal(features[1], torch.from_numpy(np.load(files["video"])[0]))
    assert torch.equal(features[2], torch.zeros(DIM))  # no audio_dir: zeros
    assert item["instruction_input"] == INSTRUCTION
    assert item["answer"] == item["label"] == "non-mind wandering"
    assert item["video_id"] == item["image_id"] == "c1"
    assert isinstance(item["class_weight"], float)


def test_audio_row_read_when_an_audio_dir_is_set(hcmw):
    item = builder(hcmw, audio_dir="audio").build("all")[0]
    assert torch.equal(item["video_features"][2], torch.from_numpy(np.load(clip_files(hcmw, "c0")["audio"])))


def test_answers_are_never_the_seed_codes(hcmw):
    answers = {item["answer"] for item in builder(hcmw).build("all")}
    assert answers == {"mind wandering", "non-mind wandering"}


def test_collater_stacks_tensors_and_keeps_texts(hcmw):
    dataset = builder(hcmw).build("train", 0)
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate_clips)))
    assert batch["image"].shape == (3, 3, SIZE, SIZE)
    assert batch["video_features"].shape == (3, 3, DIM)
    assert batch["class_weight"].dtype == torch.float32
    assert batch["class_weight"].tolist() == pytest.approx([4 / 6, 4 / 6, 2.0])
    assert batch["video_id"] == batch["image_id"] == ["c2", "c3", "c4"]
    assert batch["label"] == batch["answer"] == ["mind wandering", "mind wandering", "non-mind wandering"]
    assert batch["instruction_input"] == [INSTRUCTION] * 3
    assert torch.equal(batch["video_features"][1], dataset[1]["video_features"])


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def rewrite_label(root, clip, label):
    write_csv(root / "labels.csv", [(u, label if u.removesuffix(".mp4") == clip else m, f) for u, m, f in ROWS])


# (what breaks c3, the file named in the error, words of the problem)
BAD_INPUTS = {
    "missing peak frame": (lambda root: clip_files(root, "c3")["png"].unlink(), "png", "missing image"),
    "garbage png": (lambda root: clip_files(root, "c3")["png"].write_bytes(b"not a png"), "png", "unreadable image"),
    "truncated png": (lambda root: truncate(clip_files(root, "c3")["png"]), "png", "unreadable image"),
    "missing npy": (lambda root: clip_files(root, "c3")["video"].unlink(), "video", "missing feature vector"),
    "wrong length": (
        lambda root: np.save(clip_files(root, "c3")["face"], np.zeros(DIM + 1)), "face", f"expected ({DIM},)"
    ),
    "2-d vector": (
        lambda root: np.save(clip_files(root, "c3")["face"], np.zeros((2, DIM))), "face", f"(1, {DIM})"
    ),
    "nan": (
        lambda root: np.save(clip_files(root, "c3")["video"], np.full((1, DIM), np.nan)), "video", "NaN or inf"
    ),
    "inf": (lambda root: np.save(clip_files(root, "c3")["face"], np.full(DIM, np.inf)), "face", "NaN or inf"),
    "not an npy": (lambda root: clip_files(root, "c3")["face"].write_text("hello"), "face", "not a readable .npy"),
    "unknown label": (lambda root: rewrite_label(root, "c3", "mw"), "csv", "unknown mw_label 'mw'"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_clip_raises_naming_clip_file_and_problem(hcmw, case):
    breaks, which, problem = BAD_INPUTS[case]
    breaks(hcmw)
    file = hcmw / "labels.csv" if which == "csv" else clip_files(hcmw, "c3")[which]
    with pytest.raises(DataError) as error:
        builder(hcmw).build("all")
    message = str(error.value)
    assert "1 bad clip(s), 1 problem(s)" in message and "c3" in message and str(file) in message and problem in message
    assert "on_error: skip" in message


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_clip_skipped_when_asked(hcmw, case, caplog):
    breaks, which, problem = BAD_INPUTS[case]
    breaks(hcmw)
    file = hcmw / "labels.csv" if which == "csv" else clip_files(hcmw, "c3")[which]
    with caplog.at_level(logging.WARNING):
        dataset = builder(hcmw, on_error="skip").build("train", 0)
    assert "skipped 1 bad clip" in caplog.text
    assert dataset.names == ["c2", "c4", "c5"]
    assert [(bad.clip, bad.file) for bad in dataset.skipped] == [("c3", str(file))]
    assert problem in dataset.skipped[0].problem
    # weights count the clips that are used: 2 MW + 1 NonMW
    assert dataset.class_weights == pytest.approx({"mind wandering": 3 / 4, "non-mind wandering": 3 / 2})
    item = dataset[1]
    assert item["video_id"] == "c4"
    assert torch.equal(item["video_features"][0], torch.from_numpy(np.load(clip_files(hcmw, "c4")["face"])))


def test_validate_lists_every_problem_of_every_clip(hcmw):
    clip_files(hcmw, "c0")["png"].unlink()
    clip_files(hcmw, "c0")["face"].unlink()
    np.save(clip_files(hcmw, "c5")["video"], np.zeros(3))
    dataset = builder(hcmw, on_error="skip").build("all")
    assert sorted(bad.clip for bad in dataset.skipped) == ["c0", "c0", "c5"]
    assert dataset.names == ["c1", "c2", "c3", "c4"]
    assert dataset.validate() == []
    clip_files(hcmw, "c1")["face"].unlink()
    assert dataset.validate() == [BadClip("c1", str(clip_files(hcmw, "c1")["face"]), "missing feature vector")]


def test_audio_file_missing_when_an_audio_dir_is_set(hcmw):
    clip_files(hcmw, "c4")["audio"].unlink()
    with pytest.raises(DataError, match=r"c4: .*audio.*c4\.npy: missing feature vector"):
        builder(hcmw, audio_dir="audio").build("all")


def test_many_bad_clips_are_listed_up_to_20_then_counted(tmp_path):
    rows = [(f"x{i:02d}", "MW", i % 2) for i in range(25)]
    write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(DataError) as error:
        builder(tmp_path).build("all")
    message = str(error.value)
    # 25 clips x 3 problems (peak frame, 2 vectors); the first 20 problems are those of x00..x06
    assert "25 bad clip(s), 75 problem(s)" in message and "and 55 more problem(s)" in message
    assert "x06" in message and "x07" not in message


@pytest.mark.parametrize("column", ["uuid", "mw_label", "test_fold_num"])
def test_csv_without_a_required_column(hcmw, column):
    header = [c if c != column else "other" for c in ("uuid", "mw_label", "test_fold_num")]
    write_csv(hcmw / "labels.csv", ROWS, header=header)
    with pytest.raises(DataError) as error:
        builder(hcmw).build("all")
    message = str(error.value)
    assert str(hcmw / "labels.csv") in message and f"no column {column!r}" in message
    assert "columns found: " + ", ".join(header) in message


def test_non_integer_fold(hcmw):
    write_csv(hcmw / "labels.csv", ROWS[:2] + [("c2", "MW", "one")])
    with pytest.raises(DataError, match=r"labels\.csv line 4: test_fold_num 'one' of clip 'c2' is not an integer"):
        builder(hcmw).build("all")


def test_duplicate_clip(hcmw):
    write_csv(hcmw / "labels.csv", ROWS + [("c0", "MW", 1)])
    with pytest.raises(DataError, match="more than once: c0"):
        builder(hcmw).build("all")


def test_fold_without_eval_rows(hcmw):
    with pytest.raises(DataError, match=r"labels\.csv: fold 7 has no eval rows.*folds present: 0, 1, 2"):
        builder(hcmw).build("train", 7)


def test_train_split_with_one_class(hcmw):
    # fold 0 without c4 trains on MW only
    write_csv(hcmw / "labels.csv", [row for row in ROWS if row[0] != "c4"])
    for split in ("train", "eval"):
        with pytest.raises(DataError, match=r"labels\.csv: the train rows of fold 0 hold only MW clips"):
            builder(hcmw).build(split, 0)


def test_split_and_fold_must_agree(hcmw):
    b = builder(hcmw)
    with pytest.raises(ValueError, match="'train' and 'eval' need"):
        b.build("train")  # the config's fold is -1
    with pytest.raises(ValueError, match="'all' takes every row"):
        b.build("all", 0)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        b.build("test", 0)
    with pytest.raises(ValueError, match="on_error must be one of raise, skip"):
        builder(hcmw, on_error="ignore").build("all")


def test_on_tiny_assets(tiny_assets):
    b = registry.get("builder", "hcmw_caption")(
        {
            "build_info": {
                "annotation": str(tiny_assets["hcmw_csv"]),
                "image_root": str(tiny_assets["hcmw_image_root"]),
                "feature_root": str(tiny_assets["hcmw_feature_root"]),
            },
            "feature_dim": 64,
            "vis_processor": {"eval": {"image_size": 28}},
        }
    )
    everything, train, held_out = b.build("all"), b.build("train", 1), b.build("eval", 1)
    assert sorted(train.names + held_out.names) == sorted(everything.names)
    assert not set(train.names) & set(held_out.names)
    assert held_out[0]["video_features"].shape == (3, 64)
    assert held_out[0]["image"].shape == (3, 28, 28)


@pytest.mark.parametrize("files_form, csv_form", [("NFD", "NFC"), ("NFC", "NFD")])
def test_clip_ids_and_file_names_are_compared_in_nfc(tmp_path, files_form, csv_form):
    import unicodedata

    # macOS stores "é" decomposed (NFD); an annotation typed elsewhere holds it composed (NFC)
    on_disk, in_csv = (unicodedata.normalize(form, "café_1") for form in (files_form, csv_form))
    rng = np.random.default_rng(0)
    files = clip_files(tmp_path, on_disk)
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(files["png"])
    for kind in ("face", "video"):
        np.save(files[kind], rng.normal(size=DIM).astype(np.float32))
    write_csv(tmp_path / "labels.csv", [(in_csv, "MW", 0)])
    dataset = builder(tmp_path).build("all")
    assert dataset.names == [unicodedata.normalize("NFC", "café_1")]
    np.testing.assert_allclose(dataset[0]["video_features"][0].numpy(), np.load(files["face"]))
