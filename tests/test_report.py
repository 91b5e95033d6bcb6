"""Report files: stable shapes for scripts, numbers equal to scikit-learn, valid PNGs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from sklearn import metrics as skm

from alexkit.evaluate import compute_report
from alexkit.report import render_tables, write_report


def _report(c, n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = [f"Crop___disease_{i}" for i in range(c)]
    return compute_report(y, probs, names, paths=[f"img/{i}.jpg" for i in range(n)]), y, probs


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_multiclass_files(tmp_path):
    report, y, probs = _report(4)
    written = write_report(report, tmp_path / "out")
    names = set(written)
    assert names == {
        "metrics.json",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "classification_report.csv",
        "predictions.csv",
        "misclassified.csv",
        "reliability.png",
        "report.html",
    }
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))

    cm = _read_csv(tmp_path / "out/confusion_matrix.csv")
    assert cm[0][1:] == report.class_names
    assert [r[0] for r in cm[1:]] == report.class_names
    counts = np.array([[int(v) for v in r[1:]] for r in cm[1:]])
    np.testing.assert_array_equal(counts, skm.confusion_matrix(y, probs.argmax(1)))

    cr = _read_csv(tmp_path / "out/classification_report.csv")
    assert cr[0] == ["class", "precision", "recall", "f1", "support"]
    sk = skm.classification_report(y, probs.argmax(1), output_dict=True, zero_division=0)
    for row in cr[1:5]:
        k = str(report.class_names.index(row[0]))
        assert float(row[3]) == pytest.approx(sk[k]["f1-score"], abs=1e-5)
        assert int(row[4]) == sk[k]["support"]
    assert cr[5][0] == "macro avg"
    assert float(cr[5][3]) == pytest.approx(sk["macro avg"]["f1-score"], abs=1e-5)
    assert float(cr[6][2]) == pytest.approx(sk["weighted avg"]["recall"], abs=1e-5)

    pred = _read_csv(tmp_path / "out/predictions.csv")
    assert pred[0][:3] == ["path", "true", "predicted"]
    assert pred[0][-4:] == [f"p_{c}" for c in report.class_names]
    assert len(pred) == 121 and pred[1][0] == "img/0.jpg"
    np.testing.assert_allclose(
        np.array([[float(v) for v in r[-4:]] for r in pred[1:]]), probs, rtol=1e-5
    )
    wrong = _read_csv(tmp_path / "out/misclassified.csv")
    assert len(wrong) - 1 == int((y != probs.argmax(1)).sum())
    assert all(r[1] != r[2] for r in wrong[1:])


def _assert_png(path, min_side):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side and max(im.size) <= 4000
        # Not blank: a real plot has many distinct colours.
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20


def test_pngs_binary_and_many_classes(tmp_path):
    report, *_ = _report(2, n=80)
    written = write_report(report, tmp_path / "bin")
    assert {"roc.png", "pr.png", "reliability.png"} <= set(written)
    _assert_png(tmp_path / "bin/roc.png", 400)
    _assert_png(tmp_path / "bin/pr.png", 400)
    _assert_png(tmp_path / "bin/reliability.png", 400)
    _assert_png(tmp_path / "bin/confusion_matrix.png", 400)
    metrics = json.loads((tmp_path / "bin/metrics.json").read_text())
    assert set(metrics["binary"]) >= {"roc_auc", "pr_auc", "sensitivity", "specificity"}

    big, *_ = _report(38, n=400)
    write_report(big, tmp_path / "big")
    _assert_png(tmp_path / "big/confusion_matrix.png", 1000)  # scaled up for 38 labels
    assert not (tmp_path / "big/roc.png").exists()
    assert not (tmp_path / "big/pr.png").exists()


def test_render_tables_small_and_large():
    console = Console(record=True, width=160)
    small, *_ = _report(3)
    for t in render_tables(small):
        console.print(t)
    text = console.export_text()
    assert "Confusion matrix" in text and "macro avg" in text
    console = Console(record=True, width=160)
    big, *_ = _report(38, n=400)
    for t in render_tables(big):
        console.print(t)
    text = console.export_text()
    assert "Most frequent confusions" in text and "top-5 accuracy" in text


def test_tables_show_intervals():
    console = Console(record=True, width=200)
    report, *_ = _report(2, n=150)
    for t in render_tables(report):
        console.print(t)
    text = console.export_text()
    lo, hi = report.intervals.ci["binary.roc_auc"]
    assert f"{report.binary['roc_auc']:.3f} ({lo:.3f}–{hi:.3f})" in text
    lo, hi = report.intervals.ci["per_class.Crop___disease_1.recall"]
    assert f"{report.recall[1]:.3f} ({lo:.3f}–{hi:.3f})" in text
    assert "ECE (15 bins)" in text and "Brier score" in text and "Summary (95% CI)" in text


# --------------------------------------------------------------------------- report.html


def _headline_numbers(metrics):
    """Every headline number of metrics.json, as the page prints it (3 decimals)."""
    keys = ["accuracy", "macro_avg.f1", "weighted_avg.f1", "calibration.ece", "calibration.brier"]
    if "binary" in metrics:
        keys += [f"binary.{k}" for k in ("roc_auc", "pr_auc", "sensitivity", "specificity")]
        keys += ["binary.ppv", "binary.npv"]
    numbers = {}
    for key in keys:
        head, _, tail = key.partition(".")
        numbers[key] = metrics[head][tail] if tail else metrics[head]
        for i, bound in enumerate(metrics["ci"].get(key, [])):
            numbers[f"{key}.ci{i}"] = bound
    return {k: f"{v:.3f}" for k, v in numbers.items() if v is not None}


def _report_with_images(tmp_path, c, n=60):
    """A report whose items are real image files, so the gallery has thumbnails."""
    report, y, probs = _report(c, n=n, seed=c)
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"item_{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return compute_report(y, probs, report.class_names, paths=paths, n_boot=300), paths


def _chromium():
    import os
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must run: apt-get install -y chromium")
        pytest.skip("chromium not installed (apt-get install -y chromium) - report not rendered")
    return exe


def _render(exe, page, tmp_path):
    """Run headless Chromium: (DOM text, console lines, screenshot path)."""
    import subprocess

    shot = tmp_path / "shot.png"
    common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    common += ["--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    )
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1200,1600", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return dom.stdout, console, shot


def test_html_is_self_contained_and_has_every_headline_number(tmp_path):
    import re

    report, paths = _report_with_images(tmp_path, 2)
    written = write_report(report, tmp_path / "out")
    page = (tmp_path / "out/report.html").read_text()
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    for key, text in _headline_numbers(metrics).items():
        assert text in page, key
    # Self-contained: no external URL anywhere, every image inline.
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert "<script" not in page
    wrong = int(metrics["num_misclassified"])
    assert page.count("data:image/jpeg;base64,") == min(wrong, 24)  # gallery thumbnails
    assert page.count("data:image/png;base64,") == 4  # reliability, ROC, PR, confusion
    assert "Most confidently wrong" in page and "Most confused pairs" in page
    assert written["report.html"] == tmp_path / "out/report.html"


def visible_text(dom: str) -> str:
    """The words a person sees on the rendered page: the DOM's text outside <head>
    (title, style), tags dropped, runs of white space made one space."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.hidden, self.words = 0, []

        def handle_starttag(self, tag, attrs):
            self.hidden += tag in ("head", "style", "script", "title")

        def handle_endtag(self, tag):
            self.hidden -= tag in ("head", "style", "script", "title")

        def handle_data(self, data):
            if not self.hidden:
                self.words.append(data)

    parser = Text()
    parser.feed(dom)
    return " ".join(" ".join(parser.words).split())


# (meta as evaluate_model records it, what the settings table must say)
PRECISIONS = {
    2: (
        {
            "precision": {
                "requested": "auto",
                "policy": "mixed_bfloat16",
                "reason": "auto: CPU AMD EPYC 9B14 has avx512_bf16",
            },
            "trained_precision": "float32",
        },
        [
            "precision: evaluated in mixed_bfloat16 (auto: CPU AMD EPYC 9B14 has avx512_bf16)",
            "precision: trained in float32 (the run's config.json)",
        ],
    ),
    5: (
        {
            "precision": {"requested": None, "policy": "float32", "reason": "as the model is"},
            "trained_precision": None,
            "probe": "svm",  # as run_probe records a probe
            "C": 0.5,
            "layer": "fc7",
            "train": "data/train",
            "train_samples": 16,
        },
        [
            "precision: evaluated in float32 (as the model is)",
            "precision: trained in not recorded",
            "linear probe svm (C = 0.5) on fc7 features of data/train (16 items)",
        ],
    ),
}


@pytest.mark.parametrize("c", [2, 5])
def test_html_renders_in_headless_chromium(tmp_path, c):
    exe = _chromium()
    report, _ = _report_with_images(tmp_path, c)
    meta, said = PRECISIONS[c]
    report.meta.update(meta)
    write_report(report, tmp_path / "out")
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert {k: metrics["meta"][k] for k in meta} == meta
    dom, console, shot = _render(exe, tmp_path / "out/report.html", tmp_path)
    assert console == [], console
    assert "Headline metrics" in dom and "Calibration" in dom
    for key, text in _headline_numbers(metrics).items():
        assert text in dom, key
    # The settings table says, in words a reader sees, both precisions.
    text = visible_text(dom)
    assert "Run and settings" in text
    for line in said:
        assert line in text, (line, text[text.find("Run and settings") :])
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.shape[0] >= 1000 and pixels.std() > 10  # not a blank page


def test_render_checker_sees_console_errors(tmp_path):
    """The console check above can fail: a page with a script error is caught."""
    exe = _chromium()
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>console.error('boom');</script></body></html>")
    _, console, shot = _render(exe, page, tmp_path)
    assert any("boom" in line for line in console)
    with Image.open(shot) as im:
        assert np.asarray(im.convert("L"), dtype=np.float64).std() < 10  # nearly blank
