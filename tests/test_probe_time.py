"""People and time in the probe (SPEC section 12): context windows, the GRU, timelines, an
honest report, participant-safe folds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from minigpt4.datasets.errors import DataError
from minigpt4.probe import plots
from minigpt4.probe.__main__ import main
from minigpt4.probe.config import ContextConfig, GRUConfig, ProbeConfig
from minigpt4.probe.context import PAD, context_windows, short_windows, summarise
from minigpt4.probe.labels import ProbeInputError
from minigpt4.probe.report import csv_rows, markdown_table
from minigpt4.probe.run import ranked, run_probe
from minigpt4.probe.timelines import COLUMNS, timeline_rows
from temporal_sessions import temporal_sessions, write_rows
from test_probe import LAYERS, POSITIONS, synthetic, write_annotation, write_dump


def probe_config(root: Path, dump: Path, annotation: Path, **overrides) -> ProbeConfig:
    cfg = ProbeConfig(
        dump_dir=str(dump), annotation=str(annotation), output_dir=str(root / "out"), permutations=2,
        c_grid=[0.01, 0.1, 1.0], plots=False, n_jobs=1,
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def session_dump(root: Path, signal: str, participants: int = 8, clips: int = 24, seed: int = 0):
    rows, features = temporal_sessions(participants=participants, clips=clips, signal=signal, seed=seed)
    dump = write_dump(root / f"dump_{signal}", [r["uuid"] for r in rows], {"facemae_projected_features": features})
    return rows, dump, write_rows(root / f"annotation_{signal}.csv", rows)


# ------------------------------------------------------------------------------ windows


def test_windows_hold_a_clip_and_its_predecessors_in_its_own_video_and_fold():
    videos = np.array(["a", "b", "a", "a", "b", "a"], dtype=object)
    folds = np.array([0, 1, 0, 0, 1, 1])  # the last "a" clip lies in another fold (a split participant)
    times = np.array([20.0, 0.0, 0.0, 10.0, 5.0, 30.0])
    windows = context_windows(videos, folds, times, 3)
    expected = [
        [2, 3, 0],  # a@20: a@0, a@10, itself
        [PAD, PAD, 1],  # b@0: first of its video
        [PAD, PAD, 2],  # a@0
        [PAD, 2, 3],  # a@10
        [PAD, 1, 4],  # b@5
        [PAD, PAD, 5],  # a@30 in fold 1: the fold-0 clips of its video are not reached
    ]
    np.testing.assert_array_equal(windows, expected)
    assert short_windows(windows) == 5


def test_window_statistics_equal_numpy_on_each_window():
    rng = np.random.default_rng(0)
    videos = np.array(["v"] * 6 + ["w"] * 4, dtype=object)
    folds = np.zeros(10, dtype=int)
    times = np.concatenate([np.sort(rng.uniform(0, 100, 6)), np.sort(rng.uniform(0, 100, 4))])
    features = rng.normal(size=(10, 3)).astype(np.float32)
    windows = context_windows(videos, folds, times, 4)
    mean, std, slope = (summarise(features, windows, times, stat) for stat in ("mean", "std", "slope"))
    for row in range(10):
        members = windows[row][windows[row] != PAD]
        np.testing.assert_allclose(mean[row], features[members].mean(0), atol=1e-6)
        np.testing.assert_allclose(std[row], features[members].std(0), atol=1e-6)
        expected = np.polyfit(times[members], features[members], 1)[0] if len(members) > 1 else np.zeros(3)
        np.testing.assert_allclose(slope[row], expected, atol=1e-5)


def test_a_signal_in_another_videos_neighbouring_clip_is_not_found(tmp_path):
    """Two people recorded at the same times: each clip of video B carries the label of the
    video-A clip just after it in time.  A window crossing videos would find it; ours do not."""
    rng = np.random.default_rng(3)
    rows, features = [], []
    for person in range(8):
        labels = rng.permutation(np.arange(20) % 2)
        for k in range(20):
            rows.append({"uuid": f"a{person}_{k}", "mw_label": "MW" if labels[k] else "NonMW", "test_fold_num": person % 4,
                         "participant": f"a{person}", "video": f"a{person}.mp4", "start_s": 10.0 * k + 5, "end_s": 10.0 * k + 9})
            features.append(rng.normal(size=8))
            planted = rng.normal(size=8)
            planted[:4] += 3.0 * (2 * labels[k] - 1)  # says the label of a{person}_{k}
            rows.append({"uuid": f"b{person}_{k}", "mw_label": "MW" if rng.integers(2) else "NonMW",
                         "test_fold_num": person % 4, "participant": f"a{person}", "video": f"b{person}.mp4",
                         "start_s": 10.0 * k, "end_s": 10.0 * k + 4})
            features.append(planted)
    dump = write_dump(tmp_path / "dump", [r["uuid"] for r in rows], {"facemae_projected_features": np.array(features)})
    annotation = write_rows(tmp_path / "a.csv", rows)
    cfg = probe_config(tmp_path, dump, annotation, context=ContextConfig(windows=[2], stats=["mean"]), permutations=0, c_grid=[0.1])
    result = run_probe(cfg, progress=False)
    a_rows = np.array([r["uuid"].startswith("a") for r in rows])
    y = result.labels.y
    for s in result.sets:
        p = s.out_of_fold[a_rows]
        accuracy = ((p >= 0.5) == y[a_rows]).mean()
        assert 0.38 <= accuracy <= 0.62, (s.feature_set.name, accuracy)


# ------------------------------------------------------------------------------ the temporal signal


@pytest.fixture(scope="module")
def temporal_probes(tmp_path_factory):
    root = tmp_path_factory.mktemp("temporal")
    results = {}
    for signal, permutations in (("change", 2), ("none", 19)):
        rows, dump, annotation = session_dump(root, signal)
        cfg = probe_config(  # noise needs no choice of C, and 19 permutations to reach p = 0.05
            root, dump, annotation, permutations=permutations, c_grid=[0.01, 1.0] if signal == "change" else [0.1],
            context=ContextConfig(windows=[3], stats=["mean", "std", "slope"]), sequence_model="gru",
            gru=GRUConfig(epochs=[25, 100], weight_decay=[1e-3], permutations=2),
        )
        results[signal] = run_probe(cfg, progress=False)
    return results


def test_a_change_across_clips_is_found_by_slope_and_gru_on_unseen_participants(temporal_probes):
    result = temporal_probes["change"]
    by_name = {s.feature_set.name: s.summary["balanced_accuracy"]["mean"] for s in result.sets}
    assert set(by_name) == {"facemae", "ctx3/mean/facemae", "ctx3/std/facemae", "ctx3/slope/facemae", "gru3/facemae"}
    assert by_name["ctx3/slope/facemae"] >= 0.85
    assert by_name["gru3/facemae"] >= 0.85
    for single in ("facemae", "ctx3/mean/facemae"):  # each clip alone, and the window's level: noise
        assert 0.35 <= by_name[single] <= 0.65, (single, by_name[single])
    # every fold holds out whole participants
    assert result.labels.fold_warning is None
    assert result.short_windows == {3: 2 * 8}


def test_on_sessions_without_a_signal_every_set_stays_within_chance(temporal_probes):
    result = temporal_probes["none"]
    assert {s.feature_set.name for s in result.sets} >= {"ctx3/slope/facemae", "gru3/facemae"}
    for s in result.sets:
        score, chance = s.summary["balanced_accuracy"]["mean"], s.chance_summary["balanced_accuracy"]
        assert abs(score - chance["mean"]) <= max(3 * chance["sd"], 0.1), s.feature_set.name
    # the best of the logistic sets is not marked: the best of 4 sets on permuted labels does as well
    logistic = [s for s in ranked(result) if not s.feature_set.is_sequence]
    family = result.family_p_values("balanced_accuracy")
    assert logistic[0].permutations == 19 and family[logistic[0].feature_set.name] > 0.05
    rank = ranked(result).index(logistic[0]) + 1
    p_all = f"{family[logistic[0].feature_set.name]:.3f}"
    assert f"| {rank} | {logistic[0].feature_set.name} | 16 | no | {p_all} |" in markdown_table(result)


def test_the_gru_is_deterministic_for_a_seed(tmp_path):
    rows, dump, annotation = session_dump(tmp_path, "change", participants=4, clips=12)
    cfg = probe_config(
        tmp_path, dump, annotation, permutations=0, kinds=["facemae_projected_features"],
        context=ContextConfig(windows=[3], stats=["slope"]), sequence_model="gru",
        gru=GRUConfig(epochs=[10], weight_decay=[0.0], permutations=0),
    )
    first, second = run_probe(cfg, progress=False), run_probe(cfg, progress=False)
    gru = [s for s in first.sets if s.feature_set.is_sequence][0]
    again = [s for s in second.sets if s.feature_set.is_sequence][0]
    np.testing.assert_array_equal(gru.out_of_fold, again.out_of_fold)


# ------------------------------------------------------------------------------ report and plots


def test_report_gives_chance_spread_and_p_values_in_markdown_and_csv(temporal_probes):
    result = temporal_probes["none"]
    rows = csv_rows(result)
    s = ranked(result)[0]
    assert rows[0]["balanced_accuracy_chance_sd"] == s.chance_summary["balanced_accuracy"]["sd"]
    chance_means = [p_summary for p_summary in (
        np.mean([f.metrics["balanced_accuracy"] for f in folds]) for folds in s.chance
    )]
    expected_p = (1 + sum(c >= s.summary["balanced_accuracy"]["mean"] for c in chance_means)) / (1 + len(chance_means))
    assert rows[0]["balanced_accuracy_p"] == pytest.approx(expected_p)
    # corrected over the sets: the best set under each permutation is the reference
    family = [s for s in result.sets if s.permutations == ranked(result)[0].permutations]
    best_per_permutation = np.max([c.chance_means("balanced_accuracy") for c in family], axis=0)
    observed = s.summary["balanced_accuracy"]["mean"]
    expected_family = (1 + (best_per_permutation >= observed).sum()) / (1 + len(best_per_permutation))
    assert rows[0]["balanced_accuracy_p_all_sets"] == pytest.approx(expected_family)
    assert expected_family >= expected_p
    assert rows[0]["beats_chance"] == bool(expected_family <= 0.05)
    table = markdown_table(result)
    cell = (f"{s.summary['balanced_accuracy']['mean']:.3f} ± {s.summary['balanced_accuracy']['sd']:.3f} "
            f"({s.chance_summary['balanced_accuracy']['mean']:.3f} ± {s.chance_summary['balanced_accuracy']['sd']:.3f}; "
            f"p {expected_p:.3f})")
    assert cell in table


def test_too_few_permutations_head_the_report(temporal_probes):
    table = markdown_table(temporal_probes["change"])
    assert table.splitlines()[0] == (
        "**WARNING: with 2 permutation(s) the smallest possible p-value is 0.333, above alpha 0.05: "
        "no set can be shown to beat chance; use 19 or more permutations**"
    )


def test_heat_map_colours_span_zero_to_one_whatever_the_scores(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "save_png", lambda figure, path: drawn.append(figure))
    names, y, folds, arrays = synthetic(n_per_fold=12)
    dump = write_dump(tmp_path / "dump", names, arrays)
    annotation = write_annotation(tmp_path / "a.csv", names, y, folds)
    cfg = probe_config(tmp_path, dump, annotation, kinds=["llama_features"], permutations=1)
    for scale in (1.0, 0.0):  # a strong signal, then none: other scores, the same colour limits
        arrays["llama_features"][:, 1, 0, :4] *= scale
        write_dump(tmp_path / "dump", names, arrays)
        plots.layer_position_heatmap(run_probe(cfg, progress=False), tmp_path / "h.png")
    assert len(drawn) == 2
    for figure in drawn:
        image = figure.axes[0].images[0]
        assert image.get_clim() == (0.0, 1.0)
        assert figure.axes[1].get_ylabel() == "balanced_accuracy\n(fixed scale 0..1)"  # the colour bar
        assert len(figure.axes[0].texts) == len(LAYERS) * len(POSITIONS)


def test_no_heat_map_when_no_set_was_scored(tmp_path):
    names, y, folds, arrays = synthetic(n_per_fold=6)
    arrays["llama_features"][:3] = np.nan
    dump = write_dump(tmp_path / "dump", names, arrays)
    annotation = write_annotation(tmp_path / "a.csv", names, y, folds)
    result = run_probe(probe_config(tmp_path, dump, annotation, kinds=["llama_features"], permutations=0), progress=False)
    assert not result.sets and len(result.not_probed) == len(LAYERS) * len(POSITIONS)
    assert plots.layer_position_heatmap(result, tmp_path / "h.png") is None


def test_timelines_hold_every_clips_out_of_fold_p_mw(tmp_path):
    rows, dump, annotation = session_dump(tmp_path, "change", participants=4, clips=10)
    (tmp_path / "probe.yaml").write_text(
        f"probe:\n  dump_dir: {dump}\n  annotation: {annotation}\n  output_dir: {tmp_path / 'out'}\n"
        "  permutations: 0\n  c_grid: [0.1]\n  n_jobs: 1\n"
        "  context: {windows: [2], stats: [slope]}\n  timeline_sets: [best, facemae]\n"
    )
    paths = main(["--cfg-path", str(tmp_path / "probe.yaml")])
    out = tmp_path / "out"
    assert paths["timelines"] == out / "timelines.csv"
    assert sorted(p.name for p in (out / "timelines").iterdir()) == [f"p{i:02d}_session.mp4.png" for i in range(4)]
    report = json.loads((out / "probe.json").read_text())
    best = report["sets"][0]["name"]
    with (out / "timelines.csv").open() as handle:
        written = list(csv.DictReader(handle))
    assert tuple(written[0]) == COLUMNS
    assert len(written) == 2 * len(rows)
    assert [r["set"] for r in written[: len(rows)]] == [best] * len(rows)
    by_clip = {r["uuid"]: r for r in rows}
    for row in written:
        source = by_clip[row["uuid"]]
        assert (row["video"], row["participant"], row["label"]) == (source["video"], source["participant"], source["mw_label"])
        assert float(row["start_s"]) == source["start_s"] and int(row["fold"]) == source["test_fold_num"]
    # p_mw is the out-of-fold score of the set for that clip
    result_rows = timeline_rows(run_probe(probe_config(tmp_path, dump, annotation, permutations=0, c_grid=[0.1], n_jobs=1,
                                                       context=ContextConfig(windows=[2], stats=["slope"]),
                                                       timeline_sets=["best", "facemae"]), progress=False))
    assert [float(r["p_mw"]) for r in written] == pytest.approx([r["p_mw"] for r in result_rows])


def test_timeline_sets_must_name_sets(tmp_path):
    rows, dump, annotation = session_dump(tmp_path, "change", participants=4, clips=6)
    with pytest.raises(ProbeInputError, match=r"probe.timeline_sets: \['ctx9/slope/facemae'\] are not feature sets"):
        run_probe(probe_config(tmp_path, dump, annotation, timeline_sets=["ctx9/slope/facemae"]), progress=False)


def test_context_needs_video_and_start_times(tmp_path):
    names, y, folds, arrays = synthetic(n_per_fold=6)
    dump = write_dump(tmp_path / "dump", names, arrays)
    annotation = write_annotation(tmp_path / "a.csv", names, y, folds)
    with pytest.raises(ProbeInputError, match="probe.context: context windows need each clip's video and start_s"):
        run_probe(probe_config(tmp_path, dump, annotation, context=ContextConfig(windows=[3])), progress=False)


# ------------------------------------------------------------------------------ participants and folds


def test_a_participant_in_two_folds_stops_the_probe_naming_them(tmp_path):
    rows, dump, annotation = session_dump(tmp_path, "change", participants=4, clips=6)
    rows[0]["test_fold_num"] = 3  # p00 now has a clip in fold 3 and the rest in fold 0
    write_rows(annotation, rows)
    with pytest.raises(DataError) as caught:
        run_probe(probe_config(tmp_path, dump, annotation), progress=False)
    assert str(caught.value) == (
        f"{annotation}: 1 participant(s) have clips in more than one fold (p00 in folds 0, 3), so a held-out fold "
        "shares people with the training folds; rebuild the folds with `python -m minigpt4.datasets.assign_folds`, or set "
        "probe.allow_split_participants: true to go on anyway"
    )
    allowed = run_probe(probe_config(tmp_path, dump, annotation, allow_split_participants=True, permutations=0), progress=False)
    assert markdown_table(allowed).splitlines()[0].startswith(
        f"**WARNING: {annotation}: 1 participant(s) have clips in more than one fold (p00 in folds 0, 3)"
    )
