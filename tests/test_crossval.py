"""``alexkit crossval``: folds against scikit-learn, pooled predictions, summary, resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from alexkit.cli import app
from alexkit.crossval import (
    SUMMARY_METRICS,
    assign_folds,
    crossval,
    load_crossval_spec,
    summarize,
    write_manifest,
)
from alexkit.errors import CheckpointError, DataError

# The tiny variant (AlexNet's 2012 layout at 1/8 width): what is under test is the
# folds, the pooling, the summary and resume, not AlexNet's 57M parameters.
RECIPE = """
name = "crossval-test"
variant = "tiny"
batch_size = 4
seed = 0
monitor = "accuracy"
[augment]
crop = false
pca_lighting = 0.0
[[stages]]
name = "head"
epochs = 2
trainable_from = "head"
optimizer = "adam"
lr = 0.001
"""


def _labels_groups(n_groups=30, seed=0):
    """Groups of 1-4 items, one class per group, 3 classes, unbalanced."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for g in range(n_groups):
        label = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
        for _ in range(int(rng.integers(1, 5))):
            labels.append(label)
            groups.append(f"patient-{g}")
    return labels, groups


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_are_sklearns_stratified_group_kfold_and_group_disjoint(k):
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = _labels_groups()
    fold_of = assign_folds(labels, groups, k, seed=7)
    # Oracle: scikit-learn's own splitter with the same seed gives the same folds.
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=7)
    expected = np.full(len(labels), -1)
    for fold, (_, val) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        expected[val] = fold
    np.testing.assert_array_equal(fold_of, expected)
    assert sorted(set(fold_of)) == list(range(k))
    # Group-disjoint: every patient lies in exactly one fold.
    by_group = {}
    for g, f in zip(groups, fold_of, strict=True):
        by_group.setdefault(g, set()).add(int(f))
    assert all(len(folds) == 1 for folds in by_group.values())
    # Stratified: every class is in every fold.
    for label in set(labels):
        assert {int(f) for f, y in zip(fold_of, labels, strict=True) if y == label} == set(range(k))


def test_folds_without_groups_are_stratified_kfold():
    from sklearn.model_selection import StratifiedKFold

    labels = [0] * 10 + [1] * 7 + [2] * 5
    fold_of = assign_folds(labels, [""] * len(labels), 5, seed=1)
    expected = np.full(len(labels), -1)
    splitter = StratifiedKFold(n_splits=5, shuffle=True, random_state=1)
    for fold, (_, val) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        expected[val] = fold
    np.testing.assert_array_equal(fold_of, expected)
    # Exactly stratified: fold sizes per class differ by at most one.
    for label in (0, 1, 2):
        counts = np.bincount(fold_of[np.asarray(labels) == label], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_a_class_with_fewer_groups_than_folds_is_refused():
    labels = [0, 0, 0, 0, 1, 1]
    groups = ["a", "b", "c", "d", "e", "e"]  # class 1: one patient
    with pytest.raises(DataError, match="class 1 has only 1 groups for 2 folds"):
        assign_folds(labels, groups, 2)


def test_summary_mean_and_sd_equal_numpy():
    rng = np.random.default_rng(3)
    folds = [
        {
            "accuracy": float(a),
            "macro_avg": {"f1": float(f), "recall": float(r)},
            "calibration": {"ece": float(e), "brier": float(b)},
        }
        for a, f, r, e, b in rng.uniform(size=(5, 5))
    ]
    folds[2]["binary"] = {"roc_auc": 0.9}  # in one fold only: summarised over n=1
    summary = summarize(folds)
    acc = [f["accuracy"] for f in folds]
    assert summary["accuracy"]["mean"] == pytest.approx(np.mean(acc), abs=1e-15)
    assert summary["accuracy"]["sd"] == pytest.approx(np.std(acc, ddof=1), abs=1e-15)
    ece = [f["calibration"]["ece"] for f in folds]
    assert summary["calibration.ece"]["sd"] == pytest.approx(np.std(ece, ddof=1), abs=1e-15)
    assert summary["binary.roc_auc"] == {
        "values": [None, None, 0.9, None, None],
        "mean": 0.9,
        "sd": None,
        "n": 1,
    }
    assert "binary.pr_auc" not in summary


def _manifest(tmp_path, extra_column=False):
    """3 classes x 4 patients x 2 images, as a CSV manifest with a group column."""
    from conftest import write_class_images

    root = tmp_path / "images"
    paths = write_class_images(root, ["alpha", "beta", "gamma"], 8)
    manifest = tmp_path / "data.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group" if not extra_column else "patient_id"])
        for i, path in enumerate(paths):
            cls = path.parent.name
            writer.writerow([path.relative_to(tmp_path), cls, f"{cls}-{(i % 8) // 2}"])
    return manifest


def test_group_column_names_the_groups(tmp_path):
    manifest = _manifest(tmp_path, extra_column=True)
    assert set(load_crossval_spec(manifest).groups) == {""}  # not a column it knows
    spec = load_crossval_spec(manifest, group_column="patient_id")
    assert len(set(spec.groups)) == 12 and spec.groups[0] == "alpha-0" == spec.groups[1]
    with pytest.raises(DataError, match="no column 'site'"):
        load_crossval_spec(manifest, group_column="site")


def test_clip_frames_stay_together_and_survive_the_fold_manifests(tmp_path):
    av = pytest.importorskip("av")
    from alexkit.data import load_spec

    data = tmp_path / "clips"
    rng = np.random.default_rng(1)
    for k, name in enumerate(["still", "moving"]):
        (data / name).mkdir(parents=True)
        for c in range(3):
            with av.open(str(data / name / f"clip{c}.mp4"), "w") as container:
                stream = container.add_stream("mpeg4", rate=10)
                stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
                for _ in range(6):
                    img = (rng.integers(0, 60, (32, 32, 3)) + 150 * k).astype(np.uint8)
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
    spec = load_crossval_spec(data)
    assert len(spec) > 6 and len(set(spec.groups)) == 6  # frames, grouped by clip
    fold_of = assign_folds(spec.labels, spec.groups, 3, seed=0)
    for group in set(spec.groups):
        assert len({f for f, g in zip(fold_of, spec.groups, strict=True) if g == group}) == 1
    # A fold's manifest read back (as finetune reads it) gives the same frames and groups.
    index = np.flatnonzero(fold_of != 0)
    write_manifest(tmp_path / "fold.csv", spec, index)
    back = load_spec(tmp_path / "fold.csv", val_fraction=0)
    assert back.items == tuple(spec.items[i] for i in index)
    assert back.groups == tuple(spec.groups[i] for i in index)
    assert [back.class_names[y] for y in back.labels] == [
        spec.class_names[spec.labels[i]] for i in index
    ]


def test_a_non_empty_out_is_refused_without_force_or_resume(tmp_path):
    out = tmp_path / "cv"
    out.mkdir()
    (out / "something").write_text("x")
    args = ["crossval", "--data", str(tmp_path), "--folds", "2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 4
    assert "already exists and is not empty" in result.stderr
    assert (out / "something").exists()


def test_refusals_leave_no_half_made_crossval(tmp_path):
    from alexkit.errors import WeightsError

    manifest = _manifest(tmp_path)
    out = tmp_path / "cv"
    with pytest.raises(DataError, match="only 4 groups for 5 folds"):
        crossval("default", manifest, folds=5, out=out, weights="none")
    assert not out.exists()
    with pytest.raises(WeightsError):
        crossval("default", manifest, folds=2, out=out, weights="no-such-weights")
    assert not out.exists()


class Stop(Exception):
    pass


def _without_paths(summary):
    summary = json.loads(json.dumps(summary))
    for row in summary["per_fold"]:
        row.pop("run_dir")
    return summary


@pytest.mark.slow
def test_crossval_pools_every_item_once_and_resumes_to_the_same_summary(tmp_path):
    manifest = _manifest(tmp_path)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    common = dict(weights="none", steps_per_epoch=1, n_boot=200)

    reference = crossval(str(recipe), manifest, folds=2, out=tmp_path / "ref", **common)

    # Interrupted during fold 2, after its first epoch's checkpoint.
    events = []

    def stop_in_fold_2(event):
        events.append(event)
        if event.get("fold") == 2 and event["event"] == "epoch_end" and event["epoch"] == 1:
            raise Stop

    out = tmp_path / "cv"
    with pytest.raises(Stop):
        crossval(str(recipe), manifest, folds=2, out=out, progress=stop_in_fold_2, **common)
    assert (out / "fold-1" / "metrics.json").is_file()
    assert json.loads((out / "fold-1" / "config.json").read_text())["variant"] == "tiny"
    assert not (out / "fold-2" / "metrics.json").exists()
    assert not (out / "summary.json").exists()

    # Another --data on resume is refused before anything runs.
    with pytest.raises(CheckpointError, match="--data"):
        crossval(None, tmp_path / "images", out=out, resume=True)

    # Resume with --out only: fold 1 is kept, fold 2 continues at epoch 2.
    events.clear()
    result = crossval(None, out=out, resume=True, progress=events.append, n_boot=200)
    assert [r["status"] for r in result.folds] == ["skipped", "resumed"]
    fold_events = [(e["event"], e.get("fold")) for e in events if e["event"] != "batch"]
    assert ("start", 1) not in fold_events
    resumed = [e for e in events if e["event"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["fold"] == 2 and resumed[0]["epoch"] == 1
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [2]

    # Same final summary as the uninterrupted run (same seeds, deterministic CPU ops).
    saved = json.loads((out / "summary.json").read_text())
    assert _without_paths(saved) == _without_paths(reference.summary)
    assert (out / "predictions.csv").read_text() == (
        tmp_path / "ref" / "predictions.csv"
    ).read_text()

    # Pooled out-of-fold predictions: every item exactly once, from the fold that held it out.
    folds = json.loads((out / "folds.json").read_text())
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["path"] for r in rows) == sorted(folds["items"]) and len(rows) == 24
    fold_of = dict(zip(folds["items"], folds["fold"], strict=True))
    for k in (1, 2):
        with open(out / "folds" / f"fold-{k}-val.csv", newline="") as fh:
            held_out = {r["path"] for r in csv.DictReader(fh)}
        assert held_out == {p for p, f in fold_of.items() if f == k - 1}
        # Group-disjoint runs: no patient in both the fold's train and val manifests.
        with open(out / "folds" / f"fold-{k}-train.csv", newline="") as fh:
            train_groups = {r["group"] for r in csv.DictReader(fh)}
        with open(out / "folds" / f"fold-{k}-val.csv", newline="") as fh:
            assert not train_groups & {r["group"] for r in csv.DictReader(fh)}

    # summary.json: per-fold numbers are each fold's metrics.json; mean/sd are numpy's.
    for key in ("accuracy", "macro_avg.f1", "calibration.ece"):
        values = []
        for k in (1, 2):
            metrics = json.loads((out / f"fold-{k}" / "metrics.json").read_text())
            value = metrics
            for part in key.split("."):
                value = value[part]
            values.append(value)
        stats = saved["mean_sd"][key]
        assert stats["values"] == values
        assert stats["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert stats["sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert set(saved["mean_sd"]) <= set(SUMMARY_METRICS)

    # Pooled metrics.json: intervals, and the bootstrap resampled the 12 patients.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 24 and metrics["meta"]["split"] == "out-of-fold"
    assert metrics["ci"]["accuracy"][0] <= metrics["accuracy"] <= metrics["ci"]["accuracy"][1]
    assert metrics["ci_bootstrap"]["resampled"] == "groups"
    assert metrics["ci_bootstrap"]["num_units"] == 12
    assert (out / "report.html").is_file()

    # The CLI's --resume of a finished crossval trains nothing and prints the table.
    cli = CliRunner().invoke(app, ["crossval", "--out", str(out), "--resume", "-q"])
    assert cli.exit_code == 0, cli.stderr
    assert "2-fold cross-validation" in cli.stdout and "mean ± sd" in cli.stdout
