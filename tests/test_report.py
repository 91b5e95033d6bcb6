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
    assert "roc.png" in written
    _assert_png(tmp_path / "bin/roc.png", 400)
    _assert_png(tmp_path / "bin/confusion_matrix.png", 400)
    metrics = json.loads((tmp_path / "bin/metrics.json").read_text())
    assert set(metrics["binary"]) >= {"roc_auc", "pr_auc", "sensitivity", "specificity"}

    big, *_ = _report(38, n=400)
    write_report(big, tmp_path / "big")
    _assert_png(tmp_path / "big/confusion_matrix.png", 1000)  # scaled up for 38 labels
    assert not (tmp_path / "big/roc.png").exists()


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
