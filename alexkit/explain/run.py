"""Whole datasets: :func:`explain_data` writes overlays, ``explain.csv``, ``maps.npz``."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import DataError, UsageError
from alexkit.explain.cam import METHODS, Explainer, gradcam
from alexkit.explain.files import _NpzWriter, overlay_name, prepare_out, relative_key
from alexkit.explain.occlude import baseline_colour, occlusion
from alexkit.explain.render import _title, check_colormap, render_overlay
from alexkit.explain.sanity import sanity_checks
from alexkit.explain.stats import center_share, peak

CSV_COLUMNS = (
    "path",
    "true",
    "predicted",
    "probability",
    "target",
    "target_probability",
    "peak_row",
    "peak_col",
    "center_share",
    "overlay",
)


def explain_batch(
    explainer: Explainer,
    images: Any,
    targets: Any = None,
    *,
    method: str = "gradcam",
    occlusion_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps at input resolution, probabilities and targets of one batch, by ``method``."""
    if method == "occlusion":
        return occlusion(
            explainer.model, images, targets, explainer=explainer, **(occlusion_options or {})
        )
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}; received {method!r}.")
    return gradcam(explainer.model, images, targets, method=method, explainer=explainer)


@dataclasses.dataclass
class ExplainResult:
    """What :func:`explain_data` wrote.

    Attributes:
        out: the output folder.
        rows: one dict per explained item (the rows of ``explain.csv``).
        method, layer: what was computed.
        images: items explained.
        seconds: wall time of the loop (data, maps, overlays).
        map_seconds: time spent computing maps only.
        skipped: (path, reason) for unreadable inputs.
        files: name → path of what was written.
        sanity: :meth:`SanityReport.to_dict` when asked for, else None.
        precision: ``PrecisionChoice.as_dict()`` when a precision was asked for, else None.
        blank_maps: items whose map has no positive heat
            (:func:`alexkit.explain.stats.is_blank`): their ``center_share`` is None (an
            empty cell in ``explain.csv``), and so are ``peak_row``/``peak_col`` when the
            map is constant (all zero).
    """

    out: Path
    rows: list[dict[str, Any]]
    method: str
    layer: str
    images: int
    seconds: float
    map_seconds: float
    skipped: list[tuple[str, str]]
    files: dict[str, Path]
    sanity: dict[str, Any] | None = None
    precision: dict[str, str] | None = None
    blank_maps: int = 0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def maps_per_second(self) -> float:
        return self.images / self.map_seconds if self.map_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "method": self.method,
            "layer": self.layer,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "maps_per_second": round(self.maps_per_second, 2),
            "files": {k: str(v) for k, v in self.files.items()},
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "sanity": self.sanity,
            "precision": self.precision,
            "blank_maps": self.blank_maps,
            "rows": self.rows,
        }


def resolve_target(target: str, class_names: Sequence[str]) -> int:
    """``"predicted"`` → -1, ``"true"`` → -2, a class name (or index) → its index."""
    if target == "predicted":
        return -1
    if target == "true":
        return -2
    names = list(class_names)
    if target in names:
        return names.index(target)
    if target.isdigit() and int(target) < len(names):
        return int(target)
    shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
    raise UsageError(
        f"--class must be predicted, true or a class name ({shown}); received {target!r}."
    )


def explain_data(
    model: Any,
    spec: Any,
    out: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    method: str = "gradcam",
    layer: str = "conv5",
    target: str = "predicted",
    alpha: float = 0.4,
    colormap: str = "jet",
    save_maps: bool = False,
    image_size: int | None = None,
    grayscale: bool = False,
    batch_size: int = 32,
    patch: int = 32,
    stride: int = 16,
    baseline: str | float = "mean",
    score: str = "probability",
    limit: int | None = None,
    force: bool = False,
    overlays: bool = True,
    sanity: bool = False,
    skipped: Any = None,
    progress: Callable[[int, int], None] | None = None,
    precision: Any = None,
) -> ExplainResult:
    """Explain every item of ``spec``: overlay PNGs, ``explain.csv`` and ``maps.npz``.

    Items are read with the evaluation preprocessing (``make_dataset(training=False)``:
    resize, centre crop, ``grayscale`` as trained); clips and volumes arrive as one item
    per frame / slice. Maps are at the model's input resolution (the centre crop).

    Args:
        model: a Keras classifier taking raw [0, 255] RGB.
        spec: a ``data.DatasetSpec`` (labels -1 where unknown), in the model's class order.
        out: output folder (refused when it holds files, unless ``force``).
        class_names: the model's class names (default ``"0".."C-1"``).
        method: ``gradcam``, ``gradcam++`` or ``occlusion``.
        layer: convolutional layer for the gradient methods.
        target: ``predicted``, ``true`` or a class name: whose evidence to map.
        alpha, colormap: the overlay's heat-map opacity and colours.
        save_maps: also write ``maps.npz`` (float32 (H, W) per item, keyed by its path
            relative to the data root; Grad-CAM in logit units, occlusion in score drop).
        image_size: input size (default the model's).
        grayscale: decode as grayscale (as the model was trained).
        batch_size: images per pass (occlusion: occluded copies per pass).
        patch, stride, baseline, score: occlusion options (see :func:`occlusion`).
        limit: explain at most this many items.
        force: replace the outputs of an earlier run in ``out``.
        overlays: write the overlay PNGs (off: CSV and maps only).
        sanity: also run :func:`sanity_checks` on up to 16 images of the first batch
            (gradient methods only) and write ``sanity.json``.
        skipped: a ``data.SkipLog`` for unreadable inputs.
        progress: ``progress(done, total)`` after each batch.
        precision: compute in ``float32``, ``mixed_bfloat16``, ``auto`` or a
            ``PrecisionChoice`` (:func:`alexkit.loading.apply_precision`); None: as the
            model is. Maps and gradients are read in float32 either way.

    Returns:
        An :class:`ExplainResult`.

    Raises:
        UsageError: bad method, layer, class, alpha or colormap.
        DataError: ``--class true`` on unlabelled items; nothing readable.
        CheckpointError: ``out`` holds files and ``force`` is not set.
    """
    from alexkit import data as data_mod
    from alexkit.loading import apply_precision

    _check_options(method, alpha, batch_size, limit, colormap)
    model, choice = apply_precision(model, precision)
    explainer = Explainer(model, layer)
    names, wanted = _targets(class_names, target, spec, explainer.num_classes)
    occ = _occlusion_options(model, method, sanity, batch_size, patch, stride, baseline, score)
    spec = _first_items(spec, limit)
    out = prepare_out(out, force)
    skipped = skipped if skipped is not None else data_mod.SkipLog()
    size = int(image_size or explainer.input_size[0])
    settings = _Settings(
        explainer=explainer, names=names, wanted=wanted, method=method, layer=layer, occ=occ,
        out=out, root=_data_root(spec), alpha=alpha, colormap=colormap, grayscale=grayscale,
        overlays=overlays, save_maps=save_maps, map_label=_map_label(method, score),
    )  # fmt: skip
    dataset = data_mod.make_dataset(
        spec,
        training=False,
        image_size=size,
        batch_size=batch_size if method != "occlusion" else max(1, min(batch_size, 8)),
        grayscale=grayscale,
        with_paths=True,
        skipped=skipped,
    )
    npz = _NpzWriter(out / "maps.npz") if save_maps else None
    started = time.perf_counter()
    if progress is not None:
        progress(0, len(spec))  # start the clock (img/s) before the first batch
    rows, map_seconds, first = _explain_batches(dataset, settings, npz, len(spec), progress)
    seconds = time.perf_counter() - started
    result = _finish(model, spec, rows, first, settings, seconds, map_seconds, skipped, sanity)
    result.precision = None if choice is None else choice.as_dict()
    return result


def _check_options(
    method: str, alpha: float, batch_size: int, limit: int | None, colormap: str
) -> None:
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}; received {method!r}.")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1]; received {alpha}.")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1; received {batch_size}.")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1; received {limit}.")
    check_colormap(colormap)


def _targets(
    class_names: Sequence[str] | None, target: str, spec: Any, num_classes: int
) -> tuple[list[str], int]:
    """The class names and the wanted class (-1 predicted, -2 true); refused when unusable."""
    names = [str(c) for c in class_names] if class_names else None
    names = names or [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise UsageError(f"{len(names)} class names for a model with {num_classes}.")
    wanted = resolve_target(target, names)
    if wanted == -2 and any(lbl < 0 for lbl in spec.labels):
        raise DataError("--class true needs labelled data (class folders or a manifest label).")
    return names, wanted


def _occlusion_options(
    model: Any,
    method: str,
    sanity: bool,
    batch_size: int,
    patch: int,
    stride: int,
    baseline: str | float,
    score: str,
) -> dict[str, Any]:
    occ: dict[str, Any] = {"patch": patch, "stride": stride, "baseline": baseline, "score": score}
    if sanity and method == "occlusion":
        raise UsageError("--sanity-check applies to gradcam and gradcam++, not occlusion.")
    if method == "occlusion":
        baseline_colour(model, baseline)  # refuse a bad baseline before reading anything
        occ["batch_size"] = batch_size
    return occ


def _first_items(spec: Any, limit: int | None) -> Any:
    if limit is not None and limit < len(spec):
        spec = dataclasses.replace(
            spec,
            items=spec.items[:limit],
            labels=spec.labels[:limit],
            splits=spec.splits[:limit],
            groups=spec.groups[:limit],
        )
    return spec


def _data_root(spec: Any) -> Any:
    """The folder item keys are relative to: the data root, else the items' common folder."""
    root = (
        spec.root
        if spec.root and Path(spec.root).is_dir()
        else (Path(spec.root).parent if spec.root else None)
    )
    if root is None and len(spec):
        from alexkit.media import parse_item

        sources = [os.path.dirname(os.path.abspath(parse_item(i)[0])) for i in spec.items]
        root = os.path.commonpath(sources)
    return root


def _map_label(method: str, score: str) -> str:
    return {
        "gradcam": "Grad-CAM (scaled to max)",
        "gradcam++": "Grad-CAM++ (scaled to max)",
        "occlusion": f"drop in {'P' if score == 'probability' else 'logit'}(target)",
    }[method]


@dataclasses.dataclass(frozen=True)
class _Settings:
    """What every batch of one :func:`explain_data` call shares."""

    explainer: Explainer
    names: list[str]
    wanted: int  # a class index; -1 the predicted class, -2 the true one
    method: str
    layer: str
    occ: dict[str, Any]
    out: Path
    root: Any
    alpha: float
    colormap: str
    grayscale: bool
    overlays: bool
    save_maps: bool
    map_label: str


def _explain_batches(
    dataset: Any,
    settings: _Settings,
    npz: _NpzWriter | None,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[dict[str, Any]], float, np.ndarray | None]:
    """Maps, rows, overlays and ``maps.npz`` entries of every batch.

    Returns:
        ``(rows, seconds spent computing maps, up to 16 images of the first batch)``.
    """
    from alexkit.inference import as_text

    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    map_seconds = 0.0
    first: np.ndarray | None = None
    ok = False
    try:
        for batch in dataset:
            images = np.asarray(batch[0], np.float32)
            labels = np.asarray(batch[1]).astype(np.int64)
            items = [as_text(s) for s in np.asarray(batch[2]).tolist()]
            if first is None:
                first = images[:16]
            t = labels if settings.wanted == -2 else np.full(len(items), settings.wanted)
            tick = time.perf_counter()
            maps, probs, chosen = explain_batch(
                settings.explainer,
                images,
                t,
                method=settings.method,
                occlusion_options=settings.occ,
            )
            map_seconds += time.perf_counter() - tick
            for k, item in enumerate(items):
                key = relative_key(item, settings.root)
                row = _explain_item(
                    key, images[k], maps[k], labels[k], probs[k], int(chosen[k]), used, settings
                )
                if npz is not None:
                    npz.add(key, maps[k].astype(np.float32))
                rows.append(row)
            if progress is not None:
                progress(len(rows), total)
        ok = True
    finally:
        if npz is not None:
            npz.close(ok and bool(rows))
    return rows, map_seconds, first


def _explain_item(
    key: str,
    image: np.ndarray,
    heat: np.ndarray,
    label: int,
    probs: np.ndarray,
    chosen: int,
    used: set[str],
    settings: _Settings,
) -> dict[str, Any]:
    """One item's ``explain.csv`` row; writes its overlay PNG when overlays are on."""
    names = settings.names
    pred = int(probs.argmax())
    true = names[label] if label >= 0 else None
    top = peak(heat)
    share = center_share(heat)
    row = {
        "path": key,
        "true": true if true is not None else "",
        "predicted": names[pred],
        "probability": round(float(probs[pred]), 6),
        "target": names[chosen],
        "target_probability": round(float(probs[chosen]), 6),
        "peak_row": None if top is None else top[0],
        "peak_col": None if top is None else top[1],
        "center_share": None if share is None else round(share, 6),
        "overlay": "",
    }
    if settings.overlays:
        name = overlay_name(key, used)
        png = render_overlay(
            image,
            heat,
            _title(
                key,
                true,
                names[pred],
                float(probs[pred]),
                row["target"],
                settings.method,
                settings.layer,
            ),
            alpha=settings.alpha,
            colormap=settings.colormap,
            gray=True if settings.grayscale else None,
            label=settings.map_label,
            signed=settings.method == "occlusion",
        )
        path = settings.out / "overlays" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        row["overlay"] = f"overlays/{name}"
    return row


def _finish(
    model: Any,
    spec: Any,
    rows: list[dict[str, Any]],
    first: np.ndarray | None,
    settings: _Settings,
    seconds: float,
    map_seconds: float,
    skipped: Any,
    sanity: bool,
) -> ExplainResult:
    """Write ``explain.csv`` (and ``sanity.json``) and say what was written.

    Raises:
        DataError: no item could be read.
    """
    entries = [(str(p), str(r)) for p, r in (getattr(skipped, "entries", None) or [])]
    if not rows:
        raise DataError(f"none of the {len(spec)} images could be read (first: {entries[:1]}).")
    from alexkit.paths import atomic_write_text

    out = settings.out
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "explain.csv", buf.getvalue())
    files = {"explain.csv": out / "explain.csv"}
    report = None
    if sanity and first is not None:
        import json

        report = sanity_checks(model, first, layer=settings.layer, method=settings.method).to_dict()
        atomic_write_text(out / "sanity.json", json.dumps(report, indent=2) + "\n")
        files["sanity.json"] = out / "sanity.json"
    if settings.overlays:
        files["overlays"] = out / "overlays"
    if settings.save_maps:
        files["maps.npz"] = out / "maps.npz"
    return ExplainResult(
        out=out,
        rows=rows,
        method=settings.method,
        layer=settings.layer if settings.method != "occlusion" else "",
        images=len(rows),
        blank_maps=sum(row["center_share"] is None for row in rows),
        seconds=seconds,
        map_seconds=map_seconds,
        skipped=entries,
        files=files,
        sanity=report,
    )
