"""Class probabilities for individual images or folders (``alexkit predict``)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.data.decode import IMAGE_EXTENSIONS
from alexkit.errors import DataError, UsageError


def _media_extensions() -> set[str]:
    from alexkit.media import MEDIA_EXTENSIONS

    return set(MEDIA_EXTENSIONS)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def collect_images(
    inputs: Sequence[str | os.PathLike],
    media_options: Any = None,
    skipped: list[tuple[str, str]] | None = None,
) -> list[str]:
    """Expand files and folders (recursively, sorted) into image paths and media items.

    Clips, DICOM files, NIfTI volumes and DICOM series folders become one item per
    sampled frame / slice (``alexkit.media.expand`` with ``media_options``).

    Args:
        inputs: image/media files, folders, or ``path#member`` items.
        media_options: ``alexkit.media.MediaOptions`` (default sampling when None).
        skipped: collects ``(path, reason)`` for clips/volumes that cannot be read.

    Raises:
        DataError: an input does not exist, or nothing usable was found.
        MissingExtraError: media inputs without the extra that reads them.
    """
    from alexkit.data import UNREADABLE_MEDIA, collect_items, expand_media, is_series_folder

    def expand(path: Path) -> list[str]:
        return [item for item, _group in expand_media(path, media_options, broken)]

    media = _media_extensions()
    found: list[str] = []
    broken: list[tuple[str, str]] = []
    for raw in inputs:
        path = Path(raw)
        if "#" in str(raw) and not path.exists():  # a media member: video.mp4#frame=12
            found.append(str(raw))
        elif path.is_dir() and media and is_series_folder(path):
            found.extend(expand(path))  # a DICOM series given itself: one volume
        elif path.is_dir():
            ignored: list[tuple[str, str]] = []
            pairs = collect_items(path, media_options, ignored)
            broken.extend((p, r) for p, r in ignored if r.startswith(UNREADABLE_MEDIA))
            found.extend(item for item, _group in pairs)
        elif path.is_file() and _suffix(path) in media:
            found.extend(expand(path))
        elif path.is_file():
            found.append(str(path))
        else:
            raise DataError(f"{raw} does not exist: pass image files or folders of images.")
    if skipped is not None:
        skipped.extend(broken)
    if not found:
        why = f"; unreadable: {broken[0][0]}: {broken[0][1]}" if broken else ""
        raise DataError(
            f"no images found in {', '.join(map(str, inputs))} "
            f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS | media))}){why}."
        )
    return found


def make_spec(items: Sequence[str], class_names: Sequence[str], root: str = "") -> Any:
    """An unlabelled ``data.DatasetSpec`` over ``items``."""
    from alexkit.data import DatasetSpec

    n = len(items)
    return DatasetSpec(
        items=tuple(items),
        labels=(-1,) * n,
        class_names=tuple(class_names),
        splits=("",) * n,
        groups=tuple(items),
        root=root,
    )


@dataclasses.dataclass
class Predictions:
    """Probabilities per readable image, in input order (unreadable ones are skipped)."""

    items: list[str]
    probs: np.ndarray
    class_names: list[str]
    skipped: list[tuple[str, str]]
    precision: dict[str, str] | None = None  # PrecisionChoice.as_dict() when one was asked

    def top(self, k: int = 5, probs: np.ndarray | None = None) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable (class, probability) per image (or per row of ``probs``)."""
        probs = self.probs if probs is None else probs
        k = min(k, len(self.class_names))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [
            [(self.class_names[j], float(probs[i, j])) for j in row] for i, row in enumerate(order)
        ]

    def by_source(self) -> tuple[list[str], np.ndarray, list[int]]:
        """Probabilities averaged per clip / volume (``alexkit.media.aggregate``).

        Returns:
            (source paths in input order, (S, C) mean probabilities, items per source);
            a plain image is its own source.
        """
        from alexkit.media import aggregate, parse_item

        sources, probs = aggregate(self.items, self.probs, by="source")
        counts: dict[str, int] = {}
        for item in self.items:
            key = parse_item(item)[0]
            counts[key] = counts.get(key, 0) + 1
        return sources, probs, [counts[s] for s in sources]

    def to_records(self, k: int = 5, per_frame: bool = False) -> list[dict[str, Any]]:
        """JSON-able rows: path, predicted class, its probability, top-k list.

        One row per image and per clip/volume (mean of its frames'/slices'
        probabilities, with ``frames``: how many); ``per_frame`` gives a row per item.
        """
        if per_frame:
            paths, probs, counts = list(self.items), self.probs, [1] * len(self.items)
        else:
            paths, probs, counts = self.by_source()
        rows = []
        for path, top, n in zip(paths, self.top(k, probs), counts, strict=True):
            row = {
                "path": path,
                "predicted": top[0][0],
                "probability": top[0][1],
                "top_k": [{"class": c, "probability": p} for c, p in top],
            }
            if n > 1:
                row["frames"] = n
            rows.append(row)
        return rows


def predict_images(
    model: Any,
    class_names: Sequence[str],
    inputs: Sequence[str | os.PathLike],
    *,
    batch_size: int = 32,
    image_size: int | None = None,
    grayscale: bool = False,
    skipped: Any = None,
    progress: Callable[[int, int], None] | None = None,
    media_options: Any = None,
    precision: Any = None,
) -> Predictions:
    """Run a classifier over image files/folders with the evaluation preprocessing.

    Args:
        model: a Keras classifier taking raw [0, 255] RGB.
        class_names: names of the model's outputs.
        inputs: image files and/or folders (searched recursively).
        batch_size: images per forward pass.
        image_size: input size (default: the model's).
        grayscale: decode as grayscale replicated to RGB (as the model was trained).
        skipped: a ``data.SkipLog`` for unreadable images.
        progress: ``progress(done, total)`` after each batch.
        media_options: how clips/volumes expand into frames/slices (a run's
            ``[media]`` recipe settings; see ``evaluate.media_options_from_config``).
        precision: compute in ``float32``, ``mixed_bfloat16``, ``auto`` or a
            ``PrecisionChoice`` (:func:`alexkit.loading.apply_precision`); None: as the
            model is. Probabilities are float32 either way (the output layer stays so).

    Returns:
        ``Predictions`` (probabilities (N, C) in input order).
    """
    from alexkit import data as data_mod
    from alexkit.inference import batch_predictor, predict_batches
    from alexkit.loading import apply_precision, input_size_of

    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1; received {batch_size}.")
    model, choice = apply_precision(model, precision)
    names = [str(c) for c in class_names]
    if len(names) != int(model.output_shape[-1]):
        raise UsageError(f"{len(names)} class names for a model with {model.output_shape[-1]}.")
    if skipped is None:
        skipped = data_mod.SkipLog()
    broken: list[tuple[str, str]] = []
    items = collect_images(inputs, media_options, broken)
    for path, reason in broken:
        skipped.add(path, reason)
    spec = make_spec(items, names)
    dataset = data_mod.make_dataset(
        spec,
        training=False,
        image_size=image_size or input_size_of(model),
        batch_size=batch_size,
        grayscale=grayscale,
        with_paths=True,
        skipped=skipped,
    )
    got_items: list[str] = []
    _, probs, done = predict_batches(
        dataset,
        batch_predictor(model),
        items=got_items,
        num_classes=len(names),
        progress=None if progress is None else (lambda n: progress(n, len(items))),
    )
    entries = [(str(p), str(r)) for p, r in (getattr(skipped, "entries", None) or [])]
    if not done:
        raise DataError(f"none of the {len(items)} images could be read (first: {entries[:1]}).")
    precision_used = None if choice is None else choice.as_dict()
    return Predictions(got_items, probs.astype(np.float32), names, entries, precision_used)
