"""The mind-wandering probe (SPEC section 12) on synthetic dumps whose signal is known.

Dumps are written here in the feature writer's stacked layout (manifest.json, names.txt,
<kind>.npy), with an annotation CSV beside them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from minigpt4.probe.__main__ import main
from minigpt4.probe.config import ProbeConfig, ProbeConfigError, load_config
from minigpt4.probe.dump import Dump
from minigpt4.probe.feature_sets import SetLoader, enumerate_sets
from minigpt4.probe.fitting import fit_held_out_fold
from minigpt4.probe.labels import ProbeInputError
from minigpt4.probe.metrics import METRICS, fold_metrics
from minigpt4.probe.run import ranked, run_probe

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = 16
POSITIONS = [{"name": "image:2", "index": 6, "token": "<image 2>"}, {"name": "prompt:-1", "index": 90, "token": "]"}]
LAYERS = [3, -1]
POOLS = ["image", "prompt"]


def write_dump(folder: Path, names, arrays: dict[str, np.ndarray], complete: bool = True, skipped=(), rows=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in arrays.items():
        np.save(folder / f"{kind}.npy", array.astype(np.float16))
    manifest = {
        "llama_feature_positions": POSITIONS,
        "llama_feature_layers": LAYERS,
        "llama_feature_pools": POOLS,
        "rows": len(names) if rows is None else rows,
        "files": {kind: {"path": f"{kind}.npy", "shape": list(a.shape)} for kind, a in arrays.items()},
        "dtype": "float16",
        "layout": "stacked",
        "complete": complete,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "names.txt").write_text("".join(f"{n}\n" for n in names))
    if skipped:
        (folder / "skipped.tsv").write_text("clip\tfile\tproblem\n" + "".join(f"{c}\tx.npy\tmissing\n" for c in skipped))
    return folder


def write_annotation(path: Path, names, labels, folds) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uuid", "mw_label", "test_fold_num"])
        writer.writerows((f"{n}.mp4", "MW" if y else "NonMW", f) for n, y, f in zip(names, labels, folds))
    return path


def synthetic(n_per_fold: int = 30, folds: int = 3, seed: int = 0):
    """Balanced labels per fold; only llama (layer -1, position image:2) carries the label."""
    rng = np.random.default_rng(seed)
    fold_of = np.repeat(np.arange(folds), n_per_fold)
    y = np.concatenate([rng.permutation(np.arange(n_per_fold) % 2) for _ in range(folds)])
    names = [f"clip_{i:03d}" for i in range(len(y))]
    n = len(y)
    llama = rng.normal(size=(n, len(LAYERS), len(POSITIONS), HIDDEN))
    llama[:, 1, 0, :4] += 1.5 * (2 * y[:, None] - 1)  # the signal
    arrays = {
        "facemae_projected_features": rng.normal(size=(n, HIDDEN)),
        "videomae_projected_features": rng.normal(size=(n, HIDDEN)),
        "image_projected_features": rng.normal(size=(n, 5, HIDDEN)),
        "llama_features": llama,
        "llama_pooled_features": rng.normal(size=(n, len(LAYERS), len(POOLS), HIDDEN)),
    }
    return names, y, fold_of, arrays


def config(dump: Path, annotation: Path, out: Path, **overrides) -> ProbeConfig:
    cfg = ProbeConfig(
        dump_dir=str(dump), annotation=str(annotation), output_dir=str(out), permutations=3, c_grid=[0.01, 1.0], plots=False
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def synthetic_probe(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    names, y, folds, arrays = synthetic()
    dump = write_dump(root / "dump", names, arrays)
    annotation = write_annotation(root / "annotations.csv", names, y, folds)
    cfg = config(dump, annotation, root / "out", concatenations=[["facemae", "videomae"]])
    return cfg, run_probe(cfg, progress=False), y, folds


# ------------------------------------------------------------------------------ correctness


def test_the_set_carrying_the_label_ranks_first_and_noise_sits_at_chance(synthetic_probe):
    cfg, result, _, _ = synthetic_probe
    order = ranked(result)
    names = [s.feature_set.name for s in order]
    assert len(names) == 3 + len(LAYERS) * len(POSITIONS) + len(LAYERS) * len(POOLS) + 1
    assert names[0] == "llama/L-1/image:2"
    assert order[0].summary["balanced_accuracy"]["mean"] >= 0.9
    assert all(f.metrics["balanced_accuracy"] >= 0.8 for f in order[0].folds)
    for s in order:
        chance = s.chance_summary["balanced_accuracy"]["mean"]
        assert 0.3 <= chance <= 0.7, (s.feature_set.name, chance)  # 30 clips a fold: sd about 0.09
        if s is not order[0]:
            assert 0.3 <= s.summary["balanced_accuracy"]["mean"] <= 0.7, s.feature_set.name


def test_per_fold_metrics_are_scikit_learns_on_the_held_out_predictions(synthetic_probe):
    _, result, y, folds = synthetic_probe
    for s in result.sets[:4]:
        for fit in s.folds:
            held_out = folds == fit.fold
            truth, score = y[held_out], fit.mw_score
            predicted = (score > 0.5).astype(int)  # the class of larger probability
            expected = {
                "balanced_accuracy": balanced_accuracy_score(truth, predicted),
                "precision": precision_score(truth, predicted, zero_division=0),
                "recall": recall_score(truth, predicted),
                "f1": f1_score(truth, predicted),
                "roc_auc": roc_auc_score(truth, score),
                "pr_auc": average_precision_score(truth, score),
            }
            assert fit.metrics == pytest.approx(expected, abs=1e-12)


def test_two_workers_give_the_numbers_of_one(synthetic_probe, tmp_path):
    """The folds of every set go to the workers as one stream; the order they finish in changes nothing."""
    cfg, _, _, _ = synthetic_probe
    results = {}
    for n_jobs in (1, 2):
        run = config(cfg.dump_dir, cfg.annotation, tmp_path / str(n_jobs), kinds=["facemae_projected_features", "llama_features"],
                     permutations=2, n_jobs=n_jobs)
        results[n_jobs] = [(s.feature_set.name, s.summary, s.chance_summary, [f.mw_score.tolist() for f in s.folds])
                           for s in run_probe(run, progress=False).sets]
    assert len(results[1]) == 1 + len(LAYERS) * len(POSITIONS)
    assert results[2] == results[1]


def test_fold_metrics_on_a_hand_counted_fold():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    predicted = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    score = np.array([0.9, 0.8, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05])
    metrics = fold_metrics(truth, predicted, score)
    # MW recall 2/3, NonMW recall 4/5; MW precision 2/3; ROC: 13 of 15 (MW, NonMW) pairs ordered
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["roc_auc"] == pytest.approx(13 / 15)
    assert metrics["pr_auc"] == pytest.approx((1 + 1 + 3 / 5) / 3)  # precision at each MW found, averaged


def test_the_probe_never_sees_held_out_rows():
    """A feature that is noise on the training folds and separates the held-out fold
    perfectly scores at chance there; held-out rows never move another row's score."""
    rng = np.random.default_rng(1)
    folds = np.repeat([0, 1, 2], 40)
    y = np.tile([0, 1], 60)
    X = rng.normal(size=(120, 40)).astype(np.float32)
    leak = folds == 2
    X[leak, 0] = 2.0 * y[leak] - 1.0  # perfectly separating, but only where held out
    cfg = ProbeConfig(dump_dir="-", annotation="-")
    (fit,) = fit_held_out_fold(X, y[None], y, folds, 2, cfg)
    assert 0.3 <= fit.metrics["balanced_accuracy"] <= 0.7
    # the test can tell a leak: a probe fitted on every row finds the feature
    leaky = LogisticRegression(class_weight="balanced").fit(X, y)
    assert balanced_accuracy_score(y[leak], leaky.predict(X[leak])) >= 0.8

    # other held-out rows and every held-out label changed: no held-out score moves
    changed, labels = X.copy(), y.copy()
    others = leak & (np.arange(120) % 4 == 0)
    changed[others] = rng.normal(size=(others.sum(), 40)) * 100
    labels[leak] = 1 - y[leak]
    (moved,) = fit_held_out_fold(changed, labels[None], labels, folds, 2, cfg)
    untouched = np.arange(40) % 4 != 0
    np.testing.assert_allclose(moved.mw_score[untouched], fit.mw_score[untouched], rtol=0, atol=1e-12)
    assert moved.C == fit.C


def test_the_fold_fit_equals_a_plain_scikit_learn_pipeline_at_the_chosen_c():
    """The span-of-rows shortcut changes nothing: same probabilities as StandardScaler +
    LogisticRegression fitted on the raw features (to the solver's tolerance)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    folds = np.repeat([0, 1, 2], 20)
    y = np.tile([0, 1], 30)
    X = rng.normal(size=(60, 200)).astype(np.float32)  # more features than rows
    X[:, :3] += y[:, None]
    cfg = ProbeConfig(dump_dir="-", annotation="-", max_iter=5000)
    (fit,) = fit_held_out_fold(X, y[None], y, folds, 1, cfg)
    train = folds != 1
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=fit.C, class_weight="balanced", max_iter=5000, tol=1e-10)
    ).fit(X[train], y[train])
    np.testing.assert_allclose(fit.mw_score, reference.predict_proba(X[~train])[:, 1], atol=2e-3)


# ------------------------------------------------------------------------------ outputs


def test_command_writes_json_csv_markdown_and_plots(synthetic_probe, tmp_path, capsys):
    cfg, _, _, _ = synthetic_probe
    cfg_path = tmp_path / "probe.yaml"
    cfg_path.write_text(
        "probe:\n"
        f"  dump_dir: {cfg.dump_dir}\n  annotation: {cfg.annotation}\n  output_dir: {tmp_path / 'out'}\n"
        "  kinds: [facemae_projected_features, llama_features]\n"
        "  concatenations: [[facemae, llama/L3/image:2]]\n"
        "  metric: roc_auc\n  c_grid: [0.01, 1.0]\n  inner_scoring: roc_auc\n  max_iter: 200\n"
        "  permutations: 2\n  seed: 3\n  n_jobs: 2\n  roc_sets: 2\n  plots: true\n"
    )
    paths = main(["--cfg-path", str(cfg_path)])
    out = tmp_path / "out"
    assert {p.name for p in paths.values()} == {"probe.json", "probe.csv", "probe.md", "roc_curves.png", "heatmap_layer_position.png"}
    for png in ("roc_curves.png", "heatmap_layer_position.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "probe.json").read_text())
    assert report["metric"] == "roc_auc" and report["config"]["seed"] == 3
    sets = report["sets"]
    assert [s["name"] for s in sets][0] == "llama/L-1/image:2"
    assert len(sets) == 1 + 4 + 1  # facemae, 2 layers x 2 positions, one concatenation
    assert all(len(s["chance_folds"]) == 2 and {f["C"] for f in s["folds"]} <= {0.01, 1.0} for s in sets)
    with (out / "probe.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["feature_set"] for r in rows] == [s["name"] for s in sets]
    means = [float(r["roc_auc_mean"]) for r in rows]
    assert means == sorted(means, reverse=True)
    assert {f"{m}_{part}" for m in METRICS for part in ("mean", "sd", "chance")} <= set(rows[0])
    printed = capsys.readouterr().out
    assert (out / "probe.md").read_text() in printed
    assert "| 1 | llama/L-1/image:2 |" in printed


def test_a_fold_with_one_class_is_reported_without_aucs(tmp_path):
    names, y, folds, arrays = synthetic()
    y = y.copy()
    y[folds == 2] = 0  # fold 2 holds NonMW only
    dump = write_dump(tmp_path / "dump", names, arrays)
    annotation = write_annotation(tmp_path / "a.csv", names, y, folds)
    cfg = config(dump, annotation, tmp_path / "out", kinds=["llama_features"], permutations=1, plots=True)
    result = run_probe(cfg, progress=False)
    best = ranked(result)[0]
    fold2 = next(f for f in best.folds if f.fold == 2)
    assert "one class" in fold2.note and fold2.metrics["roc_auc"] is None and fold2.metrics["pr_auc"] is None
    assert best.summary["roc_auc"]["mean"] is not None  # from the other folds
    from minigpt4.probe.plots import write_plots
    from minigpt4.probe.report import markdown_table, write_report

    write_report(result, tmp_path / "out")
    write_plots(result, tmp_path / "out")
    assert "fold 2: one class" in markdown_table(result)


# ------------------------------------------------------------------------------ bad input


@pytest.fixture
def small_dump(tmp_path):
    names, y, folds, arrays = synthetic(n_per_fold=6)
    return tmp_path, names, y, folds, arrays


def test_names_and_annotation_that_disagree_are_one_error_listing_every_clip(small_dump):
    root, names, y, folds, arrays = small_dump
    dump = write_dump(root / "dump", names, arrays)
    # clip_000 missing from the annotation, clip_100 not dumped, clip_001 without a fold
    annotated = ["clip_100", *names[1:]]
    folds = folds.copy()
    folds[1] = -1
    annotation = write_annotation(root / "a.csv", annotated, y, folds)
    out = root / "out"
    with pytest.raises(ProbeInputError) as error:
        run_probe(config(dump, annotation, out), progress=False)
    message = str(error.value)
    assert "clip_100" in message and "names.txt" in message
    assert "clip_000" in message and "not in" in message
    assert "clip_001" in message and "no test fold" in message
    assert not out.exists()


def test_clips_the_dump_skipped_on_purpose_are_not_an_error(small_dump):
    root, names, y, folds, arrays = small_dump
    keep = np.arange(len(names)) != 5
    dump = write_dump(root / "dump", [n for n, k in zip(names, keep) if k], {k: a[keep] for k, a in arrays.items()}, skipped=[names[5]])
    annotation = write_annotation(root / "a.csv", names, y, folds)
    result = run_probe(config(dump, annotation, root / "out", kinds=["facemae_projected_features"], permutations=0), progress=False)
    assert result.left_out == [names[5]] and len(result.labels.y) == len(names) - 1


@pytest.mark.parametrize(
    "breaker, message",
    [
        (lambda root, names, arrays: write_dump(root / "dump", names, arrays, complete=False), "not complete"),
        (lambda root, names, arrays: write_dump(root / "dump", names[:-1], arrays, rows=18), "lists 17 clips"),
        (lambda root, names, arrays: root / "nowhere", "no manifest.json"),
    ],
)
def test_a_folder_that_is_not_a_finished_dump_is_refused(small_dump, breaker, message):
    root, names, y, folds, arrays = small_dump
    dump = breaker(root, names, arrays)
    annotation = write_annotation(root / "a.csv", names, y, folds)
    with pytest.raises(ProbeInputError, match=message):
        run_probe(config(dump, annotation, root / "out"), progress=False)


def test_unknown_concatenation_names_what_the_dump_offers(small_dump):
    root, names, y, folds, arrays = small_dump
    dump = write_dump(root / "dump", names, arrays)
    annotation = write_annotation(root / "a.csv", names, y, folds)
    with pytest.raises(ProbeInputError, match=r"\['llama/L9/image:2'\].*llama/L3/image:2"):
        run_probe(config(dump, annotation, root / "out", concatenations=[["facemae", "llama/L9/image:2"]]), progress=False)


@pytest.mark.parametrize(
    "option, message",
    [
        ("probe.metric=accuracy", "probe.metric"),
        ("probe.kinds=[faces]", "probe.kinds"),
        ("probe.c_grid=[0.0]", "probe.c_grid"),
        ("probe.permutations=-1", "probe.permutations"),
        ("probe.colour=red", "colour"),
        ("probe.permutations=many", "permutations"),
    ],
)
def test_bad_config_values_are_named(tmp_path, option, message):
    path = tmp_path / "p.yaml"
    path.write_text("probe:\n  dump_dir: d\n  annotation: a.csv\n")
    with pytest.raises(ProbeConfigError, match=message):
        load_config(path, [option])


def test_shipped_configs_load(monkeypatch):
    monkeypatch.setenv("HCMW_FEATURES", "somewhere")
    for name in ("probe_mw.yaml", "demo_probe.yaml"):
        cfg = load_config(ROOT / "eval_configs" / name)
        assert cfg.dump_dir and cfg.annotation


def test_a_per_clip_dump_gives_the_stacked_dumps_sets(tmp_path):
    root, (names, _, _, arrays) = tmp_path, synthetic(n_per_fold=12)  # 36 clips: two chunks of the image mean
    stacked = Dump(write_dump(root / "stacked", names, arrays))
    per_clip = write_dump(root / "per_clip", names, {})
    manifest = json.loads((per_clip / "manifest.json").read_text())
    for kind, array in arrays.items():
        (per_clip / kind).mkdir()
        for name, row in zip(names, array):
            np.save(per_clip / kind / f"{name}.npy", row.astype(np.float16))
    manifest["files"] = {kind: {"path": f"{kind}/<clip>.npy", "shape": list(a.shape[1:])} for kind, a in arrays.items()}
    (per_clip / "manifest.json").write_text(json.dumps(dict(manifest, layout="per_clip")))
    per_clip = Dump(per_clip)
    sets = enumerate_sets(stacked, list(arrays), [])
    assert [s.name for s in enumerate_sets(per_clip, list(arrays), [])] == [s.name for s in sets]
    from_stacked, from_per_clip = SetLoader(stacked, sets, labels=None), SetLoader(per_clip, sets, labels=None)
    for feature_set in sets:
        np.testing.assert_array_equal(from_per_clip(feature_set), from_stacked(feature_set))
    # the image mean is the mean over the tokens, a chunk of rows at a time
    tokens = arrays["image_projected_features"].astype(np.float16).astype(np.float32)
    image_mean = next(s for s in sets if s.name == "image_mean")
    np.testing.assert_allclose(from_stacked(image_mean), tokens.mean(1), atol=1e-6)


@pytest.mark.parametrize("scoring", ["balanced_accuracy", "roc_auc", "neg_log_loss", "f1"])
def test_the_inner_choice_of_c_is_grid_search_cvs(scoring):
    """choose_c (warm-started fits, numpy scores) picks the C scikit-learn's GridSearchCV picks
    with the same splits and scorer; and the scores themselves are scikit-learn's."""
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import GridSearchCV

    from minigpt4.probe.fitting import choose_c, inner_splits
    from minigpt4.probe.metrics import inner_score

    rng = np.random.default_rng(7)
    folds = np.repeat([0, 1, 2, 3], 30)
    for trial in range(4):
        y = rng.permutation(np.arange(120) % 2)
        X = rng.normal(size=(120, 30)).astype(np.float32)
        X[:, :2] += (0.3 + 0.3 * trial) * y[:, None]
        cfg = ProbeConfig(dump_dir="-", annotation="-", c_grid=[1e-3, 1e-2, 0.1, 1.0, 10.0], inner_scoring=scoring, max_iter=1000)
        splits = inner_splits(folds, y, 0)
        search = GridSearchCV(
            LogisticRegression(class_weight="balanced", max_iter=1000), {"C": cfg.c_grid}, cv=splits, scoring=scoring
        ).fit(X, y)
        assert choose_c(cfg, X, y, folds) == search.best_params_["C"], trial
        model = search.best_estimator_
        p = model.predict_proba(X)[:, 1]
        assert inner_score(scoring, y, p) == pytest.approx(get_scorer(scoring)(model, X, y), abs=1e-6)  # float32 X
