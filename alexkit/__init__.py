"""alexkit: AlexNet transfer learning on Keras 3.

``import alexkit`` is cheap; the model API loads Keras on first use::

    import alexkit
    model = alexkit.build_alexnet(variant="original", num_classes=1000)
    same = alexkit.load_model("model.keras")  # safe mode, custom layers registered

If Keras is already imported, ``import alexkit`` registers the custom layers at once, so
``keras.saving.load_model`` works on alexkit models too.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "build_alexnet",
    "load_model",
    "replace_head",
    "freeze",
    "feature_extractor",
    "LocalResponseNormalization",
    "GroupedConv2D",
]


def __getattr__(name: str):
    # Lazy so that `alexkit --help` never imports TensorFlow/Keras.
    if name in {"build_alexnet", "replace_head", "freeze", "feature_extractor", "load_model"}:
        from alexkit import model

        return getattr(model, name)
    if name in {"LocalResponseNormalization", "GroupedConv2D"}:
        from alexkit import layers

        return getattr(layers, name)
    raise AttributeError(f"module 'alexkit' has no attribute {name!r}")


def _register_layers_if_keras_is_loaded() -> None:
    # Keeping `import alexkit` light matters for `alexkit --help`; but a user who already
    # imported Keras pays nothing for the registration that load_model needs.
    import sys

    if "keras" in sys.modules:
        from alexkit import layers, optim  # noqa: F401


_register_layers_if_keras_is_loaded()
