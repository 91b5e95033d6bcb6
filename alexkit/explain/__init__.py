"""Where the network looked: Grad-CAM, Grad-CAM++ and occlusion maps (``alexkit explain``).

* **Grad-CAM** (Selvaraju et al., ICCV 2017): the activations ``A_k`` of a convolutional
  layer weighted by the spatial mean of the gradient of the class *logit* ``y_c`` (not the
  softmax, whose gradient mixes in every other class): ``ReLU(Σ_k mean_ij(∂y_c/∂A_kij) A_k)``.
* **Grad-CAM++** (Chattopadhay et al., WACV 2018): per-position weights
  ``α = g² / (2g² + Σ_ij A · g³)`` (g = ∂y_c/∂A) on the positive gradients, which spreads
  the map over several instances of a class instead of the strongest one. It keeps only
  positive gradients, so its weights are never negative and its maps lean towards where
  the layer fires at all: on a (briefly) trained AlexNet it failed both sanity checks
  below (rank correlation 0.99) where Grad-CAM passed (−0.09, −0.19). Run them on yours.
* **Occlusion** (Zeiler & Fergus, ECCV 2014): slide a patch of a baseline colour over the
  image; a pixel's value is the mean drop of the target's probability (or logit) over the
  patches that cover it. Model-agnostic and slow (one forward pass per patch position).

Both gradient methods cost one forward and one backward pass per batch. The maps are
as coarse as the layer (13×13 at ``conv5``) and are bilinearly upsampled to the model's
input (the centre crop the model saw): a pointer to what drove the decision, useful to
catch shortcuts (text markers, borders, backgrounds), not a segmentation.

:func:`sanity_checks` runs the two checks of Adebayo et al., "Sanity Checks for Saliency
Maps" (NeurIPS 2018), that a faithful method passes: maps change when the classifier head
is re-initialised, and differ between two classes the model separates. Guided
backpropagation fails them and is not offered.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import CheckpointError, DataError, UsageError

log = logging.getLogger(__name__)

METHODS = ("gradcam", "gradcam++", "occlusion")
METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "occlusion": "occlusion"}
# A centred box of 1/√2 of each side covers half the image: a uniform map scores 0.5.
CENTER_FRACTION = 0.5
CSV_COLUMNS = (
    "path",
    "true",
    "predicted",
    "probability",
    "target",
    "target_probability",
    "peak_row",
    "peak_col",
    "center_share",
    "overlay",
)


# --------------------------------------------------------------------------- the model split


class Explainer:
    """A classifier split for explanation: image → (activations at ``layer``, logits).

    The class logit is what Grad-CAM differentiates. alexkit models end in a softmax
    ``predictions`` Dense layer; its logits are its kernel and bias applied to its input
    (read from the live variables, so a changed head is seen at once). A model whose
    last layer is a linear Dense, or a ``Softmax``/``Activation("softmax")`` layer after
    the logits, works too.

    Args:
        model: a Keras classifier taking raw [0, 255] RGB (an alexkit model, any variant
            or head from ``replace_head``).
        layer: a layer with a 4-D (B, H, W, C) output, e.g. ``conv5`` (default) … ``conv1``.

    Raises:
        UsageError: the layer is missing or not spatial, or the head is not a
            softmax/linear classifier.
    """

    def __init__(self, model: Any, layer: str = "conv5"):
        import keras

        self.model = model
        self.layer = layer
        spatial = [
            lyr.name
            for lyr in model.layers
            if not isinstance(lyr, keras.layers.InputLayer) and len(lyr.output.shape) == 4
        ]
        try:
            target = model.get_layer(layer)
        except ValueError:
            raise UsageError(
                f"--layer {layer!r} is not a layer of the model; spatial layers: "
                f"{', '.join(spatial)}."
            ) from None
        if len(target.output.shape) != 4:
            raise UsageError(
                f"--layer {layer!r} has output shape {tuple(target.output.shape)}, not a "
                f"(H, W, C) map; choose one of {', '.join(spatial)}."
            )
        last = model.layers[-1]
        activation = getattr(getattr(last, "activation", None), "__name__", None)
        self.head = None  # a Dense whose softmax is skipped to get logits
        if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and activation == "softmax"
        ):
            logits = last.input
        elif isinstance(last, keras.layers.Dense) and activation == "softmax":
            logits, self.head = last.input, last
        elif isinstance(last, keras.layers.Dense) and activation == "linear":
            logits = last.output
        else:
            raise UsageError(
                f"cannot find the class logits: the model ends in {type(last).__name__} "
                f"(activation {activation!r}); expected a softmax or linear Dense classifier."
            )
        self.split = keras.Model(model.inputs, [target.output, logits], name=f"{model.name}_cam")
        self.logit_model = keras.Model(model.inputs, logits, name=f"{model.name}_logits")
        self.input_size = tuple(int(v) for v in model.input_shape[1:3])
        self.num_classes = int(model.output_shape[-1])
        self._cam = None
        self._logits = None

    def _head_logits(self, h: Any) -> Any:
        import tensorflow as tf

        if self.head is None:
            return tf.cast(h, tf.float32)
        kernel = tf.cast(self.head.kernel, tf.float32)
        out = tf.matmul(tf.cast(h, tf.float32), kernel)
        if self.head.use_bias:
            out = out + tf.cast(self.head.bias, tf.float32)
        return out

    def logits(self, images: Any) -> np.ndarray:
        """Class logits (B, C) for a batch of raw [0, 255] images."""
        import tensorflow as tf

        if self._logits is None:

            @tf.function(reduce_retracing=True)
            def run(x):
                return self._head_logits(self.logit_model(x, training=False))

            self._logits = run
        return self._logits(tf.convert_to_tensor(np.asarray(images, np.float32))).numpy()

    def gradients(
        self, images: Any, targets: Any = None, *, method: str = "gradcam"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coarse class-activation maps of one batch: one forward and one backward pass.

        Args:
            images: (B, H, W, 3) raw [0, 255] pixels at the model's input size.
            targets: class index per image; -1 (or None for all) means the predicted one.
            method: ``"gradcam"`` or ``"gradcam++"``.

        Returns:
            ``(maps (B, h, w) at the layer's resolution, logits (B, C), targets (B,))``.
        """
        import tensorflow as tf

        if method not in ("gradcam", "gradcam++"):
            raise UsageError(f"method must be 'gradcam' or 'gradcam++'; received {method!r}.")
        x = np.asarray(images, np.float32)
        t = np.full(len(x), -1, np.int32) if targets is None else np.asarray(targets, np.int32)
        if self._cam is None:

            @tf.function(reduce_retracing=True)
            def run(x, t, plus):
                with tf.GradientTape() as tape:
                    acts, h = self.split(x, training=False)
                    logits = self._head_logits(h)
                    # -1: the predicted class, chosen from this same forward pass.
                    chosen = tf.where(t < 0, tf.argmax(logits, axis=-1, output_type=tf.int32), t)
                    # Samples are independent in inference mode: the gradient of the sum
                    # is each image's own gradient (one backward pass for the batch).
                    score = tf.reduce_sum(
                        logits * tf.one_hot(chosen, tf.shape(logits)[-1], dtype=logits.dtype)
                    )
                grads = tf.cast(tape.gradient(score, acts), tf.float32)
                acts = tf.cast(acts, tf.float32)
                if plus:
                    g2 = tf.square(grads)
                    denom = 2.0 * g2 + tf.reduce_sum(acts, axis=(1, 2), keepdims=True) * g2 * grads
                    alpha = tf.math.divide_no_nan(g2, denom)
                    weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
                else:
                    weights = tf.reduce_mean(grads, axis=(1, 2))
                cam = tf.nn.relu(tf.einsum("bhwk,bk->bhw", acts, weights))
                return cam, logits, chosen

            self._cam = run
        cam, logits, chosen = self._cam(
            tf.convert_to_tensor(x), tf.convert_to_tensor(t), tf.constant(method == "gradcam++")
        )
        return cam.numpy(), logits.numpy(), chosen.numpy()


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (B, h, w) maps to (B, H, W) (half-pixel centres, as TF/OpenCV)."""
    import tensorflow as tf

    maps = np.asarray(maps, np.float32)
    if maps.shape[1:3] == tuple(size):
        return maps
    out = tf.image.resize(maps[..., None], size, method="bilinear", antialias=False)
    return out.numpy()[..., 0]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- maps


def gradcam(
    model: Any,
    images: Any,
    targets: Any = None,
    *,
    layer: str = "conv5",
    method: str = "gradcam",
    explainer: Explainer | None = None,
    resize: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM (or Grad-CAM++) maps for one batch.

    Args:
        model: a Keras classifier (ignored when ``explainer`` is given).
        images: (B, H, W, 3) raw [0, 255] pixels at the model's input size.
        targets: class per image (-1 or None: the predicted class).
        layer: the convolutional layer (``conv5``: 13×13 for AlexNet).
        method: ``"gradcam"`` or ``"gradcam++"``.
        explainer: a reusable :class:`Explainer` (saves re-tracing across batches).
        resize: upsample to the input size (else the layer's resolution).

    Returns:
        ``(maps (B, H, W) float32 ≥ 0 in logit units, probabilities (B, C), targets (B,))``.
    """
    explainer = explainer or Explainer(model, layer)
    cam, logits, chosen = explainer.gradients(images, targets, method=method)
    if resize:
        cam = upsample(cam, explainer.input_size)
    return cam, _softmax(logits), chosen


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


def explain_batch(
    explainer: Explainer,
    images: Any,
    targets: Any = None,
    *,
    method: str = "gradcam",
    occlusion_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps at input resolution, probabilities and targets of one batch, by ``method``."""
    if method == "occlusion":
        return occlusion(
            explainer.model, images, targets, explainer=explainer, **(occlusion_options or {})
        )
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}; received {method!r}.")
    return gradcam(explainer.model, images, targets, method=method, explainer=explainer)


# --------------------------------------------------------------------------- statistics


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


# --------------------------------------------------------------------------- sanity checks


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


# --------------------------------------------------------------------------- overlays


def check_colormap(name: str) -> None:
    """Raise UsageError unless ``name`` is a matplotlib colormap."""
    import matplotlib

    if name not in matplotlib.colormaps:
        some = ", ".join(["jet", "turbo", "inferno", "viridis", "magma", "hot"])
        raise UsageError(f"--colormap {name!r} is not a matplotlib colormap (e.g. {some}).")


def render_overlay(
    image: np.ndarray,
    heat: np.ndarray,
    title: str = "",
    *,
    alpha: float = 0.4,
    colormap: str = "jet",
    gray: bool | None = None,
    label: str = "relative importance",
    signed: bool = False,
    dpi: int = 100,
) -> bytes:
    """One overlay PNG: the image, the heat map over it, a colour bar and a title.

    Args:
        image: (H, W, 3) pixels in [0, 255] (what the model saw).
        heat: (H, W) map at the same size.
        title: text above the picture (class names, probability).
        alpha: opacity of the heat map (0: image only, 1: map only).
        colormap: a matplotlib colormap name.
        gray: draw the image in gray (default: when its three channels are equal).
        label: the colour bar's label.
        signed: keep negative values (occlusion) instead of scaling to [0, 1].
        dpi: resolution of the PNG (4.3 × 4.1 inches: 430 × 410 pixels at 100 dpi).

    Returns:
        The PNG file's bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1]; received {alpha}.")
    img = np.clip(np.asarray(image, np.float32), 0, 255).astype(np.uint8)
    heat = np.asarray(heat, np.float32)
    if gray is None:
        gray = bool(np.all(img[..., 0] == img[..., 1]) and np.all(img[..., 1] == img[..., 2]))
    if signed:
        top = float(np.abs(heat).max()) or 1.0
        shown, vmin, vmax = heat, -top, top
    else:
        top = float(heat.max())
        shown, vmin, vmax = (heat / top if top > 0 else heat), 0.0, 1.0
    import matplotlib

    if gray:  # gray under the map: a grayscale input is not tinted by the colour channels
        img = np.repeat(img.mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)
    # Blend once in numpy and draw one picture: two alpha-composited layers cost ~3×.
    norm = matplotlib.colors.Normalize(vmin=vmin, vmax=vmax)
    cmap = matplotlib.colormaps[colormap]
    colours = cmap(norm(shown))[..., :3]
    blended = (1.0 - alpha) * (img / 255.0) + alpha * colours
    fig = Figure(figsize=(4.3, 4.1), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, 0.76, 0.8))
    ax.imshow(np.clip(blended, 0.0, 1.0), interpolation="nearest")
    ax.set_axis_off()
    cax = fig.add_axes((0.8, 0.07, 0.035, 0.7))
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.text(0.4, 0.985, title, ha="center", va="top", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _title(
    key: str,
    true: str | None,
    predicted: str,
    probability: float,
    target: str,
    method: str,
    layer: str,
) -> str:
    name = key if len(key) <= 60 else "…" + key[-59:]
    where = "" if method == "occlusion" else f" @ {layer}"
    truth = f"true: {true} · " if true is not None else ""
    return (
        f"{name}\n{truth}predicted: {predicted} ({probability:.1%})\n"
        f"{METHOD_TITLES[method]} for {target}{where}"
    )


def gradcam_overlays(
    model: Any,
    images: Any,
    targets: Any = None,
    *,
    class_names: Sequence[str] | None = None,
    true_labels: Sequence[int] | None = None,
    titles: Sequence[str] | None = None,
    layer: str = "conv5",
    method: str = "gradcam",
    alpha: float = 0.4,
    colormap: str = "jet",
    batch_size: int = 32,
    gray: bool | None = None,
    dpi: int = 100,
) -> list[bytes]:
    """Grad-CAM overlay PNGs for images already at the model's input size.

    Meant for reports (``evaluate --explain``): pass the evaluation crops of the images
    to show, get one PNG (bytes) each.

    Args:
        model: a Keras classifier taking raw [0, 255] RGB.
        images: (N, H, W, 3) pixels, e.g. batches of ``make_dataset(training=False)``.
        targets: class per image (-1 or None: the predicted class).
        class_names: names for the titles (default ``"0".."C-1"``).
        true_labels: true class per image for the titles (-1: unknown).
        titles: a first title line per image (e.g. its path).
        layer, method, alpha, colormap: as for ``alexkit explain``.
        batch_size: images per forward/backward pass.
        gray: draw images in gray (default: when their channels are equal).
        dpi: resolution of the PNGs.

    Returns:
        One PNG (bytes) per image, in order.
    """
    check_colormap(colormap)
    explainer = Explainer(model, layer)
    x = np.asarray(images, np.float32)
    names = list(class_names) if class_names is not None else None
    names = names or [str(i) for i in range(explainer.num_classes)]
    t_all = None if targets is None else np.asarray(targets)
    pngs: list[bytes] = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        t = None if t_all is None else t_all[start : start + batch_size]
        maps, probs, chosen = gradcam(model, batch, t, method=method, explainer=explainer)
        for k in range(len(batch)):
            i = start + k
            pred = int(probs[k].argmax())
            true = None
            if true_labels is not None and int(true_labels[i]) >= 0:
                true = names[int(true_labels[i])]
            title = _title(
                titles[i] if titles is not None else "",
                true,
                names[pred],
                float(probs[k, pred]),
                names[int(chosen[k])],
                method,
                layer,
            ).lstrip("\n")
            pngs.append(
                render_overlay(
                    batch[k], maps[k], title, alpha=alpha, colormap=colormap, gray=gray, dpi=dpi
                )
            )
    return pngs


# --------------------------------------------------------------------------- whole datasets


@dataclasses.dataclass
class ExplainResult:
    """What :func:`explain_data` wrote.

    Attributes:
        out: the output folder.
        rows: one dict per explained item (the rows of ``explain.csv``).
        method, layer: what was computed.
        images: items explained.
        seconds: wall time of the loop (data, maps, overlays).
        map_seconds: time spent computing maps only.
        skipped: (path, reason) for unreadable inputs.
        files: name → path of what was written.
        sanity: :meth:`SanityReport.to_dict` when asked for, else None.
    """

    out: Path
    rows: list[dict[str, Any]]
    method: str
    layer: str
    images: int
    seconds: float
    map_seconds: float
    skipped: list[tuple[str, str]]
    files: dict[str, Path]
    sanity: dict[str, Any] | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def maps_per_second(self) -> float:
        return self.images / self.map_seconds if self.map_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "method": self.method,
            "layer": self.layer,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "maps_per_second": round(self.maps_per_second, 2),
            "files": {k: str(v) for k, v in self.files.items()},
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "sanity": self.sanity,
            "rows": self.rows,
        }


def prepare_out(out: str | os.PathLike, force: bool) -> Path:
    """Create ``out``; refuse one that holds files unless ``force`` (then clear our files).

    Raises:
        CheckpointError: ``out`` is a file, or a non-empty folder without ``force``.
    """
    import shutil

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} is a file: --out must be a folder.")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise CheckpointError(
                f"{out} already holds files: choose another --out or add --force to replace it."
            )
        for name in ("overlays",):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("explain.csv", "maps.npz", "sanity.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def relative_key(item: str, root: str | os.PathLike | None) -> str:
    """The item's path relative to ``root`` (``/``-separated), its media member kept."""
    from alexkit.media import parse_item

    path, fields = parse_item(item)
    member = item[len(path) + 1 :] if fields else ""
    rel = path
    if root:
        try:
            rel = os.path.relpath(path, root)
        except ValueError:  # another drive (Windows)
            rel = path
        if rel.startswith(".."):
            rel = path
    rel = rel.replace(os.sep, "/").lstrip("/")
    return f"{rel}#{member}" if member else rel


def overlay_name(key: str, used: set[str]) -> str:
    """``overlays/`` relative PNG name for an item key; frame/slice index in the name."""
    from alexkit.media import parse_item

    path, fields = parse_item(key)
    stem, ext = os.path.splitext(path)
    if path.lower().endswith(".nii.gz"):
        stem, ext = path[: -len(".nii.gz")], ".nii.gz"
    suffix = ""
    if "frame" in fields:
        suffix = f"_frame{int(fields['frame']):04d}"
    elif "slice" in fields:
        axis = f"_axis{int(fields['axis'])}" if "axis" in fields else ""
        suffix = f"_slice{int(fields['slice']):04d}{axis}"
    name = f"{stem}{suffix}.png"
    if name in used:  # a.jpg and a.png side by side
        name = f"{stem}{suffix}{ext.replace('.', '_')}.png"
    n = 2
    base = name
    while name in used:
        name = base.replace(".png", f"_{n}.png")
        n += 1
    used.add(name)
    return name


def resolve_target(target: str, class_names: Sequence[str]) -> int:
    """``"predicted"`` → -1, ``"true"`` → -2, a class name (or index) → its index."""
    if target == "predicted":
        return -1
    if target == "true":
        return -2
    names = list(class_names)
    if target in names:
        return names.index(target)
    if target.isdigit() and int(target) < len(names):
        return int(target)
    shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
    raise UsageError(
        f"--class must be predicted, true or a class name ({shown}); received {target!r}."
    )


class _NpzWriter:
    """``maps.npz`` written one array at a time (bounded memory); ``np.load`` reads it."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(path.name + ".part")
        self.zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)

    def add(self, key: str, array: np.ndarray) -> None:
        with self.zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)

    def close(self, ok: bool) -> None:
        self.zip.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def explain_data(
    model: Any,
    spec: Any,
    out: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    method: str = "gradcam",
    layer: str = "conv5",
    target: str = "predicted",
    alpha: float = 0.4,
    colormap: str = "jet",
    save_maps: bool = False,
    image_size: int | None = None,
    grayscale: bool = False,
    batch_size: int = 32,
    patch: int = 32,
    stride: int = 16,
    baseline: str | float = "mean",
    score: str = "probability",
    limit: int | None = None,
    force: bool = False,
    overlays: bool = True,
    sanity: bool = False,
    skipped: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExplainResult:
    """Explain every item of ``spec``: overlay PNGs, ``explain.csv`` and ``maps.npz``.

    Items are read with the evaluation preprocessing (``make_dataset(training=False)``:
    resize, centre crop, ``grayscale`` as trained); clips and volumes arrive as one item
    per frame / slice. Maps are at the model's input resolution (the centre crop).

    Args:
        model: a Keras classifier taking raw [0, 255] RGB.
        spec: a ``data.DatasetSpec`` (labels -1 where unknown), in the model's class order.
        out: output folder (refused when it holds files, unless ``force``).
        class_names: the model's class names (default ``"0".."C-1"``).
        method: ``gradcam``, ``gradcam++`` or ``occlusion``.
        layer: convolutional layer for the gradient methods.
        target: ``predicted``, ``true`` or a class name: whose evidence to map.
        alpha, colormap: the overlay's heat-map opacity and colours.
        save_maps: also write ``maps.npz`` (float32 (H, W) per item, keyed by its path
            relative to the data root; Grad-CAM in logit units, occlusion in score drop).
        image_size: input size (default the model's).
        grayscale: decode as grayscale (as the model was trained).
        batch_size: images per pass (occlusion: occluded copies per pass).
        patch, stride, baseline, score: occlusion options (see :func:`occlusion`).
        limit: explain at most this many items.
        force: replace the outputs of an earlier run in ``out``.
        overlays: write the overlay PNGs (off: CSV and maps only).
        sanity: also run :func:`sanity_checks` on up to 16 images of the first batch
            (gradient methods only) and write ``sanity.json``.
        skipped: a ``data.SkipLog`` for unreadable inputs.
        progress: ``progress(done, total)`` after each batch.

    Returns:
        An :class:`ExplainResult`.

    Raises:
        UsageError: bad method, layer, class, alpha or colormap.
        DataError: ``--class true`` on unlabelled items; nothing readable.
        CheckpointError: ``out`` holds files and ``force`` is not set.
    """
    from alexkit import data as data_mod
    from alexkit.inference import as_text

    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}; received {method!r}.")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1]; received {alpha}.")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1; received {batch_size}.")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1; received {limit}.")
    check_colormap(colormap)
    explainer = Explainer(model, layer)
    names = [str(c) for c in class_names] if class_names else None
    names = names or [str(i) for i in range(explainer.num_classes)]
    if len(names) != explainer.num_classes:
        raise UsageError(f"{len(names)} class names for a model with {explainer.num_classes}.")
    wanted = resolve_target(target, names)
    if wanted == -2 and any(lbl < 0 for lbl in spec.labels):
        raise DataError("--class true needs labelled data (class folders or a manifest label).")
    occ = {"patch": patch, "stride": stride, "baseline": baseline, "score": score}
    if sanity and method == "occlusion":
        raise UsageError("--sanity-check applies to gradcam and gradcam++, not occlusion.")
    if method == "occlusion":
        baseline_colour(model, baseline)  # refuse a bad baseline before reading anything
        occ["batch_size"] = batch_size
    if limit is not None and limit < len(spec):
        spec = dataclasses.replace(
            spec,
            items=spec.items[:limit],
            labels=spec.labels[:limit],
            splits=spec.splits[:limit],
            groups=spec.groups[:limit],
        )
    out = prepare_out(out, force)
    skipped = skipped if skipped is not None else data_mod.SkipLog()
    size = int(image_size or explainer.input_size[0])
    root = (
        spec.root
        if spec.root and Path(spec.root).is_dir()
        else (Path(spec.root).parent if spec.root else None)
    )
    if root is None and len(spec):
        from alexkit.media import parse_item

        sources = [os.path.dirname(os.path.abspath(parse_item(i)[0])) for i in spec.items]
        root = os.path.commonpath(sources)
    dataset = data_mod.make_dataset(
        spec,
        training=False,
        image_size=size,
        batch_size=batch_size if method != "occlusion" else max(1, min(batch_size, 8)),
        grayscale=grayscale,
        with_paths=True,
        skipped=skipped,
    )
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    npz = _NpzWriter(out / "maps.npz") if save_maps else None
    title_label = {
        "gradcam": "Grad-CAM (scaled to max)",
        "gradcam++": "Grad-CAM++ (scaled to max)",
        "occlusion": f"drop in {'P' if score == 'probability' else 'logit'}(target)",
    }[method]
    started = time.perf_counter()
    map_seconds = 0.0
    first: np.ndarray | None = None
    ok = False
    if progress is not None:
        progress(0, len(spec))  # start the clock (img/s) before the first batch
    try:
        for batch in dataset:
            images = np.asarray(batch[0], np.float32)
            labels = np.asarray(batch[1]).astype(np.int64)
            items = [as_text(s) for s in np.asarray(batch[2]).tolist()]
            if first is None:
                first = images[:16]
            t = labels if wanted == -2 else np.full(len(items), wanted)
            tick = time.perf_counter()
            maps, probs, chosen = explain_batch(
                explainer, images, t, method=method, occlusion_options=occ
            )
            map_seconds += time.perf_counter() - tick
            for k, item in enumerate(items):
                key = relative_key(item, root)
                pred = int(probs[k].argmax())
                true = names[labels[k]] if labels[k] >= 0 else None
                heat = maps[k]
                r, c = peak(heat)
                row = {
                    "path": key,
                    "true": true if true is not None else "",
                    "predicted": names[pred],
                    "probability": round(float(probs[k, pred]), 6),
                    "target": names[int(chosen[k])],
                    "target_probability": round(float(probs[k, int(chosen[k])]), 6),
                    "peak_row": r,
                    "peak_col": c,
                    "center_share": round(center_share(heat), 6),
                    "overlay": "",
                }
                if overlays:
                    name = overlay_name(key, used)
                    png = render_overlay(
                        images[k],
                        heat,
                        _title(
                            key,
                            true,
                            names[pred],
                            float(probs[k, pred]),
                            row["target"],
                            method,
                            layer,
                        ),
                        alpha=alpha,
                        colormap=colormap,
                        gray=True if grayscale else None,
                        label=title_label,
                        signed=method == "occlusion",
                    )
                    path = out / "overlays" / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(png)
                    row["overlay"] = f"overlays/{name}"
                if npz is not None:
                    npz.add(key, heat.astype(np.float32))
                rows.append(row)
            if progress is not None:
                progress(len(rows), len(spec))
        ok = True
    finally:
        if npz is not None:
            npz.close(ok and bool(rows))
    seconds = time.perf_counter() - started
    entries = [(str(p), str(r)) for p, r in (getattr(skipped, "entries", None) or [])]
    if not rows:
        raise DataError(f"none of the {len(spec)} images could be read (first: {entries[:1]}).")
    from alexkit.paths import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "explain.csv", buf.getvalue())
    files = {"explain.csv": out / "explain.csv"}
    report = None
    if sanity and first is not None:
        import json

        report = sanity_checks(model, first, layer=layer, method=method).to_dict()
        atomic_write_text(out / "sanity.json", json.dumps(report, indent=2) + "\n")
        files["sanity.json"] = out / "sanity.json"
    if overlays:
        files["overlays"] = out / "overlays"
    if save_maps:
        files["maps.npz"] = out / "maps.npz"
    return ExplainResult(
        out=out,
        rows=rows,
        method=method,
        layer=layer if method != "occlusion" else "",
        images=len(rows),
        seconds=seconds,
        map_seconds=map_seconds,
        skipped=entries,
        files=files,
        sanity=report,
    )
