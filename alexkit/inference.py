"""One inference loop: a model over batches of images, centre crop or ten-crop averaged.

Validation during training, ``alexkit evaluate``, ``predict`` and ``explain`` all run a
trained classifier over a ``make_dataset(training=False)`` stream; this module is the
only place that does it, so ten-crop averaging and item bookkeeping are said once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

Forward = Callable[[Any], np.ndarray]


def batch_predictor(model: Any) -> Forward:
    """A fast ``batch -> numpy`` call of ``model`` in inference mode.

    ``model.predict`` builds a dataset, callbacks and a progress bar on every call
    (~0.1 s); ``predict_on_batch`` reuses one compiled (``tf.function``) step. Measured
    on 2 busy CPU cores it matched or beat a hand-written ``tf.function`` and beat XLA
    (``jit_compile=True``) by ~30 %, so it is used on every backend.
    """

    def run(x: Any) -> np.ndarray:
        return np.asarray(model.predict_on_batch(x))

    return run


def as_text(value: Any) -> str:
    """An item string from a dataset batch (bytes from TensorFlow) as ``str``."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def predict_crops(forward: Forward, images: Any) -> np.ndarray:
    """Probabilities of one batch; a ten-crop batch (B, K, H, W, C) averages the K softmaxes."""
    x = np.asarray(images)
    if x.ndim == 5:
        b, k = x.shape[:2]
        p = np.asarray(forward(x.reshape((b * k, *x.shape[2:]))))
        return p.reshape((b, k, -1)).mean(axis=1)
    return np.asarray(forward(x))


def predict_batches(
    dataset: Iterable[Any],
    forward: Forward,
    *,
    items: list[str] | None = None,
    num_classes: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Run ``forward`` over ``(images, labels[, items])`` batches.

    Args:
        dataset: batches from ``make_dataset(training=False, ...)``.
        forward: ``batch -> probabilities`` (e.g. :func:`batch_predictor`).
        items: when a list and the batches carry item strings, they are appended to it.
        num_classes: columns of the empty result when no batch arrives.
        progress: called with the number of images done after each batch.

    Returns:
        ``(labels (N,), probabilities (N, C) float64, N)``.
    """
    labels, probs = [], []
    done = 0
    for batch in dataset:
        if items is not None and len(batch) > 2:
            items.extend(as_text(s) for s in np.asarray(batch[2]).tolist())
        p = predict_crops(forward, batch[0]).astype(np.float64)
        probs.append(p)
        labels.append(np.asarray(batch[1]))
        done += len(p)
        if progress is not None:
            progress(done)
    if not probs:
        return np.zeros((0,), np.int64), np.zeros((0, num_classes)), 0
    return np.concatenate(labels), np.concatenate(probs), done
