"""Generation-based emotion evaluation (``emotion_eval``): answer parsing, metrics, the output
files, and ``eval_emotion.py`` end to end with the tiny model on the generated MER clips."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

import eval_emotion
from minigpt4.common import dist_utils
from minigpt4.datasets.errors import DataError
from minigpt4.tasks.emotion_eval import UNPARSED, EmotionEvalTask, Prediction, PredictionWriter, parse_emotion

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_MER = REPO_ROOT / "eval_configs" / "demo_mer.yaml"
EMOTIONS = ["neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt"]
MER_DATASETS = ("feature_face_caption", "mer2024_caption")
MW_LABELS = ["mind wandering", "non-mind wandering"]


@pytest.mark.parametrize(
    "answer, labels, expected",
    [
        ("happy", EMOTIONS, "happy"),
        ("The person in the video looks SAD.", EMOTIONS, "sad"),
        ("  worried\n", EMOTIONS, "worried"),
        ("fear, fear", EMOTIONS, "fear"),  # one label, named twice
        ("surprised", EMOTIONS, None),  # whole words only
        ("unhappy", EMOTIONS, None),
        ("happy or sad", EMOTIONS, None),  # two labels: ambiguous
        ("happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt.", EMOTIONS, None),  # the list echoed
        ("", EMOTIONS, None),
        ("Non-mind  wandering.", MW_LABELS, "non-mind wandering"),  # not also "mind wandering"
        ("mind wandering", MW_LABELS, "mind wandering"),
        ("worried sick", ["worried", "worried sick"], "worried sick"),  # the longer label wins
    ],
)
def test_parse_emotion(answer, labels, expected):
    assert parse_emotion(answer, labels) == expected


# clip, target, generated answer, what it parses to
ANSWERS = [
    ("c0", "happy", "happy", "happy"),
    ("c1", "sad", "The person seems sad.", "sad"),
    ("c2", "angry", "ANGRY", "angry"),
    ("c3", "neutral", "happy", "happy"),
    ("c4", "worried", "surprised", UNPARSED),
    ("c5", "doubt", "happy or sad", UNPARSED),
    ("c6", "fear", "fear, fear", "fear"),
    ("c7", "sad", "neutral\r\n", "neutral"),  # generated text may hold line breaks
]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_writer_files_and_metrics_equal_sklearn(tmp_path):
    writer = PredictionWriter(tmp_path, EMOTIONS, skipped=0)
    predictions = [
        Prediction(row, clip, target, answer, parse_emotion(answer, EMOTIONS) or UNPARSED)
        for row, (clip, target, answer, _) in enumerate(ANSWERS)
    ]
    writer.write(predictions[:5])
    assert len(read_csv(writer.partial_path)) == 5  # streamed as batches finish
    writer.write(predictions[5:])
    metrics = writer.finish()

    parsed = [parsed for *_, parsed in ANSWERS]
    rows = read_csv(tmp_path / "predictions.csv")
    assert [(r["clip"], r["target"], r["answer"], r["parsed"]) for r in rows] == ANSWERS
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "predictions.csv"]

    targets = [target for _, target, _, _ in ANSWERS]
    precision, recall, f1, _ = precision_recall_fscore_support(
        targets, parsed, labels=EMOTIONS, average="weighted", zero_division=0
    )
    assert metrics["n"] == 8 and metrics["n_unparsed"] == 2
    assert metrics["accuracy"] == pytest.approx(accuracy_score(targets, parsed)) == 0.5
    assert metrics["precision_weighted"] == pytest.approx(precision)
    assert metrics["recall_weighted"] == pytest.approx(recall)
    assert metrics["f1_weighted"] == pytest.approx(f1)
    assert metrics["confusion_matrix"] == confusion_matrix(targets, parsed, labels=EMOTIONS + [UNPARSED])[:-1].tolist()

    summary = EmotionEvalTask.summary(metrics, tmp_path)
    assert "8 clips, 2 unparsed, 0 skipped" in summary
    assert summary.splitlines()[-len(EMOTIONS) - 1].split() == EMOTIONS + [UNPARSED]  # confusion header


def test_writer_gathers_every_rank_in_dataset_order(tmp_path, monkeypatch):
    """Two ranks simulated in turn: each streams its rows, rank 0 writes the merged files."""
    writers = []
    for rank in (0, 1):
        monkeypatch.setattr(dist_utils, "get_rank", lambda rank=rank: rank)
        writer = PredictionWriter(tmp_path, EMOTIONS, skipped=0)
        # rows interleaved across ranks, as EmotionEvalTask.open_writer hands them out
        writer.write([Prediction(row, *ANSWERS[row]) for row in range(rank, len(ANSWERS), 2)])
        writers.append(writer)
    monkeypatch.setattr(dist_utils, "all_gather_object", lambda _: [w.predictions for w in writers])
    for rank in (1, 0):
        monkeypatch.setattr(dist_utils, "get_rank", lambda rank=rank: rank)
        assert writers[rank].finish()["n"] == len(ANSWERS)
    rows = read_csv(tmp_path / "predictions.csv")
    assert [(r["clip"], r["target"], r["answer"], r["parsed"]) for r in rows] == ANSWERS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "predictions.csv"]


# ---- eval_emotion.py end to end with the tiny model ------------------------------------------


def run_eval(out_dir: Path, datasets: str, *options: str) -> dict:
    """``eval_emotion.py --cfg-path eval_configs/demo_mer.yaml`` in process; 10 new tokens are
    enough for varied answers and keep the test quick."""
    options = (f"run.output_dir={out_dir}", "run.max_new_tokens=10", *options)
    return eval_emotion.main(["--cfg-path", str(DEMO_MER), "--dataset", datasets, "--options", *options])


@pytest.fixture(scope="module")
def evaluated(tiny_assets, tmp_path_factory):
    """Both MER datasets evaluated once, in batches of 5 (the last one short)."""
    out_dir = tmp_path_factory.mktemp("emotion_eval")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINY_ASSETS", str(tiny_assets["llama_dir"].parent))
        results = run_eval(out_dir, ",".join(MER_DATASETS), "run.batch_size=5")
    return out_dir, results


@pytest.mark.parametrize("dataset", MER_DATASETS)
def test_end_to_end_writes_predictions_and_metrics(evaluated, tiny_assets, dataset):
    out_dir, results = evaluated
    folder = out_dir / dataset
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "predictions.csv"]
    annotation = [line.split() for line in tiny_assets["mer_annotation"].read_text().splitlines()]
    rows = read_csv(folder / "predictions.csv")
    assert [(r["clip"], r["target"]) for r in rows] == [(fields[0], fields[2]) for fields in annotation]
    assert all(r["parsed"] == (parse_emotion(r["answer"], EMOTIONS) or UNPARSED) for r in rows)

    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == results[dataset]
    assert metrics["n"] == len(rows) == 12
    assert metrics["n_unparsed"] == sum(r["parsed"] == UNPARSED for r in rows)
    assert metrics["confusion_columns"] == EMOTIONS + [UNPARSED]


def test_batched_generation_equals_one_by_one(evaluated, tiny_assets, tmp_path, monkeypatch):
    out_dir, _ = evaluated
    monkeypatch.setenv("TINY_ASSETS", str(tiny_assets["llama_dir"].parent))
    run_eval(tmp_path, "feature_face_caption", "run.batch_size=1")
    batched = read_csv(out_dir / "feature_face_caption" / "predictions.csv")
    one_by_one = read_csv(tmp_path / "feature_face_caption" / "predictions.csv")
    answers = [r["answer"] for r in batched]
    assert len(set(answers)) > 1 and all(answers)  # the comparison means something
    assert one_by_one == batched


def test_bad_clip_stops_before_anything_is_written(tiny_assets, tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_ASSETS", str(tiny_assets["llama_dir"].parent))
    videos = shutil.copytree(tiny_assets["mer_video_root"], tmp_path / "videos")
    missing = sorted(videos.iterdir())[0]
    missing.unlink()
    out_dir = tmp_path / "out"
    video_root = f"evaluation_datasets.feature_face_caption.build_info.video_root={videos}"
    with pytest.raises(DataError) as error:
        run_eval(out_dir, "feature_face_caption", video_root)
    assert f"{missing.stem}: {videos / missing.stem}.mp4: missing video" in str(error.value)
    assert not out_dir.exists()
