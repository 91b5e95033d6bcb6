"""``report.html``: one self-contained page a reviewer reads, written by ``evaluate --out``.

Everything is inline (CSS, PNG plots and JPEG thumbnails as base64 ``data:`` URIs, no
script, no web fonts), so the file opens offline and can be attached to a submission.
Sections: headline metrics with intervals and their methods, leakage warning,
calibration (reliability diagram), confusion matrix and most-confused pairs, ROC and PR
with bootstrap bands (two classes), metrics at saved thresholds, per-class table,
subgroups, clip/volume level, a gallery of the most confidently wrong items (with
their Grad-CAM overlays beside the thumbnails when ``evaluate --explain`` drew them), and
the run and its settings (model, data, TTA, threshold, calibration, probe, and the
precision the evaluation computed in beside the one the run was trained in).
Numbers are printed with 3 decimals, as in the terminal tables.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.evaluate import EvalReport
from alexkit.paths import atomic_write_text

#: How many confidently wrong items the gallery shows.
GALLERY_SIZE = 24
THUMBNAIL_PX = 160
#: Shown width of a gallery item's Grad-CAM overlay (``evaluate --explain``).
OVERLAY_PX = 180

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:2em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.muted{color:#666;font-size:.9em}
.warn{background:#fde8e8;border:2px solid #c0392b;padding:.8em;font-weight:bold}
.ok{background:#e8f6ea;border:1px solid #2e8b57;padding:.5em}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs img{max-width:520px;width:100%;
border:1px solid #eee}.gallery{display:flex;flex-wrap:wrap;gap:.6em}
.card{border:1px solid #ddd;padding:.4em;width:170px;font-size:.85em}
.card img{width:160px;height:160px;object-fit:contain;background:#000}
.card.wide{width:350px}.card img.gradcam{width:180px;height:auto;background:#fff;
margin-left:.3em;vertical-align:top}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _ci_cell(ci: Any) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "—"
    return f"{ci[0]:.3f}–{ci[1]:.3f}"


def headline_metrics(metrics: dict[str, Any]) -> list[tuple[str, str, float | None]]:
    """(label, dotted metrics.json key, value) of the page's headline table."""
    rows: list[tuple[str, str, float | None]] = [
        ("Accuracy", "accuracy", metrics["accuracy"]),
        ("Macro F1", "macro_avg.f1", metrics["macro_avg"]["f1"]),
        ("Weighted F1", "weighted_avg.f1", metrics["weighted_avg"]["f1"]),
    ]
    if metrics.get("top5_accuracy") is not None:
        rows.insert(1, ("Top-5 accuracy", "top5_accuracy", metrics["top5_accuracy"]))
    b = metrics.get("binary")
    if b:
        t = b["threshold"]
        rows += [
            ("ROC AUC", "binary.roc_auc", b.get("roc_auc")),
            ("PR AUC (average precision)", "binary.pr_auc", b.get("pr_auc")),
            (f"Sensitivity @ {t:g}", "binary.sensitivity", b.get("sensitivity")),
            (f"Specificity @ {t:g}", "binary.specificity", b.get("specificity")),
            (f"PPV @ {t:g}", "binary.ppv", b.get("ppv")),
            (f"NPV @ {t:g}", "binary.npv", b.get("npv")),
        ]
    cal = metrics.get("calibration")
    if cal:
        rows += [
            (f"ECE ({cal['bins']} equal-width top-label bins)", "calibration.ece", cal["ece"]),
            ("Brier score", "calibration.brier", cal["brier"]),
        ]
    return rows


def _img(data: bytes, alt: str, mime: str = "image/png") -> str:
    src = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:{mime};base64,{src}">'


def _thumbnail(item: str) -> bytes | None:
    """A JPEG thumbnail of an item (image file, or frame/slice of a clip/volume)."""
    from PIL import Image

    try:
        from alexkit.media import MEDIA_EXTENSIONS, parse_item

        source, fields = parse_item(item)
        if fields or any(source.lower().endswith(ext) for ext in MEDIA_EXTENSIONS):
            from alexkit.media import decode_member

            img = Image.fromarray(np.asarray(decode_member(item)))
        else:
            with Image.open(item) as im:
                im.load()
                img = im.convert("RGB")
        img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=85)
        return buf.getvalue()
    except Exception:  # a thumbnail is a courtesy: the row stays, the picture goes
        return None


def overlay_jpeg(png: bytes, width: int = 2 * OVERLAY_PX) -> bytes:
    """An overlay PNG as the page embeds it: ``width`` pixels wide (twice its shown size,
    sharp on high-density screens), JPEG quality 85 (~1/5 of the PNG's bytes)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        img = im.convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def gallery_indices(report: EvalReport) -> np.ndarray:
    """The items the gallery shows: the most confidently wrong, at most :data:`GALLERY_SIZE`."""
    from alexkit.report import misclassified_indices

    return misclassified_indices(report)[:GALLERY_SIZE]


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_html(report: EvalReport, images: dict[str, Path] | None = None) -> str:
    """The whole page as a string (see the module docstring).

    Args:
        report: the evaluation.
        images: already written plots by name (``confusion_matrix.png``, ``roc.png``,
            ``pr.png``, ``reliability.png``); missing ones are drawn here.
    """
    metrics = report.to_dict()
    pngs = _plot_pngs(report, images)
    meta = metrics.get("meta", {})
    title = f"Evaluation — {Path(str(meta.get('model', 'model'))).name or 'model'}"
    parts = [f"<h1>{_e(title)}</h1>", _byline(metrics)]
    parts += _leakage_section(metrics)
    parts += _headline_section(metrics)
    parts += _calibration_section(metrics, pngs)
    parts += _curves_section(metrics, pngs)
    parts += _confusion_section(report, pngs)
    parts += _per_class_section(report, metrics.get("ci", {}))
    parts += _subgroups_section(report, metrics)
    parts += _groups_section(metrics)
    parts += _gallery_section(report)
    parts += _settings_section(metrics)
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _plot_pngs(report: EvalReport, images: dict[str, Path] | None) -> dict[str, bytes]:
    """The page's plots as PNG bytes: the written ones read back, missing ones drawn."""
    images = dict(images or {})
    with tempfile.TemporaryDirectory() as tmp:
        from alexkit import report as rep

        needed = {"confusion_matrix.png": rep.plot_confusion}
        if report.calibration is not None:
            needed["reliability.png"] = rep.plot_reliability
        if report.binary is not None and report.binary.get("roc_auc") is not None:
            needed["roc.png"] = rep.plot_roc
            needed["pr.png"] = rep.plot_pr
        pngs: dict[str, bytes] = {}
        for name, plot in needed.items():
            path = images.get(name)
            if path is None or not Path(path).is_file():
                path = plot(report, Path(tmp) / name)
            pngs[name] = Path(path).read_bytes()
    return pngs


def _byline(metrics: dict[str, Any]) -> str:
    meta = metrics.get("meta", {})
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<p class="muted">data: {_e(meta.get("data", ""))} · {metrics["num_samples"]} items · '
        f"{metrics['num_classes']} classes · tta: {_e(meta.get('tta', 'center'))} · "
        f"written {stamp} by alexkit</p>"
    )


def _settings_section(metrics: dict[str, Any]) -> list[str]:
    """Run and settings: what was evaluated, on what, and how (precision included)."""
    from alexkit.report import precision_rows

    meta = metrics.get("meta", {})
    rows = []
    if meta.get("model"):
        rows.append(["model", _e(meta["model"])])
    if meta.get("data"):
        rows.append(["data", _e(meta["data"])])
    rows.append(["items, classes", f"{metrics['num_samples']}, {metrics['num_classes']}"])
    if meta.get("probe"):
        probe = f"{meta['probe']} (C = {meta.get('C', 1.0):g}) on {meta.get('layer', '?')}"
        probe += f" features of {meta.get('train', '?')} ({meta.get('train_samples', '?')} items)"
        rows.append(["linear probe", _e(probe)])
    if meta.get("tta"):
        rows.append(["test-time augmentation", _e(meta["tta"])])
    if metrics.get("binary"):
        rows.append(["decision threshold", f"{metrics['binary']['threshold']:g}"])
    temperature = (meta.get("calibration") or {}).get("temperature_applied")
    if "calibration" in meta:
        rows.append(
            ["temperature", "none applied" if temperature is None else f"{temperature:.4g}"]
        )
    for label, text in precision_rows(meta):
        rows.append([f"precision: {_e(label)}", _e(text)])
    skipped = meta.get("skipped") or []
    if skipped:
        rows.append(["unreadable items skipped", str(len(skipped))])
    return ["<h2>Run and settings</h2>", _table(["setting", "value"], rows, left=2)]


def _leakage_section(metrics: dict[str, Any]) -> list[str]:
    leak = metrics.get("leakage")
    if not leak:
        return []
    from alexkit.leakage import leakage_message

    if leak.get("leaked"):
        return [f'<p class="warn">Leakage: {_e(leakage_message(leak))}.</p>']
    return [
        f'<p class="ok">Leakage check: none of the {leak["checked"]} items is '
        "byte-identical to a training/validation item, and no group is shared.</p>"
    ]


def _headline_section(metrics: dict[str, Any]) -> list[str]:
    level = metrics.get("ci_level")
    parts = ["<h2>Headline metrics</h2>"]
    ci, how = metrics.get("ci", {}), metrics.get("ci_method", {})
    rows = []
    for label, key, value in headline_metrics(metrics):
        rows.append([_e(label), _num(value), _ci_cell(ci.get(key)), _e(how.get(key, "—"))])
    ci_head = f"{level:.0%} CI" if level else "CI"
    parts.append(_table(["metric", "value", ci_head, "method"], rows))
    boot = metrics.get("ci_bootstrap")
    if boot:
        parts.append(
            f'<p class="muted">Intervals: Wilson score for proportions, DeLong for the ROC AUC '
            f"of independent items, percentile bootstrap ({boot['n_boot']} resamples, seed "
            f"{boot['seed']}) otherwise; the bootstrap resampled {boot['num_units']} "
            f"{_e(boot['resampled'])}"
            + (
                " (items are clustered, so every interval is a group bootstrap)"
                if boot["resampled"] == "groups"
                else ""
            )
            + ".</p>"
        )
    return parts


def _calibration_section(metrics: dict[str, Any], pngs: dict[str, bytes]) -> list[str]:
    cal = metrics.get("calibration")
    if not cal:
        return []
    temp = cal.get("temperature")
    note = (
        f"probabilities scaled by the run's saved temperature T = {temp:.4g} "
        "(fitted on its validation split)"
        if temp is not None
        else "raw model probabilities (no temperature applied)"
    )
    rows = [
        [f"ECE ({cal['bins']} equal-width top-label bins)", _num(cal["ece"])],
        ["Brier score", _num(cal["brier"])],
        ["negative log-likelihood", _num(cal.get("nll"))],
    ]
    raw = cal.get("uncalibrated")
    if raw:
        rows += [
            ["ECE before temperature scaling", _num(raw["ece"])],
            ["Brier before temperature scaling", _num(raw["brier"])],
        ]
    return [
        "<h2>Calibration</h2>",
        f'<p class="muted">{_e(note)}.</p>' + _table(["metric", "value"], rows),
        f'<div class="figs">{_img(pngs["reliability.png"], "reliability")}</div>',
    ]


def _curves_section(metrics: dict[str, Any], pngs: dict[str, bytes]) -> list[str]:
    """Binary tasks: ROC and PR plots, and the metrics at the run's saved thresholds."""
    parts = []
    if "roc.png" in pngs:
        parts.append("<h2>ROC and precision-recall</h2>")
        parts.append(
            '<div class="figs">'
            + _img(pngs["roc.png"], "ROC curve")
            + _img(pngs["pr.png"], "precision-recall curve")
            + "</div>"
        )
    points = metrics.get("operating_points")
    if points:
        parts.append("<h2>Saved operating points</h2>")
        parts.append(
            '<p class="muted">Thresholds chosen on the run\'s validation split, never on '
            "this data.</p>"
        )
        rows = []
        for name, p in points.items():
            pci = p.get("ci", {})
            cells = [
                f"{_num(p.get(k))} ({_ci_cell(pci.get(k))})"
                for k in ("sensitivity", "specificity", "ppv", "npv")
            ]
            rows.append([_e(name.replace("_", " ")), f"{p['threshold']:.4g}", *cells])
        parts.append(
            _table(["point", "threshold", "sensitivity", "specificity", "PPV", "NPV"], rows)
        )
    return parts


def _confusion_section(report: EvalReport, pngs: dict[str, bytes]) -> list[str]:
    parts = ["<h2>Confusion matrix</h2>"]
    parts.append(
        f'<div class="figs">{_img(pngs["confusion_matrix.png"], "confusion matrix")}</div>'
    )
    off = report.confusion.copy()
    np.fill_diagonal(off, 0)
    pairs = []
    for k in np.argsort(-off, axis=None, kind="stable")[:10]:
        i, j = divmod(int(k), len(report.class_names))
        if off[i, j] == 0:
            break
        pairs.append(
            [
                _e(report.class_names[i]),
                _e(report.class_names[j]),
                str(int(off[i, j])),
                f"{report.confusion_normalized[i, j]:.1%}",
            ]
        )
    if pairs:
        parts.append("<h3>Most confused pairs</h3>")
        parts.append(_table(["true", "predicted as", "count", "% of true class"], pairs, left=2))
    return parts


def _per_class_section(report: EvalReport, ci: dict[str, Any]) -> list[str]:
    rows = []
    for i, name in enumerate(report.class_names):
        cells = []
        for m, arr in (("precision", report.precision), ("recall", report.recall)):
            cells.append(f"{_num(arr[i])} ({_ci_cell(ci.get(f'per_class.{name}.{m}'))})")
        cells.append(f"{_num(report.f1[i])} ({_ci_cell(ci.get(f'per_class.{name}.f1'))})")
        rows.append([_e(name), *cells, str(int(report.support[i]))])
    header = ["class", "precision (CI)", "recall (CI)", "F1 (CI)", "support"]
    return ["<h2>Per class</h2>", _table(header, rows)]


def _subgroups_section(report: EvalReport, metrics: dict[str, Any]) -> list[str]:
    sub = metrics.get("subgroups")
    if not sub:
        return []
    parts = ["<h2>Subgroups</h2>"]
    parts.append(
        f'<p class="muted">{_e(sub["file"])}: {sub["matched"]} items matched, '
        f"{sub['unmatched']} not listed.</p>"
    )
    rows = []
    for attr, values in sub["attributes"].items():
        for value, e in values.items():
            sci = e.get("ci", {})
            cells = [
                f"{_num(e.get(k))} ({_ci_cell(sci.get(k))})"
                for k in ("accuracy", "macro_avg.f1", "binary.roc_auc")
                if k in e
            ]
            rows.append([_e(attr), _e(value), str(e["n"]), *cells])
    head = ["attribute", "value", "n", "accuracy (CI)", "macro F1 (CI)"]
    if report.binary is not None:
        head.append("ROC AUC (CI)")
    parts.append(_table(head, rows, left=2))
    return parts


def _groups_section(metrics: dict[str, Any]) -> list[str]:
    """Clip / volume level."""
    groups = metrics.get("groups")
    if not groups:
        return []
    gci = groups.get("ci", {})
    rows = [
        [f"{_e(groups['level'])}s", str(groups["num_groups"]), ""],
        ["accuracy", _num(groups["accuracy"]), _ci_cell(gci.get("accuracy"))],
        ["macro F1", _num(groups["macro_avg"]["f1"]), _ci_cell(gci.get("macro_avg.f1"))],
    ]
    if groups.get("binary"):
        gb = groups["binary"]
        rows.append(["ROC AUC", _num(gb.get("roc_auc")), _ci_cell(gci.get("binary.roc_auc"))])
    return [
        f"<h2>Per {_e(groups['level'])}</h2>",
        f'<p class="muted">{_e(groups["aggregation"])}.</p>'
        + _table(["metric", "value", "CI"], rows),
    ]


def _gallery_section(report: EvalReport) -> list[str]:
    """The most confidently wrong items, with their Grad-CAM overlays when drawn."""
    wrong = gallery_indices(report)
    overlays = report.explanations or {}
    parts = ["<h2>Most confidently wrong</h2>"]
    if not wrong.size:
        parts.append("<p>No misclassified items.</p>")
        return parts
    if overlays:
        parts.append(
            '<p class="muted">Beside each image: Grad-CAM at conv5 for the predicted '
            "class (where the network looked to make the mistake; 13×13 resolution, "
            "a hint of shortcuts, not a segmentation).</p>"
        )
    cards = [_gallery_card(report, int(i), overlays.get(int(i))) for i in wrong]
    parts.append(f'<div class="gallery">{"".join(cards)}</div>')
    return parts


def _gallery_card(report: EvalReport, i: int, overlay: bytes | None) -> str:
    item = report.paths[i] if report.paths else str(i)
    thumb = _thumbnail(item) if report.paths else None
    picture = (
        _img(thumb, Path(item).name, "image/jpeg")
        if thumb
        else '<div class="muted">(no preview)</div>'
    )
    if overlay is not None:
        alt = f"Grad-CAM of {Path(item).name}"
        picture += _img(overlay_jpeg(overlay), alt, "image/jpeg").replace(
            "<img ", '<img class="gradcam" ', 1
        )
    t, p = int(report.y_true[i]), int(report.y_pred[i])
    wide = " wide" if overlay is not None else ""
    return (
        f'<div class="card{wide}">{picture}'
        f'<div title="{_e(item)}">{_e(Path(item).name)}</div>'
        f"<div>true: <b>{_e(report.class_names[t])}</b></div>"
        f"<div>predicted: <b>{_e(report.class_names[p])}</b> "
        f"({report.probs[i, p]:.3f})</div></div>"
    )


def write_html(report: EvalReport, path: str | Path, images: dict[str, Path] | None = None) -> Path:
    """Write :func:`render_html` to ``path`` atomically and return the path."""
    path = Path(path)
    atomic_write_text(path, render_html(report, images))
    return path
