"""Confidence intervals for the metrics ``alexkit evaluate`` reports.

Three methods, each the usual choice for its kind of number:

* **Wilson score interval** for proportions over independent items (accuracy, per-class
  recall and precision, sensitivity, specificity, PPV, NPV): :func:`wilson_interval`.
* **DeLong** for a binary ROC AUC over independent items: :func:`delong_interval`
  (the fast midrank algorithm of Sun & Xu 2014; normal interval, clipped to [0, 1]).
* A seeded **percentile bootstrap** for everything else (macro F1, PR AUC, …):
  :func:`bootstrap_metrics`. Percentile rather than BCa because BCa's jackknife needs
  one extra evaluation per group and the percentile interval is what grouped
  (cluster) bootstraps in the medical-imaging literature report.

When items are clustered (several frames of one clip, slices of one volume, images of
one patient: ``groups`` with a group of more than one item), Wilson and DeLong would
treat correlated items as independent and give intervals that are too narrow, so
**every** interval then comes from the bootstrap, which resamples whole groups.
:func:`metric_intervals` makes that choice and names it per metric (``ci_method``).

Pure numpy (scipy only for the normal quantile), no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from alexkit.errors import UsageError

# Resamples × groups held in memory at once (int64/float64 multiplicity matrices).
_CHUNK_CELLS = 4_000_000
#: The grids the ROC and PR bands are drawn on.
BAND_GRID = np.linspace(0.0, 1.0, 101)


@functools.lru_cache(maxsize=16)
def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def check_n_boot(n_boot: int) -> int:
    """``--n-boot``: 0 (no bootstrap) or at least 100 resamples, else a usage error."""
    if n_boot < 0 or 0 < n_boot < 100:
        raise UsageError(f"--n-boot must be 0 or >= 100; received {n_boot}.")
    return n_boot


def check_level(level: float) -> float:
    """A confidence level in (0, 1), or a UsageError naming the value."""
    if not 0.0 < float(level) < 1.0:
        raise UsageError(f"--ci-level must be in (0, 1); received {level}.")
    return float(level)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n``.

    Args:
        successes: number of successes (0..n).
        n: number of trials; 0 gives ``(nan, nan)``.
        level: confidence level, e.g. 0.95.

    Returns:
        ``(low, high)``.
    """
    if n <= 0:
        return math.nan, math.nan
    z = _z(level)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = xs.size
    ranks_sorted = np.empty(n, dtype=np.float64)
    i = 0
    while i < n:
        j = i
        while j < n and xs[j] == xs[i]:
            j += 1
        ranks_sorted[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n, dtype=np.float64)
    out[order] = ranks_sorted
    return out


def delong_auc_variance(positive: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC and its DeLong (1988) variance, by the midrank algorithm of Sun & Xu (2014).

    Args:
        positive: boolean truth (N,), both classes present.
        scores: higher = more positive (N,).

    Returns:
        ``(auc, variance)``.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    x, y = scores[positive], scores[~positive]
    m, n = x.size, y.size
    if m == 0 or n == 0:
        raise UsageError("DeLong's AUC variance needs both classes.")
    tx, ty = _midranks(x), _midranks(y)
    tz = _midranks(np.concatenate([x, y]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v01 = (tz[:m] - tx) / n  # per positive: fraction of negatives it outranks
    v10 = 1.0 - (tz[m:] - ty) / m  # per negative: fraction of positives above it
    s01 = np.var(v01, ddof=1) if m > 1 else 0.0
    s10 = np.var(v10, ddof=1) if n > 1 else 0.0
    return float(auc), float(s01 / m + s10 / n)


def delong_interval(
    positive: np.ndarray, scores: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """DeLong normal interval for a binary ROC AUC, clipped to [0, 1]."""
    auc, var = delong_auc_variance(positive, scores)
    half = _z(level) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


# --------------------------------------------------------------------------- bootstrap


def group_index(groups: Sequence[str] | None, n: int) -> tuple[np.ndarray, int]:
    """Per item, the index of its group (items with an empty group are their own group)."""
    if groups is None:
        return np.arange(n, dtype=np.int64), n
    if len(groups) != n:
        raise UsageError(f"{len(groups)} groups for {n} items.")
    ids: dict[str, int] = {}
    out = np.empty(n, dtype=np.int64)
    for i, g in enumerate(groups):
        key = str(g) if g else f"\x00item:{i}"
        out[i] = ids.setdefault(key, len(ids))
    return out, len(ids)


def resample_weights(group_of_item: np.ndarray, num_groups: int, n_boot: int, seed: int) -> Any:
    """Yield ``(B_chunk, N)`` item multiplicities, one row per bootstrap resample.

    Each resample draws ``num_groups`` groups with replacement
    (``rng.integers(0, G, (B, G))`` with ``numpy.random.default_rng(seed)``, the draw
    ``scipy.stats.bootstrap`` makes for a paired sample) and every item counts as often
    as its group was drawn.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(num_groups, len(group_of_item), 1))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        draws = rng.integers(0, num_groups, (b, num_groups))
        offsets = draws + (np.arange(b) * num_groups)[:, None]
        counts = np.bincount(offsets.ravel(), minlength=b * num_groups).reshape(b, num_groups)
        yield counts[:, group_of_item].astype(np.float64)
        done += b


def _onehot(index: np.ndarray, width: int, mask: np.ndarray | None = None) -> Any:
    from scipy import sparse

    n = index.size
    data = np.ones(n) if mask is None else mask.astype(np.float64)
    return sparse.csr_matrix((data, (np.arange(n), index)), shape=(n, width))


def _binary_weighted_curves(
    order: np.ndarray, ends: np.ndarray, pos_sorted: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted cumulative TP/FP at each distinct threshold, for rows of weights ``w``."""
    ws = w[:, order]
    tps = np.cumsum(ws * pos_sorted, axis=1)[:, ends]
    fps = np.cumsum(ws * ~pos_sorted, axis=1)[:, ends]
    return tps, fps, tps[:, -1:], fps[:, -1:]


@dataclasses.dataclass
class Intervals:
    """Confidence intervals keyed by metric name (``metrics.json`` paths).

    Attributes:
        ci: ``{name: (low, high)}``; NaN where undefined.
        method: ``{name: "wilson" | "delong" | "bootstrap"}``.
        level: the confidence level.
        n_boot: bootstrap resamples used (0 when none were needed).
        seed: the bootstrap seed.
        clustered: True when the bootstrap resampled groups of several items.
        num_groups: resampling units (groups, or items).
        bands: binary tasks: ``{"roc": (grid, low, high), "pr": (grid, low, high)}``
            pointwise percentile bands (TPR at fixed FPR, precision at fixed recall).
    """

    ci: dict[str, tuple[float, float]]
    method: dict[str, str]
    level: float
    n_boot: int
    seed: int
    clustered: bool
    num_groups: int
    bands: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = dataclasses.field(
        default_factory=dict
    )


def _percentile(dist: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column; NaN resamples (metric undefined) are left out."""
    alpha = (1.0 - level) / 2
    lo = np.full(dist.shape[1], np.nan)
    hi = np.full(dist.shape[1], np.nan)
    nan_cols = np.isnan(dist).any(axis=0)
    if (~nan_cols).any():
        lo[~nan_cols], hi[~nan_cols] = np.quantile(dist[:, ~nan_cols], [alpha, 1 - alpha], axis=0)
    for j in np.flatnonzero(nan_cols):
        col = dist[:, j][~np.isnan(dist[:, j])]
        if col.size:
            lo[j], hi[j] = np.quantile(col, [alpha, 1 - alpha])
    return lo, hi


def metric_intervals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> Intervals:
    """Intervals for every headline metric of an ``EvalReport``.

    Names: ``accuracy``, ``top5_accuracy`` (C > 5), ``macro_avg.{precision,recall,f1}``,
    ``weighted_avg.{precision,recall,f1}``, ``per_class.<name>.{precision,recall,f1}``
    and, for two classes, ``binary.{roc_auc,pr_auc,sensitivity,specificity,ppv,npv}``;
    ``calibration.{ece,brier}`` (bootstrap).

    Args:
        y_true, y_pred: labels and decisions (N,).
        probs: probabilities (N, C).
        class_names: the C names.
        level: confidence level.
        n_boot: bootstrap resamples (>= 100 unless 0, which skips bootstrap metrics).
        seed: bootstrap seed.
        groups: per-item group ids (patient, clip, volume; "" = its own group) or None.

    Returns:
        The :class:`Intervals`.
    """
    level = check_level(level)
    check_n_boot(n_boot)
    y = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n, c = probs.shape
    names = [str(s) for s in class_names]
    gidx, num_groups = group_index(groups, n)
    clustered = num_groups < n
    correct = y == pred
    top5 = None
    if c > 5:
        top = np.argsort(-probs, axis=1, kind="stable")[:, :5]
        top5 = (top == y[:, None]).any(axis=1)

    ci: dict[str, tuple[float, float]] = {}
    method: dict[str, str] = {}
    if not clustered:  # closed-form intervals where items are independent
        _closed_form_intervals(ci, method, y, pred, probs, correct, top5, names, level)

    # Everything else (and everything when clustered) from one bootstrap.
    boot_names = _bootstrap_names(names, clustered, has_top5=top5 is not None)
    bands: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if n_boot and n:
        dist, band_dists = _bootstrap(
            y, pred, probs, correct, top5, boot_names, names, gidx, num_groups, n_boot, seed
        )
        lo, hi = _percentile(dist, level)
        for j, name in enumerate(boot_names):
            ci[name] = (float(lo[j]), float(hi[j]))
            method[name] = "bootstrap"
        for key, curves in band_dists.items():
            blo, bhi = _percentile(curves, level)
            bands[key] = (BAND_GRID.copy(), blo, bhi)
    return Intervals(
        ci=ci,
        method=method,
        level=level,
        n_boot=n_boot if n_boot and n else 0,
        seed=seed,
        clustered=clustered,
        num_groups=num_groups,
        bands=bands,
    )


def _closed_form_intervals(
    ci: dict[str, tuple[float, float]],
    method: dict[str, str],
    y: np.ndarray,
    pred: np.ndarray,
    probs: np.ndarray,
    correct: np.ndarray,
    top5: np.ndarray | None,
    names: list[str],
    level: float,
) -> None:
    """Wilson intervals for the proportions and DeLong for the ROC AUC, into ``ci``/``method``."""
    n = y.shape[0]
    ci["accuracy"] = wilson_interval(int(correct.sum()), n, level)
    method["accuracy"] = "wilson"
    if top5 is not None:
        ci["top5_accuracy"] = wilson_interval(int(top5.sum()), n, level)
        method["top5_accuracy"] = "wilson"
    for k, name in enumerate(names):
        tp = int(np.sum(correct & (y == k)))
        ci[f"per_class.{name}.recall"] = wilson_interval(tp, int(np.sum(y == k)), level)
        ci[f"per_class.{name}.precision"] = wilson_interval(tp, int(np.sum(pred == k)), level)
        method[f"per_class.{name}.recall"] = method[f"per_class.{name}.precision"] = "wilson"
    if len(names) != 2:
        return
    positive = y == 1
    tp = int(np.sum(positive & (pred == 1)))
    tn = int(np.sum(~positive & (pred == 0)))
    fp = int(np.sum(~positive & (pred == 1)))
    fn = int(np.sum(positive & (pred == 0)))
    for key, (k, m) in {
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
    }.items():
        ci[f"binary.{key}"] = wilson_interval(k, m, level)
        method[f"binary.{key}"] = "wilson"
    if positive.any() and (~positive).any():
        ci["binary.roc_auc"] = delong_interval(positive, probs[:, 1], level)
        method["binary.roc_auc"] = "delong"


def _bootstrap_names(names: list[str], clustered: bool, *, has_top5: bool) -> list[str]:
    """The metrics the bootstrap estimates: those without a closed form, or all if clustered."""
    binary = len(names) == 2
    boot_names: list[str] = ["macro_avg.precision", "macro_avg.recall", "macro_avg.f1"]
    boot_names += ["weighted_avg.precision", "weighted_avg.recall", "weighted_avg.f1"]
    boot_names += [f"per_class.{name}.f1" for name in names]
    if clustered:
        boot_names.append("accuracy")
        if has_top5:
            boot_names.append("top5_accuracy")
        for name in names:
            boot_names += [f"per_class.{name}.recall", f"per_class.{name}.precision"]
        if binary:
            boot_names += [f"binary.{k}" for k in ("sensitivity", "specificity", "ppv", "npv")]
            boot_names.append("binary.roc_auc")
    if binary:
        boot_names.append("binary.pr_auc")
    boot_names += ["calibration.ece", "calibration.brier"]
    return boot_names


def _safe_div(a: np.ndarray, b: np.ndarray, empty: float = 0.0) -> np.ndarray:
    return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, empty), where=b > 0)


def _bootstrap(
    y: np.ndarray,
    pred: np.ndarray,
    probs: np.ndarray,
    correct: np.ndarray,
    top5: np.ndarray | None,
    boot_names: list[str],
    names: list[str],
    gidx: np.ndarray,
    num_groups: int,
    n_boot: int,
    seed: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Bootstrap distribution (B, len(boot_names)), plus ROC/PR band curves for binary tasks.

    Per-class counts per resample are sparse products of the multiplicity rows with
    one-hot matrices, so one resample costs O(N) whatever the class count.
    """
    from alexkit.calibration import ECE_BINS, bin_index, brier_terms

    c = probs.shape[1]
    items = {
        "bins": _onehot(bin_index(probs), ECE_BINS),
        "conf": probs.max(axis=1),
        "top_right": probs.argmax(axis=1) == y,  # ECE scores the arg-max, whatever the threshold
        "brier": brier_terms(y, probs),
        "truth": _onehot(y, c),
        "predicted": _onehot(pred, c),
        "hits": _onehot(y, c, mask=correct),
        "correct": correct,
        "top5": top5,
    }
    ranked = _ranked_scores(y, probs) if c == 2 else None
    col = {name: j for j, name in enumerate(boot_names)}
    rows: list[np.ndarray] = []
    roc_rows: list[np.ndarray] = []
    pr_rows: list[np.ndarray] = []
    for w in resample_weights(gidx, num_groups, n_boot, seed):
        out = np.full((w.shape[0], len(boot_names)), np.nan)
        support, tp = _fill_class_metrics(out, col, names, w, items)
        if ranked is not None:
            roc, pr = _fill_binary_metrics(out, col, w, support, tp, ranked)
            roc_rows.append(roc)
            pr_rows.append(pr)
        rows.append(out)
    bands = {}
    if roc_rows:
        bands = {"roc": np.concatenate(roc_rows), "pr": np.concatenate(pr_rows)}
    return np.concatenate(rows), bands


def _ranked_scores(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(order, ends, pos_sorted)``: items by descending score, last index of each tie run."""
    scores = probs[:, 1]
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size > 1 else np.array([0])
    return order, ends, (y == 1)[order]


def _fill_class_metrics(
    out: np.ndarray,
    col: dict[str, int],
    names: list[str],
    w: Any,
    items: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Averages, per-class and calibration metrics of a chunk of resamples (rows of ``w``).

    Returns:
        ``(support, tp)`` per resample and class, which the binary metrics reuse.
    """
    support = np.asarray((items["truth"].T @ w.T).T)
    npred = np.asarray((items["predicted"].T @ w.T).T)
    tp = np.asarray((items["hits"].T @ w.T).T)
    total = w.sum(axis=1)
    precision = _safe_div(tp, npred)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    out[:, col["macro_avg.precision"]] = precision.mean(axis=1)
    out[:, col["macro_avg.recall"]] = recall.mean(axis=1)
    out[:, col["macro_avg.f1"]] = f1.mean(axis=1)
    out[:, col["weighted_avg.precision"]] = (precision * support).sum(axis=1) / total
    out[:, col["weighted_avg.recall"]] = (recall * support).sum(axis=1) / total
    out[:, col["weighted_avg.f1"]] = (f1 * support).sum(axis=1) / total
    out[:, [col[f"per_class.{name}.f1"] for name in names]] = f1
    if f"per_class.{names[0]}.recall" in col:
        out[:, [col[f"per_class.{name}.recall"] for name in names]] = _safe_div(
            tp, support, math.nan
        )
        out[:, [col[f"per_class.{name}.precision"] for name in names]] = _safe_div(
            tp, npred, math.nan
        )
    bins = items["bins"]
    conf_sum = np.asarray((bins.T @ (w * items["conf"]).T).T)
    right_sum = np.asarray((bins.T @ (w * items["top_right"]).T).T)
    out[:, col["calibration.ece"]] = np.abs(conf_sum - right_sum).sum(axis=1) / total
    out[:, col["calibration.brier"]] = (w @ items["brier"]) / total
    if "accuracy" in col:
        out[:, col["accuracy"]] = (w @ items["correct"]) / total
    if "top5_accuracy" in col and items["top5"] is not None:
        out[:, col["top5_accuracy"]] = (w @ items["top5"]) / total
    return support, tp


def _fill_binary_metrics(
    out: np.ndarray,
    col: dict[str, int],
    w: Any,
    support: np.ndarray,
    tp: np.ndarray,
    ranked: tuple[np.ndarray, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity … NPV (when bootstrapped), ROC AUC and PR AUC of a chunk of resamples.

    Returns:
        The chunk's ROC and PR band rows (:func:`_roc_band_rows`, :func:`_pr_band_rows`).
    """
    tp1, fn1 = tp[:, 1], support[:, 1] - tp[:, 1]
    tn0, fp0 = tp[:, 0], support[:, 0] - tp[:, 0]
    if "binary.sensitivity" in col:
        for key, a, b in (
            ("sensitivity", tp1, tp1 + fn1),
            ("specificity", tn0, tn0 + fp0),
            ("ppv", tp1, tp1 + fp0),
            ("npv", tn0, tn0 + fn1),
        ):
            out[:, col[f"binary.{key}"]] = _safe_div(a, b, math.nan)
    tps, fps, p_tot, n_tot = _binary_weighted_curves(*ranked, w)
    with np.errstate(all="ignore"):
        tpr = np.concatenate([np.zeros((w.shape[0], 1)), tps / p_tot], axis=1)
        fpr = np.concatenate([np.zeros((w.shape[0], 1)), fps / n_tot], axis=1)
        auc = np.trapezoid(tpr, fpr, axis=1)
        auc[(p_tot[:, 0] == 0) | (n_tot[:, 0] == 0)] = np.nan
        prec = tps / np.maximum(tps + fps, 1e-300)
        rec = tps / p_tot
        ap = np.sum(np.diff(np.concatenate([np.zeros((w.shape[0], 1)), rec], 1)) * prec, 1)
        ap[p_tot[:, 0] == 0] = np.nan
    if "binary.roc_auc" in col:
        out[:, col["binary.roc_auc"]] = auc
    out[:, col["binary.pr_auc"]] = ap
    return _roc_band_rows(fpr, tpr), _pr_band_rows(rec, prec)


def _roc_band_rows(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """TPR at each FPR of :data:`BAND_GRID` (the highest TPR reached at that FPR)."""
    out = np.full((fpr.shape[0], BAND_GRID.size), np.nan)
    for b in range(fpr.shape[0]):
        if np.isfinite(fpr[b, -1]) and np.isfinite(tpr[b, -1]):
            idx = np.searchsorted(fpr[b], BAND_GRID, side="right") - 1
            out[b] = tpr[b, idx]
    return out


def _pr_band_rows(rec: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """Precision at each recall of :data:`BAND_GRID` (at the first threshold reaching it)."""
    out = np.full((rec.shape[0], BAND_GRID.size), np.nan)
    for b in range(rec.shape[0]):
        if np.isfinite(rec[b, -1]):
            idx = np.minimum(np.searchsorted(rec[b], BAND_GRID, side="left"), rec.shape[1] - 1)
            out[b] = prec[b, idx]
    return out
