"""Live: an estimate for each window as soon as it closes, while the recording runs.

A reader thread decodes the source with PyAV as it arrives (a file still being written, in a
container that can be read so: Matroska, MPEG-TS, fragmented MP4; standard input; a capture
device or stream URL with a named format) and cuts windows exactly as the offline job does
(the same starts, lengths and frames: the first frame's time is the origin; a window closes
when a frame at or after its end arrives, and at the end of the stream the rule for a short
last window applies).  Complete windows go into a queue; decoding never waits for the model.

The main thread takes windows from the queue and runs each through the same steps as the
offline job (:func:`minigpt4.detect.run.window_row`).  Each result is a JSON line on stdout,
as soon as it is done, with ``latency_s``: from the arrival of the window's last frame to the
line; the same row is appended to ``timeline.csv`` (flushed: every line complete), and
``timeline.png`` is redrawn every ``live.plot_every_s`` seconds.  Progress and logs go to
stderr.

Falling behind: with ``live.behind: drop`` a processor that finds more than ``live.max_queue``
windows waiting skips to the newest and says which it dropped (a JSON line); ``queue``
processes every window in order.  The run ends at the end of the stream, on SIGINT or SIGTERM
(the current window is finished and the files are closed), or when the source delivers nothing
for ``live.stall_s`` seconds (named); the exit status is 0 with a summary line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from minigpt4.detect.apply import RecordingState
from minigpt4.detect.outputs import (
    SUMMARY_JSON, TIMELINE_CSV, TIMELINE_PNG, RecordingSummary, TimelineAppender, WindowRow, plot_timeline,
)
from minigpt4.detect.windows import Window, regular_windows
from minigpt4.prepare.cut import TIME_TOLERANCE_S
from minigpt4.prepare.decode import ArrayFrames, upright
from minigpt4.prepare.faces import find_faces

logger = logging.getLogger(__name__)

POLL_S = 0.05  # how often a reader waiting for a growing file, or the processor for a window, looks again


@dataclass
class LiveWindow:
    window: Window
    frames: np.ndarray  # uint8 [n, H, W, 3], the window's frames in time order
    times: np.ndarray  # [n] seconds
    audio: np.ndarray | None  # float32 mono samples of [start_s, end_s) at the audio encoder's rate
    arrived: float  # time.monotonic() when the window's last frame arrived


class LiveSourceError(ValueError):
    """A live source cannot be opened or read; the message names it and the problem."""


class SourceEnded:
    """Put in the queue by the reader when the stream is over (``error``: why it could not go on)."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


class GrowingFile:
    """A file that is still being written, read front to back: at its current end, wait for
    more; after ``stall_s`` without growth, end (the writer has finished or stalled)."""

    def __init__(self, path: Path, stall_s: float, stop: threading.Event):
        self.handle = path.open("rb")
        self.stall_s, self.stop = stall_s, stop

    def read(self, size: int = -1) -> bytes:
        waited_since = time.monotonic()
        while True:
            data = self.handle.read(size)
            if data or self.stop.is_set() or time.monotonic() - waited_since > self.stall_s:
                return data
            time.sleep(POLL_S)

    def close(self) -> None:
        self.handle.close()


class StandardInput:
    """Standard input read through its descriptor: a reader thread left blocked in a read when the
    run ends (a stalled pipe) holds no lock of Python's buffered ``sys.stdin``, so the process
    exits cleanly."""

    def read(self, size: int = -1) -> bytes:
        return os.read(0, size if size > 0 else 1 << 16)


def source_name(path: str) -> str:
    """The output folder of a live source: a file's stem, ``stdin`` for ``-``, else the device or URL made safe."""
    if path == "-":
        return "stdin"
    candidate = Path(path)
    text = candidate.stem if candidate.suffix else path
    return re.sub(r"[^\w.+-]+", "_", text).strip("._") or "live"


def open_live(cfg, stop: threading.Event):
    """The live source as a PyAV container (and what to close after it)."""
    path, fmt = cfg.input.path, cfg.input.format
    options = {str(k): str(v) for k, v in (cfg.input.options or {}).items()}
    is_file = fmt is None and path != "-" and "://" not in path
    if is_file:  # a recording that is about to start: wait for its file
        waited = time.monotonic()
        while not Path(path).exists() and time.monotonic() - waited < cfg.live.stall_s:
            time.sleep(POLL_S)
        if not Path(path).is_file():
            raise LiveSourceError(f"detect.input.path {path}: no such file (waited {cfg.live.stall_s} s for it to appear: live.stall_s)")
    try:
        if path == "-":
            return av.open(StandardInput(), mode="r", format=fmt, options=options), None
        if is_file:
            growing = GrowingFile(Path(path), cfg.live.stall_s, stop)
            return av.open(growing, mode="r", options=options), growing
        return av.open(path, mode="r", format=fmt, options=options, timeout=cfg.live.stall_s), None
    except (av.FFmpegError, OSError) as exc:
        raise LiveSourceError(f"detect.input.path {path}: cannot be opened as a video source ({str(exc).splitlines()[0]})") from None
    except ValueError as exc:  # PyAV: an unknown format name
        raise LiveSourceError(f"detect.input.format {fmt!r}: {exc}; FFmpeg's input formats: `ffmpeg -formats`") from None


class WindowAssembler:
    """Frames (and sound) as they arrive -> the windows the offline job would cut."""

    def __init__(self, length_s: float, hop_s: float, keep_short: bool, audio_rate: int | None):
        self.length_s, self.hop_s, self.keep_short, self.audio_rate = length_s, hop_s, keep_short, audio_rate
        self.first: float | None = None
        self.frames: list[tuple[float, np.ndarray, float]] = []  # (time, rgb, arrival) not yet behind every open window
        self.intervals: list[float] = []  # between consecutive frames: the last frame's length is their median
        self.last_time: float | None = None
        self.next = 0  # index of the next window to close
        self.audio_start: float | None = None  # time of the first buffered sample
        self.audio = np.zeros(0, np.float32)
        self.audio_until = -np.inf  # time up to which sound has arrived

    def window(self, index: int) -> tuple[float, float]:
        start = self.first + index * self.hop_s
        return start, start + self.length_s

    def add_frame(self, t: float, rgb: np.ndarray, arrived: float) -> None:
        if self.first is None:
            self.first = t
        if self.last_time is not None:
            self.intervals.append(t - self.last_time)
        self.last_time = t
        self.frames.append((t, rgb, arrived))

    def add_audio(self, t: float, samples: np.ndarray) -> None:
        if self.audio_start is None:
            self.audio_start = t
        self.audio = np.concatenate([self.audio, samples])
        self.audio_until = self.audio_start + len(self.audio) / self.audio_rate

    def ready(self) -> list[LiveWindow]:
        """Windows closed by what has arrived: a frame at or after their end (and sound up to it)."""
        done = []
        while self.first is not None:
            start, end = self.window(self.next)
            if self.last_time < end - TIME_TOLERANCE_S or (self.audio_rate and self.audio_until < end):
                break
            done.append(self._cut(start, end, short=False))
        return done

    def finish(self) -> list[LiveWindow]:
        """At the end of the stream: the windows still open, as the offline job plans them."""
        if self.first is None:
            return []
        step = float(np.median(self.intervals)) if self.intervals else 0.0
        done = self.ready()
        planned, _ = regular_windows(self.first, self.last_time + step, self.length_s, self.hop_s, self.keep_short)
        for window in planned[self.next:]:  # the offline plan of the whole recording, from the first window not yet cut
            done.append(self._cut(window.start_s, window.end_s, short=window.short))
        return done

    def _cut(self, start: float, end: float, short: bool) -> LiveWindow:
        inside = [(t, rgb, arrived) for t, rgb, arrived in self.frames if start - TIME_TOLERANCE_S <= t < end - TIME_TOLERANCE_S]
        window = Window(self.next, start, end, short=short)
        self.next += 1
        following, _ = self.window(self.next)
        self.frames = [frame for frame in self.frames if frame[0] >= following - TIME_TOLERANCE_S]
        audio = self._audio(start, end) if self.audio_rate else None
        if not inside:
            return LiveWindow(window, np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0), audio, time.monotonic())
        return LiveWindow(
            window, np.stack([rgb for _, rgb, _ in inside]), np.array([t for t, _, _ in inside]), audio, inside[-1][2]
        )

    def _audio(self, start: float, end: float) -> np.ndarray | None:
        if self.audio_start is None:
            return None
        first = max(round((start - self.audio_start) * self.audio_rate), 0)
        last = max(round((end - self.audio_start) * self.audio_rate), first)
        samples = self.audio[first:last].copy()
        following, _ = self.window(self.next)
        drop = max(round((following - self.audio_start) * self.audio_rate), 0)  # nothing before the next window is read again
        self.audio, self.audio_start = self.audio[drop:], self.audio_start + drop / self.audio_rate
        return samples if len(samples) else None


class LiveReader(threading.Thread):
    """Decodes the source as it arrives and puts each closed window into ``windows``."""

    def __init__(self, cfg, audio_rate: int | None, windows: queue.Queue, stop: threading.Event):
        super().__init__(name="detect-live-reader", daemon=True)
        self.cfg, self.audio_rate, self.windows, self.stop = cfg, audio_rate, windows, stop
        self.last_data = time.monotonic()
        keep = cfg.window.short_last == "keep"
        self.assembler = WindowAssembler(cfg.window.length_s, cfg.window.hop_s, keep, audio_rate)
        self.container, self.closer = open_live(cfg, stop)  # in the caller's thread: a bad source fails there
        # a growing file ends itself after stall_s without growth; other sources block in a read,
        # so the processor watches them
        self.ends_itself = isinstance(self.closer, GrowingFile)
        if not self.container.streams.video:
            kinds = sorted({s.type for s in self.container.streams}) or ["nothing"]
            raise LiveSourceError(f"detect.input.path {cfg.input.path}: the source has no video stream (it holds: {', '.join(kinds)})")

    def run(self) -> None:
        try:
            self._read()
            self.windows.put(SourceEnded())
        except Exception as exc:  # handed to the main thread, which reports it
            self.windows.put(SourceEnded(exc))
        finally:
            self.container.close()
            if self.closer is not None:
                self.closer.close()

    def _read(self) -> None:
        container = self.container
        video = container.streams.video[0]
        streams = [video]
        resampler = None
        if self.audio_rate:
            if not container.streams.audio:
                raise LiveSourceError(f"detect.input.path {self.cfg.input.path}: the detector reads sound but the source has no audio stream")
            streams.append(container.streams.audio[0])
            resampler = av.AudioResampler(format="fltp", rate=self.audio_rate)
        try:
            for packet in container.demux(*streams):
                if self.stop.is_set():
                    return
                for frame in packet.decode():
                    self.last_data = time.monotonic()
                    if packet.stream is video:
                        if frame.time is not None:
                            self.assembler.add_frame(frame.time, upright(frame), self.last_data)
                    else:
                        for out in resampler.resample(frame):  # mono = the mean of the channels, as the offline reader
                            if out.time is not None:
                                self.assembler.add_audio(out.time, out.to_ndarray().mean(axis=0).astype(np.float32))
                for window in self.assembler.ready():
                    self.windows.put(window)
        except av.FFmpegError as exc:
            raise LiveSourceError(f"detect.input.path {self.cfg.input.path}: the stream cannot be decoded ({str(exc).splitlines()[0]})") from None
        for window in self.assembler.finish():
            self.windows.put(window)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event):
    """SIGINT and SIGTERM set ``stop`` (the current window is finished) instead of raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def emit(line: dict) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def follow(cfg, detector, parts, face_detector, out: Path) -> RecordingSummary:
    """Run the live loop until the source ends, a signal, or a stall; returns the summary."""
    from minigpt4.detect.run import StageClock, window_row  # the offline job's step for one window

    name = source_name(cfg.input.path)
    folder = out / name
    stop = threading.Event()
    windows: queue.Queue = queue.Queue()
    audio_rate = parts.encoders["audio"].sample_rate if "audio" in parts.encoders else None
    face_detector.detect(np.zeros((1, 64, 64, 3), np.uint8))  # one-time set-up costs now, not in the first window
    logger.info("live: waiting for %s", cfg.input.path)
    reader = LiveReader(cfg, audio_rate, windows, stop)
    logger.info("live: following %s; estimates go to stdout, one JSON line per window", cfg.input.path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUMMARY_JSON).unlink(missing_ok=True)  # written again at the end
    appender = TimelineAppender(folder / TIMELINE_CSV)
    summary = RecordingSummary(video=name)
    clock = StageClock(summary.seconds)
    state = RecordingState(detector)
    rows, latencies, last_plot = [], [], time.monotonic()
    ended = "the stream ended"
    with stop_on_signals(stop):
        reader.start()
        while True:
            if stop.is_set():
                ended = "stopped by a signal"
                break
            try:
                item = windows.get(timeout=POLL_S)
            except queue.Empty:
                if not reader.ends_itself and time.monotonic() - reader.last_data > cfg.live.stall_s:
                    ended = f"the source delivered nothing for {cfg.live.stall_s} s (live.stall_s)"
                    break
                continue
            if isinstance(item, SourceEnded):
                if item.error is not None:
                    raise item.error
                if stop.is_set():  # the signal also ends the reader's reads: its end is the signal's
                    ended = "stopped by a signal"
                elif reader.ends_itself:
                    ended = f"the file grew no more for {cfg.live.stall_s} s (live.stall_s): taken as finished"
                break
            if cfg.live.behind == "drop" and windows.qsize() > cfg.live.max_queue:
                item = _skip_to_newest(item, windows, summary)
                if isinstance(item, SourceEnded):
                    break
            started = time.perf_counter()
            faces = find_faces(ArrayFrames(item.frames, item.times) if len(item.times) else _NoFrames(), face_detector,
                               parts.faces, start_s=item.window.start_s, end_s=item.window.end_s)
            summary.seconds["faces"] += time.perf_counter() - started
            row = window_row(name, item.window, faces, state, parts, clock, lambda w=item: w.audio)
            latency = time.monotonic() - item.arrived
            latencies.append(latency)
            appender.append(row)
            rows.append(row)
            summary.add(row)
            summary.recording_s += item.window.end_s - item.window.start_s
            emit(_json_row(row, latency))
            if time.monotonic() - last_plot >= cfg.live.plot_every_s:
                plot_timeline(rows, folder / TIMELINE_PNG, detector.threshold, name)
                last_plot = time.monotonic()
    stop.set()
    appender.close()
    logger.info("live: %s", ended)
    summary.finish(rows)
    summary.latency_s = {"p50": _quantile(latencies, 0.5), "p95": _quantile(latencies, 0.95)} if latencies else None
    plot_timeline(rows, folder / TIMELINE_PNG, detector.threshold, name)
    (folder / SUMMARY_JSON).write_text(summary.as_json())
    emit({"summary": {"video": name, "windows": summary.windows, "dropped": len(summary.dropped_behind),
                      "latency_s": summary.latency_s, "ended": ended}})
    return summary


class _NoFrames:
    """A window the stream left empty (a gap in it): find_faces reports no frames."""

    timestamps = np.zeros(0)

    def read(self, indices):
        return np.zeros((0, 1, 1, 3), np.uint8)


def _skip_to_newest(item, windows: queue.Queue, summary: RecordingSummary):
    """Take every waiting window, keep the newest (or the end of the stream), report the others."""
    waiting = [item]
    while True:
        try:
            waiting.append(windows.get_nowait())
        except queue.Empty:
            break
    ended = [w for w in waiting if isinstance(w, SourceEnded)]
    complete = [w for w in waiting if not isinstance(w, SourceEnded)]
    keep = complete[-1] if complete else None
    dropped = [w.window.index for w in complete[:-1]]
    if dropped:
        summary.dropped_behind += dropped
        emit({"dropped": dropped, "reason": f"more than live.max_queue windows were waiting; skipped to window {keep.window.index}"})
    for end in ended:
        windows.put(end)  # the end still comes after the kept window
    return keep if keep is not None else ended[0]


def _json_row(row: WindowRow, latency: float) -> dict:
    return {
        "video": row.video, "window": row.window, "start_s": round(row.start_s, 4), "end_s": round(row.end_s, 4),
        "p_mw": row.p_mw, "p_mw_calibrated": row.p_mw_calibrated, "mw": row.mw, "coverage": round(row.coverage, 4),
        "status": row.status, "latency_s": round(latency, 4),
    }


def _quantile(values: list[float], q: float) -> float:
    return round(float(np.quantile(values, q)), 4)

