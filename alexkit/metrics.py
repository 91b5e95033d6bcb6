"""Every classification metric once: the trainer's validation and ``alexkit evaluate``.

Pure numpy (scikit-learn where it is the definition), no TensorFlow, so the numbers can
be checked against scikit-learn and reused by any caller: :func:`compute_val_metrics`
gives the scalar metrics a recipe can monitor, :func:`roc_curve`, :func:`roc_auc` and
:func:`average_precision` the binary curves ``evaluate`` draws and reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alexkit.recipes import METRICS as _RECIPE_METRICS

#: Metrics a recipe may ask for (validation; ``val_`` prefix in history.csv): the
#: recipe format's own list, so the two can never disagree, plus the loss.
KNOWN_METRICS = ("loss", *_RECIPE_METRICS)


def compute_val_metrics(
    y_true: np.ndarray, probs: np.ndarray, wanted: Sequence[str] = ("loss", "accuracy")
) -> dict[str, float | None]:
    """Validation metrics from labels and class probabilities (numpy + scikit-learn).

    Binary tasks compute AUC/precision/recall/sensitivity/specificity for class 1
    (``P(class 1)`` for AUC, argmax for the others); multi-class tasks use macro averages
    and one-vs-rest AUC.

    Args:
        y_true: labels (N,).
        probs: probabilities (N, C).
        wanted: metric names from :data:`KNOWN_METRICS` (loss and accuracy are always in).

    Returns:
        ``{name: value}``; None where a metric is undefined (e.g. AUC with one class).
    """
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    n, c = p.shape
    out: dict[str, float | None] = {}
    picked = np.clip(p[np.arange(n), y], 1e-12, 1.0)
    out["loss"] = float(-np.mean(np.log(picked))) if n else None
    pred = p.argmax(axis=1)
    out["accuracy"] = float(np.mean(pred == y)) if n else None
    wanted = set(wanted)
    if "top5" in wanted or c >= 5:
        if c >= 5 and n:
            top5 = np.argsort(-p, axis=1)[:, :5]
            out["top5"] = float(np.mean(np.any(top5 == y[:, None], axis=1)))
        else:
            out["top5"] = None
    extra = wanted & {"auc", "pr_auc", "precision", "recall", "sensitivity", "specificity", "f1"}
    if not extra or not n:
        return out
    from sklearn import metrics as skm

    present = np.unique(y)
    if c == 2:
        tp = int(np.sum((pred == 1) & (y == 1)))
        tn = int(np.sum((pred == 0) & (y == 0)))
        fp = int(np.sum((pred == 1) & (y == 0)))
        fn = int(np.sum((pred == 0) & (y == 1)))
        both = present.size == 2
        out["auc"] = float(skm.roc_auc_score(y, p[:, 1])) if both else None
        out["pr_auc"] = float(skm.average_precision_score(y, p[:, 1])) if both else None
        out["precision"] = tp / (tp + fp) if tp + fp else 0.0
        out["recall"] = out["sensitivity"] = tp / (tp + fn) if tp + fn else None
        out["specificity"] = tn / (tn + fp) if tn + fp else None
        out["f1"] = float(skm.f1_score(y, pred, zero_division=0))
    else:
        labels = list(range(c))
        out["precision"] = float(
            skm.precision_score(y, pred, labels=labels, average="macro", zero_division=0)
        )
        out["recall"] = out["sensitivity"] = float(
            skm.recall_score(y, pred, labels=labels, average="macro", zero_division=0)
        )
        out["f1"] = float(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0))
        specs = []
        for k in range(c):
            neg = y != k
            if neg.any():
                specs.append(float(np.mean(pred[neg] != k)))
        out["specificity"] = float(np.mean(specs)) if specs else None
        if present.size == c:
            out["auc"] = float(
                skm.roc_auc_score(y, p / p.sum(axis=1, keepdims=True), multi_class="ovr")
            )
        else:
            out["auc"] = None
        pr = []
        for k in range(c):
            if (y == k).any():
                pr.append(float(skm.average_precision_score(y == k, p[:, k])))
        out["pr_auc"] = float(np.mean(pr)) if pr else None
    return {k: v for k, v in out.items() if k in wanted or k in ("loss", "accuracy", "top5")}


def _binary_counts(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cumulative TP/FP counts at each distinct score, from the highest score down."""
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    y = positive[order].astype(np.float64)
    # The last index of every run of equal scores: one curve point per distinct threshold.
    distinct = np.flatnonzero(np.diff(s)) if s.size > 1 else np.array([], dtype=int)
    ends = np.r_[distinct, s.size - 1]
    tps = np.cumsum(y)[ends]
    fps = (ends + 1) - tps
    return tps, fps, s[ends]


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """ROC curve points (fpr, tpr, thresholds), starting at (0, 0) with threshold +inf.

    Keeps every distinct threshold (scikit-learn's ``drop_intermediate=False``).
    """
    positive = np.asarray(positive, dtype=bool)
    tps, fps, thr = _binary_counts(positive, np.asarray(scores, dtype=np.float64))
    n_pos, n_neg = positive.sum(), (~positive).sum()
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.r_[0.0, np.full(tps.shape, np.nan)]
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.r_[0.0, np.full(fps.shape, np.nan)]
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; ties count half, as in scikit-learn)."""
    fpr, tpr, _ = roc_curve(positive, scores)
    return float(np.trapezoid(tpr, fpr))


def average_precision(positive: np.ndarray, scores: np.ndarray) -> float:
    """PR AUC as average precision: sum over thresholds of (ΔR · P), scikit-learn's definition."""
    positive = np.asarray(positive, dtype=bool)
    tps, fps, _ = _binary_counts(positive, np.asarray(scores, dtype=np.float64))
    precision = tps / (tps + fps)
    recall = tps / positive.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
