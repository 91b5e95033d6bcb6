"""Numbers read off a map: its peak, its centre share, whether it is blank, and rank
agreement of two maps."""

from __future__ import annotations

import numpy as np

# A centred box of 1/√2 of each side covers half the image: a uniform map scores 0.5.
CENTER_FRACTION = 0.5


def peak(heat: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the map's maximum (the first one on ties); None for a constant map
    (an all-zero Grad-CAM has no place that stands out: (0, 0) would be a made-up answer)."""
    heat = np.asarray(heat)
    if heat.size == 0 or np.ptp(heat) == 0:
        return None
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(r), int(c)


def is_blank(heat: np.ndarray) -> bool:
    """True when the map has no positive heat: nothing in the image raised the target.

    A Grad-CAM is blank when the layer's activations are all zero for the image (ReLU
    units dead for it) or the class logit's gradient is zero or negative everywhere
    (no evidence *for* the class, e.g. a class the model never predicts); an occlusion
    map when no patch lowered the target's score.
    """
    heat = np.asarray(heat, np.float64)
    return not bool((heat > 0).any())


def center_share(heat: np.ndarray, fraction: float = CENTER_FRACTION) -> float | None:
    """Share of the (non-negative) heat inside the centred box covering ``fraction`` of
    the image's area (each side × √fraction). A uniform map gives ≈ ``fraction``; much less
    means the model looks at borders and corners — a cheap shortcut-learning signal.

    None for a blank map (:func:`is_blank`): with no heat there is no share to take.
    Neither 0 (it would flag the image as a border shortcut) nor ``fraction`` (it would
    pass it as centred) is true of it, and NaN is not valid JSON; ``explain.csv`` leaves
    the cell empty (read as missing by csv readers and pandas) and the summary counts
    the blank maps (``ExplainResult.blank_maps``).
    """
    if is_blank(heat):
        return None
    heat = np.clip(np.asarray(heat, np.float64), 0, None)
    total = heat.sum()
    h, w = heat.shape
    side = np.sqrt(fraction)
    bh, bw = round(h * side), round(w * side)
    r0, c0 = (h - bh) // 2, (w - bw) // 2
    return float(heat[r0 : r0 + bh, c0 : c0 + bw].sum() / total)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (NaN when either is constant)."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
