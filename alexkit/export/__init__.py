"""Export a trained classifier to SavedModel, ONNX or LiteRT, and prove it equals Keras.

:func:`export_model` writes one artefact and a ``model-card.json`` beside it, then runs
the written file and the Keras model on the same images and measures how far apart they
are. Every artefact takes what the ``.keras`` model takes — raw RGB pixels in [0, 255],
float32, NHWC, at the variant's size — and returns class probabilities (divided by the
run's temperature first, when ``calibration.json`` has one): the preprocessing stays inside.

Built on Keras' own ``model.export`` where it serves:

- ``savedmodel``: a ``serving_default`` signature (``image`` -> ``output_0``), written
  like ``format="tf_saved_model"`` but with each weight stored once (see
  :func:`_save_serving`).
- ``onnx``: ``format="onnx"`` (tf2onnx underneath), checked with ``onnx.checker``
  (``full_check=True``) and run with onnxruntime; ``dynamic-int8`` is onnxruntime's
  ``quantize_dynamic`` on the fully connected layers (int8 weights, activations quantized
  at run time; convolutions stay float32). ONNX has no float16 option here.
- ``tflite``: ``format="litert"`` with the converter restricted to the built-in op set
  (no Flex / "Select TF ops", which phone apps do not ship), run with the LiteRT
  interpreter (``ai-edge-litert``); ``float16`` stores float16 weights, ``dynamic-int8``
  is the converter's dynamic-range quantization.

Float32 exports must match Keras to :data:`PARITY_ATOL` in every probability with the
same top-1 class on every image, or :class:`ExportError` is raised and no card is written.
Quantized exports never claim parity: their card records the measured difference and,
with labelled ``data``, the accuracy change.

:func:`load_exported` reads an artefact back (class names, input size from its card) as
an object with ``predict_on_batch``, so ``predict`` and ``evaluate`` can run the very

Modules: :mod:`~alexkit.export.options` (formats, paths, :class:`ExportError`,
:class:`ExportResult`), :mod:`~alexkit.export.source` (what to export, made to serve),
:mod:`~alexkit.export.writers` (conversion, quantization, structural checks),
:mod:`~alexkit.export.parity` (images and the comparison with Keras),
:mod:`~alexkit.export.card` (``model-card.json``) and :mod:`~alexkit.export.loader`
(runtimes and :func:`load_exported`). Nothing here imports TensorFlow at import time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alexkit.export.card import _card, _refuse_foreign_card
from alexkit.export.card import _versions as _versions
from alexkit.export.loader import _RUNNERS as _RUNNERS
from alexkit.export.loader import ExportedModel, format_of, is_exported, load_exported
from alexkit.export.loader import _LiteRTRunner as _LiteRTRunner
from alexkit.export.loader import _OnnxRunner as _OnnxRunner
from alexkit.export.loader import _SavedModelRunner as _SavedModelRunner
from alexkit.export.options import (
    CARD_FORMAT,
    CARD_NAME,
    FORMATS,
    GENERATED_IMAGES,
    MAX_PARITY_IMAGES,
    PARITY_ATOL,
    QUANTIZATIONS,
    ExportError,
    ExportResult,
    artefact_path,
    card_path_for,
    check_options,
    require_export_tools,
)
from alexkit.export.parity import (
    _compare_with_keras,
    _parity_images,
    data_images,
    generated_images,
    measure_parity,
)
from alexkit.export.source import Source, _temperature, load_source, serving_model
from alexkit.export.writers import _convert_checked, _input_spec

log = logging.getLogger(__name__)

__all__ = [
    "CARD_FORMAT",
    "CARD_NAME",
    "FORMATS",
    "GENERATED_IMAGES",
    "MAX_PARITY_IMAGES",
    "PARITY_ATOL",
    "QUANTIZATIONS",
    "ExportError",
    "ExportResult",
    "ExportedModel",
    "Source",
    "artefact_path",
    "card_path_for",
    "check_options",
    "data_images",
    "export_model",
    "format_of",
    "generated_images",
    "is_exported",
    "load_exported",
    "load_source",
    "measure_parity",
    "require_export_tools",
    "serving_model",
]


def export_model(
    source: Any,
    format: str,
    out: str | Path,
    quantize: str = "none",
    data: str | Path | None = None,
    batch: str | int = "dynamic",
    *,
    weights: bool = False,
    variant: str = "torchvision",
    class_names: Sequence[str] | None = None,
    max_images: int = MAX_PARITY_IMAGES,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a classifier, measure it against Keras, and write its model card.

    Args:
        source: a run directory, a ``.keras`` file, a weights-store name, or a
            ``keras.Model`` (see :func:`load_source`).
        format: ``savedmodel``, ``onnx`` or ``tflite``.
        out: the artefact's path (a folder for ``savedmodel``; for the others a file with
            the format's suffix, or a folder to write ``model.onnx`` / ``model.tflite`` in).
        quantize: ``none``; ``float16`` (tflite); ``dynamic-int8`` (tflite, onnx).
        data: images to compare on (their ``test``/``val`` split when present); default a
            fixed set of generated images. Labelled data also gives the accuracy change.
        batch: ``dynamic`` or a fixed batch size for the artefact's input.
        weights: ``source`` is a weights-store name (see :func:`load_source`).
        variant: the variant of stored weights (``source`` a weights name).
        class_names: class names for an in-memory model.
        max_images: compare on at most this many images of ``data``.
        progress: called with a short phrase before each step (for a CLI's stderr).

    Returns:
        An :class:`ExportResult`.

    Raises:
        UsageError: bad options; MissingExtraError: the export extra is not installed.
        CheckpointError: the source cannot be loaded.
        ExportError: conversion failed, or a float32 export differs from Keras by more
            than :data:`PARITY_ATOL` or in a top-1 class (then no card is written).
    """
    fixed_batch = check_options(format, quantize, batch)
    require_export_tools(format)
    path = artefact_path(out, format)
    card_path = card_path_for(path) if format != "savedmodel" else path / CARD_NAME
    fixed_batch = check_options(format, quantize, batch)
    require_export_tools(format)
    path = artefact_path(out, format)
    card_path = card_path_for(path) if format != "savedmodel" else path / CARD_NAME
    _refuse_foreign_card(card_path, path)
    say = progress or (lambda _msg: None)
    started = time.perf_counter()

    say("loading the model")
    src = load_source(source, weights=weights, variant=variant, class_names=class_names)
    temperature, calibration = _temperature(src)
    model = serving_model(src.model, temperature)
    from alexkit.loading import input_size_of

    size = int(model.input_shape[1] or src.config.get("image_size") or input_size_of(model))

    say(f"converting to {format}" + (f" ({quantize})" if quantize != "none" else ""))
    ops, lrn_ops = _convert_checked(model, format, path, quantize, _input_spec(size, fixed_batch))

    say("measuring parity with Keras")
    x, labels, images_from = _parity_images(data, src.class_names, src.config, size, max_images)
    parity = _compare_with_keras(model, format, path, quantize, x, labels, images_from)

    card = _card(
        src, model, format, path, quantize, fixed_batch, size, temperature, calibration, parity
    )
    card["artefact"]["ops"] = ops
    card["artefact"]["lrn_ops"] = lrn_ops
    from alexkit.paths import atomic_write_text

    atomic_write_text(card_path, json.dumps(card, indent=2) + "\n")
    return ExportResult(
        path=path,
        card_path=card_path,
        format=format,
        quantize=quantize,
        size_bytes=card["artefact"]["size_bytes"],
        parity=parity,
        ops=ops,
        lrn_ops=lrn_ops,
        seconds=time.perf_counter() - started,
        card=card,
    )
