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
