"""Generation-based emotion recognition on MER-style sets (``eval_emotion.py --dataset
feature_face_caption``).

The model answers each clip's prompt by greedy generation; the answer is parsed against the
dataset's label set (:func:`parse_emotion`) and scored with accuracy, support-weighted
precision / recall / F1 and a confusion matrix.  An answer that names no label, or several,
is counted as ``unparsed`` and reported: upstream turned it into ``neutral``, hiding it in
that class's scores.

Outputs in ``<run.output_dir>/<dataset>/``: ``predictions.csv`` (clip, target, answer,
parsed) in dataset order and ``metrics.json``.  While the run is going each process appends
its predictions to ``predictions.rank<r>.partial.csv``, so a stopped run leaves what it got.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from minigpt4.common import dist_utils
from minigpt4.common.atomic_io import write_text_atomic
from minigpt4.common.registry import registry
from minigpt4.common.text_table import format_table
from minigpt4.tasks.base_task import BaseTask
from minigpt4.tasks.metrics import multiclass_metrics

UNPARSED = "unparsed"
PREDICTIONS = "predictions.csv"
METRICS = "metrics.json"
CSV_COLUMNS = ("clip", "target", "answer", "parsed")
SUMMARY_SCORES = {  # column of the logged table -> key of the metrics
    "accuracy": "accuracy",
    "precision_w": "precision_weighted",
    "recall_w": "recall_weighted",
    "f1_w": "f1_weighted",
}


def parse_emotion(answer: str, labels: Sequence[str]) -> str | None:
    """The one label ``answer`` names, or None.

    Case and runs of whitespace are ignored.  A label counts only as a whole word, where a
    hyphen belongs to the word: ``sad`` is not found in ``saddest``, ``surprise`` not in
    ``surprised``, ``mind wandering`` not in ``non-mind wandering``.  A label named several
    times counts once.  No label, or two different ones (``happy or sad``, an echo of the
    question's list), gives None: guessing which one was meant would score a guess.
    """
    by_text = {label.lower(): label for label in labels}
    # Longest first: at one position the longer label ("worried sick") wins over its prefix.
    alternatives = "|".join(re.escape(text) for text in sorted(by_text, key=len, reverse=True))
    text = " ".join(answer.lower().split())
    found = {match[1] for match in re.finditer(rf"(?<![\w-])({alternatives})(?![\w-])", text)}
    return by_text[found.pop()] if len(found) == 1 else None


@dataclass(frozen=True)
class Prediction:
    row: int  # the clip's row in the dataset; orders the gathered predictions
    clip: str
    target: str
    answer: str  # the generated text as decoded
    parsed: str  # a label or UNPARSED

    def csv_row(self) -> tuple[str, str, str, str]:
        return self.clip, self.target, self.answer, self.parsed


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    """In the default dialect (rows end in CRLF) a line break inside a generated answer is quoted."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


class PredictionWriter:
    """Streams this process's predictions to its partial CSV; :meth:`finish` gathers every
    process's predictions, writes the final files (main process) and returns the metrics."""

    def __init__(self, out_dir: Path, labels: Sequence[str], skipped: int):
        self.out_dir = out_dir
        self.labels = list(labels)
        self.skipped = skipped
        self.predictions: list[Prediction] = []
        out_dir.mkdir(parents=True, exist_ok=True)
        self.partial_path = out_dir / f"predictions.rank{dist_utils.get_rank()}.partial.csv"
        self._partial = open(self.partial_path, "w", newline="", encoding="utf-8")
        self._partial.write(_csv_text([CSV_COLUMNS]))

    def write(self, predictions: Sequence[Prediction]) -> None:
        self.predictions.extend(predictions)
        self._partial.write(_csv_text([p.csv_row() for p in predictions]))
        self._partial.flush()

    def finish(self) -> dict:
        self._partial.close()
        gathered = dist_utils.all_gather_object(self.predictions)
        predictions = sorted((p for part in gathered for p in part), key=lambda p: p.row)
        metrics = multiclass_metrics(
            [p.target for p in predictions], [p.parsed for p in predictions], self.labels, unparsed_label=UNPARSED
        )
        metrics["skipped"] = self.skipped
        if dist_utils.is_main_process():
            write_text_atomic(self.out_dir / PREDICTIONS, _csv_text([CSV_COLUMNS, *(p.csv_row() for p in predictions)]))
            write_text_atomic(self.out_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
        dist_utils.barrier()  # the partial files go only once the final ones exist
        self.partial_path.unlink()
        return metrics


@registry.register_task("emotion_eval")
class EmotionEvalTask(BaseTask):
    PER_DATASET_FOLDER = True  # one folder per dataset: every dataset writes the same file names

    def open_writer(self, model, dataset, out_dir: Path, model_cfg, dataset_cfg) -> tuple[PredictionWriter, list[int]]:
        """The writer and this process's rows (every ``world_size``-th row); the configs, part of
        the runner's protocol, are not needed here."""
        writer = PredictionWriter(out_dir, dataset.candidate_answers, skipped=len(dataset.skipped))
        rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
        return writer, list(range(rank, len(dataset), world))

    def step(self, model, batch: dict, writer: PredictionWriter) -> None:
        answers = model.generate(batch, max_new_tokens=self.run_cfg.max_new_tokens)
        writer.write(
            [
                Prediction(row, clip, target, answer, parse_emotion(answer, writer.labels) or UNPARSED)
                for row, clip, target, answer in zip(batch["row"], batch["video_id"], batch["label"], answers)
            ]
        )

    @staticmethod
    def summary(metrics: dict, out_dir: Path) -> str:
        """The scores, then the confusion matrix (rows: target, columns: parsed answer)."""
        scores = [f"{metrics[key]:.4f}" for key in SUMMARY_SCORES.values()] + [str(metrics["n_unparsed"])]
        confusion = [
            [label, *map(str, counts)] for label, counts in zip(metrics["confusion_labels"], metrics["confusion_matrix"])
        ]
        return "\n".join(
            [
                f"emotion eval in {out_dir}: {metrics['n']} clips, {metrics['n_unparsed']} unparsed, "
                f"{metrics['skipped']} skipped",
                format_table([*SUMMARY_SCORES, UNPARSED], [scores], indent="  "),
                "confusion matrix (rows: target, columns: parsed answer):",
                format_table(["", *metrics["confusion_columns"]], confusion, indent="  "),
            ]
        )

