"""What confidence intervals, calibration and report.html add to ``alexkit evaluate``.

Writes N photo-like 256×256 JPEGs (C classes, optional groups of G images), builds an
AlexNet (random weights: the forward pass costs the same), and times in one process:

* ``evaluate_s_no_ci``: ``evaluate_model(..., ci_level=None)`` — inference + metrics;
* ``evaluate_s_ci``: ``evaluate_model(...)`` with 95 % intervals, ``--n-boot`` resamples;
* ``report_s``: ``compute_report`` alone on the same probabilities, without and with
  intervals (the added cost, isolated from inference noise);
* ``write_s``: ``write_report`` (metrics, CSVs, 4 PNGs, report.html with thumbnails).

Prints one JSON object. Run: ``python benchmarks/evaluate_ci.py --n 1000 --classes 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from alexkit.precision import read_cpu_info  # TensorFlow-free

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _images(root: Path, n: int, classes: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        k = i % classes
        folder = root / f"class{k}"
        folder.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 80, (256, 256, 3)) + np.array([40 * k % 256, 90, 160])
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from alexkit.evaluate import compute_report, evaluate_model
    from alexkit.model import build_alexnet
    from alexkit.report import write_report

    out: dict = {
        "n": args.n,
        "classes": args.classes,
        "n_boot": args.n_boot,
        "cpu": read_cpu_info().model_name,
    }
    out["cpus"] = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        _images(data, args.n, args.classes)
        model = build_alexnet(num_classes=args.classes, seed=0)
        names = [f"class{k}" for k in range(args.classes)]
        common = dict(class_names=names, batch_size=args.batch_size, config={"image_size": 227})
        evaluate_model(model, str(data), ci_level=None, **common)  # warm-up (tracing)
        t = time.perf_counter()
        plain = evaluate_model(model, str(data), ci_level=None, **common)
        out["evaluate_s_no_ci"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        with_ci = evaluate_model(model, str(data), n_boot=args.n_boot, **common)
        out["evaluate_s_ci"] = round(time.perf_counter() - t, 3)
        y, p = plain.y_true, plain.probs
        t = time.perf_counter()
        compute_report(y, p, names, paths=plain.paths, ci_level=None)
        out["report_s_no_ci"] = round(time.perf_counter() - t, 4)
        t = time.perf_counter()
        compute_report(y, p, names, paths=plain.paths, n_boot=args.n_boot)
        out["report_s_ci"] = round(time.perf_counter() - t, 4)
        t = time.perf_counter()
        write_report(with_ci, Path(tmp) / "out")
        out["write_s"] = round(time.perf_counter() - t, 3)
        out["ci_share_of_evaluate"] = round(
            (out["report_s_ci"] - out["report_s_no_ci"]) / out["evaluate_s_no_ci"], 4
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
