"""Occlusion sensitivity (Zeiler & Fergus, ECCV 2014): one forward pass per patch position."""

from __future__ import annotations

from typing import Any

import numpy as np

from alexkit.errors import UsageError
from alexkit.explain.cam import Explainer, _softmax


def occlusion_positions(size: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets along one axis: every ``stride``, plus the last fitting one."""
    if patch >= size:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)  # cover the far border too
    return starts


def baseline_colour(model: Any, baseline: str | float) -> np.ndarray:
    """The occluding patch's RGB value in raw [0, 255] pixels.

    ``"mean"``: the mean colour the model's ``Preprocess`` layer subtracts (zero after
    normalisation; mid-gray 127.5 when the model has none), ``"black"``: 0, a number:
    that value in every channel.
    """
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
        return np.full(3, float(baseline), np.float32)
    if baseline == "black":
        return np.zeros(3, np.float32)
    if baseline == "mean":
        from alexkit.layers import Preprocess

        for lyr in model.layers:
            if isinstance(lyr, Preprocess):
                return np.asarray(lyr.mean, np.float32)
        return np.full(3, 127.5, np.float32)
    try:
        return np.full(3, float(baseline), np.float32)
    except (TypeError, ValueError):
        raise UsageError(
            f"--baseline must be 'mean', 'black' or a pixel value; received {baseline!r}."
        ) from None


def occlusion(
    model: Any,
    images: Any,
    targets: Any = None,
    *,
    patch: int = 32,
    stride: int = 16,
    baseline: str | float = "mean",
    score: str = "probability",
    batch_size: int = 64,
    explainer: Explainer | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occlusion sensitivity: the target's score drop when a patch hides each region.

    Every pixel gets the mean of ``score(image) − score(image with the patch)`` over the
    patch positions that cover it (positions every ``stride`` pixels, plus the last one
    that fits, so the borders are covered). Occluded copies run ``batch_size`` at a time.

    Args:
        model: a Keras classifier (ignored when ``explainer`` is given).
        images: (B, H, W, 3) raw [0, 255] pixels.
        targets: class per image (-1 or None: the predicted class).
        patch: side of the square patch, in input pixels.
        stride: step between patch positions.
        baseline: the patch colour (see :func:`baseline_colour`).
        score: ``"probability"`` (softmax of the target) or ``"logit"``.
        batch_size: occluded images per forward pass.
        explainer: a reusable :class:`Explainer`.

    Returns:
        ``(maps (B, H, W) float32, signed, probabilities (B, C), targets (B,))``.
    """
    if patch < 1 or stride < 1 or batch_size < 1:
        raise UsageError(
            f"--patch, --stride and batch size must be >= 1; received {patch}, {stride}, "
            f"{batch_size}."
        )
    if score not in ("probability", "logit"):
        raise UsageError(f"score must be 'probability' or 'logit'; received {score!r}.")
    explainer = explainer or Explainer(model)
    x = np.asarray(images, np.float32)
    n, h, w = x.shape[:3]
    colour = baseline_colour(explainer.model, baseline)
    logits = explainer.logits(x)
    probs = _softmax(logits)
    t = np.full(n, -1) if targets is None else np.asarray(targets).astype(np.int64)
    chosen = np.where(t < 0, probs.argmax(axis=1), t)

    def value(lg: np.ndarray, cls: np.ndarray) -> np.ndarray:
        picked = _softmax(lg) if score == "probability" else np.asarray(lg, np.float64)
        return picked[np.arange(len(cls)), cls]

    base = value(logits, chosen)
    windows = [
        (r, c)
        for r in occlusion_positions(h, patch, stride)
        for c in occlusion_positions(w, patch, stride)
    ]
    jobs = [(i, r, c) for i in range(n) for r, c in windows]
    total = np.zeros((n, h, w), np.float64)
    count = np.zeros((h, w), np.float64)
    for r, c in windows:
        count[r : r + patch, c : c + patch] += 1
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        batch = x[[i for i, _, _ in chunk]].copy()
        for k, (_, r, c) in enumerate(chunk):
            batch[k, r : r + patch, c : c + patch] = colour
        idx = np.array([i for i, _, _ in chunk])
        drop = base[idx] - value(explainer.logits(batch), chosen[idx])
        for k, (i, r, c) in enumerate(chunk):
            total[i, r : r + patch, c : c + patch] += drop[k]
    return (total / count).astype(np.float32), probs, chosen
