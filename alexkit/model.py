"""AlexNet as a Keras 3 Functional model, plus head swapping, freezing and feature taps.

Three variants (their facts live in :mod:`alexkit.variants`):

- ``original``: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
  Convolutional Neural Networks" (NIPS 2012) — 227×227 input, grouped conv2/4/5 (the
  two-GPU split), Local Response Normalization after conv1 and conv2, overlapping 3×3/2
  max pooling, dropout 0.5 on fc6 and fc7. 60,965,224 parameters for 1000 classes.
- ``torchvision``: the single-tower "One weird trick" layout (Krizhevsky 2014,
  arXiv:1404.5997) that torchvision ships — 224×224 input, widths 64-192-384-256-256, no
  LRN, no groups, dropout before fc6 and fc7. 61,100,840 parameters.
- ``tiny``: the ``original`` layout at 1/8 of the widths (conv 12-32-48-48-32, fc6/fc7 128)
  on a 99×99 input: a smoke-test network for pipelines and tests (202,456 parameters,
  seconds instead of minutes), with no published weights.

The model takes raw RGB pixels in [0, 255] (NHWC); the ``preprocess`` layer subtracts the
mean (and divides by the std) the variant's weights expect, so a saved model needs no
outside preprocessing.
"""

from __future__ import annotations

from typing import Any

import keras

from alexkit.layers import GroupedConv2D, LocalResponseNormalization, Preprocess
from alexkit.variants import LAYER_NAMES as LAYER_NAMES  # re-exported, as before
from alexkit.variants import VARIANTS, WEIGHT_LAYERS, variant_from_structure

HEAD_PREFIX = "head_"
# Typical standard deviation of natural-image pixels in 0..255 units (ImageNet ≈ 0.226).
PIXEL_STD = 0.226 * 255

_BIAS_ONE_LAYERS = {"conv2", "conv4", "conv5", "fc6", "fc7"}
_BIAS_INIT = {"paper": 1.0, "caffe": 0.1}


def build_alexnet(
    variant: str = "original",
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] | None = None,
    include_top: bool = True,
    dropout: float = 0.5,
    bias_init: str = "paper",
    kernel_init: str = "paper",
    lrn: str = "paper",
    classifier_activation: str | None = "softmax",
    grouped_implementation: str = "auto",
    seed: int | None = None,
    name: str | None = None,
) -> keras.Model:
    """Build AlexNet.

    Args:
        variant: ``"original"`` (2012 paper), ``"torchvision"`` (One weird trick) or
            ``"tiny"`` (the original layout at 1/8 width: a smoke-test network).
        num_classes: size of the ``predictions`` layer.
        input_shape: (H, W, 3). Defaults to 227×227×3 / 224×224×3 / 99×99×3. With
            ``include_top=True`` it must be the default (the classifier expects the
            variant's pool5 shape: 6×6×256, or 2×2×32 for ``tiny``).
        include_top: add fc6, fc7 and ``predictions``; without it the model ends at
            ``pool5`` (6×6×256 for the default size).
        dropout: dropout rate of the two hidden fully-connected layers (0.5 in the paper).
        bias_init: ``"paper"`` (biases 1 in conv2, conv4, conv5, fc6, fc7; 0 elsewhere)
            or ``"caffe"`` (0.1 there instead: Caffe found 1 can stall training).
        kernel_init: ``"paper"`` (all weights N(0, 0.01)) or ``"he"`` (He-normal scaled
            to the pixel range, zero biases, a zero-initialised classifier: trains from
            scratch faster and more stably on small data).
        lrn: LRN constants of the ``original`` layout (``original``, ``tiny``): ``"paper"``
            (k=2, alpha=1e-4) or ``"caffe"`` (k=1, alpha=1e-4/5: what Caffe-trained
            ``bvlc_alexnet`` needs).
        classifier_activation: ``"softmax"`` (default) or ``None`` for logits.
        grouped_implementation: how conv2/4/5 compute their groups (see
            :class:`alexkit.layers.GroupedConv2D`); the function is the same.
        seed: seed for the initializers (reproducible weights).
        name: model name; defaults to ``alexnet_<variant>``.

    Returns:
        A Functional ``keras.Model`` taking raw RGB pixels in [0, 255].

    Raises:
        ValueError: for an unknown variant or inconsistent arguments.
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"variant must be one of {sorted(VARIANTS)}. Received: variant={variant!r}"
        )
    if bias_init not in _BIAS_INIT:
        raise ValueError(
            f"bias_init must be one of {sorted(_BIAS_INIT)}. Received: bias_init={bias_init!r}"
        )
    if kernel_init not in ("paper", "he"):
        raise ValueError(
            f"kernel_init must be 'paper' or 'he'. Received: kernel_init={kernel_init!r}"
        )
    if lrn not in ("paper", "caffe"):
        raise ValueError(f"lrn must be 'paper' or 'caffe'. Received: lrn={lrn!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1. Received: num_classes={num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    spec = VARIANTS[variant]
    original_layout = spec["layout"] == "original"
    w1, w2, w3, w4, w5 = spec["widths"]
    fc_units = spec["fc_units"]
    default_shape = (spec["image_size"], spec["image_size"], 3)
    if input_shape is None:
        input_shape = default_shape
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3). Received: input_shape={input_shape}")
    if include_top and input_shape != default_shape:
        raise ValueError(
            f"include_top=True needs input_shape={default_shape} for variant {variant!r}. "
            f"Received: input_shape={input_shape}"
        )

    seeds = iter(range(0 if seed is None else seed * 100, 10**9))

    # He init assumes unit-variance inputs; `original` feeds mean-subtracted pixels in
    # 0..255 units (std ≈ 0.226 * 255 ≈ 58), so conv1's variance is scaled down to match.
    input_std = PIXEL_STD / (sum(spec["std"]) / 3.0)

    def kernel_initializer(layer: str = ""):
        s = None if seed is None else next(seeds)
        if kernel_init == "he":
            if layer == "conv1":
                return keras.initializers.VarianceScaling(
                    scale=2.0 / input_std**2, mode="fan_in", distribution="truncated_normal", seed=s
                )
            if layer == "predictions":
                # Zero logits at the start: the loss begins at exactly ln(C), and the
                # classifier's own gradient h·(p − y) is non-zero, so it learns at once.
                return keras.initializers.Zeros()
            return keras.initializers.HeNormal(seed=s)
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.01, seed=s)

    def bias_initializer(layer: str):
        # Positive biases keep ReLUs alive under the paper's tiny N(0, 0.01) weights;
        # He-scaled weights need no such help (and drift with it), so they get zeros.
        if layer in _BIAS_ONE_LAYERS and original_layout and kernel_init == "paper":
            return keras.initializers.Constant(_BIAS_INIT[bias_init])
        return keras.initializers.Zeros()

    def conv(filters, size, layer, strides=1, padding="same", groups=1):
        common = dict(
            strides=strides,
            padding=padding,
            activation="relu",
            kernel_initializer=kernel_initializer(layer),
            bias_initializer=bias_initializer(layer),
            name=layer,
        )
        if groups > 1:
            return GroupedConv2D(
                filters, size, groups=groups, implementation=grouped_implementation, **common
            )
        return keras.layers.Conv2D(filters, size, **common)

    def dense(units, layer, activation="relu", **kwargs):
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=kernel_initializer(layer),
            bias_initializer=bias_initializer(layer),
            name=layer,
            **kwargs,
        )

    def pool(layer):
        return keras.layers.MaxPooling2D(pool_size=3, strides=2, padding="valid", name=layer)

    inputs = keras.Input(shape=input_shape, name="image")
    x = Preprocess(spec["mean"], spec["std"], name="preprocess")(inputs)
    if original_layout:
        make_lrn = (
            LocalResponseNormalization.caffe if lrn == "caffe" else LocalResponseNormalization
        )
        x = conv(w1, 11, "conv1", strides=4, padding="valid")(x)
        x = make_lrn(name="lrn1")(x)
        x = pool("pool1")(x)
        x = conv(w2, 5, "conv2", groups=2)(x)
        x = make_lrn(name="lrn2")(x)
        x = pool("pool2")(x)
        x = conv(w3, 3, "conv3")(x)
        x = conv(w4, 3, "conv4", groups=2)(x)
        x = conv(w5, 3, "conv5", groups=2)(x)
        x = pool("pool5")(x)
    else:
        # torchvision pads conv1 by 2 and then runs a valid 11×11/4 convolution.
        x = keras.layers.ZeroPadding2D(2, name="conv1_pad")(x)
        x = conv(w1, 11, "conv1", strides=4, padding="valid")(x)
        x = pool("pool1")(x)
        x = conv(w2, 5, "conv2")(x)
        x = pool("pool2")(x)
        x = conv(w3, 3, "conv3")(x)
        x = conv(w4, 3, "conv4")(x)
        x = conv(w5, 3, "conv5")(x)
        x = pool("pool5")(x)
        # torchvision's AdaptiveAvgPool2d(6) is the identity on the 6×6 map of a 224 input.

    if include_top:
        # Keras flattens (H, W, C); PyTorch/Caffe flatten (C, H, W): importers reorder fc6.
        x = keras.layers.Flatten(name="flatten")(x)
        if original_layout:
            x = dense(fc_units, "fc6")(x)
            x = keras.layers.Dropout(dropout, name="drop6")(x)
            x = dense(fc_units, "fc7")(x)
            x = keras.layers.Dropout(dropout, name="drop7")(x)
        else:
            x = keras.layers.Dropout(dropout, name="drop6")(x)
            x = dense(fc_units, "fc6")(x)
            x = keras.layers.Dropout(dropout, name="drop7")(x)
            x = dense(fc_units, "fc7")(x)
        # float32 output keeps softmax stable under mixed precision.
        x = dense(num_classes, "predictions", activation=classifier_activation, dtype="float32")(x)
    return keras.Model(inputs, x, name=name or f"alexnet_{variant}")


def load_model(path: str) -> keras.Model:
    """Load a ``.keras`` alexkit model in Keras' safe mode (no code runs from the file).

    Args:
        path: a ``.keras`` file written by alexkit (or any Keras model).

    Returns:
        The model, taking raw RGB pixels in [0, 255].
    """
    import alexkit.optim  # noqa: F401  (registers PaperSGD, saved with compiled models)

    return keras.saving.load_model(path, safe_mode=True)


def variant_of(model: keras.Model) -> str:
    """Tell which variant a model is by its layers (nested models' too, e.g. a body inside
    a classifier): LRN ⇒ the original layout, then conv1's width tells ``original`` (96
    filters) from ``tiny`` (12)."""
    layers = all_layers(model)
    conv1 = next((layer for layer in layers if layer.name == "conv1"), None)
    has_lrn = any(layer.name == "lrn1" for layer in layers)
    return variant_from_structure(has_lrn, getattr(conv1, "filters", None))


def all_layers(model: Any) -> list[Any]:
    """Every layer of ``model``, those of nested models included, outer ones first."""
    found, queue = [], list(getattr(model, "layers", None) or [])
    while queue:
        layer = queue.pop(0)
        found.append(layer)
        queue.extend(getattr(layer, "layers", None) or [])
    return found


def replace_head(
    model: keras.Model,
    num_classes: int,
    dropout: float | None = None,
    hidden_units: int | None = None,
    classifier_activation: str | None = "softmax",
    seed: int | None = None,
) -> keras.Model:
    """Return a model with a new ``predictions`` layer of ``num_classes`` units.

    Every layer below the head is shared with ``model``, so its weights are
    bit-identical. Optionally inserts ``head_dropout`` (replacing a dropout layer that
    fed the old head, e.g. the original variant's ``drop7``) and a ``head_hidden`` ReLU
    layer (with ``head_hidden_dropout``) before the new classifier.

    Args:
        model: an AlexNet built by :func:`build_alexnet` (with its top).
        num_classes: classes of the new task.
        dropout: dropout rate before the new layers (None: none added).
        hidden_units: width of an optional extra hidden layer.
        classifier_activation: ``"softmax"`` or ``None``.
        seed: initializer seed for the new layers.

    Returns:
        A new Functional model.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1. Received: num_classes={num_classes}")
    try:
        old_head = model.get_layer("predictions")
    except ValueError as exc:
        raise ValueError(
            "replace_head needs a model with a 'predictions' layer (include_top=True)."
        ) from exc
    x = old_head.input
    if dropout:
        feeding = next((layer for layer in model.layers if layer.output is x), None)
        if isinstance(feeding, keras.layers.Dropout):
            # The recipe's head dropout replaces the model's drop7 rather than stacking
            # a second one on it (0.5 after 0.5 would drop 75 % of fc7).
            x = feeding.input
        x = keras.layers.Dropout(dropout, name=f"{HEAD_PREFIX}dropout")(x)
    if hidden_units:
        x = keras.layers.Dense(
            hidden_units,
            activation="relu",
            kernel_initializer=keras.initializers.HeNormal(seed=seed),
            name=f"{HEAD_PREFIX}hidden",
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{HEAD_PREFIX}hidden_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes,
        activation=classifier_activation,
        # Glorot scaled down 10×: fc7 vectors are long (norm ~100-300), and a plain
        # Glorot classifier starts with logits of several units and a loss near 20,
        # which the first Adam steps spend undoing. This starts near ln(C).
        kernel_initializer=keras.initializers.VarianceScaling(
            scale=0.01, mode="fan_avg", distribution="uniform", seed=seed
        ),
        name="predictions",
        dtype="float32",
    )(x)
    return keras.Model(model.input, outputs, name=model.name)


def freeze(model: keras.Model, trainable_from: str | None = None) -> keras.Model:
    """Freeze the layers below ``trainable_from``; train it and everything after.

    Args:
        model: an AlexNet model.
        trainable_from: a layer name (e.g. ``"conv4"``, ``"fc6"``); ``None`` trains only
            the head (``predictions`` and any ``head_*`` layers).

    Returns:
        The same model (modified in place). Re-compile it before training.

    Raises:
        ValueError: if ``trainable_from`` is not a layer of the model.
    """
    names = [layer.name for layer in model.layers]
    if trainable_from is not None and trainable_from not in names:
        raise ValueError(
            f"trainable_from must be a layer of the model, one of "
            f"{[n for n in names if n in WEIGHT_LAYERS]}. Received: {trainable_from!r}"
        )
    trainable = False
    for layer in model.layers:
        if trainable_from is None:
            layer.trainable = layer.name == "predictions" or layer.name.startswith(HEAD_PREFIX)
            continue
        if layer.name == trainable_from:
            trainable = True
        layer.trainable = trainable
    return model


def feature_extractor(
    model: keras.Model, layer: str = "fc7", pool: str = "none", *, fold_preprocess: bool = False
) -> keras.Model:
    """A model from raw pixels to the output of ``layer`` (post-activation).

    Args:
        model: an AlexNet model.
        layer: a layer name, e.g. ``fc7``, ``fc6``, ``pool5``, ``conv5``.
        pool: ``"none"`` keeps the layer's shape; ``"avg"`` global-average-pools
            spatial maps to one vector per image (no effect on dense layers).
        fold_preprocess: for inference only: fold ``Preprocess`` into the first
            convolution when that is exact (see :func:`fold_preprocess`). The folded
            first kernel is a copy: rebuild the extractor after changing ``model``.

    Returns:
        A Functional model sharing ``model``'s weights (except a folded first kernel).
    """
    if pool not in ("none", "avg"):
        raise ValueError(f"pool must be 'none' or 'avg'. Received: pool={pool!r}")
    try:
        output = model.get_layer(layer).output
    except ValueError as exc:
        names = [layer_.name for layer_ in model.layers]
        raise ValueError(f"layer must be one of {names}. Received: layer={layer!r}") from exc
    inputs = model.input
    if fold_preprocess:
        folded = _folded_chain(model, layer)
        if folded is not None:
            inputs, output = folded
    if len(output.shape) == 4:
        if pool == "avg":
            output = keras.layers.GlobalAveragePooling2D(name=f"{layer}_avg")(output)
        else:
            output = keras.layers.Flatten(name=f"{layer}_flat")(output)
    return keras.Model(inputs, output, name=f"{model.name}_{layer}")


def _folded_chain(model: keras.Model, layer: str) -> tuple[Any, Any] | None:
    """(inputs, output of ``layer``) with Preprocess folded into conv1, or None.

    Folding is exact only when the model is a plain chain that starts
    ``Input → Preprocess → Conv2D(padding="valid")``: the convolution then only ever
    sees normalised pixels, and ``conv(x·s − m·s) = conv_{K·s}(x) − Σ K·m·s`` per output
    channel (s = 1/std, m = mean, per input channel). With padding the border would see
    normalised zeros, which are not raw zeros, so nothing is folded (the torchvision
    layout pads conv1).
    """
    import numpy as np

    layers = [lyr for lyr in model.layers if not isinstance(lyr, keras.layers.InputLayer)]
    if len(layers) < 2 or layer not in [lyr.name for lyr in layers]:
        return None
    pre, conv = layers[0], layers[1]
    if layer == pre.name:
        return None
    if not (
        isinstance(pre, Preprocess)
        and type(conv) is keras.layers.Conv2D
        and conv.padding == "valid"
        and conv.groups == 1
        and conv.use_bias
        and conv.data_format == "channels_last"
        and conv.compute_dtype == "float32"  # folding moves rounding: exact only in fp32
        and len(conv.get_weights()) == 2  # plain kernel + bias (not LoRA / quantized)
    ):
        return None
    try:  # a plain chain: every layer reads the previous layer's output only
        if pre.input is not model.input:
            return None
        for prev, cur in zip(layers, layers[1:], strict=False):
            if cur.input is not prev.output:
                return None
    except (AttributeError, ValueError):  # shared layers / several inbound nodes
        return None
    kernel, bias = (np.asarray(w, np.float64) for w in conv.get_weights())
    scale = 1.0 / np.asarray(pre.std, np.float64)
    shift = np.asarray(pre.mean, np.float64) * scale
    folded = keras.layers.Conv2D(
        conv.filters,
        conv.kernel_size,
        strides=conv.strides,
        padding="valid",
        dilation_rate=conv.dilation_rate,
        activation=conv.activation,
        dtype=conv.dtype_policy,
        name=f"{conv.name}_folded",
    )
    inputs = keras.Input(shape=model.input.shape[1:], name="image")
    x = folded(inputs)
    folded.set_weights(
        [
            (kernel * scale[None, None, :, None]).astype(np.float32),
            (bias - np.einsum("hwco,c->o", kernel, shift)).astype(np.float32),
        ]
    )
    if conv.name != layer:
        for lyr in layers[2:]:
            x = lyr(x)
            if lyr.name == layer:
                break
    return inputs, x


def layer_table(model: keras.Model) -> list[dict[str, Any]]:
    """One row per layer: name, type, output shape (without batch), parameter count."""
    rows = []
    for layer in model.layers:
        shape = layer.output.shape if hasattr(layer, "output") else None
        rows.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": list(shape[1:]) if shape is not None else None,
                "params": int(layer.count_params()),
            }
        )
    return rows
