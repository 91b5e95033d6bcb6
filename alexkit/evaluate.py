"""Classification metrics as arrays (``EvalReport``), and running a trained model on data.

``compute_report`` is pure numpy over ``(y_true, probs)`` so that every number can be
checked against scikit-learn; ``evaluate_model`` loads a run or a ``.keras`` file, streams
the data through it and hands the probabilities to ``compute_report``. Rendering (tables,
CSV, PNG) lives in :mod:`alexkit.report`; loading models and data in :mod:`alexkit.loading`;
clip/volume-level, subgroup and saved-threshold metrics in :mod:`alexkit.eval_groups`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import DataError, UsageError

# Group/subgroup/threshold evaluation and loading live in their own modules; their names
# stay importable from here (callers and scripts use ``alexkit.evaluate``).
from alexkit.eval_groups import (
    group_eval,
    group_report,
    load_subgroups,
    operating_points,
    subgroup_metrics,
)
from alexkit.inference import as_text
from alexkit.loading import (
    align_spec,
    apply_precision,
    is_exported,  # noqa: F401  (re-exported)
    load_eval_spec,
    load_trained,
    media_options_from_config,
    model_image_size,
    run_dir_of,
)
from alexkit.metrics import average_precision, roc_auc, roc_curve


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
    _check_report_inputs(y_true, probs, len(names), threshold, paths)
    if len(names) == 2:
        y_pred = (probs[:, 1] >= threshold).astype(np.int64)
    else:
        y_pred = probs.argmax(axis=1).astype(np.int64)
    counts = _class_metrics(y_true, y_pred, len(names))
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
        top5_accuracy=_top5_accuracy(y_true, probs),
        binary=_binary_summary(y_true, probs, names, threshold, counts),
        **counts,
    )


def _check_report_inputs(
    y_true: np.ndarray,
    probs: np.ndarray,
    num_classes: int,
    threshold: float,
    paths: Sequence[str] | None,
) -> None:
    """The checks of :func:`compute_report`, in the order their errors are reported."""
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


def _class_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Confusion counts and per-class/averaged precision, recall, F1 (``EvalReport`` fields)."""
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
    row_sums = support[:, None].astype(np.float64)
    normalized = np.divide(
        confusion, row_sums, out=np.zeros_like(confusion, dtype=np.float64), where=row_sums > 0
    )
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "macro": {k: float(v) for k, v in macro.items()},
        "weighted": weighted,
        "confusion": confusion,
        "confusion_normalized": normalized,
    }


def _top5_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    if probs.shape[1] <= 5:  # with exactly 5 classes top-5 is always 1.0: meaningless
        return None
    top = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    return float((top == y_true[:, None]).any(axis=1).mean())


def _binary_summary(
    y_true: np.ndarray,
    probs: np.ndarray,
    names: list[str],
    threshold: float,
    counts: dict[str, Any],
) -> dict[str, Any] | None:
    """``EvalReport.binary`` for two classes (class 1 is the positive one), else None."""
    if len(names) != 2:
        return None
    precision, recall, confusion = counts["precision"], counts["recall"], counts["confusion"]
    scores = probs[:, 1]
    positive = y_true == 1
    fpr, tpr, thresholds = roc_curve(positive, scores)
    both = positive.any() and (~positive).any()
    return {
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


# --------------------------------------------------------------------------- running a model


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
    precision: Any = None,
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
        precision: compute in ``float32``, ``mixed_bfloat16``, ``auto`` (bfloat16 where
            the hardware has it) or a ``PrecisionChoice`` (see
            :func:`alexkit.loading.apply_precision`); None: as the model is. What the
            evaluation computed in is saved in ``meta["precision"]`` and what the run
            was trained in (its ``config.json``) in ``meta["trained_precision"]``
            (``metrics.json``; see :func:`evaluation_precision`, :func:`trained_precision`).

    Returns:
        The ``EvalReport`` (``meta`` holds tta, sample counts, skipped images, precision).

    Raises:
        DataError: unknown classes, unlabelled or unreadable data, a bad subgroup CSV.
        CheckpointError: the model, its calibration or its hashes cannot be loaded.
    """
    _check_run_options(tta, batch_size, ci_level)
    model, names, config = _resolve_model(model_or_run, class_names, config)
    model, choice = apply_precision(model, precision)
    run_dir = run_dir_of(model_or_run)
    saved = _saved_calibration(model, run_dir)
    subgroup_table = load_subgroups(subgroups) if subgroups is not None else None

    from alexkit import data as data_mod

    if isinstance(spec_or_path, str | Path):
        spec = load_eval_spec(spec_or_path, names, media_options=media_options_from_config(config))
    else:
        spec = align_spec(spec_or_path, names)
    if skipped is None:
        skipped = data_mod.SkipLog()
    all_paths, labels, raw_probs = _predict_spec(
        model, spec, config, len(names), tta, batch_size, skipped, progress
    )
    temperature = (saved or {}).get("temperature")
    probs = raw_probs
    if calibrate and temperature is not None:
        from alexkit.calibration import apply_temperature

        probs = apply_temperature(probs, float(temperature), from_probs=True)
    group_of = dict(zip(spec.items, spec.groups, strict=True))
    item_groups = [group_of.get(p, "") for p in all_paths]
    ci = {"ci_level": ci_level, "n_boot": n_boot, "seed": seed}
    report = compute_report(
        labels, probs, names, threshold=threshold, paths=all_paths, groups=item_groups, **ci
    )
    _add_saved_calibration(report, raw_probs, saved, temperature, calibrate, ci)
    _record_meta(report, model_or_run, spec, skipped, saved, tta, threshold, calibrate, temperature)
    report.meta["precision"] = evaluation_precision(model, choice)
    report.meta["trained_precision"] = trained_precision(config)
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


def evaluation_precision(model: Any, choice: Any) -> dict[str, Any] | None:
    """What an evaluation computed in, for ``meta["precision"]``.

    Args:
        model: the model as it ran (after :func:`alexkit.loading.apply_precision`).
        choice: the ``PrecisionChoice`` applied, or None (the model ran as it was given).

    Returns:
        ``choice.as_dict()`` (requested, policy, reason); for None, the policy the Keras
        model's layers compute in with ``requested`` None and reason ``"as the model
        is"``; None for an exported model run as it is (its inside is not ours to read).
    """
    if choice is not None:
        return choice.as_dict()
    if not hasattr(model, "get_config") or getattr(model, "card", None) is not None:
        return None
    from alexkit.loading import layer_policies

    mixed = sorted({p for p in layer_policies(model).values() if p != "float32"})
    return {
        "requested": None,
        "policy": mixed[0] if mixed else "float32",
        "reason": "as the model is",
    }


def trained_precision(config: dict[str, Any] | None) -> str | None:
    """The dtype policy a run was trained in, as its ``config.json`` records it.

    ``pretrain`` keeps it under ``resolved.precision``, ``finetune`` under
    ``args.precision`` (the policy chosen on the training machine; None there means the
    library default, float32). A training config from before ``--precision`` existed
    (``args`` without the key) was trained in float32, Keras' default policy.

    Returns:
        ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``; None when the config
        says nothing about training (no config, or a bare ``class_names`` file).
    """
    from alexkit.precision import ALIASES

    config = config or {}
    resolved = config.get("resolved")
    value: Any = None
    if isinstance(resolved, dict) and resolved.get("precision"):
        value = resolved["precision"]
    elif isinstance(config.get("args"), dict):
        value = config["args"].get("precision") or "float32"
    if value is None:
        return None
    return ALIASES.get(str(value).strip().lower(), str(value))


def _check_run_options(tta: str, batch_size: int, ci_level: float | None) -> None:
    if tta not in ("center", "ten-crop"):
        raise UsageError(f"--tta must be 'center' or 'ten-crop'; received {tta!r}.")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1; received {batch_size}.")
    if ci_level is not None:
        from alexkit.stats import check_level

        check_level(ci_level)


def _resolve_model(
    model_or_run: Any, class_names: Sequence[str] | None, config: dict[str, Any] | None
) -> tuple[Any, list[str], dict[str, Any]]:
    """``(model, class names, config)`` from a path (loaded) or an in-memory model."""
    if isinstance(model_or_run, str | Path):
        return load_trained(model_or_run)
    names = list(class_names) if class_names else None
    if names is None:
        names = [str(i) for i in range(int(model_or_run.output_shape[-1]))]
    return model_or_run, names, config or {}


def _saved_calibration(model: Any, run_dir: Path | None) -> dict[str, Any] | None:
    """The run's ``calibration.json``; for an exported file, the thresholds on its card."""
    from alexkit.calibration import load_calibration

    saved = load_calibration(run_dir) if run_dir is not None else None
    card = getattr(model, "card", None)
    if card is not None:  # an exported file: its temperature is inside; thresholds on its card
        thresholds = (card.get("output") or {}).get("thresholds")
        saved = {"temperature": None, "thresholds": thresholds} if thresholds else None
    return saved


def _predict_spec(
    model: Any,
    spec: Any,
    config: dict[str, Any],
    num_classes: int,
    tta: str,
    batch_size: int,
    skipped: Any,
    progress: Any,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Stream the data through the model: ``(item paths, labels, probabilities)``."""
    from alexkit import data as data_mod
    from alexkit.inference import batch_predictor, predict_batches

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
        num_classes=num_classes,
        progress=None if progress is None else (lambda done: progress(done, len(spec))),
    )
    if not len(probs):
        raise DataError(f"{spec.root}: no readable images to evaluate.")
    return all_paths, labels, probs


def _add_saved_calibration(
    report: EvalReport,
    raw_probs: np.ndarray,
    saved: dict[str, Any] | None,
    temperature: float | None,
    calibrate: bool,
    ci: dict[str, Any],
) -> None:
    """The temperature applied (and the raw calibration), and the saved operating points."""
    names = report.class_names
    if report.calibration is not None:
        report.calibration["temperature"] = temperature if calibrate else None
        if calibrate and temperature is not None:
            from alexkit.calibration import calibration_summary

            raw = calibration_summary(report.y_true, raw_probs)
            report.calibration["uncalibrated"] = {k: raw[k] for k in ("ece", "brier", "nll")}
    if saved and saved.get("thresholds") and len(names) == 2:
        scale = None if calibrate or temperature is None else float(temperature)
        report.operating_points = operating_points(report, saved["thresholds"], scale, **ci)


def _record_meta(
    report: EvalReport,
    model_or_run: Any,
    spec: Any,
    skipped: Any,
    saved: dict[str, Any] | None,
    tta: str,
    threshold: float,
    calibrate: bool,
    temperature: float | None,
) -> None:
    """What was evaluated and how, for ``metrics.json``'s ``meta``."""
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
            crops[as_text(path)] = image
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
