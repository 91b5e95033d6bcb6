"""Numbers read off a map: its peak, its centre share, and rank agreement of two maps."""

from __future__ import annotations

import numpy as np

# A centred box of 1/√2 of each side covers half the image: a uniform map scores 0.5.
CENTER_FRACTION = 0.5


def peak(heat: np.ndarray) -> tuple[int, int]:
    """(row, col) of the map's maximum (the first one on ties)."""
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(r), int(c)


def center_share(heat: np.ndarray, fraction: float = CENTER_FRACTION) -> float:
    """Share of the (non-negative) heat inside the centred box covering ``fraction`` of
    the image's area (each side × √fraction). A uniform map gives ≈ ``fraction``; much less
    means the model looks at borders and corners — a cheap shortcut-learning signal.
    NaN for an all-zero map.
    """
    heat = np.clip(np.asarray(heat, np.float64), 0, None)
    h, w = heat.shape
    side = np.sqrt(fraction)
    bh, bw = round(h * side), round(w * side)
    r0, c0 = (h - bh) // 2, (w - bw) // 2
    total = heat.sum()
    if total <= 0:
        return float("nan")
    return float(heat[r0 : r0 + bh, c0 : c0 + bw].sum() / total)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (NaN when either is constant)."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
