"""Where prepared clips go (the SPEC section 6 layout) and how a clip lands there atomically.

Under the output root::

    annotations.csv                      uuid[, mw_label, test_fold_num][, participant], video, start_s, end_s
    images/<clip>/<clip>_peak_frame.png  the peak frame                   (the hcmw image_root)
    face_frames/<clip>/<clip>_00000.png  aligned faces, one per frame     (extract_mae_embedding.py --input)
    face_arrays/<clip>.npy               the same faces, uint8 (T, S, S, 3) (extract_maeVideo_embedding.py --input)
    audio/<clip>.wav                     the clip's sound, 16 kHz mono float (extract_audio_embedding.py --input);
                                         none for a video without sound
    tracks/<clip>.json                   the clip's report; written last, it marks the clip done
    features/<dir>/<clip>.npy            encoder vectors (with encoders.run)
    skipped.tsv, summary.json
    extraction.json                      the settings the clips were made with (config.written_settings)

A clip is written into ``.tmp/<clip>/`` first and moved into place when complete, its report
last, so a killed run leaves no clip that looks done; a rerun redoes exactly the clips without
a report.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from minigpt4.common.atomic_io import write_text_atomic
from minigpt4.datasets.errors import SKIPPED_REPORT

# uuid, mw_label, test_fold_num: what the hcmw dataset reads (the labels only when the input has
# them); participant (when known), video, start_s, end_s (empty for whole clip videos): who and
# when, for grouping folds by participant and for timelines
ANNOTATION_COLUMNS = ("uuid", "mw_label", "test_fold_num", "participant", "video", "start_s", "end_s")
PNG_COMPRESS_LEVEL = 1  # faces are re-read by the encoders; fast writing beats small files


@dataclass(frozen=True)
class PreparedLayout:
    root: Path

    @property
    def face_frames(self) -> Path:
        return self.root / "face_frames"

    @property
    def face_arrays(self) -> Path:
        return self.root / "face_arrays"

    @property
    def audio(self) -> Path:
        return self.root / "audio"

    def audio_file(self, clip: str) -> Path:
        return self.audio / f"{clip}.wav"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def reports(self) -> Path:
        return self.root / "tracks"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def annotation(self) -> Path:
        return self.root / "annotations.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def skipped(self) -> Path:
        return self.root / SKIPPED_REPORT

    def remove_outputs(self) -> None:
        """Everything a prepare run writes (its vectors too: they were computed from its faces);
        other files in the root stay."""
        for path in (self.face_frames, self.face_arrays, self.audio, self.images, self.reports, self.features, self.root / ".tmp"):
            _remove(path)
        for path in (self.annotation, self.summary, self.skipped):
            _remove(path)

    def report(self, clip: str) -> Path:
        return self.reports / f"{clip}.json"

    def is_done(self, clip: str) -> bool:
        return self.report(clip).is_file()

    def peak_frame(self, clip: str) -> Path:
        return self.images / clip / f"{clip}_peak_frame.png"


def save_png(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, compress_level=PNG_COMPRESS_LEVEL)


def save_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """float32 mono samples as a 32-bit float WAV: read back (minigpt4.datasets.audio_track), the same samples."""
    with av.open(str(path), mode="w", format="wav", container_options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("pcm_f32le", rate=sample_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32)[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, 0
        for packet in (*stream.encode(frame), *stream.encode(None)):
            container.mux(packet)


class ClipOutput:
    """The files of one clip, built under ``.tmp/<clip>/`` and moved into place by ``commit``.

    The face pipeline's sink (faces.py): ``start`` opens the clip's folder, ``add`` streams
    the crops in, ``face`` reads one back.
    """

    def __init__(self, layout: PreparedLayout, clip: str, size: int):
        self.layout, self.clip, self.size = layout, clip, size
        self.tmp = layout.root / ".tmp" / clip

    def start(self, count: int) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)  # what a killed run left of this clip
        (self.tmp / "face_frames").mkdir(parents=True)
        (self.tmp / "images").mkdir()
        # frames stream into a file-backed array: a long clip never sits in memory whole
        shape = (count, self.size, self.size, 3)
        self.faces = np.lib.format.open_memmap(self.tmp / "faces.npy", mode="w+", dtype=np.uint8, shape=shape)
        self.count = 0

    def add(self, faces: np.ndarray) -> None:
        for face in faces:
            save_png(self.tmp / "face_frames" / f"{self.clip}_{self.count:05d}.png", face)
            self.faces[self.count] = face
            self.count += 1

    def face(self, index: int) -> np.ndarray:
        return self.faces[index]

    def add_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        save_wav(self.tmp / "audio.wav", samples, sample_rate)

    def commit(self, peak_image: np.ndarray, report: dict) -> None:
        if self.count != len(self.faces):
            raise RuntimeError(f"clip {self.clip!r}: {self.count} of {len(self.faces)} faces written")
        self.faces.flush()
        del self.faces  # closes the memory map before the file moves
        save_png(self.tmp / "images" / self.layout.peak_frame(self.clip).name, peak_image)
        moves = {
            self.tmp / "face_frames": self.layout.face_frames / self.clip,
            self.tmp / "faces.npy": self.layout.face_arrays / f"{self.clip}.npy",
            self.tmp / "images": self.layout.images / self.clip,
        }
        if (self.tmp / "audio.wav").is_file():
            moves[self.tmp / "audio.wav"] = self.layout.audio_file(self.clip)
        else:
            _remove(self.layout.audio_file(self.clip))  # an earlier attempt's: this clip has no sound
        for source, target in moves.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            _remove(target)  # an unfinished earlier attempt: the clip has no report yet
            os.replace(source, target)
        self.layout.reports.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.layout.report(self.clip), json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def abandon(self) -> None:
        if hasattr(self, "faces"):
            del self.faces
        shutil.rmtree(self.tmp, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write_annotation(layout: PreparedLayout, rows: list[dict[str, str]]) -> None:
    """The :data:`ANNOTATION_COLUMNS` the rows carry, in that order: the hcmw reader's three first."""
    columns = [c for c in ANNOTATION_COLUMNS if any(c in row for row in rows)]
    write_text_atomic(layout.annotation, _csv_text(columns, [[row.get(c, "") for c in columns] for row in rows]))


def _csv_text(header: list[str], rows: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
