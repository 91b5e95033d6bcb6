"""Classification metrics as arrays (``EvalReport``), and running a trained model on data.

``compute_report`` is pure numpy over ``(y_true, probs)`` so that every number can be
checked against scikit-learn; ``evaluate_model`` loads a run or a ``.keras`` file, streams
the data through it and hands the probabilities to ``compute_report``. Rendering (tables,
CSV, PNG) lives in :mod:`alexkit.report`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import CheckpointError, DataError, UsageError, one_line
from alexkit.metrics import average_precision, roc_auc, roc_curve

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalReport:
    """Everything ``alexkit evaluate`` reports, as numbers and arrays.

    Attributes:
        class_names: class names in model-output order.
        y_true: true labels (N,).
        y_pred: predicted labels (N,) (argmax; for binary tasks ``P(class 1) >= threshold``).
        probs: class probabilities (N, C).
        paths: item strings (N,) or None.
        accuracy: fraction of correct predictions.
        top5_accuracy: fraction with the true class among the 5 most probable (C > 5), else None.
        precision, recall, f1, support: per-class arrays (C,); 0 where undefined.
        macro, weighted: dicts with ``precision``, ``recall``, ``f1`` averages.
        confusion: counts (C, C), rows = true class, columns = predicted class.
        confusion_normalized: rows divided by their sum (rows with no samples stay 0).
        binary: for two classes, ROC AUC, PR AUC (average precision), sensitivity,
            specificity, threshold and the ROC curve; None otherwise.
        groups: clip/volume-level summary for media items (see :func:`group_report`).
        meta: free-form context (model, data, tta) copied into ``metrics.json``.
        group_eval: the full clip/volume-level ``EvalReport`` (one row per source;
            ``predictions`` of it go to ``group_predictions.csv``), or None.
    """

    class_names: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray
    paths: list[str] | None
    accuracy: float
    top5_accuracy: float | None
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    macro: dict[str, float]
    weighted: dict[str, float]
    confusion: np.ndarray
    confusion_normalized: np.ndarray
    binary: dict[str, Any] | None = None
    groups: dict[str, Any] | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    group_eval: EvalReport | None = dataclasses.field(default=None, repr=False)

    @property
    def num_samples(self) -> int:
        return int(self.y_true.shape[0])

    @property
    def misclassified(self) -> np.ndarray:
        """Indices of wrong predictions."""
        return np.flatnonzero(self.y_true != self.y_pred)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-sample arrays): the content of ``metrics.json``."""
        per_class = {
            name: {
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
                "f1": float(self.f1[i]),
                "support": int(self.support[i]),
            }
            for i, name in enumerate(self.class_names)
        }
        out: dict[str, Any] = {
            "accuracy": float(self.accuracy),
            "top5_accuracy": None if self.top5_accuracy is None else float(self.top5_accuracy),
            "num_samples": self.num_samples,
            "num_classes": len(self.class_names),
            "num_misclassified": int(self.misclassified.size),
            "class_names": list(self.class_names),
            "macro_avg": {k: float(v) for k, v in self.macro.items()},
            "weighted_avg": {k: float(v) for k, v in self.weighted.items()},
            "per_class": per_class,
            "confusion_matrix": self.confusion.astype(int).tolist(),
            "confusion_matrix_normalized": np.round(self.confusion_normalized, 6).tolist(),
        }
        if self.binary is not None:
            b = dict(self.binary)
            curve = b.pop("roc_curve", None)
            out["binary"] = _jsonable(b)
            if curve is not None:
                out["binary"]["roc_curve"] = {k: np.asarray(v).tolist() for k, v in curve.items()}
        if self.groups is not None:
            out["groups"] = _jsonable(self.groups)
        if self.meta:
            out["meta"] = _jsonable(self.meta)
        return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------- metrics


def compute_report(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    *,
    threshold: float = 0.5,
    paths: Sequence[str] | None = None,
) -> EvalReport:
    """Compute every metric ``alexkit evaluate`` reports from labels and probabilities.

    Args:
        y_true: true class indices (N,), each in ``[0, C)``.
        probs: predicted probabilities (N, C) (rows need not sum exactly to 1).
        class_names: the C class names, in column order.
        threshold: binary tasks only: predict class 1 when ``P(class 1) >= threshold``.
        paths: optional item strings, kept for ``predictions.csv``.

    Returns:
        The filled ``EvalReport``.

    Raises:
        UsageError: shapes disagree, labels are out of range or the threshold is not in (0, 1).
    """
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    names = [str(c) for c in class_names]
    num_classes = len(names)
    if probs.ndim != 2 or probs.shape != (y_true.shape[0], num_classes):
        raise UsageError(
            f"probabilities must have shape (N, C) = ({y_true.shape[0]}, {num_classes}); "
            f"received {probs.shape}."
        )
    if y_true.size == 0:
        raise DataError("no samples to evaluate: the data has no labelled, readable images.")
    if y_true.min() < 0 or y_true.max() >= num_classes:
        raise UsageError(f"labels must be in [0, {num_classes}); received {sorted(set(y_true))}.")
    if not 0.0 < threshold < 1.0:
        raise UsageError(f"--threshold must be in (0, 1); received {threshold}.")
    if paths is not None and len(paths) != y_true.shape[0]:
        raise UsageError(f"{len(paths)} paths for {y_true.shape[0]} samples.")

    if num_classes == 2:
        y_pred = (probs[:, 1] >= threshold).astype(np.int64)
    else:
        y_pred = probs.argmax(axis=1).astype(np.int64)

    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    tp = np.diag(confusion).astype(np.float64)
    # scikit-learn's zero_division=0: an undefined ratio counts as 0.
    precision = np.divide(tp, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(num_classes), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(num_classes), where=denom > 0)
    macro = {"precision": precision.mean(), "recall": recall.mean(), "f1": f1.mean()}
    weights = support / support.sum()
    weighted = {
        "precision": float(precision @ weights),
        "recall": float(recall @ weights),
        "f1": float(f1 @ weights),
    }
    macro = {k: float(v) for k, v in macro.items()}
    row_sums = support[:, None].astype(np.float64)
    normalized = np.divide(
        confusion, row_sums, out=np.zeros_like(confusion, dtype=np.float64), where=row_sums > 0
    )

    top5 = None
    if num_classes > 5:  # with exactly 5 classes top-5 is always 1.0: meaningless
        top = np.argsort(-probs, axis=1, kind="stable")[:, :5]
        top5 = float((top == y_true[:, None]).any(axis=1).mean())

    binary = None
    if num_classes == 2:
        scores = probs[:, 1]
        positive = y_true == 1
        fpr, tpr, thresholds = roc_curve(positive, scores)
        both = positive.any() and (~positive).any()
        binary = {
            "positive_class": names[1],
            "negative_class": names[0],
            "threshold": float(threshold),
            "roc_auc": roc_auc(positive, scores) if both else None,
            "pr_auc": average_precision(positive, scores) if positive.any() else None,
            "sensitivity": float(recall[1]),
            "specificity": float(recall[0]),
            "tp": int(confusion[1, 1]),
            "fn": int(confusion[1, 0]),
            "fp": int(confusion[0, 1]),
            "tn": int(confusion[0, 0]),
            "roc_curve": {"fpr": fpr, "tpr": tpr, "thresholds": thresholds},
        }

    return EvalReport(
        class_names=names,
        y_true=y_true,
        y_pred=y_pred,
        probs=probs,
        paths=None if paths is None else [str(p) for p in paths],
        accuracy=float((y_true == y_pred).mean()),
        top5_accuracy=top5,
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        macro=macro,
        weighted=weighted,
        confusion=confusion,
        confusion_normalized=normalized,
        binary=binary,
    )


# --------------------------------------------------------------------------- loading


def load_trained(path: str | Path) -> tuple[Any, list[str], dict[str, Any]]:
    """Load a trained classifier and its class names.

    Args:
        path: a run directory (``config.json`` + ``model.keras``) or a ``.keras`` file
            (class names from a sibling ``config.json`` when present, else ``"0".."N-1"``).

    Returns:
        ``(model, class_names, config)``; ``config`` is ``{}`` when there is none.

    Raises:
        CheckpointError: the path is missing, or the model or config cannot be read.
    """
    path = Path(path)
    if path.is_dir():
        model_path = path / "model.keras"
        config_path = path / "config.json"
        if not model_path.is_file():
            raise CheckpointError(
                f"{path} is not a run directory: no model.keras in it "
                "(pass a run directory from `alexkit finetune` or a .keras file)."
            )
    elif path.is_file():
        model_path = path
        config_path = path.parent / "config.json"
    else:
        raise CheckpointError(f"{path} does not exist: pass a run directory or a .keras file.")
    if model_path.suffix != ".keras":
        raise CheckpointError(f"{model_path} is not a .keras model file.")

    config: dict[str, Any] = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{config_path} is not valid JSON ({exc}).") from exc

    import keras

    import alexkit.layers  # noqa: F401  (registers the custom layers for deserialisation)

    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises many kinds for a bad archive
        raise CheckpointError(f"cannot load {model_path}: {one_line(exc, limit=10_000)}") from exc

    num_outputs = int(model.output_shape[-1])
    names = config.get("class_names")
    if names is None:
        names = [str(i) for i in range(num_outputs)]
    names = [str(n) for n in names]
    if len(names) != num_outputs:
        raise CheckpointError(
            f"{config_path} lists {len(names)} class_names but {model_path} has "
            f"{num_outputs} outputs: the config does not belong to this model."
        )
    return model, names, config


def model_image_size(model: Any, config: dict[str, Any] | None = None) -> int:
    """The square input size a model expects (config ``image_size`` or the input shape)."""
    if config and config.get("image_size"):
        return int(config["image_size"])
    shape = model.input_shape
    if shape[1] is None:
        return 227
    return int(shape[1])


def align_spec(spec: Any, class_names: Sequence[str], *, require_labels: bool = True) -> Any:
    """Re-index a ``DatasetSpec``'s labels to the model's class order.

    Raises:
        DataError: the data has classes the model does not know (listed), or no labels.
    """
    names = list(class_names)
    if getattr(spec, "is_tfrecord", False):  # labels live in the records: keep the model's map
        return dataclasses.replace(spec, class_names=tuple(names))
    used = sorted({spec.class_names[lbl] for lbl in spec.labels if lbl >= 0})
    unknown = [c for c in used if c not in names]
    if unknown:
        more = f" … (+{len(unknown) - 10})" if len(unknown) > 10 else ""
        shown = ", ".join(unknown[:10]) + more
        raise DataError(
            f"the data has {len(unknown)} class(es) the model does not know: {shown}; "
            f"the model knows: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}."
        )
    if require_labels and any(label < 0 for label in spec.labels):
        raise DataError(
            f"{spec.root}: some images have no label; evaluation needs labelled data "
            "(class folders or a manifest with a label column)."
        )
    index = {c: i for i, c in enumerate(names)}
    labels = tuple(index[spec.class_names[lbl]] if lbl >= 0 else -1 for lbl in spec.labels)
    return dataclasses.replace(spec, labels=labels, class_names=tuple(names))


def media_options_from_config(config: dict[str, Any] | None) -> Any:
    """The run's ``[media]`` recipe settings as ``MediaOptions`` (None when absent)."""
    table = ((config or {}).get("recipe") or {}).get("media")
    if not table:
        return None
    from alexkit.media import MediaOptions

    return MediaOptions.from_mapping(
        {k: v for k, v in table.items() if v is not None}, source="config.json"
    )


def load_eval_spec(
    source: str | Path,
    class_names: Sequence[str] | None = None,
    *,
    prefer_splits: Sequence[str] = ("test", "val"),
    media_options: Any = None,
) -> Any:
    """Load data for evaluation: never re-split, and one split when the source has several.

    A source with ``train/val/test`` folders is evaluated on ``test`` (else ``val``);
    ``prefer_splits=("train",)`` picks the training part (for a probe). With
    ``class_names`` the labels are re-indexed to that order (unknown classes refused).
    ``media_options`` expand clips and volumes as in training (see
    :func:`media_options_from_config`).
    """
    from alexkit.data import load_spec

    spec = load_spec(source, val_fraction=0.0, media_options=media_options)
    present = set(spec.splits)
    if len(present - {""}) >= 1:
        for split in prefer_splits:
            if split in present:
                spec = spec.subset(split)
                break
    return spec if class_names is None else align_spec(spec, class_names)


def evaluate_model(
    model_or_run: Any,
    spec_or_path: Any,
    *,
    tta: str = "center",
    batch_size: int = 32,
    threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
    config: dict[str, Any] | None = None,
    skipped: Any = None,
    progress: Any = None,
) -> EvalReport:
    """Run a trained classifier over labelled data and compute its ``EvalReport``.

    Args:
        model_or_run: a Keras model, or a run directory / ``.keras`` path for ``load_trained``.
        spec_or_path: a ``DatasetSpec`` or a data path for ``data.load_spec``.
        tta: ``"center"`` (one centre crop) or ``"ten-crop"`` (softmax averaged over 10 crops).
        batch_size: images per forward pass.
        threshold: binary decision threshold on ``P(class 1)``.
        class_names: class names when ``model_or_run`` is a model (default ``"0".."N-1"``).
        config: run config when ``model_or_run`` is a model (image size, grayscale).
        skipped: a ``data.SkipLog`` to collect unreadable images (created when None).
        progress: optional callable ``progress(n_done, n_total)`` called after each batch.

    Returns:
        The ``EvalReport`` (``meta`` holds tta, sample counts and skipped images).

    Raises:
        DataError: unknown classes, unlabelled or unreadable data.
        CheckpointError: the model cannot be loaded.
    """
    if tta not in ("center", "ten-crop"):
        raise UsageError(f"--tta must be 'center' or 'ten-crop'; received {tta!r}.")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1; received {batch_size}.")
    if isinstance(model_or_run, str | Path):
        model, names, config = load_trained(model_or_run)
    else:
        model = model_or_run
        names = list(class_names) if class_names else None
        if names is None:
            names = [str(i) for i in range(int(model.output_shape[-1]))]
        config = config or {}

    from alexkit import data as data_mod

    if isinstance(spec_or_path, str | Path):
        spec = load_eval_spec(spec_or_path, names, media_options=media_options_from_config(config))
    else:
        spec = align_spec(spec_or_path, names)

    from alexkit.inference import batch_predictor, predict_batches

    if skipped is None:
        skipped = data_mod.SkipLog()
    dataset = data_mod.make_dataset(
        spec,
        training=False,
        image_size=model_image_size(model, config),
        batch_size=batch_size,
        tta=tta,
        grayscale=bool(config.get("grayscale", False)),
        with_paths=True,
        skipped=skipped,
    )
    all_paths: list[str] = []
    labels, probs, _ = predict_batches(
        dataset,
        batch_predictor(model),
        items=all_paths,
        num_classes=len(names),
        progress=None if progress is None else (lambda done: progress(done, len(spec))),
    )
    if not len(probs):
        raise DataError(f"{spec.root}: no readable images to evaluate.")
    report = compute_report(
        labels,
        probs,
        names,
        threshold=threshold,
        paths=all_paths,
    )
    skipped_entries = list(getattr(skipped, "entries", []) or [])
    report.meta.update(
        {
            "tta": tta,
            "threshold": threshold,
            "data": str(getattr(spec, "root", "")),
            "skipped": [{"path": str(p), "reason": str(r)} for p, r in skipped_entries],
        }
    )
    if isinstance(model_or_run, str | Path):
        report.meta["model"] = str(model_or_run)
    report.group_eval = group_eval(report)
    report.groups = group_report(report, report.group_eval)
    return report


def _decode_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def group_eval(report: EvalReport) -> EvalReport | None:
    """The report one level up: one row per clip / volume / multi-frame file.

    Items ``path#member`` of one source (``alexkit.media.parse_item``) are aggregated by
    averaging their probabilities (``alexkit.media.aggregate``); the source's label is
    its items' common label. The returned report's ``paths`` are the source paths.
    None when no source has more than one item (plain images, single-slice DICOM), or
    when items of one source carry different labels (logged).
    """
    if not report.paths:
        return None
    from alexkit.media import aggregate, aggregate_labels

    keys, probs = aggregate(report.paths, report.probs, by="source")
    if len(keys) == len(report.paths):  # every item is its own source: nothing to aggregate
        return None
    try:
        _, truth = aggregate_labels(report.paths, report.y_true, by="source")
    except DataError as exc:
        # Per-slice labels (e.g. a manifest of RSNA slices) differ within a volume:
        # frame-level metrics still stand, a volume label does not exist.
        log.warning("no clip/volume-level metrics: %s", exc)
        return None
    group = compute_report(
        truth, probs, report.class_names, threshold=_threshold(report), paths=list(keys)
    )
    group.meta["level"] = _level(keys)
    return group


def _level(sources: Sequence[str]) -> str:
    """What the aggregated sources are, for headings: "clip", "volume" or "file"."""
    from alexkit.media import NIFTI_EXTENSIONS, VIDEO_EXTENSIONS

    kinds = set()
    for source in sources:
        name = source.lower()
        if any(name.endswith(ext) for ext in VIDEO_EXTENSIONS):
            kinds.add("clip")
        elif Path(source).is_dir() or any(name.endswith(ext) for ext in NIFTI_EXTENSIONS):
            kinds.add("volume")
        else:
            kinds.add("file")
    return kinds.pop() if len(kinds) == 1 else "file"


def group_report(report: EvalReport, group: EvalReport | None = None) -> dict[str, Any] | None:
    """Clip/volume-level metrics for ``metrics.json`` (``"groups"``), from :func:`group_eval`.

    Keys: ``level`` ("clip", "volume" or "file"), ``num_groups``, ``aggregation``,
    ``accuracy``, ``top5_accuracy``, ``macro_avg``, ``weighted_avg``, ``per_class``,
    ``confusion_matrix`` and, for two classes, ``binary`` (ROC/PR AUC, sensitivity,
    specificity; no curve). None when no item has members.
    """
    group = group if group is not None else group_eval(report)
    if group is None:
        return None
    full = group.to_dict()
    out = {
        "level": group.meta.get("level", "file"),
        "num_groups": group.num_samples,
        "aggregation": "mean probability over the frames/slices of each source",
        "accuracy": group.accuracy,
        "top5_accuracy": group.top5_accuracy,
        "macro_avg": full["macro_avg"],
        "weighted_avg": full["weighted_avg"],
        "per_class": full["per_class"],
        "confusion_matrix": full["confusion_matrix"],
    }
    if "binary" in full:
        binary = dict(full["binary"])
        binary.pop("roc_curve", None)
        out["binary"] = binary
        out["roc_auc"] = binary.get("roc_auc")  # kept at the top level for scripts
    return out


def _threshold(report: EvalReport) -> float:
    return float(report.binary["threshold"]) if report.binary else 0.5
