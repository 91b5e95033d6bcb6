"""Turn a published weights file into a store entry: pick the format's reader, build, register."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import WeightsError
from alexkit.variants import VARIANTS
from alexkit.weights._common import file_sha256
from alexkit.weights.caffe import convert_bvlc, load_bvlc_npy
from alexkit.weights.store import WeightsEntry, check_free, get_weights, register_weights
from alexkit.weights.torchvision import convert_torchvision, load_torchvision_state_dict

FORMATS = ("torchvision", "bvlc-npy")
#: The variant each import format becomes (``alexkit.variants``' ``import_formats``).
FORMAT_VARIANTS = {fmt: name for name, spec in VARIANTS.items() for fmt in spec["import_formats"]}
#: Store names given to imports when ``--name`` is not passed.
DEFAULT_NAMES = {"torchvision": "torchvision-imagenet", "bvlc-npy": "bvlc-imagenet"}


def build_imported_model(
    variant: str,
    layers: dict[str, list[np.ndarray]],
    source: str = "<weights>",
    **build_kwargs: Any,
) -> Any:
    """Build ``build_alexnet(variant, ...)`` and set every named layer's weights.

    The class count comes from the ``predictions`` kernel.

    Raises:
        WeightsError: the variant has no published weights (``tiny``), or a layer's
            weights do not fit the built model (naming the layer).
    """
    from alexkit.model import build_alexnet

    if variant in VARIANTS and not VARIANTS[variant]["import_formats"]:
        known = ", ".join(f"{fmt} -> {name}" for fmt, name in FORMAT_VARIANTS.items())
        raise WeightsError(
            f"{source}: variant {variant!r} has no published weights to import "
            f"(imports become: {known})"
        )

    num_classes = int(layers["predictions"][0].shape[-1])
    model = build_alexnet(variant=variant, num_classes=num_classes, **build_kwargs)
    for name, arrays in layers.items():
        layer = model.get_layer(name)
        current = [tuple(v.shape) for v in layer.weights]
        given = [tuple(a.shape) for a in arrays]
        if current != given:
            raise WeightsError(
                f"{source}: layer {name} has weights {given}, the {variant} model expects {current}"
            )
        layer.set_weights(arrays)
    # Every trainable layer must have been filled: a silent random layer is a wrong model.
    missed = [lyr.name for lyr in model.layers if lyr.trainable_weights and lyr.name not in layers]
    if missed:  # pragma: no cover - guards against a model change
        raise WeightsError(f"{source}: no weights for layer {missed[0]} of the {variant} model")
    return model


def import_weights(
    path: str | os.PathLike,
    format: str,
    *,
    name: str | None = None,
    overwrite: bool = False,
    source: str | None = None,
) -> WeightsEntry:
    """Convert a published weights file and add it to the store.

    Args:
        path: ``alexnet-owt-7be5be79.pth`` (format ``torchvision``) or ``bvlc_alexnet.npy``
            (format ``bvlc-npy``).
        format: ``"torchvision"`` or ``"bvlc-npy"``.
        name: the entry's name; default ``torchvision-imagenet`` / ``bvlc-imagenet``.
        overwrite: replace an existing entry of that name.
        source: what to record as the source (default: the file's absolute path).

    Returns:
        The new store entry.

    Raises:
        WeightsError: wrong format, shapes, truncated or unsafe file (the store is untouched).
        MissingExtraError: ``torchvision`` format without torch installed.
    """
    if format not in FORMATS:
        raise WeightsError(f"unknown weights format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    name = check_free(name or DEFAULT_NAMES[format], overwrite)  # fail before converting
    variant = FORMAT_VARIANTS[format]
    if format == "torchvision":
        layers = convert_torchvision(load_torchvision_state_dict(path), str(path))
        build_kwargs: dict[str, Any] = {}
        notes = "conv kernels OIHW->HWIO, dense (out,in)->(in,out), fc6 rows CHW->HWC"
    else:
        layers = convert_bvlc(load_bvlc_npy(path), str(path))
        build_kwargs = {"lrn": "caffe"}
        notes = (
            "conv1 input channels reversed (Caffe BGR -> RGB), fc6 rows CHW->HWC, "
            "Caffe LRN (k=1, alpha=2e-5 per element); mean = ImageNet per-channel mean"
        )
    model = build_imported_model(variant, layers, str(path), **build_kwargs)
    extra = {"format": format, "num_classes": int(layers["predictions"][0].shape[-1])}
    extra["conversion"] = notes
    if build_kwargs:
        extra["build"] = build_kwargs
    register_weights(
        model,
        name,
        variant=variant,
        source=source or str(path.resolve()),
        sha256=file_sha256(path),
        kind="imagenet",
        overwrite=overwrite,
        extra=extra,
    )
    return get_weights(name)
