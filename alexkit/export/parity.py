"""Images to compare an export with Keras on, and the comparison itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import DataError
from alexkit.export.loader import _RUNNERS
from alexkit.export.options import (
    GENERATED_IMAGES,
    MAX_PARITY_IMAGES,
    PARITY_ATOL,
    ExportError,
)


def generated_images(size: int, n: int = GENERATED_IMAGES, seed: int = 0) -> np.ndarray:
    """A fixed, seeded set of [0, 255] float32 RGB images: noise, gradients, blocks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    images = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            img = rng.uniform(0, 255, (size, size, 3))
        elif kind == 1:
            a, b, c = rng.uniform(-1, 1, (3, 3))
            img = 127.5 + 127.5 * np.stack(
                [np.sin(3 * a[k] * xx + 3 * b[k] * yy + c[k] * 3) for k in range(3)], axis=-1
            )
        else:
            cells = rng.uniform(0, 255, (8, 8, 3))
            img = np.kron(cells, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
        images.append(np.clip(img, 0, 255))
    return np.stack(images).astype(np.float32)


def data_images(
    data: str | Path,
    class_names: Sequence[str],
    config: dict[str, Any],
    size: int,
    *,
    max_images: int = MAX_PARITY_IMAGES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Centre-cropped images of ``data`` (evaluation preprocessing) and their labels.

    The ``test`` split is used when there is one (else ``val``, else all), at most
    ``max_images`` of it (a seeded sample). Labels are -1 where unknown.
    """
    from alexkit import data as data_mod
    from alexkit.evaluate import align_spec, media_options_from_config

    spec = data_mod.load_spec(
        data, val_fraction=0.0, media_options=media_options_from_config(config)
    )
    split = ""
    for name in ("test", "val"):
        if name in set(spec.splits):
            spec, split = spec.subset(name), name
            break
    spec = align_spec(spec, class_names, require_labels=False)
    if not spec.is_tfrecord and len(spec) > max_images:
        keep = sorted(np.random.default_rng(seed).choice(len(spec), max_images, replace=False))
        spec = dataclasses.replace(
            spec,
            items=tuple(spec.items[i] for i in keep),
            labels=tuple(spec.labels[i] for i in keep),
            splits=tuple(spec.splits[i] for i in keep),
            groups=tuple(spec.groups[i] for i in keep),
        )
    dataset = data_mod.make_dataset(
        spec,
        training=False,
        image_size=size,
        batch_size=32,
        grayscale=bool(config.get("grayscale", False)),
        skipped=data_mod.SkipLog(),
    )
    xs, ys, total = [], [], 0
    for images, labels in dataset:
        xs.append(np.asarray(images, np.float32))
        ys.append(np.asarray(labels))
        total += len(xs[-1])
        if total >= max_images:
            break
    if not xs:
        raise DataError(f"{data}: no readable images to compare the export on.")
    x = np.concatenate(xs)[:max_images]
    y = np.concatenate(ys)[:max_images].astype(np.int64)
    return x, y, f"{data}{f' ({split} split)' if split else ''}"


def measure_parity(
    keras_probs: np.ndarray, exported_probs: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, Any]:
    """Compare two probability arrays row by row.

    Returns:
        ``max_abs_diff``, ``mean_abs_diff``, ``top1_agreement`` (fraction),
        ``top1_disagreements`` (count), ``num_images``; with labels (all >= 0) also
        ``accuracy_keras``, ``accuracy_exported`` and ``accuracy_change`` (exported - keras).
    """
    a = np.asarray(keras_probs, np.float64)
    b = np.asarray(exported_probs, np.float64)
    if a.shape != b.shape:
        raise ExportError(f"the export returns shape {b.shape}; Keras returns {a.shape}.")
    diff = np.abs(a - b)
    same = a.argmax(axis=1) == b.argmax(axis=1)
    out: dict[str, Any] = {
        "num_images": int(len(a)),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "top1_agreement": float(same.mean()) if len(same) else 1.0,
        "top1_disagreements": int((~same).sum()),
    }
    if labels is not None and len(labels) and bool(np.all(labels >= 0)):
        acc_a = float((a.argmax(axis=1) == labels).mean())
        acc_b = float((b.argmax(axis=1) == labels).mean())
        out.update(
            {"accuracy_keras": acc_a, "accuracy_exported": acc_b, "accuracy_change": acc_b - acc_a}
        )
    return out


def _keras_probs(model: Any, x: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate(
        [np.asarray(model.predict_on_batch(x[i : i + batch])) for i in range(0, len(x), batch)]
    )


def _parity_images(
    data: str | Path | None,
    class_names: Sequence[str],
    config: dict[str, Any],
    size: int,
    max_images: int,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Images to compare on: from ``data`` (with labels), or the generated set."""
    if data is not None:
        return data_images(data, class_names, config, size, max_images=max_images)
    x = generated_images(size)
    return x, None, f"{len(x)} generated images (seed 0)"


def _compare_with_keras(
    model: Any,
    fmt: str,
    path: Path,
    quantize: str,
    x: np.ndarray,
    labels: np.ndarray | None,
    images_from: str,
) -> dict[str, Any]:
    """Run the written artefact and ``model`` on ``x``; the parity dict for the card.

    Raises:
        ExportError: a float32 export differs by more than :data:`PARITY_ATOL` or in a
            top-1 class.
    """
    reference = _keras_probs(model, x)
    exported = _RUNNERS[fmt](path)(x)
    parity = measure_parity(reference, exported, labels)
    parity.update({"images": images_from, "tolerance": PARITY_ATOL})
    if quantize == "none":
        ok = parity["max_abs_diff"] <= PARITY_ATOL and parity["top1_disagreements"] == 0
        if not ok:
            raise ExportError(
                f"{path} does not match the Keras model: max |dp| "
                f"{parity['max_abs_diff']:.3g} (allowed {PARITY_ATOL:g}), top-1 differs on "
                f"{parity['top1_disagreements']} of {parity['num_images']} images; the file "
                "is left for inspection and no model card was written."
            )
        parity["claimed"] = True
    else:
        parity["claimed"] = False
        parity["note"] = (
            f"{quantize} is not expected to match float32 Keras to {PARITY_ATOL:g}; "
            + (
                "accuracy change measured on the labelled data above."
                if "accuracy_change" in parity
                else "no labelled --data was given, so the accuracy change was not measured."
            )
        )
    return parity
