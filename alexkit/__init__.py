"""alexkit: AlexNet transfer learning on Keras 3.

``import alexkit`` is cheap; the model API loads Keras on first use::

    import alexkit
    model = alexkit.build_alexnet(variant="original", num_classes=1000)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "build_alexnet",
    "replace_head",
    "freeze",
    "feature_extractor",
    "LocalResponseNormalization",
    "GroupedConv2D",
]


def __getattr__(name: str):
    # Lazy so that `alexkit --help` never imports TensorFlow/Keras.
    if name in {"build_alexnet", "replace_head", "freeze", "feature_extractor"}:
        from alexkit import model

        return getattr(model, name)
    if name in {"LocalResponseNormalization", "GroupedConv2D"}:
        from alexkit import layers

        return getattr(layers, name)
    raise AttributeError(f"module 'alexkit' has no attribute {name!r}")
