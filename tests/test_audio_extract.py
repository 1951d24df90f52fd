"""The audio stream's extraction (``extract_audio_embedding.py``, SPEC sections 4 and 9).

Vectors are pinned against ``transformers.HubertModel`` run directly on the same waveform,
decoding against the samples written, resampling against the 16 kHz mono original.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import struct
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from synthetic_clips import smooth_frames, tones, write_video, write_wav
from transformers import HubertModel, Wav2Vec2FeatureExtractor

from minigpt4.datasets.audio_track import read_audio_track, regroup
from minigpt4.datasets.frames import ClipReadError
from minigpt4.features.audio_vectors import normalisation, waveform_stats
from minigpt4.models.hubert_encoder import HubertAudioEncoder

ROOT = Path(__file__).resolve().parents[1]
RATE = 16_000
TOLERANCE = 1e-5  # the extractor against HubertModel on the same waveform (float32)
RESAMPLE_TOLERANCE = 1e-4  # 44.1 / 48 kHz stereo against the 16 kHz mono original (vectors of ~0.4)


def _load_cli():
    spec = importlib.util.spec_from_file_location("extract_audio_embedding", ROOT / "extract_audio_embedding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = _load_cli()


def extract(input_path: Path, output: Path, model_dir: Path, *options: str) -> None:
    cli.main(["--input", str(input_path), "--output", str(output), "--model_dir", str(model_dir), "--device", "cpu",
              *options])


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory, tiny_assets_script) -> Path:
    """The tiny assets' HuBERT folder (random weights, feature extractor with do_normalize)."""
    folder = tmp_path_factory.mktemp("hubert") / "hubert"
    tiny_assets_script.write_tiny_hubert(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def reference(hubert_dir):
    """HuBERT as transformers runs it: prepared by the folder's feature extractor, one forward.
    The tiny model has 2 transformer layers: --layer 2 = -1 = the output, 1 = hidden_states[1]."""
    model = HubertModel.from_pretrained(hubert_dir).eval()
    prepare = Wav2Vec2FeatureExtractor.from_pretrained(hubert_dir)
    assert prepare.do_normalize

    @torch.no_grad()
    def frames(waveform: np.ndarray, layer: int | None = None) -> np.ndarray:
        """[T, D]: the model's output, or ``hidden_states[layer]`` (the input of transformer layer k)."""
        values = prepare(waveform, sampling_rate=RATE, return_tensors="pt").input_values
        output = model(values, output_hidden_states=True)
        return (output.last_hidden_state if layer is None else output.hidden_states[layer])[0].numpy()

    return frames


def test_vector_is_the_time_mean_of_the_chosen_layer(tmp_path, hubert_dir, reference):
    clips = tmp_path / "clips"
    clips.mkdir()
    waveform = tones(RATE, 0.8)
    write_wav(clips / "a.wav", waveform[None], RATE)
    extract(clips, tmp_path / "last", hubert_dir)
    extract(clips, tmp_path / "first", hubert_dir, "--layer", "1")
    extract(clips, tmp_path / "frames", hubert_dir, "--feature_level", "FRAME")
    last = np.load(tmp_path / "last" / "a.npy")
    assert last.shape == (64,) and last.dtype == np.float32
    np.testing.assert_allclose(last, reference(waveform).mean(axis=0), atol=TOLERANCE, rtol=0)
    first = np.load(tmp_path / "first" / "a.npy")
    np.testing.assert_allclose(first, reference(waveform, 1).mean(axis=0), atol=TOLERANCE, rtol=0)
    assert not np.allclose(first, last, atol=1e-3)
    frames = np.load(tmp_path / "frames" / "a.npy")
    assert frames.shape == (39, 64)  # (12800 - 400) // 320 + 1: a 25 ms receptive field every 20 ms
    np.testing.assert_allclose(frames, reference(waveform), atol=TOLERANCE, rtol=0)


def test_video_sound_track_is_decoded_to_the_samples_written(tmp_path, hubert_dir, reference, tiny_assets_script):
    """The demo's videos: ALAC 16-bit sound; decoded as int16 / 32768, then encoded as a .wav would be."""
    video = tmp_path / "clips" / "v.mp4"
    video.parent.mkdir()
    sound = tiny_assets_script.tone_track("MW", 12_000, np.random.default_rng(0))
    tiny_assets_script.write_video(video, smooth_frames(8, 32, 32), sound)
    written = np.round(np.clip(sound, -1, 1) * 32767).astype(np.int16)
    np.testing.assert_array_equal(read_audio_track(video, RATE), written / np.float32(32768))
    extract(video.parent, tmp_path / "out", hubert_dir)
    expected = reference(written / np.float32(32768)).mean(axis=0)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "v.npy"), expected, atol=TOLERANCE, rtol=0)


def test_other_rates_and_stereo_give_the_16k_mono_vector(tmp_path, hubert_dir):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_wav(clips / "mono16k.wav", tones(RATE)[None], RATE)
    for rate in (44_100, 48_000):
        wave = tones(rate)
        write_wav(clips / f"stereo{rate}.wav", np.stack([wave, wave]), rate)
    extract(clips, tmp_path / "out", hubert_dir)
    original = np.load(tmp_path / "out" / "mono16k.npy")
    for rate in (44_100, 48_000):
        waveform = read_audio_track(clips / f"stereo{rate}.wav", RATE)
        assert waveform.shape == (RATE,)  # same duration; the mono mix is the channel mean, not louder
        np.testing.assert_allclose(waveform, tones(RATE), atol=1e-3, rtol=0)
        resampled = np.load(tmp_path / "out" / f"stereo{rate}.npy")
        np.testing.assert_allclose(resampled, original, atol=RESAMPLE_TOLERANCE, rtol=0)


def test_long_clips_run_in_windows_whose_frames_are_concatenated(tmp_path, hubert_dir, reference):
    """window_seconds 0.25 cuts 0.7 s into three windows of 3733-3734 samples, each encoded alone."""
    clips = tmp_path / "clips"
    clips.mkdir()
    waveform = tones(RATE, 0.7)
    write_wav(clips / "long.wav", waveform[None], RATE)
    extract(clips, tmp_path / "frames", hubert_dir, "--window_seconds", "0.25", "--feature_level", "FRAME")
    extract(clips, tmp_path / "mean", hubert_dir, "--window_seconds", "0.25")
    encoder = HubertAudioEncoder.from_pretrained(hubert_dir, window_seconds=0.25)
    windows = encoder.windows(len(waveform))
    assert [end - start for start, end in windows] == [3733, 3734, 3733]
    # normalisation sees the whole clip; HuBERT sees one window at a time
    prepared = Wav2Vec2FeatureExtractor.from_pretrained(hubert_dir)(waveform, sampling_rate=RATE).input_values[0]
    with torch.no_grad():
        expected = np.concatenate(
            [encoder.hubert(torch.from_numpy(prepared[s:e])[None]).last_hidden_state[0].numpy() for s, e in windows]
        )
    frames = np.load(tmp_path / "frames" / "long.npy")
    np.testing.assert_allclose(frames, expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(np.load(tmp_path / "mean" / "long.npy"), frames.mean(axis=0), atol=TOLERANCE, rtol=0)
    assert len(frames) == 3 * 11 < len(reference(waveform)) == 34  # three windows of 11 frames, not one pass


def test_streamed_windows_give_the_whole_file_vectors(tmp_path, hubert_dir):
    """A stereo 44.1 kHz recording of ten windows, decoded and encoded window by window,
    against the whole file decoded at once, normalised by the folder's feature extractor over
    the whole clip, its windows encoded by HubertModel and their frames joined."""
    clips = tmp_path / "clips"
    clips.mkdir()
    rate = 44_100
    wave = tones(rate, 2.3)
    write_wav(clips / "long.wav", np.stack([wave, np.roll(wave, 300)]), rate)
    extract(clips, tmp_path / "frames", hubert_dir, "--window_seconds", "0.25", "--feature_level", "FRAME")
    extract(clips, tmp_path / "mean", hubert_dir, "--window_seconds", "0.25")

    encoder = HubertAudioEncoder.from_pretrained(hubert_dir, window_seconds=0.25)
    waveform = read_audio_track(clips / "long.wav", RATE)  # the whole recording in memory
    windows = encoder.windows(len(waveform))
    assert len(windows) == 10
    prepared = Wav2Vec2FeatureExtractor.from_pretrained(hubert_dir)(waveform, sampling_rate=RATE).input_values[0]
    with torch.no_grad():
        whole = np.concatenate(
            [encoder.hubert(torch.from_numpy(prepared[s:e])[None]).last_hidden_state[0].numpy() for s, e in windows]
        )
    np.testing.assert_allclose(np.load(tmp_path / "frames" / "long.npy"), whole, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(np.load(tmp_path / "mean" / "long.npy"), whole.mean(axis=0), atol=TOLERANCE, rtol=0)


def test_statistics_and_pieces_do_not_depend_on_how_the_samples_arrive():
    rng = np.random.default_rng(0)
    waveform = (0.3 + 0.1 * rng.standard_normal(150_001)).astype(np.float32)  # a DC offset, several blocks
    cuts = np.sort(rng.choice(np.arange(1, len(waveform)), size=40, replace=False))
    chunks = np.split(waveform, cuts)
    whole, pieces = waveform_stats([waveform]), waveform_stats(chunks)
    assert whole == pieces and whole.num_samples == len(waveform)
    np.testing.assert_allclose([whole.mean, whole.variance], [waveform.astype(np.float64).mean(), waveform.astype(np.float64).var()], rtol=1e-12)
    lengths = [50_000, 50_001, 50_000]
    for piece, expected in zip(regroup(chunks, lengths), np.split(waveform, np.cumsum(lengths)[:-1]), strict=True):
        np.testing.assert_array_equal(piece, expected)
    assert [len(piece) for piece in regroup(chunks, [100_000, 100_000])] == [100_000, 50_001]  # the short tail last


def test_normalisation_is_the_feature_extractors(hubert_dir):
    rng = np.random.default_rng(1)
    waveform = (0.05 + 0.2 * rng.standard_normal(40_000)).astype(np.float32)
    encoder = HubertAudioEncoder.from_pretrained(hubert_dir)
    expected = Wav2Vec2FeatureExtractor.from_pretrained(hubert_dir)(waveform, sampling_rate=RATE).input_values[0]
    np.testing.assert_allclose(normalisation(encoder, waveform_stats([waveform]))(waveform), expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ bad input


def no_audio_track(path: Path) -> Path:
    return write_video(path.with_suffix(".mp4"), smooth_frames(4, 32, 32))


def empty_audio_track(path: Path) -> Path:
    """A Matroska video whose audio track holds no packet (MP4 would drop such a track)."""
    path = path.with_suffix(".mkv")
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("pcm_s16le", rate=RATE)
        sound.layout = "mono"
        for image in smooth_frames(4, 32, 32):
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        container.mux(sound.encode())
    return path


def corrupt_file(path: Path) -> Path:
    path = path.with_suffix(".mp4")
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


def unsupported_sample_format(path: Path) -> Path:
    """A WAV whose format tag (0x1234) names no codec FFmpeg can decode."""
    data = np.zeros(RATE // 10, dtype=np.int16).tobytes()
    fmt = struct.pack("<HHIIHH", 0x1234, 1, RATE, 2 * RATE, 2, 16)
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path = path.with_suffix(".wav")
    path.write_bytes(b"RIFF" + struct.pack("<I", len(chunks)) + chunks)
    return path


def too_short(path: Path) -> Path:
    return write_wav(path.with_suffix(".wav"), tones(RATE, 0.01)[None], RATE)  # 160 samples < 400


BAD = {
    no_audio_track: "no audio track",
    empty_audio_track: "holds no samples",
    corrupt_file: "audio cannot be decoded",
    unsupported_sample_format: "unsupported audio codec or sample format",
    too_short: "HuBERT needs at least 25 ms",
}


@pytest.mark.parametrize("make_bad", BAD, ids=lambda f: f.__name__)
def test_bad_clip_stops_the_run_naming_clip_file_and_problem(tmp_path, hubert_dir, make_bad):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_wav(clips / "good.wav", tones(RATE, 0.5)[None], RATE)
    bad = make_bad(clips / "bad")
    with pytest.raises(SystemExit) as stop:
        extract(clips, tmp_path / "out", hubert_dir)
    message = str(stop.value)
    assert "'bad'" in message and str(bad) in message and BAD[make_bad] in message
    assert "\n" not in message.strip()
    assert not (tmp_path / "out").exists()  # nothing written, not even the good clip


def test_skip_bad_reports_every_bad_clip_and_writes_the_rest(tmp_path, hubert_dir):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_wav(clips / "good.wav", tones(RATE, 0.5)[None], RATE)
    bad = {make_bad(clips / make_bad.__name__).stem: problem for make_bad, problem in BAD.items()}
    extract(clips, tmp_path / "out", hubert_dir, "--skip-bad")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["good.npy"]  # no silence stands in
    with open(tmp_path / "out" / "skipped.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert {row["clip"]: row["problem"] for row in rows}.keys() == bad.keys()
    for row in rows:
        assert bad[row["clip"]] in row["problem"] and Path(row["file"]).stem == row["clip"]


def test_sound_that_fails_after_its_check_is_skipped_with_its_encoded_windows(tmp_path, hubert_dir, monkeypatch):
    """The second decode (the encoding pass) of ``b`` ends after its first window: the windows
    it gave are dropped, no vector is written for it, the clips around it are."""
    from minigpt4.features import audio_extract

    clips = tmp_path / "clips"
    clips.mkdir()
    for name in "abc":
        write_wav(clips / f"{name}.wav", tones(RATE, 0.7)[None], RATE)
    decodes = {}
    real = audio_extract.audio_chunks

    def cut_on_second_decode(path, sample_rate, clip=None):
        decodes[clip] = decodes.get(clip, 0) + 1
        samples = np.concatenate(list(real(path, sample_rate, clip)))
        yield samples[: 5000] if clip == "b" and decodes[clip] == 2 else samples

    monkeypatch.setattr(audio_extract, "audio_chunks", cut_on_second_decode)
    extract(clips, tmp_path / "out", hubert_dir, "--window_seconds", "0.25", "--skip-bad", "--batch_size", "2")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["a.npy", "c.npy"]
    with open(tmp_path / "out" / "skipped.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [(row["clip"], row["problem"]) for row in rows] == [("b", "the sound ended sooner than when it was checked")]
    decodes.clear()
    with pytest.raises(SystemExit, match=r"^error: clip 'b' \(.*b.wav\): the sound ended sooner than when it was checked$"):
        extract(clips, tmp_path / "stop", hubert_dir, "--window_seconds", "0.25")
    assert sorted(p.name for p in (tmp_path / "stop").glob("*.npy")) == ["a.npy"]  # written before b, kept


def test_read_audio_track_errors_are_clip_read_errors(tmp_path):
    with pytest.raises(ClipReadError, match="no audio track"):
        read_audio_track(no_audio_track(tmp_path / "x"), RATE)
    with pytest.raises(ClipReadError, match="no such file"):
        read_audio_track(tmp_path / "missing.wav", RATE)


# ------------------------------------------------------------------------------ reruns


def test_rerun_resumes_and_another_layer_is_refused_without_overwrite(tmp_path, hubert_dir, reference, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name, seconds in (("a", 0.5), ("b", 0.6)):
        write_wav(clips / f"{name}.wav", tones(RATE, seconds)[None], RATE)
    out = tmp_path / "out"
    extract(clips, out, hubert_dir)
    first = {p.name: p.read_bytes() for p in out.glob("*.npy")}
    record = json.loads((out / "extraction.json").read_text())
    assert record["layer"] == 2 and record["feature_level"] == "UTTERANCE"  # -1 is kept as its index

    extract(clips, out, hubert_dir, "--layer", "-1")  # the same layer, named from the end: a resume
    assert "0 clips written, 2 already present" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="layer"):
        extract(clips, out, hubert_dir, "--layer", "1")
    assert {p.name: p.read_bytes() for p in out.glob("*.npy")} == first  # nothing lost or mixed

    extract(clips, out, hubert_dir, "--layer", "1", "--overwrite")
    expected = reference(tones(RATE, 0.5), 1).mean(axis=0)
    np.testing.assert_allclose(np.load(out / "a.npy"), expected, atol=TOLERANCE, rtol=0)
    assert json.loads((out / "extraction.json").read_text())["layer"] == 1


def test_out_of_range_layer_is_refused(tmp_path, hubert_dir):
    with pytest.raises(SystemExit, match="layer 3 out of range: this HuBERT has 3 hidden-state layers"):
        extract(tmp_path, tmp_path / "out", hubert_dir, "--layer", "3")


def test_batches_and_workers_change_nothing(tmp_path, hubert_dir):
    """Equal-length windows share forward passes, of one clip and of several, and two workers
    decode the clips (their windows arriving interleaved) with the same vectors."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, seconds in enumerate((0.5, 0.5, 0.5, 0.3)):
        write_wav(clips / f"c{i}.wav", np.roll(tones(RATE, seconds), 97 * i)[None], RATE)
    extract(clips, tmp_path / "one", hubert_dir, "--window_seconds", "0.2")
    extract(clips, tmp_path / "batched", hubert_dir, "--batch_size", "3", "--num_workers", "2", "--window_seconds", "0.2")
    for i in range(4):
        np.testing.assert_allclose(
            np.load(tmp_path / "batched" / f"c{i}.npy"), np.load(tmp_path / "one" / f"c{i}.npy"), atol=TOLERANCE, rtol=0
        )
