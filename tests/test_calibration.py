"""Calibration against independent computations: scipy's optimiser for the temperature,
scikit-learn for Brier and ROC thresholds, a loop-by-hand ECE."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from alexkit.calibration import (
    apply_temperature,
    brier_score,
    calibration_for_split,
    calibration_summary,
    choose_thresholds,
    expected_calibration_error,
    fit_temperature,
    load_calibration,
    negative_log_likelihood,
    save_calibration,
)
from alexkit.errors import CheckpointError, UsageError


def _overconfident(seed, n=500, c=4, scale=3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 1.0
    logits *= scale  # sharpened: overconfident, so the fitted T should be > 1
    p = np.exp(logits - logits.max(1, keepdims=True))
    return y, logits, p / p.sum(1, keepdims=True)


def _scipy_temperature(z, y):
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    def nll(log_t):
        zt = z / np.exp(log_t[0])
        return np.mean(logsumexp(zt, axis=1) - zt[np.arange(y.size), y])

    res = minimize(nll, x0=[0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14})
    return float(np.exp(res.x[0]))


@pytest.mark.parametrize(("seed", "scale"), [(0, 3.0), (1, 0.4), (2, 1.0)])
def test_temperature_equals_scipy_minimisation(seed, scale):
    y, logits, p = _overconfident(seed, scale=scale)
    t_logits = fit_temperature(logits, y, from_probs=False)
    t_probs = fit_temperature(p, y)  # detected as probabilities: z = log p
    want = _scipy_temperature(logits, y)
    assert t_logits == pytest.approx(want, rel=1e-5)
    assert t_probs == pytest.approx(want, rel=1e-5)  # log p differs by a per-row constant
    if scale > 1:
        assert t_logits > 1.5
    calibrated = apply_temperature(p, t_probs)
    np.testing.assert_allclose(calibrated, apply_temperature(logits, t_logits, from_probs=False))
    np.testing.assert_array_equal(calibrated.argmax(1), p.argmax(1))  # accuracy unchanged
    assert negative_log_likelihood(y, calibrated) <= negative_log_likelihood(y, p) + 1e-12
    assert skm.log_loss(y, calibrated) == pytest.approx(negative_log_likelihood(y, calibrated))


def test_temperature_extremes_are_clamped():
    y = np.array([0, 1, 0, 1])
    separable = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert fit_temperature(separable, y) == pytest.approx(0.01)
    with pytest.raises(UsageError):
        fit_temperature(separable, y[:3])
    with pytest.raises(UsageError):
        apply_temperature(separable, 0.0)


def _ece_by_hand(y, p, bins=15):
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        m = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
        if m.any():
            total += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return total


@pytest.mark.parametrize("c", [2, 5])
def test_ece_brier_summary(c):
    y, _, p = _overconfident(3, c=c)
    assert expected_calibration_error(y, p) == pytest.approx(_ece_by_hand(y, p), abs=1e-12)
    if c == 2:
        assert brier_score(y, p) == pytest.approx(skm.brier_score_loss(y, p[:, 1]))
    else:
        onehot = np.eye(c)[y]
        assert brier_score(y, p) == pytest.approx(np.mean(np.sum((p - onehot) ** 2, 1)))
    s = calibration_summary(y, p)
    assert s["bins"] == 15 and len(s["reliability"]) == 15
    assert sum(b["count"] for b in s["reliability"]) == y.size
    json.dumps(s)
    # Temperature scaling fixes most of an overconfident model's ECE.
    t = fit_temperature(p, y)
    assert expected_calibration_error(y, apply_temperature(p, t)) < 0.5 * s["ece"]


def test_thresholds_youden_and_target_sensitivity_brute_force():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    s = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1)
    got = choose_thresholds(y, s, target_sensitivity=0.9)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    best = max(range(1, thr.size), key=lambda i: (tpr[i] - fpr[i], thr[i]))
    assert got["youden"]["threshold"] == pytest.approx(thr[best])
    pred = s >= got["youden"]["threshold"]
    assert got["youden"]["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert got["youden"]["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    # Target: among thresholds with sensitivity >= 0.9, the highest.
    ok = [thr[i] for i in range(1, thr.size) if tpr[i] >= 0.9]
    t = got["target_sensitivity"]["threshold"]
    assert t == pytest.approx(max(ok))
    assert skm.recall_score(y, s >= t) >= 0.9
    with pytest.raises(UsageError):
        choose_thresholds([1, 1], [0.2, 0.3])


def test_save_load_and_fit_on_split(tmp_path):
    y, _, p = _overconfident(4, c=2)
    fitted = calibration_for_split(y, p, target_sensitivity=0.95)
    assert fitted["nll_after"] <= fitted["nll_before"]
    path = save_calibration(tmp_path, fitted_on="val", **fitted)
    loaded = load_calibration(tmp_path)
    assert path.name == "calibration.json"
    assert loaded["temperature"] == pytest.approx(fitted["temperature"])
    assert loaded["thresholds"]["target_sensitivity"]["target"] == 0.95
    assert load_calibration(tmp_path / "none") is None
    (tmp_path / "calibration.json").write_text('{"temperature": -1}')
    with pytest.raises(CheckpointError, match="positive"):
        load_calibration(tmp_path)
