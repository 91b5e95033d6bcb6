"""Facts about each AlexNet variant, as plain data: no Keras, no numpy.

One table that the model builder (:mod:`alexkit.model`), the recipe reader
(:mod:`alexkit.recipes`) and the weights store (:mod:`alexkit.weights`) all read, so a
recipe can be validated and a store entry described without importing Keras.

- ``original``: Krizhevsky, Sutskever & Hinton (NIPS 2012): 227x227 input, LRN after
  conv1 and conv2, grouped conv2/4/5; the per-channel ImageNet mean is subtracted.
- ``torchvision``: "One weird trick" (Krizhevsky 2014, arXiv:1404.5997), torchvision's
  layout: 224x224 input, no LRN, no groups; torchvision's mean and std.

Each entry of :data:`VARIANTS` holds:

- ``image_size``: the input side the classifier is built for (fc6 expects a 6x6x256 pool5,
  which only this size gives; the published weights were trained at it).
- ``resize``: the shorter side images are resized to before the centre crop.
- ``mean``, ``std``: per-channel RGB values in 0..255 pixel units; the model's
  ``preprocess`` layer computes ``(x - mean) / std``.
- ``layers``: the variant's public layer names, in order.
- ``params``: parameters of the 1000-class model.
- ``paper``: what the variant follows.

Example::

    from alexkit.variants import VARIANTS, IMAGE_SIZES
    VARIANTS["torchvision"]["mean"]   # (123.675, 116.28, 103.53)
    IMAGE_SIZES["original"]           # 227
"""

from __future__ import annotations

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
# Layers that carry weights, in order (both variants); ``trainable_from`` takes one of these.
WEIGHT_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "predictions")
# pool5's output (H, W, C) at each variant's image size: what fc6 reads, flattened.
POOL5_SHAPE = (6, 6, 256)

VARIANTS: dict[str, dict[str, Any]] = {
    "original": {
        "image_size": 227,
        "resize": 256,
        # Per-channel ImageNet mean: the common stand-in for the paper's mean image.
        "mean": (123.68, 116.779, 103.939),
        "std": (1.0, 1.0, 1.0),
        "layers": LAYER_NAMES,
        "params": 60_965_224,
        "paper": "Krizhevsky, Sutskever & Hinton, NIPS 2012",
    },
    "torchvision": {
        "image_size": 224,
        "resize": 256,
        "mean": (0.485 * 255, 0.456 * 255, 0.406 * 255),
        "std": (0.229 * 255, 0.224 * 255, 0.225 * 255),
        "layers": tuple(name for name in LAYER_NAMES if not name.startswith("lrn")),
        "params": 61_100_840,
        "paper": "Krizhevsky 2014, arXiv:1404.5997 (torchvision models/alexnet.py)",
    },
}

#: The input side of each variant (the recipe reader checks ``image_size`` against it).
IMAGE_SIZES: dict[str, int] = {name: spec["image_size"] for name, spec in VARIANTS.items()}
