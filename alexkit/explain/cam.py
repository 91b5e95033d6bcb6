"""The model split for explanation and the gradient maps: Grad-CAM and Grad-CAM++."""

from __future__ import annotations

from typing import Any

import numpy as np

from alexkit.errors import UsageError

METHODS = ("gradcam", "gradcam++", "occlusion")
METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "occlusion": "occlusion"}


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
        from alexkit.loading import input_size_of

        side = input_size_of(model)  # a model of any input size: its variant's
        self.input_size = tuple(int(v or side) for v in model.input_shape[1:3])
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
        resize: upsample to the images' size (the model's input size; else the layer's
            resolution).

    Returns:
        ``(maps (B, H, W) float32 ≥ 0 in logit units, probabilities (B, C), targets (B,))``.
    """
    explainer = explainer or Explainer(model, layer)
    cam, logits, chosen = explainer.gradients(images, targets, method=method)
    if resize:
        cam = upsample(cam, tuple(int(v) for v in np.shape(images)[1:3]))
    return cam, _softmax(logits), chosen
