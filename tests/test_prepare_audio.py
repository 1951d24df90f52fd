"""A clip's sound: the window of a video's audio track at 16 kHz mono (read_audio_window) and
the WAV prepare writes it to."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_script

from minigpt4.datasets.audio_track import read_audio_track, read_audio_window
from minigpt4.datasets.frames import ClipReadError
from minigpt4.prepare.write import save_wav

RATE_IN, RATE_OUT = 44_100, 16_000
SECONDS = 6.0
TONE_HZ, LOUDNESS = 220.0, 0.4


def tone(t: np.ndarray) -> np.ndarray:
    """The sound track written: a tone whose loudness doubles after 3 s."""
    return LOUDNESS * np.where(t < 3.0, 0.5, 1.0) * np.sin(2 * np.pi * TONE_HZ * t)


@pytest.fixture(scope="module")
def video_with_sound(tmp_path_factory):
    sessions = load_script("tiny_sessions")
    path = tmp_path_factory.mktemp("sound") / "session.mp4"
    frames = np.zeros((int(SECONDS * 10), 32, 32, 3), dtype=np.uint8)
    sessions.write_video(path, frames, fps=10, audio=tone(np.arange(int(SECONDS * RATE_IN)) / RATE_IN), sample_rate=RATE_IN)
    return path


@pytest.mark.parametrize("start_s, end_s", [(0.0, 1.6), (2.2, 3.8), (4.35, 5.95)])
def test_a_window_is_the_tone_at_its_times(video_with_sound, start_s, end_s):
    """Against the written signal: sample k lies at start_s + k / 16000, to within half a sample
    (0.5 / 16000 s of a 220 Hz tone of loudness 0.4 is at most 0.017)."""
    samples = read_audio_window(video_with_sound, start_s, end_s, RATE_OUT, "probe")
    assert samples.dtype == np.float32 and len(samples) == round((end_s - start_s) * RATE_OUT)
    expected = tone(start_s + np.arange(len(samples)) / RATE_OUT)
    assert np.abs(samples - expected)[32:-32].max() < 0.02  # the resampler's filter at the two edges aside


def test_the_whole_track_and_a_window_past_its_end(video_with_sound):
    assert np.array_equal(read_audio_window(video_with_sound, None, None, RATE_OUT), read_audio_track(video_with_sound, RATE_OUT))
    tail = read_audio_window(video_with_sound, 5.5, 7.0, RATE_OUT)
    assert abs(len(tail) - 0.5 * RATE_OUT) <= 1  # the part the track covers (the resampler's last sample aside), never padding
    with pytest.raises(ClipReadError) as error:
        read_audio_window(video_with_sound, 7.0, 8.0, RATE_OUT, "late")
    assert str(error.value) == f"clip 'late' ({video_with_sound}): the audio track holds no samples between 7.0 s and 8.0 s"


def test_a_video_without_sound_is_named(tmp_path):
    sessions = load_script("tiny_sessions")
    path = sessions.write_video(tmp_path / "mute.mp4", np.zeros((5, 32, 32, 3), dtype=np.uint8), fps=10)
    with pytest.raises(ClipReadError) as error:
        read_audio_window(path, 0.0, 0.4, RATE_OUT, "mute")
    assert str(error.value) == f"clip 'mute' ({path}): no audio track (the file holds no sound to encode)"


def test_the_wav_gives_back_the_samples(tmp_path):
    samples = np.random.default_rng(0).uniform(-1, 1, 12345).astype(np.float32)
    save_wav(tmp_path / "clip.wav", samples, RATE_OUT)
    assert np.array_equal(read_audio_track(tmp_path / "clip.wav", RATE_OUT), samples)
