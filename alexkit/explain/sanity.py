"""Adebayo et al.'s sanity checks (NeurIPS 2018): head randomisation and class contrast."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from alexkit.errors import UsageError
from alexkit.explain.cam import Explainer, _softmax
from alexkit.explain.stats import rank_correlation


@dataclasses.dataclass
class SanityReport:
    """The two checks of Adebayo et al. (2018), as Spearman correlations per image.

    Attributes:
        method, layer: what was checked.
        head_randomisation: (repeats, N) correlations between each image's map and its
            map after the classifier head is re-initialised (same target class), one row
            per random draw. NaN where the new map is all zero (it changed completely).
        class_contrast: correlation between the maps for the two most probable classes.
        classes: (first, second) class per image for ``class_contrast``.
        margins: probability of the first class minus that of the second.
        max_correlation: the pass mark: a faithful method stays below it.
    """

    method: str
    layer: str
    head_randomisation: np.ndarray
    class_contrast: np.ndarray
    classes: np.ndarray
    margins: np.ndarray
    max_correlation: float = 0.5

    @staticmethod
    def _mean(values: np.ndarray) -> float:
        # Adebayo et al. report the mean over images; over random draws too, since one
        # head can by chance weigh the object's channels like the trained one does.
        v = np.asarray(values, np.float64)
        v = np.where(np.isnan(v), 0.0, v)  # a vanished map shares no ranking
        return float(np.mean(v)) if v.size else float("nan")

    @property
    def head_passed(self) -> bool:
        return self._mean(self.head_randomisation) < self.max_correlation

    @property
    def class_passed(self) -> bool:
        return self._mean(self.class_contrast) < self.max_correlation

    @property
    def passed(self) -> bool:
        return self.head_passed and self.class_passed

    def to_dict(self) -> dict[str, Any]:
        def listed(v: np.ndarray) -> list[float | None]:
            return [None if np.isnan(x) else round(float(x), 4) for x in np.ravel(v)]

        return {
            "method": self.method,
            "layer": self.layer,
            "max_correlation": self.max_correlation,
            "head_randomisation": {
                "mean_rank_correlation": self._mean(self.head_randomisation),
                "per_image": listed(self.head_randomisation),
                "passed": self.head_passed,
            },
            "class_contrast": {
                "mean_rank_correlation": self._mean(self.class_contrast),
                "per_image": listed(self.class_contrast),
                "classes": np.asarray(self.classes).tolist(),
                "margins": listed(self.margins),
                "passed": self.class_passed,
            },
            "passed": self.passed,
        }


def _head_layers(model: Any) -> list[Any]:
    from alexkit.model import HEAD_PREFIX

    return [
        lyr
        for lyr in model.layers
        if (lyr.name == "predictions" or lyr.name.startswith(HEAD_PREFIX)) and lyr.weights
    ] or [next(lyr for lyr in reversed(model.layers) if lyr.weights)]


def sanity_checks(
    model: Any,
    images: Any,
    *,
    layer: str = "conv5",
    method: str = "gradcam",
    seed: int = 0,
    repeats: int = 5,
    max_correlation: float = 0.5,
) -> SanityReport:
    """Adebayo et al.'s model-randomisation and class-contrast checks on ``images``.

    1. The classifier head (``predictions`` and any ``head_*`` layers) is re-initialised
       — kernels drawn from N(0, σ²) with σ the trained kernel's own std, zero biases —
       and the maps for the same target classes are recomputed, ``repeats`` times with
       fresh draws; the trained weights are restored afterwards (also on error). A method
       that explains the model, not the image, must change. One draw is not enough: on a
       net whose conv features all fire on the object, a random head that happens to
       weigh them positively draws the same blob (measured on the tests' toy net: 0.92
       for one seed, −0.74, −0.32 and −0.07 for the next three).
    2. Maps for the two most probable classes of each image are compared; on images the
       model separates (large ``margins``) they must differ.

    Correlations are Spearman's, on the maps at the layer's own resolution (upsampling
    would add shared smoothness). The checks pass when the mean (over images and draws;
    a vanished map counts 0) is below ``max_correlation``.

    Args:
        model: a Keras classifier (its weights are changed and restored).
        images: (B, H, W, 3) raw [0, 255] pixels at the model's input size.
        layer: the convolutional layer.
        method: ``"gradcam"`` or ``"gradcam++"``.
        seed: the re-initialisation seed.
        repeats: how many random heads to draw.
        max_correlation: the pass mark.

    Returns:
        A :class:`SanityReport`.
    """
    if repeats < 1:
        raise UsageError(f"repeats must be >= 1; received {repeats}.")
    explainer = Explainer(model, layer)
    x = np.asarray(images, np.float32)
    cam, logits, chosen = explainer.gradients(x, None, method=method)
    order = np.argsort(-logits, axis=1, kind="stable")
    probs = _softmax(logits)
    second = order[:, 1] if logits.shape[1] > 1 else order[:, 0]
    cam2, _, _ = explainer.gradients(x, second, method=method)
    contrast = np.array([rank_correlation(a, b) for a, b in zip(cam, cam2, strict=True)])
    margins = probs[np.arange(len(x)), chosen] - probs[np.arange(len(x)), second]

    rng = np.random.default_rng(seed)
    saved = [(lyr, [np.asarray(w) for w in lyr.get_weights()]) for lyr in _head_layers(model)]
    randomised = np.zeros((repeats, len(x)))
    try:
        for draw in range(repeats):
            for lyr, weights in saved:
                fresh = []
                for w in weights:
                    if w.ndim >= 2:
                        std = float(w.std()) or float(np.sqrt(2.0 / sum(w.shape[-2:])))
                        fresh.append(rng.normal(0.0, std, w.shape).astype(w.dtype))
                    else:
                        fresh.append(np.zeros_like(w))
                lyr.set_weights(fresh)
            cam_random, _, _ = explainer.gradients(x, chosen, method=method)
            randomised[draw] = [
                rank_correlation(a, b) for a, b in zip(cam, cam_random, strict=True)
            ]
    finally:
        for lyr, weights in saved:
            lyr.set_weights(weights)
    return SanityReport(
        method=method,
        layer=layer,
        head_randomisation=randomised,
        class_contrast=contrast,
        classes=np.stack([chosen, second], axis=1),
        margins=margins,
        max_correlation=max_correlation,
    )
