"""Confidence intervals checked against independent implementations.

Wilson against statsmodels, DeLong against the O(m·n) structural-components formula of
DeLong, DeLong & Clarke-Pearson (1988) written out here, the bootstrap against
``scipy.stats.bootstrap`` (same seed, same draw: identical percentile intervals), and the
group bootstrap against resampling whole groups by hand with scikit-learn metrics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from alexkit.errors import UsageError
from alexkit.stats import (
    delong_auc_variance,
    delong_interval,
    metric_intervals,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n"), [(0, 10), (10, 10), (7, 20), (912, 1000), (1, 3), (50, 51), (0, 1)]
)
@pytest.mark.parametrize("level", [0.95, 0.9, 0.99])
def test_wilson_matches_statsmodels(k, n, level):
    from statsmodels.stats.proportion import proportion_confint

    want = proportion_confint(k, n, alpha=1 - level, method="wilson")
    assert wilson_interval(k, n, level) == pytest.approx(want, abs=1e-12)


def test_wilson_empty_is_nan():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def _delong_structural(pos_scores, neg_scores):
    """DeLong 1988, written directly: psi over all (positive, negative) pairs."""
    x = np.asarray(pos_scores, float)[:, None]
    y = np.asarray(neg_scores, float)[None, :]
    psi = (x > y) + 0.5 * (x == y)
    m, n = psi.shape
    auc = psi.mean()
    v10 = psi.mean(axis=1)  # structural component per positive
    v01 = psi.mean(axis=0)  # per negative
    s10 = ((v10 - auc) ** 2).sum() / (m - 1)
    s01 = ((v01 - auc) ** 2).sum() / (n - 1)
    return auc, s10 / m + s01 / n


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_delong_matches_structural_components(seed, ties):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.35
    s = rng.normal(size=300) + 1.2 * y
    if ties:
        s = np.round(s, 1)  # many tied scores, across and within classes
    auc, var = delong_auc_variance(y, s)
    want_auc, want_var = _delong_structural(s[y], s[~y])
    assert auc == pytest.approx(want_auc, abs=1e-12)
    assert auc == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert var == pytest.approx(want_var, rel=1e-10)
    lo, hi = delong_interval(y, s, 0.95)
    half = 1.959963984540054 * math.sqrt(want_var)
    assert (lo, hi) == pytest.approx((want_auc - half, want_auc + half), abs=1e-9)


def test_delong_hanley_mcneil_worked_example():
    """Hanley & McNeil (1982) CT ratings: 58 normal, 51 abnormal; published AUC 0.893.

    Ratings 1..5 (definitely normal .. definitely abnormal): normal 33/6/6/11/2,
    abnormal 3/2/2/11/33. DeLong's SE is checked against the structural-components
    oracle above (Hanley & McNeil's own SE, 0.0326, uses a different approximation).
    """
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(normal.size, bool), np.ones(abnormal.size, bool)]
    s = np.r_[normal, abnormal].astype(float)
    auc, var = delong_auc_variance(y, s)
    assert auc == pytest.approx(0.893, abs=5e-4)
    _, want_var = _delong_structural(abnormal, normal)
    assert var == pytest.approx(want_var, rel=1e-10)
    # Hanley-McNeil's approximation lands near DeLong's for these data.
    assert math.sqrt(var) == pytest.approx(0.0326, abs=3e-3)


def _multiclass(seed, n=150, c=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 1.3
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return y, p


def test_bootstrap_equals_scipy_bootstrap():
    from scipy.stats import bootstrap

    y, p = _multiclass(0)
    pred = p.argmax(1)
    seed, n_boot = 123, 500
    got = metric_intervals(y, pred, p, ["a", "b", "c"], n_boot=n_boot, seed=seed)

    def macro_f1(i):
        return skm.f1_score(y[i], pred[i], average="macro", labels=[0, 1, 2], zero_division=0)

    def weighted_f1(i):
        return skm.f1_score(y[i], pred[i], average="weighted", labels=[0, 1, 2], zero_division=0)

    for name, stat in (("macro_avg.f1", macro_f1), ("weighted_avg.f1", weighted_f1)):
        res = bootstrap(
            (np.arange(y.size),),
            stat,
            vectorized=False,
            paired=True,
            n_resamples=n_boot,
            confidence_level=0.95,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        want = (res.confidence_interval.low, res.confidence_interval.high)
        assert got.ci[name] == pytest.approx(want, abs=1e-12), name
        assert got.method[name] == "bootstrap"
    assert got.method["accuracy"] == "wilson"
    assert got.method["per_class.b.recall"] == "wilson"


def test_binary_pr_auc_bootstrap_equals_scipy_and_methods():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(5)
    y = (rng.random(200) < 0.3).astype(int)
    s = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    s[:30] = np.round(s[:30], 1)
    p = np.stack([1 - s, s], 1)
    pred = (s >= 0.5).astype(int)
    got = metric_intervals(y, pred, p, ["neg", "pos"], n_boot=400, seed=9)
    res = bootstrap(
        (np.arange(200),),
        lambda i: skm.average_precision_score(y[i], s[i]),
        vectorized=False,
        paired=True,
        n_resamples=400,
        method="percentile",
        rng=np.random.default_rng(9),
    )
    want = (res.confidence_interval.low, res.confidence_interval.high)
    assert got.ci["binary.pr_auc"] == pytest.approx(want, abs=1e-12)
    assert got.method["binary.roc_auc"] == "delong"
    assert {got.method[f"binary.{k}"] for k in ("sensitivity", "specificity", "ppv", "npv")} == {
        "wilson"
    }
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert got.ci["binary.npv"] == pytest.approx(wilson_interval(tn, tn + fn))
    assert got.ci["binary.ppv"] == pytest.approx(wilson_interval(tp, tp + fp))
    grid, lo, hi = got.bands["roc"]
    assert grid.shape == lo.shape == hi.shape == (101,)
    assert np.all(lo <= hi + 1e-12) and lo[-1] == pytest.approx(1.0)


def test_group_bootstrap_resamples_whole_groups():
    """Oracle: draw groups with the same generator, concatenate their members, score."""
    rng = np.random.default_rng(3)
    n_groups = 40
    sizes = rng.integers(1, 6, n_groups)
    groups = np.repeat([f"patient{g}" for g in range(n_groups)], sizes)
    y = np.repeat(rng.integers(0, 2, n_groups), sizes)  # one label per patient
    s = np.clip(0.25 * y + rng.random(y.size) * 0.75, 0, 1)
    p = np.stack([1 - s, s], 1)
    pred = (s >= 0.5).astype(int)
    n_boot, seed = 300, 4
    got = metric_intervals(y, pred, p, ["a", "b"], n_boot=n_boot, seed=seed, groups=list(groups))
    assert got.clustered and got.num_groups == n_groups
    assert set(got.method.values()) == {"bootstrap"}  # no Wilson/DeLong on clustered items

    members = [np.flatnonzero(groups == f"patient{g}") for g in range(n_groups)]
    draws = np.random.default_rng(seed).integers(0, n_groups, (n_boot, n_groups))
    acc, auc, f1 = [], [], []
    for row in draws:
        i = np.concatenate([members[g] for g in row])
        acc.append(skm.accuracy_score(y[i], pred[i]))
        f1.append(skm.f1_score(y[i], pred[i], average="macro", zero_division=0))
        auc.append(skm.roc_auc_score(y[i], s[i]) if len(set(y[i])) == 2 else np.nan)
    for name, dist in (("accuracy", acc), ("macro_avg.f1", f1), ("binary.roc_auc", auc)):
        want = np.nanquantile(dist, [0.025, 0.975])
        assert got.ci[name] == pytest.approx(tuple(want), abs=1e-12), name


def test_intervals_cover_the_point_estimate_and_shrink_with_n():
    widths = []
    for n in (100, 1600):
        y, p = _multiclass(1, n=n)
        pred = p.argmax(1)
        got = metric_intervals(y, pred, p, ["a", "b", "c"], n_boot=300, seed=0)
        f1 = skm.f1_score(y, pred, average="macro")
        lo, hi = got.ci["macro_avg.f1"]
        assert lo <= f1 <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5  # ~1/sqrt(n): 4x less for 16x the items


def test_bad_arguments():
    y, p = _multiclass(0, n=20)
    with pytest.raises(UsageError, match="ci-level"):
        metric_intervals(y, p.argmax(1), p, list("abc"), level=95)
    with pytest.raises(UsageError, match="n-boot"):
        metric_intervals(y, p.argmax(1), p, list("abc"), n_boot=10)
    got = metric_intervals(y, p.argmax(1), p, list("abc"), n_boot=0)
    assert "macro_avg.f1" not in got.ci and got.method["accuracy"] == "wilson"


def test_ece_and_brier_bootstrap_equal_scipy():
    from scipy.stats import bootstrap

    from alexkit.calibration import brier_score, expected_calibration_error

    y, p = _multiclass(7, n=180, c=4)
    got = metric_intervals(y, p.argmax(1), p, list("abcd"), n_boot=300, seed=2)
    for key, fn in (
        ("calibration.ece", expected_calibration_error),
        ("calibration.brier", brier_score),
    ):
        res = bootstrap(
            (np.arange(y.size),),
            lambda i, fn=fn: fn(y[i], p[i]),
            vectorized=False,
            paired=True,
            n_resamples=300,
            method="percentile",
            rng=np.random.default_rng(2),
        )
        want = (res.confidence_interval.low, res.confidence_interval.high)
        assert got.ci[key] == pytest.approx(want, abs=1e-12), key
        assert got.method[key] == "bootstrap"
