"""Evaluation one level beside the items: clips/volumes, subgroups, saved thresholds.

``group_eval`` / ``group_report`` aggregate frames and slices to their source file;
``subgroup_metrics`` splits the items by a CSV's attributes; ``operating_points``
reports binary metrics at the run's saved thresholds. Every name here is also
importable from :mod:`alexkit.evaluate` (which these functions call back into for
``compute_report``, imported where used to keep the import graph acyclic).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alexkit.errors import DataError

if TYPE_CHECKING:
    from alexkit.evaluate import EvalReport

# The records keep the logger name they had before the split (filters and tests use it).
log = logging.getLogger("alexkit.evaluate")


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
    from alexkit.evaluate import _finite, compute_report

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
    from alexkit.evaluate import compute_report
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
    from alexkit.evaluate import compute_report
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
