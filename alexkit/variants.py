"""Facts about each AlexNet variant, as plain data: no Keras, no numpy.

One table that the model builder (:mod:`alexkit.model`), the recipe reader
(:mod:`alexkit.recipes`) and the weights store (:mod:`alexkit.weights`) all read, so a
recipe can be validated and a store entry described without importing Keras.

- ``original``: Krizhevsky, Sutskever & Hinton (NIPS 2012): 227x227 input, LRN after
  conv1 and conv2, grouped conv2/4/5; the per-channel ImageNet mean is subtracted.
- ``torchvision``: "One weird trick" (Krizhevsky 2014, arXiv:1404.5997), torchvision's
  layout: 224x224 input, no LRN, no groups; torchvision's mean and std.
- ``tiny``: a smoke-test network for pipelines and tests: the ``original`` layout exactly
  (conv1 11x11/4 valid, LRN after conv1 and conv2, overlapping 3/2 max pooling, grouped
  conv2/4/5, fc6/fc7 with dropout, the same layer names and the same mean/std) at 1/8 of
  the widths (conv 12-32-48-48-32, fc6/fc7 128 units) on a 99x99 input (pool5 is 2x2x32).
  About 0.2M parameters instead of 61M: a training step takes milliseconds, so a whole
  pretrain or fine-tune runs in seconds instead of minutes through the same code paths.
  It has no published weights and is not meant to be accurate.

Each entry of :data:`VARIANTS` holds:

- ``image_size``: the input side the classifier is built for (fc6 expects the ``pool5``
  shape, which only this size gives; published weights were trained at it).
- ``resize``: the shorter side images are resized to before the centre crop.
- ``mean``, ``std``: per-channel RGB values in 0..255 pixel units; the model's
  ``preprocess`` layer computes ``(x - mean) / std``.
- ``layout``: which network shape the builder lays out: ``"original"`` (LRN, groups, the
  2012 paper) or ``"torchvision"`` (single tower, padded conv1, dropout before fc6/fc7).
- ``widths``: filters of conv1..conv5; ``fc_units``: width of fc6 and fc7.
- ``pool5``: pool5's output (H, W, C) at ``image_size``: what fc6 reads, flattened.
- ``layers``: the variant's public layer names, in order.
- ``params``: parameters of the 1000-class model.
- ``import_formats``: the published-weights formats that become this variant (empty:
  no published weights exist for it).
- ``paper``: what the variant follows.

Example::

    from alexkit.variants import VARIANTS, IMAGE_SIZES
    VARIANTS["torchvision"]["mean"]   # (123.675, 116.28, 103.53)
    IMAGE_SIZES["original"]           # 227
    IMAGE_SIZES["tiny"]               # 99
"""

from __future__ import annotations

import json
from typing import Any

# Public layer names of the ``original`` variant, in order; ``torchvision`` has no LRN.
# Names are API: weight import, ``freeze``, ``extract --layer`` and recipes depend on them.
LAYER_NAMES = (
    "conv1",
    "lrn1",
    "pool1",
    "conv2",
    "lrn2",
    "pool2",
    "conv3",
    "conv4",
    "conv5",
    "pool5",
    "fc6",
    "fc7",
    "predictions",
)
# Layers that carry weights, in order (every variant); ``trainable_from`` takes one of these.
WEIGHT_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "predictions")
# pool5's output (H, W, C) of the full-size variants (original, torchvision): what the
# published weights' fc6 reads, flattened (the importers reorder fc6 with it).
POOL5_SHAPE = (6, 6, 256)

VARIANTS: dict[str, dict[str, Any]] = {
    "original": {
        "image_size": 227,
        "resize": 256,
        # Per-channel ImageNet mean: the common stand-in for the paper's mean image.
        "mean": (123.68, 116.779, 103.939),
        "std": (1.0, 1.0, 1.0),
        "layout": "original",
        "widths": (96, 256, 384, 384, 256),
        "fc_units": 4096,
        "pool5": POOL5_SHAPE,
        "layers": LAYER_NAMES,
        "params": 60_965_224,
        "import_formats": ("bvlc-npy",),
        "paper": "Krizhevsky, Sutskever & Hinton, NIPS 2012",
    },
    "torchvision": {
        "image_size": 224,
        "resize": 256,
        "mean": (0.485 * 255, 0.456 * 255, 0.406 * 255),
        "std": (0.229 * 255, 0.224 * 255, 0.225 * 255),
        "layout": "torchvision",
        "widths": (64, 192, 384, 256, 256),
        "fc_units": 4096,
        "pool5": POOL5_SHAPE,
        "layers": tuple(name for name in LAYER_NAMES if not name.startswith("lrn")),
        "params": 61_100_840,
        "import_formats": ("torchvision",),
        "paper": "Krizhevsky 2014, arXiv:1404.5997 (torchvision models/alexnet.py)",
    },
    "tiny": {
        # 99 is the smallest side whose pool5 is 2x2 through the original's valid 11x11/4
        # conv1 and three 3/2 poolings (99 -> 23 -> 11 -> 5 -> 2); resize keeps 256/227.
        "image_size": 99,
        "resize": 112,
        "mean": (123.68, 116.779, 103.939),
        "std": (1.0, 1.0, 1.0),
        "layout": "original",
        "widths": (12, 32, 48, 48, 32),
        "fc_units": 128,
        "pool5": (2, 2, 32),
        "layers": LAYER_NAMES,
        "params": 202_456,
        "import_formats": (),
        "paper": (
            "smoke-test network for pipelines and tests: the original (NIPS 2012) layout at "
            "1/8 of the widths on a 99x99 input; no published weights"
        ),
    },
}

#: The input side of each variant (the recipe reader checks ``image_size`` against it).
IMAGE_SIZES: dict[str, int] = {name: spec["image_size"] for name, spec in VARIANTS.items()}


def variant_from_structure(has_lrn: bool, conv1_filters: int | None) -> str:
    """The variant a network of this shape is: LRN picks the ``original`` layout, conv1's
    width tells the variants of one layout apart (``original`` 96, ``tiny`` 12).

    Args:
        has_lrn: whether the network has an ``lrn1`` layer.
        conv1_filters: conv1's filter count (None: unknown; the full-size variant is assumed).

    Returns:
        A key of :data:`VARIANTS`.
    """
    layout = "original" if has_lrn else "torchvision"
    candidates = [name for name, spec in VARIANTS.items() if spec["layout"] == layout]
    for name in candidates:
        if VARIANTS[name]["widths"][0] == conv1_filters:
            return name
    return layout


def variant_of_config(config: str | dict[str, Any]) -> str:
    """The variant of a saved Keras model from its ``config.json`` (no Keras needed).

    A ``.keras`` file is a zip holding ``config.json``; this reads which layers it has
    and conv1's width, as :func:`alexkit.model.variant_of` does on a built model.

    Args:
        config: the text of ``config.json``, or its parsed form.

    Returns:
        A key of :data:`VARIANTS`.
    """
    tree = json.loads(config) if isinstance(config, str) else config
    has_lrn = False
    conv1_filters = None
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            cfg = node.get("config")
            if isinstance(cfg, dict) and "name" in cfg:
                if cfg["name"] == "lrn1":
                    has_lrn = True
                elif cfg["name"] == "conv1" and "filters" in cfg:
                    conv1_filters = int(cfg["filters"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return variant_from_structure(has_lrn, conv1_filters)
