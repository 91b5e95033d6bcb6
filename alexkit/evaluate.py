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
        item_groups: per item, the unit the bootstrap resamples (patient/series group,
            else the clip/volume file, else the item itself).
        intervals: confidence intervals (:class:`alexkit.stats.Intervals`), or None.
        calibration: ECE, Brier, NLL and reliability bins
            (:func:`alexkit.calibration.calibration_summary`), plus the temperature applied.
        operating_points: binary tasks: metrics at the run's saved thresholds, or None.
        leakage: overlap with the run's training/validation data, or None when unchecked.
        subgroups: per-attribute, per-value metrics with intervals, or None.
        explanations: Grad-CAM overlay PNGs of the report's gallery items, keyed by item
            index (``evaluate --explain``), or None; not part of ``metrics.json``.
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
    item_groups: list[str] | None = dataclasses.field(default=None, repr=False)
    intervals: Any = dataclasses.field(default=None, repr=False)
    calibration: dict[str, Any] | None = None
    operating_points: dict[str, Any] | None = None
    leakage: dict[str, Any] | None = None
    subgroups: dict[str, Any] | None = None
    explanations: dict[int, bytes] | None = dataclasses.field(default=None, repr=False)

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
        if self.intervals is not None:
            out.update(intervals_dict(self.intervals))
        if self.calibration is not None:
            out["calibration"] = _jsonable(self.calibration)
        if self.operating_points is not None:
            out["operating_points"] = _jsonable(self.operating_points)
        if self.leakage is not None:
            out["leakage"] = _jsonable(self.leakage)
        if self.subgroups is not None:
            out["subgroups"] = _jsonable(self.subgroups)
        if self.meta:
            out["meta"] = _jsonable(self.meta)
        return out


def intervals_dict(intervals: Any) -> dict[str, Any]:
    """``ci``, ``ci_level``, ``ci_method`` and ``ci_bootstrap`` for ``metrics.json``.

    ``ci`` and ``ci_method`` are keyed by the dotted path of the point estimate in
    ``metrics.json`` (``accuracy``, ``macro_avg.f1``, ``per_class.<name>.recall``,
    ``binary.roc_auc``, …); an undefined bound is null.
    """
    return {
        "ci": {k: [_finite(lo), _finite(hi)] for k, (lo, hi) in intervals.ci.items()},
        "ci_level": intervals.level,
        "ci_method": dict(intervals.method),
        "ci_bootstrap": {
            "kind": "percentile",
            "n_boot": intervals.n_boot,
            "seed": intervals.seed,
            "resampled": "groups" if intervals.clustered else "items",
            "num_units": intervals.num_groups,
        },
    }


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


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
    groups: Sequence[str] | None = None,
    ci_level: float | None = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> EvalReport:
    """Compute every metric ``alexkit evaluate`` reports from labels and probabilities.

    Args:
        y_true: true class indices (N,), each in ``[0, C)``.
        probs: predicted probabilities (N, C) (rows need not sum exactly to 1).
        class_names: the C class names, in column order.
        threshold: binary tasks only: predict class 1 when ``P(class 1) >= threshold``.
        paths: optional item strings, kept for ``predictions.csv``.
        groups: per-item group ids (patient, series; "" for none) for the bootstrap.
            Items without a group are grouped by their source file (frames of one clip,
            slices of one volume) when ``paths`` are given, else stand alone.
        ci_level: confidence level of the intervals (:mod:`alexkit.stats`); None skips them.
        n_boot: bootstrap resamples (0: closed-form intervals only).
        seed: bootstrap seed.

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
            "ppv": float(precision[1]),
            "npv": float(precision[0]),
            "tp": int(confusion[1, 1]),
            "fn": int(confusion[1, 0]),
            "fp": int(confusion[0, 1]),
            "tn": int(confusion[0, 0]),
            "roc_curve": {"fpr": fpr, "tpr": tpr, "thresholds": thresholds},
        }

    item_groups = resampling_units(paths, groups, y_true.shape[0])
    intervals = None
    if ci_level is not None:
        from alexkit.stats import metric_intervals

        intervals = metric_intervals(
            y_true,
            y_pred,
            probs,
            names,
            level=ci_level,
            n_boot=n_boot,
            seed=seed,
            groups=item_groups,
        )
    from alexkit.calibration import calibration_summary

    return EvalReport(
        class_names=names,
        y_true=y_true,
        y_pred=y_pred,
        probs=probs,
        item_groups=item_groups,
        intervals=intervals,
        calibration=calibration_summary(y_true, probs),
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


def resampling_units(
    paths: Sequence[str] | None, groups: Sequence[str] | None, n: int
) -> list[str] | None:
    """Per item, what the bootstrap resamples: its group, else its source file, else itself.

    None when every item stands alone (nothing to cluster).
    """
    if groups is not None and len(groups) != n:
        raise UsageError(f"{len(groups)} groups for {n} samples.")
    if paths is None and groups is None:
        return None
    from alexkit.media import parse_item

    units = []
    for i in range(n):
        g = str(groups[i]) if groups is not None and groups[i] else ""
        if not g and paths is not None:
            source, fields = parse_item(str(paths[i]))
            g = f"source:{source}" if fields else ""
        units.append(g)
    return units if any(units) else None


# --------------------------------------------------------------------------- loading


def load_trained(path: str | Path) -> tuple[Any, list[str], dict[str, Any]]:
    """Load a trained classifier and its class names.

    Args:
        path: a run directory (``config.json`` + ``model.keras``), a ``.keras`` file
            (class names from a sibling ``config.json`` when present, else ``"0".."N-1"``),
            or a file ``alexkit export`` wrote (``.onnx``, ``.tflite``, a SavedModel
            folder): class names, input size and run config from its ``model-card.json``.

    Returns:
        ``(model, class_names, config)``; ``config`` is ``{}`` when there is none.

    Raises:
        CheckpointError: the path is missing, or the model or config cannot be read.
    """
    path = Path(path)
    if is_exported(path):
        from alexkit.export import load_exported

        exported = load_exported(path)
        return exported, list(exported.class_names), dict(exported.config)
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


def is_exported(path: str | Path) -> bool:
    """A model ``alexkit export`` wrote: ``.onnx``, ``.tflite`` or a SavedModel folder."""
    path = Path(path)
    return path.suffix in (".onnx", ".tflite") or (path / "saved_model.pb").is_file()


def run_dir_of(model_or_run: Any) -> Path | None:
    """The run directory whose ``calibration.json`` / ``data-hashes.json`` apply, or None.

    A run directory is itself; a ``.keras`` file's folder plays that part (as for its
    ``config.json`` in :func:`load_trained`); an in-memory model has none, and neither
    has an exported file (its temperature is already inside it).
    """
    if not isinstance(model_or_run, str | Path) or is_exported(model_or_run):
        return None
    path = Path(model_or_run)
    return path if path.is_dir() else path.parent


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
    ci_level: float | None = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    calibrate: bool = True,
    subgroups: str | Path | None = None,
    check_leaks: bool = True,
    explain: bool = False,
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
        ci_level: confidence level of the intervals; None for none.
        n_boot: bootstrap resamples (groups of the data are resampled whole).
        seed: bootstrap seed.
        calibrate: apply the run's saved temperature (``calibration.json``) to the
            probabilities; False reports the raw ones. Saved thresholds are reported
            either way (converted to the raw scale when uncalibrated).
        subgroups: a CSV (``path`` + attribute columns) for per-subgroup metrics.
        check_leaks: compare the items with the run's ``data-hashes.json`` when present.
        explain: also draw Grad-CAM overlays (conv5, the predicted class) of the items
            the HTML report's gallery shows (``report.explanations``).

    Returns:
        The ``EvalReport`` (``meta`` holds tta, sample counts and skipped images).

    Raises:
        DataError: unknown classes, unlabelled or unreadable data, a bad subgroup CSV.
        CheckpointError: the model, its calibration or its hashes cannot be loaded.
    """
    if tta not in ("center", "ten-crop"):
        raise UsageError(f"--tta must be 'center' or 'ten-crop'; received {tta!r}.")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1; received {batch_size}.")
    if ci_level is not None:
        from alexkit.stats import check_level

        check_level(ci_level)
    if isinstance(model_or_run, str | Path):
        model, names, config = load_trained(model_or_run)
    else:
        model = model_or_run
        names = list(class_names) if class_names else None
        if names is None:
            names = [str(i) for i in range(int(model.output_shape[-1]))]
        config = config or {}
    run_dir = run_dir_of(model_or_run)
    from alexkit.calibration import load_calibration

    saved = load_calibration(run_dir) if run_dir is not None else None
    card = getattr(model, "card", None)
    if card is not None:  # an exported file: its temperature is inside; thresholds on its card
        thresholds = (card.get("output") or {}).get("thresholds")
        saved = {"temperature": None, "thresholds": thresholds} if thresholds else None
    subgroup_table = load_subgroups(subgroups) if subgroups is not None else None

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
    temperature = (saved or {}).get("temperature")
    raw_probs = probs
    if calibrate and temperature is not None:
        from alexkit.calibration import apply_temperature

        probs = apply_temperature(probs, float(temperature), from_probs=True)
    group_of = dict(zip(spec.items, spec.groups, strict=True))
    item_groups = [group_of.get(p, "") for p in all_paths]
    ci = {"ci_level": ci_level, "n_boot": n_boot, "seed": seed}
    report = compute_report(
        labels, probs, names, threshold=threshold, paths=all_paths, groups=item_groups, **ci
    )
    if report.calibration is not None:
        report.calibration["temperature"] = temperature if calibrate else None
        if calibrate and temperature is not None:
            from alexkit.calibration import calibration_summary

            raw = calibration_summary(report.y_true, raw_probs)
            report.calibration["uncalibrated"] = {k: raw[k] for k in ("ece", "brier", "nll")}
    if saved and saved.get("thresholds") and len(names) == 2:
        scale = None if calibrate or temperature is None else float(temperature)
        report.operating_points = operating_points(report, saved["thresholds"], scale, **ci)
    skipped_entries = list(getattr(skipped, "entries", []) or [])
    report.meta.update(
        {
            "tta": tta,
            "threshold": threshold,
            "data": str(getattr(spec, "root", "")),
            "skipped": [{"path": str(p), "reason": str(r)} for p, r in skipped_entries],
            "calibration": {
                "file": None if saved is None else "calibration.json",
                "temperature_applied": temperature if calibrate else None,
            },
        }
    )
    if isinstance(model_or_run, str | Path):
        report.meta["model"] = str(model_or_run)
    report.group_eval = group_eval(report)
    report.groups = group_report(report, report.group_eval)
    if check_leaks and run_dir is not None:
        from alexkit.leakage import check_leakage, load_hashes

        recorded = load_hashes(run_dir)
        if recorded is not None:
            report.leakage = check_leakage(all_paths, item_groups, recorded)
    if subgroup_table is not None:
        report.subgroups = subgroup_metrics(report, subgroup_table, **ci)
    if explain:
        report.explanations = explain_gallery(
            model, report, image_size=model_image_size(model, config),
            grayscale=bool(config.get("grayscale", False)), batch_size=batch_size,
        )  # fmt: skip
    return report


def explain_gallery(
    model: Any,
    report: EvalReport,
    *,
    image_size: int,
    grayscale: bool = False,
    batch_size: int = 32,
    layer: str = "conv5",
    method: str = "gradcam",
) -> dict[int, bytes]:
    """Grad-CAM overlays of the items in the HTML report's gallery (most confidently wrong).

    The items are read again as evaluation crops (``make_dataset(training=False)``, the
    centre crop) and explained for the class the model predicted: where it looked to
    make the mistake.

    Args:
        model: the Keras classifier that made ``report``.
        report: the evaluation (needs ``paths``).
        image_size, grayscale: as the evaluation read them.
        batch_size: images per forward/backward pass.
        layer, method: as for ``alexkit explain``.

    Returns:
        ``{item index in report: PNG bytes}``; items that cannot be read are left out.
    """
    from alexkit.html_report import gallery_indices

    wanted = [int(i) for i in gallery_indices(report)]
    if not wanted or report.paths is None:
        return {}
    from alexkit import data as data_mod
    from alexkit.explain import gradcam_overlays
    from alexkit.predict import make_spec

    items = [str(report.paths[i]) for i in wanted]
    dataset = data_mod.make_dataset(
        make_spec(items, report.class_names),
        training=False,
        image_size=image_size,
        batch_size=batch_size,
        grayscale=grayscale,
        with_paths=True,
        skipped=data_mod.SkipLog(),
    )
    crops: dict[str, np.ndarray] = {}
    for x, _, paths in dataset:
        for image, path in zip(x.numpy(), paths.numpy(), strict=True):
            crops[_decode_str(path)] = image
    shown = [i for i in wanted if str(report.paths[i]) in crops]
    if not shown:
        return {}
    pngs = gradcam_overlays(
        model,
        np.stack([crops[str(report.paths[i])] for i in shown]),
        targets=[int(report.y_pred[i]) for i in shown],
        class_names=report.class_names,
        true_labels=[int(report.y_true[i]) for i in shown],
        layer=layer,
        method=method,
        batch_size=batch_size,
    )
    return dict(zip(shown, pngs, strict=True))


def operating_points(
    report: EvalReport,
    thresholds: dict[str, Any],
    raw_temperature: float | None = None,
    *,
    ci_level: float | None = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Binary metrics at each saved threshold (chosen on validation data, never here).

    Args:
        report: a binary report (its probabilities are used as they are).
        thresholds: ``calibration.json``'s ``thresholds`` (:func:`choose_thresholds`).
        raw_temperature: when the report holds uncalibrated probabilities but the
            thresholds were chosen on calibrated ones, the temperature that maps them:
            ``p >= t`` after scaling is ``logit(p) >= T·logit(t)`` before.

    Returns:
        ``{name: {"threshold", "sensitivity", "specificity", "ppv", "npv", "accuracy",
        "ci": {...}, "ci_method": {...}}}``.
    """
    out: dict[str, Any] = {}
    for name, entry in thresholds.items():
        if not isinstance(entry, dict) or entry.get("threshold") is None:
            continue
        t = float(entry["threshold"])
        if raw_temperature is not None:
            logit = np.log(t) - np.log1p(-t)
            t = float(1.0 / (1.0 + np.exp(-raw_temperature * logit)))
        t = float(np.clip(t, np.nextafter(0.0, 1.0), np.nextafter(1.0, 0.0)))
        at = compute_report(
            report.y_true,
            report.probs,
            report.class_names,
            threshold=t,
            groups=report.item_groups,
            ci_level=ci_level,
            n_boot=n_boot,
            seed=seed,
        )
        b = at.binary or {}
        point = {k: b.get(k) for k in ("sensitivity", "specificity", "ppv", "npv")}
        point = {"threshold": t, **point, "accuracy": at.accuracy}
        if "target" in entry:
            point["target_sensitivity"] = entry["target"]
        if at.intervals is not None:
            keys = [f"binary.{k}" for k in ("sensitivity", "specificity", "ppv", "npv")]
            keys.append("accuracy")
            point["ci"] = {
                k.split(".")[-1]: [_finite(v) for v in at.intervals.ci[k]]
                for k in keys
                if k in at.intervals.ci
            }
            point["ci_method"] = {
                k.split(".")[-1]: at.intervals.method[k] for k in keys if k in at.intervals.method
            }
        out[name] = point
    return out


def load_subgroups(path: str | Path) -> dict[str, Any]:
    """Read a subgroup CSV: a ``path`` column plus one column per attribute.

    Paths are resolved like manifest paths (relative to the CSV's folder; absolute
    ones as they are); an item of a clip/volume matches its file's row.

    Returns:
        ``{"file": str, "attributes": [names], "rows": {resolved path: {attr: value}}}``.

    Raises:
        DataError: missing file, no ``path`` column, no attribute column, duplicate paths.
    """
    import csv

    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except OSError as exc:
        raise DataError(f"cannot read subgroup file {path} ({exc.strerror or exc}).") from exc
    if "path" not in header:
        raise DataError(f"{path}: a subgroup CSV needs a 'path' column; found {header}.")
    attributes = [h for h in header if h and h != "path"]
    if not attributes:
        raise DataError(f"{path}: no attribute columns next to 'path' (e.g. site, sex).")
    table: dict[str, dict[str, str]] = {}
    for n, row in enumerate(rows, 2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        rel = row.get("path", "")
        if not rel:
            raise DataError(f"{path}:{n}: empty path.")
        full = Path(rel).expanduser()
        key = str((full if full.is_absolute() else path.parent / full).resolve())
        if key in table:
            raise DataError(f"{path}:{n}: {rel} is listed twice.")
        table[key] = {a: row.get(a, "") for a in attributes}
    return {"file": str(path), "attributes": attributes, "rows": table}


def subgroup_metrics(
    report: EvalReport,
    table: dict[str, Any],
    *,
    ci_level: float | None = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per attribute and value: n, accuracy, macro F1 (binary: ROC AUC, sensitivity,
    specificity) with intervals, from the report's items.

    Returns:
        ``{"file", "matched", "unmatched", "attributes": {attr: {value: {...}}}}``;
        items with an empty value for an attribute are left out of that attribute.
    """
    from alexkit.media import parse_item

    if not report.paths:
        raise DataError("subgroups need item paths; this report has none.")
    rows = table["rows"]
    found = [rows.get(str(Path(parse_item(p)[0]).resolve())) for p in report.paths]
    matched = sum(r is not None for r in found)
    keys = ["accuracy", "macro_avg.f1"]
    if len(report.class_names) == 2:
        keys += ["binary.roc_auc", "binary.sensitivity", "binary.specificity"]
    out: dict[str, Any] = {
        "file": table["file"],
        "matched": matched,
        "unmatched": len(found) - matched,
        "attributes": {},
    }
    for attr in table["attributes"]:
        values = sorted({r[attr] for r in found if r is not None and r[attr]})
        per_value: dict[str, Any] = {}
        for value in values:
            idx = np.array([i for i, r in enumerate(found) if r is not None and r[attr] == value])
            sub = compute_report(
                report.y_true[idx],
                report.probs[idx],
                report.class_names,
                threshold=_threshold(report),
                groups=None if report.item_groups is None else [report.item_groups[i] for i in idx],
                ci_level=ci_level,
                n_boot=n_boot,
                seed=seed,
            )
            d = sub.to_dict()
            entry: dict[str, Any] = {"n": int(idx.size)}
            for key in keys:
                head, _, tail = key.partition(".")
                entry[key] = d[head][tail] if tail else d[head]
            if sub.intervals is not None:
                entry["ci"] = {k: d["ci"][k] for k in keys if k in d["ci"]}
                entry["ci_method"] = {k: d["ci_method"][k] for k in keys if k in d["ci_method"]}
            per_value[value] = entry
        out["attributes"][attr] = per_value
    return out


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
    intervals = report.intervals
    group = compute_report(
        truth,
        probs,
        report.class_names,
        threshold=_threshold(report),
        paths=list(keys),
        ci_level=None if intervals is None else intervals.level,
        n_boot=2000 if intervals is None else intervals.n_boot,
        seed=0 if intervals is None else intervals.seed,
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
    for key in ("ci", "ci_level", "ci_method", "ci_bootstrap", "calibration"):
        if key in full:
            out[key] = full[key]
    if "binary" in full:
        binary = dict(full["binary"])
        binary.pop("roc_curve", None)
        out["binary"] = binary
        out["roc_auc"] = binary.get("roc_auc")  # kept at the top level for scripts
    return out


def _threshold(report: EvalReport) -> float:
    return float(report.binary["threshold"]) if report.binary else 0.5
