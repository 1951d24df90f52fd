"""Generated "session" recordings for the prepare step: drawn faces that move, a sound track, a segments CSV.

A study records long sessions of each participant and cuts a window before each thought
probe.  This module draws such sessions (a face moving along a known path, its look and the
pitch of the sound following the label of the window it is in; in one session a second,
smaller face crosses the frame) and the segments CSV that cuts them: one participant per
session, the participants split into folds (never one participant in two folds), both labels
in every fold.  The faces carry what a face detector looks for (shaded head, hair, eye
sockets, brows, nose, nostrils, lips), so a real detector finds them; ``face_landmarks``
gives where their five landmarks were drawn.  Everything is deterministic for a seed.

Used by ``scripts/make_tiny_assets.py`` (part ``sessions``) and by the prepare tests.
"""

from __future__ import annotations

import csv
import fractions
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np

SKIN = (222.0, 184.0, 150.0)
COOL_SKIN = (160.0, 176.0, 206.0)  # the crossing face: told apart from SKIN by colour in the tests
HAIR = np.array([60.0, 42.0, 30.0])
EYE_WHITE = np.array([240.0, 240.0, 235.0])
IRIS = np.array([40.0, 30.0, 30.0])
LIPS = np.array([150.0, 60.0, 60.0])
MOUTH_INSIDE = np.array([60.0, 20.0, 25.0])
BACKGROUND = (100.0, 115.0, 110.0)

SESSION_HEIGHT, SESSION_WIDTH = 180, 320
SESSION_FPS = 10
SESSION_SECONDS = 10.0
SESSIONS = 4  # one participant each
SEGMENTS_PER_SESSION = 5
SEGMENT_SECONDS = 1.6
SESSION_FOLDS = 2  # the participants split into this many folds
SESSION_SAMPLE_RATE = 44_100  # a recorder's rate: prepare resamples the clips' sound to 16 kHz
SESSION_TONE_HZ = {"MW": 220.0, "NonMW": 440.0, None: 330.0}  # the sound's pitch: the window's label, or between windows
VIDEO_BIT_RATE = 4_000_000


@dataclass(frozen=True)
class DrawnFace:
    """A face centred at (cy, cx) with head radius r (pixels) and its expression."""

    cy: float
    cx: float
    r: float
    eyes_open: float = 1.0  # 0 = closed
    gaze: float = 0.0  # irises to the right (> 0) or left (< 0)
    mouth_open: float = 0.0
    smile: float = 0.0
    skin: tuple[float, float, float] = SKIN


def face_landmarks(face: DrawnFace) -> np.ndarray:
    """Where the five landmarks were drawn, (5, 2) x, y: eyes, nose tip, mouth corners."""
    cx, cy, r = face.cx, face.cy, face.r
    return np.array(
        [
            [cx - 0.4 * r, cy - 0.1 * r],
            [cx + 0.4 * r, cy - 0.1 * r],
            [cx, cy + 0.38 * r],
            [cx - 0.36 * r, cy + 0.68 * r],
            [cx + 0.36 * r, cy + 0.68 * r],
        ]
    )


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    """Normalised squared distance from an ellipse's centre: <= 1 inside."""
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


def draw_face(image: np.ndarray, face: DrawnFace) -> None:
    """Draw ``face`` onto the float (H, W, 3) ``image`` in place (parts outside it are cut)."""
    cy, cx, r = face.cy, face.cx, face.r
    height, width = image.shape[:2]
    y0, y1 = max(0, int(cy - 1.6 * r)), min(height, int(cy + 1.6 * r) + 1)
    x0, x1 = max(0, int(cx - 1.4 * r)), min(width, int(cx + 1.4 * r) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    out = image[y0:y1, x0:x1]
    skin = np.asarray(face.skin)
    head = _ellipse(yy, xx, cy, cx, 1.25 * r, r)
    out[(np.abs(xx - cx) < 0.45 * r) & (yy > cy + r) & (yy < cy + 1.6 * r)] = 0.8 * skin  # neck
    shade = np.clip(1.0 - 0.25 * head, 0.7, 1.0)[..., None]  # darker towards the head's edge
    out[head <= 1] = (skin * shade)[head <= 1]
    out[(_ellipse(yy, xx, cy - 0.25 * r, cx, 1.15 * r, 1.08 * r) <= 1) & (yy < cy - 0.55 * r)] = HAIR
    for side in (-1, 1):
        eye_x, eye_y = cx + side * 0.4 * r, cy - 0.1 * r
        out[_ellipse(yy, xx, eye_y, eye_x, 0.16 * r, 0.26 * r) <= 1] = 0.65 * skin  # socket
        if face.eyes_open > 0:
            white = _ellipse(yy, xx, eye_y, eye_x, 0.1 * r * face.eyes_open, 0.2 * r) <= 1
            out[white] = EYE_WHITE
            out[(_ellipse(yy, xx, eye_y, eye_x + face.gaze * 0.1 * r, 0.09 * r, 0.09 * r) <= 1) & white] = IRIS
        else:
            out[(np.abs(yy - eye_y) < 0.03 * r + 0.6) & (np.abs(xx - eye_x) < 0.2 * r)] = HAIR  # lid line
        out[(np.abs(yy - (eye_y - 0.28 * r)) < 0.05 * r + 0.5) & (np.abs(xx - eye_x) < 0.24 * r)] = HAIR  # brow
    out[(np.abs(xx - cx) < 0.06 * r + 0.5) & (yy > cy - 0.05 * r) & (yy < cy + 0.38 * r)] = 0.75 * skin  # nose
    for side in (-1, 1):
        out[_ellipse(yy, xx, cy + 0.4 * r, cx + side * 0.1 * r, 0.05 * r + 0.5, 0.07 * r + 0.5) <= 1] = 0.45 * skin
    u = (xx - cx) / (0.36 * r)  # -1..1 from mouth corner to mouth corner
    mouth_y = cy + 0.68 * r + face.smile * 0.12 * r * (1 - u**2)
    lip_half_height = 0.05 * r + 0.6 + face.mouth_open * 0.18 * r * (1 - u**2)
    out[(np.abs(u) <= 1) & (np.abs(yy - mouth_y) <= lip_half_height)] = LIPS
    if face.mouth_open > 0:
        out[(np.abs(u) <= 0.8) & (np.abs(yy - mouth_y) <= face.mouth_open * 0.14 * r * (1 - u**2))] = MOUTH_INSIDE


def render_frame(
    height: int, width: int, faces: Sequence[DrawnFace], rng: np.random.Generator | None = None
) -> np.ndarray:
    """uint8 (H, W, 3): ``faces`` drawn in order (later ones in front) on a plain background, mild noise."""
    image = np.empty((height, width, 3))
    image[:] = BACKGROUND
    for face in faces:
        draw_face(image, face)
    if rng is not None:
        image += rng.normal(0.0, 2.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: float = 25,
    times: Sequence[float] | None = None,
    rotation: int = 0,
    audio: np.ndarray | None = None,
    sample_rate: int = SESSION_SAMPLE_RATE,
) -> Path:
    """MPEG-4 in mp4/avi (by suffix), single-threaded and bit-exact, so the bytes are reproducible.

    ``times`` (seconds, increasing) gives each frame its own presentation time: a variable
    frame rate.  ``rotation`` (degrees counter-clockwise, a multiple of 90) stores the frames
    turned the other way with that display rotation in the metadata, as a phone does: a
    player (or a reader honouring the metadata) shows them upright.  ``audio`` (float mono in
    [-1, 1] at ``sample_rate``, starting with the first frame) becomes a sound track in ALAC:
    lossless and integer-only, so its bytes are reproducible too.
    """
    time_base = fractions.Fraction(1, 1000)
    with av.open(str(path), mode="w", container_options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fractions.Fraction(fps).limit_denominator(1000), options={"flags": "+bitexact"})
        if audio is not None:
            sound = container.add_stream("alac", rate=sample_rate, options={"flags": "+bitexact"})
            sound.layout, sound.format = "mono", "s16p"
        coded = np.rot90(frames, k=-(rotation // 90), axes=(1, 2)) if rotation else frames
        stream.width, stream.height = coded.shape[2], coded.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = VIDEO_BIT_RATE
        stream.codec_context.thread_count = 1
        if times is not None:
            stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(coded):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush
        if audio is not None:
            samples = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(samples[None], format="s16p", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, 0
            container.mux(sound.encode(frame))
            container.mux(sound.encode())  # flush
    return path


# --------------------------------------------------------------------------- the demo sessions


def session_windows() -> list[tuple[float, float]]:
    """(start_s, end_s) of each probe window: evenly spread, with gaps between them."""
    step = SESSION_SECONDS / SEGMENTS_PER_SESSION
    return [(round(k * step + 0.2, 3), round(k * step + 0.2 + SEGMENT_SECONDS, 3)) for k in range(SEGMENTS_PER_SESSION)]


def session_face(t: float, label: str | None, phase: np.ndarray) -> DrawnFace:
    """The main face at time ``t``: moving on a slow Lissajous path; its look follows the window's label.

    MW: eyes closed or averted, flat mouth; NonMW: eyes open, a smile that peaks mid-window.
    """
    cy = SESSION_HEIGHT / 2 + 18 * np.sin(2 * np.pi * t / 5.0 + phase[0])
    cx = SESSION_WIDTH / 2 + 60 * np.sin(2 * np.pi * t / 7.0 + phase[1])
    face = DrawnFace(float(cy), float(cx), 34.0)
    if label == "MW":
        return replace(face, eyes_open=0.0) if phase[2] > 0 else replace(face, gaze=0.8)
    if label == "NonMW":
        return replace(face, smile=float(np.sin(np.pi * (t % 2.0) / 2.0)), mouth_open=0.3)
    return face


def crossing_face(t: float) -> DrawnFace:
    """A smaller, cool-skinned face crossing the frame from left to right, behind the main face."""
    return DrawnFace(SESSION_HEIGHT / 2 + 10, -20 + (SESSION_WIDTH + 40) * t / SESSION_SECONDS, 18.0, skin=COOL_SKIN)


def session_sound(windows: Sequence[tuple[float, float]], labels: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """float32 mono at SESSION_SAMPLE_RATE over the session: a tone whose pitch follows the label of
    the window each moment lies in (quieter, at a third pitch, between windows), a little noise."""
    t = np.arange(int(SESSION_SECONDS * SESSION_SAMPLE_RATE)) / SESSION_SAMPLE_RATE
    pitch = np.full(t.size, SESSION_TONE_HZ[None])
    loudness = np.full(t.size, 0.1)
    for (start, end), label in zip(windows, labels):
        inside = (t >= start) & (t < end)
        pitch[inside], loudness[inside] = SESSION_TONE_HZ[label], 0.4
    phase = 2 * np.pi * np.cumsum(pitch) / SESSION_SAMPLE_RATE  # continuous where the pitch changes
    return (loudness * np.sin(phase) + rng.normal(0.0, 0.01, t.size)).astype(np.float32)


def make_sessions(root: Path, rng: np.random.Generator, labels: Sequence[str] = ("MW", "NonMW")) -> dict[str, Path]:
    """SESSIONS session videos with sound and ``segments.csv`` (video, clip, start_s, end_s,
    mw_label, test_fold_num, participant): participant k's session is fold k * SESSION_FOLDS // SESSIONS."""
    paths = {"sessions_root": root, "sessions_videos": root / "videos", "sessions_segments": root / "segments.csv"}
    paths["sessions_videos"].mkdir(parents=True, exist_ok=True)
    rows = []
    for session in range(SESSIONS):
        video = f"session_{session}.mp4"
        windows = session_windows()
        window_labels = [labels[(session + k) % len(labels)] for k in range(len(windows))]
        phase = rng.uniform(-np.pi, np.pi, size=3)
        frames = []
        for i in range(int(SESSION_SECONDS * SESSION_FPS)):
            t = i / SESSION_FPS
            label = next((lab for (s, e), lab in zip(windows, window_labels) if s <= t < e), None)
            faces = [session_face(t, label, phase)]
            if session == 1:
                faces.insert(0, crossing_face(t))
            frames.append(render_frame(SESSION_HEIGHT, SESSION_WIDTH, faces, rng))
        sound = session_sound(windows, window_labels, rng)
        write_video(paths["sessions_videos"] / video, np.stack(frames), fps=SESSION_FPS, audio=sound)
        fold = session * SESSION_FOLDS // SESSIONS
        for k, ((start, end), label) in enumerate(zip(windows, window_labels)):
            rows.append((video, f"s{session}_probe{k}", start, end, label, fold, f"participant_{session}"))
    with paths["sessions_segments"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "clip", "start_s", "end_s", "mw_label", "test_fold_num", "participant"])
        writer.writerows(rows)
    return paths
