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


def write_report(report: EvalReport, out_dir: str | Path) -> dict[str, Path]:
    """Write every report file into ``out_dir`` (created), each atomically.

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
    """ROC curve of a binary report, with AUC and the operating point at the threshold."""
    if report.binary is None:
        raise ValueError("plot_roc needs a binary report")
    plt = _pyplot()
    b = report.binary
    curve = b["roc_curve"]
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    ax.plot(curve["fpr"], curve["tpr"], lw=2, label=f"ROC (AUC = {b['roc_auc']:.3f})")
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
    from rich.table import Table

    summary = Table(title="Summary", show_header=False, box=None, pad_edge=False)
    summary.add_column("metric", style="bold")
    summary.add_column("value", justify="right")
    summary.add_row("samples", str(report.num_samples))
    summary.add_row("accuracy", f"{report.accuracy:.4f}")
    if report.top5_accuracy is not None:
        summary.add_row("top-5 accuracy", f"{report.top5_accuracy:.4f}")
    summary.add_row("macro F1", f"{report.macro['f1']:.4f}")
    summary.add_row("weighted F1", f"{report.weighted['f1']:.4f}")
    if report.binary is not None:
        b = report.binary
        for key, label in (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC")):
            summary.add_row(label, "n/a" if b[key] is None else f"{b[key]:.4f}")
        summary.add_row(f"sensitivity @ {b['threshold']:g}", f"{b['sensitivity']:.4f}")
        summary.add_row(f"specificity @ {b['threshold']:g}", f"{b['specificity']:.4f}")
    if report.groups:
        summary.add_row(
            f"accuracy per file ({report.groups['num_groups']})", f"{report.groups['accuracy']:.4f}"
        )

    per_class = Table(title="Per class")
    per_class.add_column("class", overflow="fold")
    for col in ("precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="right")
    for i, name in enumerate(report.class_names):
        per_class.add_row(
            name,
            f"{report.precision[i]:.3f}",
            f"{report.recall[i]:.3f}",
            f"{report.f1[i]:.3f}",
            str(int(report.support[i])),
        )
    per_class.add_section()
    total = str(int(report.support.sum()))
    for label, avg in (("macro avg", report.macro), ("weighted avg", report.weighted)):
        per_class.add_row(
            label, f"{avg['precision']:.3f}", f"{avg['recall']:.3f}", f"{avg['f1']:.3f}", total
        )

    c = len(report.class_names)
    if c <= max_table_classes:
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
    else:
        confusion = Table(title="Most frequent confusions (full matrix in confusion_matrix.csv)")
        confusion.add_column("true")
        confusion.add_column("predicted as")
        confusion.add_column("count", justify="right")
        confusion.add_column("% of true class", justify="right")
        off = report.confusion.copy()
        np.fill_diagonal(off, 0)
        flat = np.argsort(-off, axis=None, kind="stable")[:15]
        for k in flat:
            i, j = divmod(int(k), c)
            if off[i, j] == 0:
                break
            confusion.add_row(
                report.class_names[i],
                report.class_names[j],
                str(int(off[i, j])),
                f"{report.confusion_normalized[i, j]:.1%}",
            )
    return [summary, per_class, confusion]
