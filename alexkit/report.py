"""Render an ``EvalReport``: rich tables for the terminal, JSON/CSV/PNG files for scripts.

File shapes are stable (scripts read them):

* ``metrics.json``: top-level ``accuracy``, ``top5_accuracy``, ``macro_avg``,
  ``weighted_avg``, ``per_class``, ``confusion_matrix``, ``binary`` (two classes).
* ``confusion_matrix.csv``: header ``true\\predicted,<class>...``; one row per true class,
  first column the class name, then counts per predicted class.
* ``classification_report.csv``: ``class,precision,recall,f1,support``; then
  ``macro avg`` and ``weighted avg`` rows.
* ``predictions.csv``: ``path,true,predicted,correct,confidence`` then ``p_<class>`` per class.
  (path, true and predicted are the first three columns; probabilities are the last C.)
* ``misclassified.csv``: the rows of ``predictions.csv`` that are wrong, most confident first.
* ``reliability.png``: reliability diagram (15 equal-width top-label confidence bins).
* ``roc.png`` / ``pr.png`` (two classes): curves with pointwise bootstrap bands.
* ``report.html``: one self-contained page (:mod:`alexkit.html_report`).

``metrics.json`` also carries ``ci`` / ``ci_level`` / ``ci_method`` / ``ci_bootstrap``
(intervals keyed by the dotted path of each point estimate), ``calibration``, and when
present ``operating_points``, ``leakage`` and ``subgroups``. Its ``meta`` says how the
numbers were made: ``precision`` (what the evaluation computed in: ``requested``,
``policy``, ``reason``) and ``trained_precision`` (the run's, from its ``config.json``;
null when not recorded), among tta, threshold, data and calibration.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.evaluate import EvalReport
from alexkit.paths import atomic_path, atomic_write_text

# Beyond this many classes a full confusion table is unreadable in a terminal:
# show the most frequent confusions instead.
MAX_TABLE_CLASSES = 12


# --------------------------------------------------------------------------- CSV / JSON


def precision_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, text)`` of the evaluation's and the training's precision, as a person reads
    them (terminal summary and ``report.html``); only the ones ``meta`` has a key for.

    E.g. ``("evaluated in", "mixed_bfloat16 (auto: CPU AMD EPYC has avx512_bf16)")`` and
    ``("trained in", "float32 (the run's config.json)")``.
    """
    rows = []
    if "precision" in meta:
        used = meta["precision"]
        if used:
            why = f" ({used['reason']})" if used.get("reason") else ""
            rows.append(("evaluated in", f"{used['policy']}{why}"))
        else:
            rows.append(("evaluated in", "as exported (not recorded)"))
    if "trained_precision" in meta:
        trained = meta["trained_precision"]
        text = f"{trained} (the run's config.json)" if trained else "not recorded"
        rows.append(("trained in", text))
    return rows


def _csv_text(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def confusion_csv(report: EvalReport) -> str:
    """``confusion_matrix.csv``: true classes as rows, predicted classes as columns."""
    rows: list[list[Any]] = [["true\\predicted", *report.class_names]]
    for name, counts in zip(report.class_names, report.confusion, strict=True):
        rows.append([name, *(int(c) for c in counts)])
    return _csv_text(rows)


def classification_csv(report: EvalReport) -> str:
    """``classification_report.csv``: per-class precision/recall/F1/support, then averages."""
    rows: list[list[Any]] = [["class", "precision", "recall", "f1", "support"]]
    for i, name in enumerate(report.class_names):
        rows.append(
            [
                name,
                _fmt(report.precision[i]),
                _fmt(report.recall[i]),
                _fmt(report.f1[i]),
                int(report.support[i]),
            ]
        )
    total = int(report.support.sum())
    for label, avg in (("macro avg", report.macro), ("weighted avg", report.weighted)):
        rows.append([label, _fmt(avg["precision"]), _fmt(avg["recall"]), _fmt(avg["f1"]), total])
    return _csv_text(rows)


def predictions_csv(report: EvalReport, indices: np.ndarray | None = None) -> str:
    """``predictions.csv`` (or a subset of its rows, e.g. the misclassified ones)."""
    names = report.class_names
    header = ["path", "true", "predicted", "correct", "confidence", *(f"p_{c}" for c in names)]
    rows: list[list[Any]] = [header]
    idx = np.arange(report.num_samples) if indices is None else indices
    for i in idx:
        t, p = int(report.y_true[i]), int(report.y_pred[i])
        rows.append(
            [
                report.paths[i] if report.paths else str(i),
                names[t],
                names[p],
                int(t == p),
                _fmt(report.probs[i, p]),
                *(_fmt(v) for v in report.probs[i]),
            ]
        )
    return _csv_text(rows)


def misclassified_indices(report: EvalReport) -> np.ndarray:
    """Wrong predictions, the most confident first (those are the ones worth a look)."""
    wrong = report.misclassified
    conf = report.probs[wrong, report.y_pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")]


def write_report(report: EvalReport, out_dir: str | Path, *, html: bool = True) -> dict[str, Path]:
    """Write every report file into ``out_dir`` (created), each atomically.

    Args:
        report: the evaluation.
        out_dir: the folder.
        html: also write ``report.html``.

    Returns:
        ``{file kind: path}`` for the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def text(name: str, content: str) -> None:
        atomic_write_text(out / name, content)
        written[name] = out / name

    text("metrics.json", json.dumps(report.to_dict(), indent=2) + "\n")
    text("confusion_matrix.csv", confusion_csv(report))
    text("classification_report.csv", classification_csv(report))
    text("predictions.csv", predictions_csv(report))
    text("misclassified.csv", predictions_csv(report, misclassified_indices(report)))
    plot_confusion(report, out / "confusion_matrix.png")
    written["confusion_matrix.png"] = out / "confusion_matrix.png"
    if report.binary is not None and report.binary.get("roc_auc") is not None:
        plot_roc(report, out / "roc.png")
        written["roc.png"] = out / "roc.png"
        plot_pr(report, out / "pr.png")
        written["pr.png"] = out / "pr.png"
    if report.calibration is not None:
        plot_reliability(report, out / "reliability.png")
        written["reliability.png"] = out / "reliability.png"
    if html:
        from alexkit.html_report import write_html

        written["report.html"] = write_html(report, out / "report.html", images=written)
    return written


# --------------------------------------------------------------------------- PNG


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(report: EvalReport, path: str | Path) -> Path:
    """A labelled heatmap: colours row-normalised (recall), counts printed when C <= 15.

    The figure grows with the class count and fonts shrink, so 38+ classes stay readable.
    """
    plt = _pyplot()
    c = len(report.class_names)
    side = float(np.clip(2.5 + 0.32 * c, 5.0, 24.0))
    label_font = float(np.clip(11 - 0.12 * c, 5.0, 10.0))
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=100)
    im = ax.imshow(report.confusion_normalized, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(report.class_names, rotation=90, fontsize=label_font)
    ax.set_yticklabels(report.class_names, fontsize=label_font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        f"Confusion matrix (row-normalised) — accuracy {report.accuracy:.2%}, "
        f"n={report.num_samples}",
        fontsize=11,
    )
    if c <= 15:
        for i in range(c):
            for j in range(c):
                value = report.confusion_normalized[i, j]
                ax.text(
                    j,
                    i,
                    f"{int(report.confusion[i, j])}\n{value:.0%}",
                    ha="center",
                    va="center",
                    fontsize=max(6.0, 11 - 0.4 * c),
                    color="white" if value > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_roc(report: EvalReport, path: str | Path) -> Path:
    """ROC curve of a binary report, with AUC (and CI), the operating point at the
    threshold, and the pointwise bootstrap band when intervals were computed."""
    if report.binary is None:
        raise ValueError("plot_roc needs a binary report")
    plt = _pyplot()
    b = report.binary
    curve = b["roc_curve"]
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    band = _band(report, "roc")
    if band is not None:
        grid, lo, hi = band
        ax.fill_between(grid, lo, hi, color="C0", alpha=0.2, step="post", label=_band_label(report))
    label = f"ROC (AUC = {b['roc_auc']:.3f}{_ci_suffix(report, 'binary.roc_auc')})"
    ax.plot(curve["fpr"], curve["tpr"], lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.scatter(
        [1 - b["specificity"]],
        [b["sensitivity"]],
        color="red",
        zorder=3,
        label=f"threshold {b['threshold']:g}: sens {b['sensitivity']:.2f}, "
        f"spec {b['specificity']:.2f}",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(f"false positive rate (1 − specificity, {b['negative_class']})")
    ax.set_ylabel(f"true positive rate (sensitivity, {b['positive_class']})")
    ax.set_title(f"ROC — positive class: {b['positive_class']}")
    ax.legend(loc="lower right", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_pr(report: EvalReport, path: str | Path) -> Path:
    """Precision-recall curve of a binary report with average precision and its band."""
    if report.binary is None:
        raise ValueError("plot_pr needs a binary report")
    from alexkit.metrics import _binary_counts

    plt = _pyplot()
    b = report.binary
    positive = report.y_true == 1
    tps, fps, _ = _binary_counts(positive, report.probs[:, 1])
    recall = np.r_[0.0, tps / max(positive.sum(), 1)]
    precision = np.r_[1.0, tps / np.maximum(tps + fps, 1)]
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    band = _band(report, "pr")
    if band is not None:
        grid, lo, hi = band
        ax.fill_between(grid, lo, hi, color="C1", alpha=0.2, label=_band_label(report))
    ap = b.get("pr_auc")
    label = "PR" if ap is None else f"PR (AP = {ap:.3f}{_ci_suffix(report, 'binary.pr_auc')})"
    ax.plot(recall, precision, lw=2, color="C1", label=label)
    prevalence = positive.mean()
    ax.axhline(prevalence, ls="--", color="grey", lw=1, label=f"prevalence {prevalence:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(f"recall (sensitivity, {b['positive_class']})")
    ax.set_ylabel("precision (PPV)")
    ax.set_title(f"Precision-recall — positive class: {b['positive_class']}")
    ax.legend(loc="lower left", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_reliability(report: EvalReport, path: str | Path) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, with bin counts."""
    plt = _pyplot()
    cal = report.calibration or {}
    bins = cal.get("reliability", [])
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(6, 7), dpi=100, gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    lows = np.array([b["low"] for b in bins])
    width = float(lows[1] - lows[0]) if lows.size > 1 else 1.0
    acc = np.array([np.nan if b["accuracy"] is None else b["accuracy"] for b in bins])
    conf = np.array([np.nan if b["confidence"] is None else b["confidence"] for b in bins])
    counts = np.array([b["count"] for b in bins])
    ax.bar(
        lows,
        np.nan_to_num(acc),
        width=width,
        align="edge",
        edgecolor="black",
        color="C0",
        alpha=0.8,
        label="accuracy in bin",
    )
    ax.bar(
        lows,
        np.nan_to_num(conf - acc),
        bottom=np.nan_to_num(acc),
        width=width,
        align="edge",
        fill=False,
        edgecolor="red",
        hatch="//",
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    temp = cal.get("temperature")
    title = f"Reliability — ECE {cal.get('ece', float('nan')):.3f} ({cal.get('bins')} bins)"
    title += f", Brier {cal.get('brier', float('nan')):.3f}"
    if temp is not None:
        title += f", T = {temp:.3g}"
    ax.set_title(title, fontsize=11)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    ax_n.bar(lows, counts, width=width, align="edge", color="grey", edgecolor="black")
    ax_n.set_xlabel("confidence (top-label probability)")
    ax_n.set_ylabel("items")
    fig.tight_layout()
    return _save(fig, plt, path)


def _band(report: EvalReport, key: str) -> tuple[np.ndarray, ...] | None:
    bands = getattr(report.intervals, "bands", None) or {}
    return bands.get(key)


def _band_label(report: EvalReport) -> str:
    iv = report.intervals
    unit = "groups" if iv.clustered else "items"
    return f"{iv.level:.0%} pointwise band ({iv.n_boot} bootstraps over {unit})"


def _ci_suffix(report: EvalReport, key: str) -> str:
    lo, hi = ci_of(report, key)
    return "" if lo is None else f", {report.intervals.level:.0%} CI {lo:.3f}–{hi:.3f}"


def ci_of(report: EvalReport, key: str) -> tuple[float | None, float | None]:
    """The interval of metric ``key`` (dotted metrics.json path), or (None, None)."""
    if report.intervals is None or key not in report.intervals.ci:
        return None, None
    lo, hi = report.intervals.ci[key]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None, None
    return float(lo), float(hi)


def with_ci(report: EvalReport, key: str, value: float | None, digits: int = 3) -> str:
    """``0.912 (0.884–0.936)``; just the value when there is no interval; n/a for None."""
    if value is None or not np.isfinite(value):
        return "n/a"
    lo, hi = ci_of(report, key)
    text = f"{value:.{digits}f}"
    return text if lo is None else f"{text} ({lo:.{digits}f}–{hi:.{digits}f})"


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------- terminal


def render_tables(report: EvalReport, *, max_table_classes: int = MAX_TABLE_CLASSES) -> list[Any]:
    """Rich renderables for the terminal: summary, per-class table, confusions.

    With more than ``max_table_classes`` classes the confusion matrix is replaced by
    the most frequent (true → predicted) confusions, which a person can read.
    """
    if len(report.class_names) <= max_table_classes:
        confusion = _confusion_table(report)
    else:
        confusion = _top_confusions_table(report)
    tables = [_summary_table(report), _per_class_table(report), confusion]
    if report.operating_points:
        tables.append(operating_points_table(report.operating_points))
    if report.subgroups:
        tables.append(subgroups_table(report.subgroups))
    return tables


def _summary_table(report: EvalReport) -> Any:
    """Headline metrics with intervals, calibration, how the intervals were made."""
    from rich.table import Table

    level = f" ({report.intervals.level:.0%} CI)" if report.intervals is not None else ""
    summary = Table(title=f"Summary{level}", show_header=False, box=None, pad_edge=False)
    summary.add_column("metric", style="bold")
    summary.add_column("value", justify="right")
    summary.add_row("samples", str(report.num_samples))
    summary.add_row("accuracy", with_ci(report, "accuracy", report.accuracy))
    if report.top5_accuracy is not None:
        summary.add_row("top-5 accuracy", with_ci(report, "top5_accuracy", report.top5_accuracy))
    summary.add_row("macro F1", with_ci(report, "macro_avg.f1", report.macro["f1"]))
    summary.add_row("weighted F1", with_ci(report, "weighted_avg.f1", report.weighted["f1"]))
    if report.binary is not None:
        b = report.binary
        for key, label in (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC")):
            summary.add_row(label, with_ci(report, f"binary.{key}", b[key]))
        for key, label in (
            ("sensitivity", "sensitivity"),
            ("specificity", "specificity"),
            ("ppv", "PPV"),
            ("npv", "NPV"),
        ):
            value = b.get(key)
            summary.add_row(
                f"{label} @ {b['threshold']:g}", with_ci(report, f"binary.{key}", value)
            )
    cal = report.calibration
    if cal is not None:
        summary.add_row(f"ECE ({cal['bins']} bins)", f"{cal['ece']:.3f}")
        summary.add_row("Brier score", f"{cal['brier']:.3f}")
        if cal.get("temperature") is not None:
            summary.add_row("temperature (saved)", f"{cal['temperature']:.3g}")
    if report.intervals is not None:
        iv = report.intervals
        unit = "groups" if iv.clustered else "items"
        how = f"{iv.n_boot} bootstraps over {iv.num_groups} {unit}" if iv.n_boot else "no bootstrap"
        summary.add_row("intervals", f"{', '.join(sorted(set(iv.method.values())))}; {how}")
    for label, text in precision_rows(report.meta):
        summary.add_row(f"precision: {label}", text)
    if report.groups:
        summary.add_row(
            f"accuracy per file ({report.groups['num_groups']})", f"{report.groups['accuracy']:.4f}"
        )
    return summary


def _per_class_table(report: EvalReport) -> Any:
    """Precision, recall, F1 (with intervals) and support per class, then the averages."""
    from rich.table import Table

    per_class = Table(title="Per class")
    per_class.add_column("class", overflow="fold")
    for col in ("precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="right")
    for i, name in enumerate(report.class_names):
        per_class.add_row(
            name,
            with_ci(report, f"per_class.{name}.precision", report.precision[i]),
            with_ci(report, f"per_class.{name}.recall", report.recall[i]),
            with_ci(report, f"per_class.{name}.f1", report.f1[i]),
            str(int(report.support[i])),
        )
    per_class.add_section()
    total = str(int(report.support.sum()))
    for label, avg, key in (
        ("macro avg", report.macro, "macro_avg"),
        ("weighted avg", report.weighted, "weighted_avg"),
    ):
        cells = [with_ci(report, f"{key}.{m}", avg[m]) for m in ("precision", "recall", "f1")]
        per_class.add_row(label, *cells, total)
    return per_class


def _confusion_table(report: EvalReport) -> Any:
    """The full confusion matrix (few classes)."""
    from rich.table import Table

    confusion = Table(title="Confusion matrix (rows: true, columns: predicted)")
    confusion.add_column("true \\ pred", style="bold")
    for name in report.class_names:
        confusion.add_column(name, justify="right")
    for i, name in enumerate(report.class_names):
        cells = [
            f"[bold]{n}[/]" if i == j else (str(n) if n else "[dim]0[/]")
            for j, n in enumerate(report.confusion[i])
        ]
        confusion.add_row(name, *cells)
    return confusion


def _top_confusions_table(report: EvalReport) -> Any:
    """The 15 most frequent (true → predicted) confusions (many classes)."""
    from rich.table import Table

    confusion = Table(title="Most frequent confusions (full matrix in confusion_matrix.csv)")
    confusion.add_column("true")
    confusion.add_column("predicted as")
    confusion.add_column("count", justify="right")
    confusion.add_column("% of true class", justify="right")
    off = report.confusion.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:15]
    for k in flat:
        i, j = divmod(int(k), len(report.class_names))
        if off[i, j] == 0:
            break
        confusion.add_row(
            report.class_names[i],
            report.class_names[j],
            str(int(off[i, j])),
            f"{report.confusion_normalized[i, j]:.1%}",
        )
    return confusion


def _fmt_ci(value: float | None, ci: list | None) -> str:
    if value is None:
        return "n/a"
    if not ci or ci[0] is None or ci[1] is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({ci[0]:.3f}–{ci[1]:.3f})"


def operating_points_table(points: dict[str, Any]) -> Any:
    """Metrics at the thresholds saved with the run (chosen on its validation data)."""
    from rich.table import Table

    table = Table(title="At the run's saved thresholds (chosen on validation data)")
    table.add_column("operating point", style="bold")
    table.add_column("threshold", justify="right")
    for col in ("sensitivity", "specificity", "PPV", "NPV"):
        table.add_column(col, justify="right")
    for name, p in points.items():
        label = name.replace("_", " ")
        if "target_sensitivity" in p:
            label += f" {p['target_sensitivity']:g}"
        ci = p.get("ci", {})
        cells = [_fmt_ci(p.get(k), ci.get(k)) for k in ("sensitivity", "specificity", "ppv", "npv")]
        table.add_row(label, f"{p['threshold']:.4g}", *cells)
    return table


def subgroups_table(subgroups: dict[str, Any]) -> Any:
    """One row per attribute value: n, accuracy, macro F1 (binary: ROC AUC) with CIs."""
    from rich.table import Table

    unmatched = subgroups.get("unmatched", 0)
    title = "Subgroups" + (f" ({unmatched} items not in the subgroup file)" if unmatched else "")
    table = Table(title=title)
    table.add_column("attribute", style="bold")
    table.add_column("value")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("macro F1", justify="right")
    binary = any(
        "binary.roc_auc" in e
        for values in subgroups["attributes"].values()
        for e in values.values()
    )
    if binary:
        table.add_column("ROC AUC", justify="right")
    for attr, values in subgroups["attributes"].items():
        for value, e in values.items():
            ci = e.get("ci", {})
            cells = [_fmt_ci(e.get(k), ci.get(k)) for k in ("accuracy", "macro_avg.f1")]
            if binary:
                cells.append(_fmt_ci(e.get("binary.roc_auc"), ci.get("binary.roc_auc")))
            table.add_row(attr, value, str(e["n"]), *cells)
    return table
