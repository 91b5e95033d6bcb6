"""Calibration: how far predicted probabilities are from observed frequencies, and fixes.

* :func:`calibration_summary` — expected calibration error (ECE, **15 equal-width bins
  over the top-label confidence** ``max_k p_k`` against "the top label is right"), Brier
  score and negative log-likelihood, plus the per-bin numbers of a reliability diagram.
* :func:`fit_temperature` / :func:`apply_temperature` — temperature scaling (Guo et al.
  2017): one scalar ``T`` minimising the NLL of ``softmax(z / T)`` on held-out data.
  alexkit models end in a softmax, so ``z = log p``: ``softmax(log(p) / T)`` equals
  scaling the logits, because ``log p`` differs from the logits only by a per-row
  constant, which softmax ignores. ``T`` never changes the arg-max, so accuracy stays.
* :func:`choose_thresholds` — binary operating points picked on validation data:
  Youden's J and the highest threshold reaching a target sensitivity.
* :func:`save_calibration` / :func:`load_calibration` — ``calibration.json`` in a run dir.

Pure numpy, no TensorFlow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import CheckpointError, UsageError

#: Reliability bins: equal-width over [0, 1] of the top-label confidence.
ECE_BINS = 15
#: The file a run keeps its fitted temperature and thresholds in.
CALIBRATION_FILE = "calibration.json"
_EPS = 1e-12


def _as_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise UsageError(f"probabilities must have shape (N, C) with C >= 2; received {p.shape}.")
    return p


def brier_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Brier score.

    Two classes: ``mean((p_1 - y)^2)`` (scikit-learn's ``brier_score_loss``); more
    classes: Brier's original ``mean(sum_k (p_k - [y == k])^2)``.
    """
    return float(np.mean(brier_terms(y_true, probs)))


def negative_log_likelihood(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean ``-log p_y`` (probabilities clipped at 1e-12)."""
    y = np.asarray(y_true, dtype=np.int64)
    p = _as_probs(probs)
    return float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], _EPS, 1.0))))


def bin_index(probs: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Per item, its equal-width bin of top-label confidence (0..bins-1)."""
    conf = _as_probs(probs).max(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(conf, edges[1:-1], right=False), 0, bins - 1)


def brier_terms(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-item terms whose mean is :func:`brier_score`."""
    y = np.asarray(y_true, dtype=np.int64)
    p = _as_probs(probs)
    if p.shape[1] == 2:
        return (p[:, 1] - (y == 1)) ** 2
    return np.sum((p - np.eye(p.shape[1])[y]) ** 2, axis=1)


def reliability_bins(
    y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float | int | None]]:
    """Per equal-width bin of top-label confidence: range, count, mean confidence, accuracy.

    A confidence equal to a bin edge falls in the bin above it; 1.0 falls in the last bin.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = _as_probs(probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = bin_index(p, bins)
    out = []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        out.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "confidence": float(conf[mask].mean()) if count else None,
                "accuracy": float(correct[mask].mean()) if count else None,
            }
        )
    return out


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over equal-width top-label bins."""
    table = reliability_bins(y_true, probs, bins)
    n = sum(b["count"] for b in table)
    if not n:
        return math.nan
    return float(
        sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in table if b["count"])
    )


def calibration_summary(
    y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> dict[str, Any]:
    """``metrics.json``'s ``"calibration"``: ece, brier, nll, bins, binning, reliability."""
    return {
        "ece": expected_calibration_error(y_true, probs, bins),
        "brier": brier_score(y_true, probs),
        "nll": negative_log_likelihood(y_true, probs),
        "bins": int(bins),
        "binning": "equal-width bins of the top-label confidence (max probability)",
        "reliability": reliability_bins(y_true, probs, bins),
    }


# --------------------------------------------------------------------------- temperature


def _scores(logits_or_probs: np.ndarray, from_probs: bool | None) -> np.ndarray:
    z = np.asarray(logits_or_probs, dtype=np.float64)
    if z.ndim != 2:
        raise UsageError(f"expected (N, C) logits or probabilities; received shape {z.shape}.")
    if from_probs is None:
        from_probs = bool(
            np.all(z >= 0) and np.all(z <= 1) and np.allclose(z.sum(axis=1), 1.0, atol=1e-3)
        )
    return np.log(np.clip(z, _EPS, 1.0)) if from_probs else z


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def apply_temperature(
    logits_or_probs: np.ndarray, temperature: float, *, from_probs: bool | None = None
) -> np.ndarray:
    """``softmax(z / T)`` with ``z`` the logits, or ``log p`` for probabilities.

    Args:
        logits_or_probs: (N, C) logits or probabilities.
        temperature: ``T > 0`` (``T > 1`` softens, ``T < 1`` sharpens).
        from_probs: True/False to say what the input is; None guesses (non-negative rows
            summing to 1 are probabilities).

    Returns:
        (N, C) probabilities.
    """
    if not temperature > 0 or not math.isfinite(temperature):
        raise UsageError(f"temperature must be a positive number; received {temperature}.")
    return _softmax(_scores(logits_or_probs, from_probs) / float(temperature))


def fit_temperature(
    logits_or_probs: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    from_probs: bool | None = None,
) -> float:
    """The temperature minimising the NLL of ``softmax(z / T)`` on these labels.

    The NLL is convex in ``b = 1 / T`` (a log-sum-exp of linear functions minus a linear
    one), so Newton's method on ``b`` with a bisection safeguard finds the optimum.

    Args:
        logits_or_probs: (N, C) held-out logits or probabilities (see
            :func:`apply_temperature`).
        labels: (N,) true classes.
        from_probs: as in :func:`apply_temperature`.

    Returns:
        ``T`` in [0.01, 100] (clamped when the optimum lies beyond, e.g. perfectly
        separated data, whose NLL keeps falling as ``T`` goes to 0).

    Raises:
        UsageError: shapes disagree or there are no items.
    """
    z = _scores(logits_or_probs, from_probs)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if z.shape[0] != y.size or y.size == 0:
        raise UsageError(f"{y.size} labels for {z.shape[0]} rows; need the same number, > 0.")
    z_true = z[np.arange(y.size), y]
    lo, hi = 0.01, 100.0  # b = 1/T

    def grad_hess(b: float) -> tuple[float, float]:
        p = _softmax(b * z)
        mean_z = np.sum(p * z, axis=1)
        var_z = np.sum(p * z * z, axis=1) - mean_z**2
        return float(np.mean(mean_z - z_true)), float(np.mean(np.maximum(var_z, 0.0)))

    g_lo, _ = grad_hess(lo)
    g_hi, _ = grad_hess(hi)
    if g_lo >= 0:  # NLL rises from the smallest b on: the highest temperature allowed
        return 1.0 / lo
    if g_hi <= 0:  # still falling at the largest b: the lowest temperature allowed
        return 1.0 / hi
    b = 1.0
    for _ in range(100):
        g, h = grad_hess(b)
        if g > 0:
            hi = b
        else:
            lo = b
        if abs(g) < 1e-12 or hi - lo < 1e-12 * hi:
            break
        step = b - g / h if h > 0 else math.nan
        b = step if lo < step < hi else 0.5 * (lo + hi)
    return float(1.0 / b)


# --------------------------------------------------------------------------- thresholds


def choose_thresholds(
    y_true: Sequence[int] | np.ndarray,
    p_positive: Sequence[float] | np.ndarray,
    target_sensitivity: float | None = None,
) -> dict[str, Any]:
    """Binary operating points on validation data (decide positive when ``p >= t``).

    Args:
        y_true: (N,) 0/1 labels, both present.
        p_positive: (N,) ``P(class 1)``.
        target_sensitivity: also pick the highest threshold whose sensitivity reaches
            this value (the most specific such point).

    Returns:
        ``{"youden": {"threshold", "sensitivity", "specificity", "j"},
        "target_sensitivity": {"target", "threshold", "sensitivity", "specificity"}}``
        (the second only with ``target_sensitivity``). Thresholds are scores seen in the
        data, nudged into (0, 1) so ``evaluate --threshold`` accepts them.

    Raises:
        UsageError: one class only, or a target outside (0, 1].
    """
    from alexkit.metrics import roc_curve

    y = np.asarray(y_true, dtype=np.int64).reshape(-1) == 1
    s = np.asarray(p_positive, dtype=np.float64).reshape(-1)
    if y.size != s.size or not y.any() or y.all():
        raise UsageError("choosing thresholds needs labels of both classes, one score each.")
    fpr, tpr, thr = roc_curve(y, s)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the (0, 0) point at +inf
    j = tpr - fpr
    best = int(np.argmax(j))  # first (= highest threshold) among ties
    out: dict[str, Any] = {
        "youden": {
            "threshold": _open_unit(thr[best]),
            "sensitivity": float(tpr[best]),
            "specificity": float(1 - fpr[best]),
            "j": float(j[best]),
        }
    }
    if target_sensitivity is not None:
        if not 0.0 < target_sensitivity <= 1.0:
            raise UsageError(
                f"--target-sensitivity must be in (0, 1]; received {target_sensitivity}."
            )
        k = int(np.flatnonzero(tpr >= target_sensitivity - 1e-12)[0])
        out["target_sensitivity"] = {
            "target": float(target_sensitivity),
            "threshold": _open_unit(thr[k]),
            "sensitivity": float(tpr[k]),
            "specificity": float(1 - fpr[k]),
        }
    return out


def _open_unit(t: float) -> float:
    return float(min(max(t, np.nextafter(0.0, 1.0)), np.nextafter(1.0, 0.0)))


# --------------------------------------------------------------------------- files


def save_calibration(
    run_dir: str | Path,
    *,
    temperature: float | None = None,
    thresholds: dict[str, Any] | None = None,
    **info: Any,
) -> Path:
    """Write ``run_dir/calibration.json`` atomically.

    Args:
        run_dir: the run directory.
        temperature: fitted ``T`` (see :func:`fit_temperature`), or None.
        thresholds: :func:`choose_thresholds`' result, or None.
        **info: context kept with it, e.g. ``fitted_on="val"``, ``num_samples=…``,
            ``nll_before=…``, ``nll_after=…``.

    Returns:
        The file's path.
    """
    from alexkit.paths import atomic_write_text

    doc: dict[str, Any] = {"format": 1, "temperature": temperature, "thresholds": thresholds}
    doc.update(info)
    path = Path(run_dir) / CALIBRATION_FILE
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


def load_calibration(run_dir: str | Path) -> dict[str, Any] | None:
    """``run_dir/calibration.json`` as a dict, or None when the run has none.

    Raises:
        CheckpointError: the file exists but is not valid, or its temperature is not > 0.
    """
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}).") from exc
    t = doc.get("temperature") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or (
        t is not None and not (isinstance(t, int | float) and t > 0 and math.isfinite(t))
    ):
        raise CheckpointError(f"{path}: 'temperature' must be a positive number or null.")
    return doc


def apply_saved_temperature(
    probs: np.ndarray, run_dir: str | Path | None
) -> tuple[np.ndarray, float | None]:
    """Probabilities scaled by ``run_dir``'s saved temperature, when it has one.

    Returns:
        ``(probabilities, temperature)``; the input unchanged and None without a
        ``calibration.json`` temperature (or without a run directory).
    """
    saved = load_calibration(run_dir) if run_dir is not None else None
    t = (saved or {}).get("temperature")
    if t is None:
        return probs, None
    scaled = apply_temperature(probs, float(t), from_probs=True)
    return scaled.astype(np.asarray(probs).dtype, copy=False), float(t)


def calibration_for_split(
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    target_sensitivity: float | None = None,
) -> dict[str, Any]:
    """Everything ``finetune`` saves, fitted on one (validation) split.

    Returns:
        Keyword arguments for :func:`save_calibration`: ``temperature``, ``thresholds``
        (binary tasks with both classes present, chosen on the calibrated probabilities),
        ``num_samples``, ``nll_before``, ``nll_after``, ``ece_before``, ``ece_after``.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = _as_probs(probs)
    t = fit_temperature(p, y, from_probs=True)
    calibrated = apply_temperature(p, t, from_probs=True)
    thresholds = None
    if p.shape[1] == 2 and 0 < int((y == 1).sum()) < y.size:
        thresholds = choose_thresholds(y, calibrated[:, 1], target_sensitivity)
    return {
        "temperature": t,
        "thresholds": thresholds,
        "num_samples": int(y.size),
        "nll_before": negative_log_likelihood(y, p),
        "nll_after": negative_log_likelihood(y, calibrated),
        "ece_before": expected_calibration_error(y, p),
        "ece_after": expected_calibration_error(y, calibrated),
    }
