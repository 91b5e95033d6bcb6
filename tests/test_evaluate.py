"""Every metric in EvalReport checked against scikit-learn on the same predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from alexkit.errors import DataError, UsageError
from alexkit.evaluate import align_spec, compute_report, group_report


def _random_probs(rng, n, c, y, skill=1.5):
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += skill  # better than chance, not perfect
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _check_against_sklearn(report, y, probs, c):
    labels = list(range(c))
    y_pred = report.y_pred
    assert report.accuracy == pytest.approx(skm.accuracy_score(y, y_pred))
    p, r, f, s = skm.precision_recall_fscore_support(y, y_pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(report.precision, p, atol=1e-12)
    np.testing.assert_allclose(report.recall, r, atol=1e-12)
    np.testing.assert_allclose(report.f1, f, atol=1e-12)
    np.testing.assert_array_equal(report.support, s)
    for avg, got in (("macro", report.macro), ("weighted", report.weighted)):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y, y_pred, labels=labels, average=avg, zero_division=0
        )
        assert got["precision"] == pytest.approx(p, abs=1e-12)
        assert got["recall"] == pytest.approx(r, abs=1e-12)
        assert got["f1"] == pytest.approx(f, abs=1e-12)
    np.testing.assert_array_equal(report.confusion, skm.confusion_matrix(y, y_pred, labels=labels))
    with np.errstate(invalid="ignore"):
        norm = skm.confusion_matrix(y, y_pred, labels=labels, normalize="true")
    np.testing.assert_allclose(report.confusion_normalized, np.nan_to_num(norm), atol=1e-12)


@pytest.mark.parametrize("c", [3, 5, 6, 38])
def test_multiclass_metrics_match_sklearn(c):
    rng = np.random.default_rng(c)
    n = 400
    y = rng.integers(0, c, n)
    probs = _random_probs(rng, n, c, y)
    report = compute_report(y, probs, [f"k{i}" for i in range(c)])
    np.testing.assert_array_equal(report.y_pred, probs.argmax(1))
    _check_against_sklearn(report, y, probs, c)
    if c > 5:  # top-5 of 5 classes is always 1.0, so it is not reported
        want = skm.top_k_accuracy_score(y, probs, k=5, labels=list(range(c)))
        assert report.top5_accuracy == pytest.approx(want)
    else:
        assert report.top5_accuracy is None
    assert report.binary is None
    json.dumps(report.to_dict())  # JSON-able


def test_class_absent_from_predictions_and_truth():
    rng = np.random.default_rng(1)
    c, n = 4, 200
    y = rng.integers(0, 3, n)  # class 3 never true
    probs = _random_probs(rng, n, c, y, skill=3.0)
    probs[:, 2] = 0.0  # class 2 never predicted
    report = compute_report(y, probs, list("abcd"))
    assert 2 not in set(report.y_pred) and report.support[3] == 0
    assert report.precision[2] == 0.0 and report.recall[3] == 0.0
    _check_against_sklearn(report, y, probs, c)
    assert report.confusion_normalized[3].sum() == 0.0


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_binary_metrics_match_sklearn(threshold):
    rng = np.random.default_rng(7)
    n = 300
    y = (rng.random(n) < 0.3).astype(int)  # imbalanced, like chest X-rays
    p1 = np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1)
    p1[:20] = np.round(p1[:20], 1)  # ties in the scores
    probs = np.stack([1 - p1, p1], axis=1)
    report = compute_report(y, probs, ["NORMAL", "PNEUMONIA"], threshold=threshold)
    y_pred = (p1 >= threshold).astype(int)
    np.testing.assert_array_equal(report.y_pred, y_pred)
    _check_against_sklearn(report, y, probs, 2)
    b = report.binary
    assert b["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1), abs=1e-12)
    assert b["pr_auc"] == pytest.approx(skm.average_precision_score(y, p1), abs=1e-12)
    tn, fp, fn, tp = skm.confusion_matrix(y, y_pred).ravel()
    assert b["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert b["specificity"] == pytest.approx(tn / (tn + fp))
    assert (b["tp"], b["fp"], b["fn"], b["tn"]) == (tp, fp, fn, tn)
    fpr, tpr, thr = skm.roc_curve(y, p1, drop_intermediate=False)
    np.testing.assert_allclose(b["roc_curve"]["fpr"], fpr)
    np.testing.assert_allclose(b["roc_curve"]["tpr"], tpr)
    np.testing.assert_allclose(b["roc_curve"]["thresholds"][1:], thr[1:])
    d = report.to_dict()
    assert d["binary"]["roc_auc"] == pytest.approx(b["roc_auc"])
    json.dumps(d)


def test_binary_single_class_present_has_no_auc():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    report = compute_report([0, 0, 0], probs, ["a", "b"])
    assert report.binary["roc_auc"] is None and report.binary["pr_auc"] is None
    assert report.accuracy == pytest.approx(2 / 3)


def test_bad_inputs_are_usage_errors():
    with pytest.raises(UsageError, match="shape"):
        compute_report([0, 1], np.ones((2, 3)), ["a", "b"])
    with pytest.raises(UsageError, match="labels"):
        compute_report([0, 5], np.ones((2, 2)) / 2, ["a", "b"])
    with pytest.raises(UsageError, match="threshold"):
        compute_report([0, 1], np.ones((2, 2)) / 2, ["a", "b"], threshold=1.5)


def test_group_report_averages_members():
    paths = [f"v1.mp4#frame={i}" for i in range(3)] + ["v2.mp4#frame=0", "v2.mp4#frame=5"]
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.1, 0.9], [0.2, 0.8], [0.3, 0.7]])
    report = compute_report([0, 0, 0, 1, 1], probs, ["a", "b"], paths=paths)
    groups = group_report(report)
    # v1: mean P(b) = 0.5667 -> predicted b (wrong); v2 -> b (right)
    assert groups["num_groups"] == 2 and groups["accuracy"] == pytest.approx(0.5)
    assert group_report(compute_report([0], np.array([[1.0, 0.0]]), ["a", "b"])) is None
    plain = compute_report([0, 1], probs[:2], ["a", "b"], paths=["x#1.png", "y#2.png"])
    assert group_report(plain) is None  # '#' inside file names is not a member


def test_align_spec_refuses_unknown_classes_and_reindexes():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Spec:
        items: tuple
        labels: tuple
        class_names: tuple
        root: str = "data"

    spec = Spec(("x", "y"), (0, 1), ("cat", "dog"))
    aligned = align_spec(spec, ["bird", "dog", "cat"])
    assert aligned.labels == (2, 1) and aligned.class_names == ("bird", "dog", "cat")
    with pytest.raises(DataError, match="does not know: cat") as err:
        align_spec(spec, ["dog", "fish"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["logreg", "svm"])
def test_probe_matches_sklearn_fitted_directly(kind):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from alexkit.probe import fit_and_evaluate

    x, y = load_digits(n_class=4, return_X_y=True)
    x_tr, y_tr, x_te, y_te = x[::2], y[::2], x[1::2], y[1::2]
    report = fit_and_evaluate(x_tr, y_tr, x_te, y_te, list("abcd"), kind=kind)
    clf = LogisticRegression(max_iter=2000, random_state=0) if kind == "logreg" else None
    clf = clf or LinearSVC(max_iter=5000, random_state=0)
    want = make_pipeline(StandardScaler(), clf).fit(x_tr, y_tr).predict(x_te)
    np.testing.assert_array_equal(report.y_pred, want)
    assert report.accuracy == pytest.approx(skm.accuracy_score(y_te, want))
    assert report.accuracy > 0.9  # digits are linearly separable enough
    np.testing.assert_allclose(report.probs.sum(1), 1.0)


def test_probe_binary_svm_scores_rank_like_decision_function():
    from sklearn.datasets import load_digits

    from alexkit.probe import make_probe, probe_probabilities

    x, y = load_digits(n_class=2, return_X_y=True)
    probe = make_probe("svm").fit(x[::2], y[::2])
    p = probe_probabilities(probe, x[1::2], 2)
    d = probe.decision_function(x[1::2])
    assert skm.roc_auc_score(y[1::2], p[:, 1]) == pytest.approx(skm.roc_auc_score(y[1::2], d))
    np.testing.assert_array_equal(p[:, 1] >= 0.5, d >= 0)


# --------------------------------------------------------------------------- intervals


def _lookup(d, dotted):
    """A metrics.json value by dotted key, where class names may contain dots."""
    if dotted.startswith("per_class."):
        name, metric = dotted[len("per_class.") :].rsplit(".", 1)
        return d["per_class"][name][metric]
    head, _, tail = dotted.partition(".")
    return d[head][tail] if tail else d[head]


@pytest.mark.parametrize("c", [2, 3, 7])
def test_ci_keys_name_point_estimates_and_hold_them(c):
    from statsmodels.stats.proportion import proportion_confint

    rng = np.random.default_rng(c)
    n = 300
    y = rng.integers(0, c, n)
    probs = _random_probs(rng, n, c, y)
    names = [f"cls.{i}" for i in range(c)]  # a dot inside a class name
    d = compute_report(y, probs, names, n_boot=300, seed=1).to_dict()
    assert d["ci_level"] == 0.95 and set(d["ci"]) == set(d["ci_method"])
    assert d["ci_bootstrap"] == {
        "kind": "percentile",
        "n_boot": 300,
        "seed": 1,
        "resampled": "items",
        "num_units": n,
    }
    want = {"accuracy", "macro_avg.f1", "macro_avg.precision", "macro_avg.recall"}
    want |= {"weighted_avg.f1", "weighted_avg.precision", "weighted_avg.recall"}
    want |= {f"per_class.{k}.{m}" for k in names for m in ("precision", "recall", "f1")}
    if c == 2:
        want |= {f"binary.{k}" for k in ("roc_auc", "pr_auc", "sensitivity", "specificity")}
        want |= {"binary.ppv", "binary.npv"}
    if c > 5:
        want.add("top5_accuracy")
    assert want <= set(d["ci"])
    for key, (lo, hi) in d["ci"].items():
        value = _lookup(d, key)  # every interval names a point estimate
        assert lo <= value + 1e-12 and value <= hi + 1e-12, key
    correct = int(round(d["accuracy"] * n))
    assert d["ci"]["accuracy"] == pytest.approx(
        list(proportion_confint(correct, n, method="wilson"))
    )
    if c == 2:
        y_pred = probs[:, 1] >= 0.5
        tn, fp, fn, tp = skm.confusion_matrix(y, y_pred).ravel()
        assert d["binary"]["ppv"] == pytest.approx(tp / (tp + fp))
        assert d["binary"]["npv"] == pytest.approx(tn / (tn + fn))
        assert d["ci_method"]["binary.roc_auc"] == "delong"
    assert d["calibration"]["bins"] == 15 and 0 <= d["calibration"]["ece"] <= 1


def test_clip_frames_are_resampled_per_clip():
    rng = np.random.default_rng(0)
    paths = [f"clip{k}.mp4#frame={f}" for k in range(30) for f in range(4)]
    y = np.repeat(rng.integers(0, 2, 30), 4)
    probs = _random_probs(rng, y.size, 2, y)
    d = compute_report(y, probs, ["a", "b"], paths=paths, n_boot=200).to_dict()
    assert d["ci_bootstrap"]["resampled"] == "groups" and d["ci_bootstrap"]["num_units"] == 30
    assert set(d["ci_method"].values()) == {"bootstrap"}
    # Explicit patient groups win over the clip files.
    groups = [f"patient{k // 10}" for k in range(30) for _ in range(4)]
    d = compute_report(y, probs, ["a", "b"], paths=paths, groups=groups, n_boot=200).to_dict()
    assert d["ci_bootstrap"]["num_units"] == 3
    plain = compute_report(y, probs, ["a", "b"], paths=[f"{i}.png" for i in range(y.size)])
    assert plain.to_dict()["ci_bootstrap"]["resampled"] == "items"
    assert compute_report(y, probs, ["a", "b"], ci_level=None).to_dict().get("ci") is None


def test_operating_points_match_sklearn_and_raw_scale():
    from alexkit.calibration import apply_temperature
    from alexkit.evaluate import operating_points

    rng = np.random.default_rng(2)
    y = (rng.random(400) < 0.4).astype(int)
    raw = _random_probs(rng, 400, 2, y)
    t_cal = 1.7
    cal = apply_temperature(raw, t_cal, from_probs=True)
    thresholds = {
        "youden": {"threshold": 0.42},
        "target_sensitivity": {"target": 0.9, "threshold": 0.2},
    }
    got = operating_points(compute_report(y, cal, ["n", "p"], ci_level=None), thresholds)
    for name, t in (("youden", 0.42), ("target_sensitivity", 0.2)):
        pred = cal[:, 1] >= t
        assert got[name]["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
        assert got[name]["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
        assert got[name]["ppv"] == pytest.approx(skm.precision_score(y, pred))
    assert got["target_sensitivity"]["target_sensitivity"] == 0.9
    # Uncalibrated probabilities: the threshold maps so the decisions are the same.
    on_raw = operating_points(compute_report(y, raw, ["n", "p"]), thresholds, t_cal)
    for name in thresholds:
        for key in ("sensitivity", "specificity", "ppv", "npv"):
            assert on_raw[name][key] == pytest.approx(got[name][key]), (name, key)
        assert set(on_raw[name]["ci"]) == {"sensitivity", "specificity", "ppv", "npv", "accuracy"}


def test_subgroups_match_sklearn_on_subsets(tmp_path):
    from alexkit.evaluate import load_subgroups, subgroup_metrics

    rng = np.random.default_rng(4)
    n = 120
    y = rng.integers(0, 2, n)
    probs = _random_probs(rng, n, 2, y)
    paths = [str(tmp_path / f"img{i}.png") for i in range(n)]
    sex = ["F" if i % 3 else "M" for i in range(n)]
    site = ["A" if i < 60 else "B" for i in range(n)]
    lines = ["path,sex,site"] + [f"img{i}.png,{sex[i]},{site[i]}" for i in range(n - 5)]
    (tmp_path / "sub.csv").write_text("\n".join(lines) + "\n")
    table = load_subgroups(tmp_path / "sub.csv")
    report = compute_report(y, probs, ["neg", "pos"], paths=paths, n_boot=200)
    sub = subgroup_metrics(report, table, n_boot=200)
    assert sub["matched"] == n - 5 and sub["unmatched"] == 5
    for attr, values in (("sex", sex), ("site", site)):
        for value, entry in sub["attributes"][attr].items():
            idx = [i for i in range(n - 5) if values[i] == value]
            pred = probs[idx, 1] >= 0.5
            assert entry["n"] == len(idx)
            assert entry["accuracy"] == pytest.approx(skm.accuracy_score(y[idx], pred))
            assert entry["binary.roc_auc"] == pytest.approx(
                skm.roc_auc_score(y[idx], probs[idx, 1])
            )
            lo, hi = entry["ci"]["accuracy"]
            assert lo <= entry["accuracy"] <= hi and entry["ci_method"]["accuracy"] == "wilson"
    (tmp_path / "bad.csv").write_text("file,sex\nx.png,F\n")
    with pytest.raises(DataError, match="'path' column"):
        load_subgroups(tmp_path / "bad.csv")


@pytest.mark.parametrize(
    ("config", "want"),
    [
        (
            {
                "kind": "pretrain",
                "args": {"precision": "auto"},
                "resolved": {"precision": "mixed_bfloat16"},
            },
            "mixed_bfloat16",
        ),  # noqa: E501
        ({"kind": "finetune", "args": {"precision": "mixed_bfloat16"}}, "mixed_bfloat16"),
        ({"kind": "finetune", "args": {"precision": "bf16"}}, "mixed_bfloat16"),  # an alias
        ({"kind": "finetune", "args": {"precision": None}}, "float32"),  # library default
        ({"kind": "finetune", "args": {"lr": 0.01}}, "float32"),  # before --precision existed
        ({"class_names": ["a", "b"]}, None),  # a hand-written config: not recorded
        ({}, None),
        (None, None),
    ],
)
def test_trained_precision_reads_the_run_config(config, want):
    from alexkit.evaluate import trained_precision

    assert trained_precision(config) == want


def test_evaluation_precision_of_a_model_run_as_it_is():
    import keras

    from alexkit.evaluate import evaluation_precision
    from alexkit.loading import model_with_precision
    from alexkit.precision import choose_precision

    inputs = keras.Input((4,))
    model = keras.Model(
        inputs, keras.layers.Dense(2, name="predictions")(keras.layers.Dense(3)(inputs))
    )
    assert evaluation_precision(model, None) == {
        "requested": None, "policy": "float32", "reason": "as the model is"
    }  # fmt: skip
    bf16 = model_with_precision(model, "mixed_bfloat16")  # predictions stays float32
    assert evaluation_precision(bf16, None)["policy"] == "mixed_bfloat16"
    choice = choose_precision("bf16")
    assert evaluation_precision(bf16, choice) == choice.as_dict()


@pytest.mark.parametrize(
    ("variant", "size"), [("original", 227), ("torchvision", 224), ("tiny", 99)]
)
def test_input_size_of_a_body_of_any_size_is_its_variants(variant, size):
    import keras

    from alexkit.evaluate import model_image_size
    from alexkit.loading import input_size_of
    from alexkit.model import build_alexnet

    body = build_alexnet(variant, include_top=False, input_shape=(None, None, 3))
    assert input_size_of(body) == model_image_size(body, {}) == size
    assert model_image_size(body, {"image_size": 64}) == 64  # the run's config comes first
    inputs = keras.Input((None, None, 3))
    wrapped = keras.Model(inputs, body(inputs))  # nested: found inside
    assert input_size_of(wrapped) == size
    fixed = build_alexnet(variant, include_top=False, input_shape=(131, 131, 3))
    assert input_size_of(fixed) == 131


def test_input_size_of_a_model_that_is_no_alexnet():
    import keras

    inputs = keras.Input((None, None, 3))
    free = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="stem")(inputs))
    from alexkit.loading import input_size_of

    assert input_size_of(free) == 227  # the paper's size when nothing says otherwise
