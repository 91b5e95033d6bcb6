"""Latency, throughput and file size of exported AlexNets: Keras vs onnxruntime vs LiteRT.

For each variant, a 1000-class AlexNet (seeded random weights, the classifier scaled to
give varied probabilities; speed and size do not depend on the values) is exported with
``alexkit.export.export_model`` to every format and quantization (each export also runs
its own parity check), then each runtime is timed on the same random [0, 255] images:

* ``single``: one image per call, ``--single-runs`` calls after 3 warm-up calls: p50 and
  p95 latency in milliseconds;
* ``batch32``: 32 images per call, ``--batch-runs`` calls after one warm-up: images/second
  (median call).

Keras runs ``model.predict_on_batch`` (what ``evaluate``/``predict`` use); onnxruntime
and LiteRT run through ``alexkit.export.load_exported`` with ``--threads`` intra-op
threads (default: every core). File sizes are per format and quantization. Prints one
JSON object with the CPU's model name, core count and load average (other processes
share the machine: compare ratios within one run).

Run: ``python benchmarks/export_latency.py`` (about 10-20 minutes on 2 busy cores; the
ONNX conversions dominate).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alexkit.precision import read_cpu_info  # TensorFlow-free

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXPORTS = (
    ("savedmodel", "none"),
    ("onnx", "none"),
    ("onnx", "dynamic-int8"),
    ("tflite", "none"),
    ("tflite", "float16"),
    ("tflite", "dynamic-int8"),
)


def time_calls(fn, x: np.ndarray, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return times


def measure(fn, single: np.ndarray, batch: np.ndarray, args) -> dict:
    lat = np.array(time_calls(fn, single, args.single_runs, 3)) * 1e3
    per_batch = time_calls(fn, batch, args.batch_runs, 1)
    return {
        "single_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "single_p95_ms": round(float(np.percentile(lat, 95)), 2),
        "batch32_images_per_s": round(len(batch) / statistics.median(per_batch), 1),
    }


def spread_head(model, images: np.ndarray) -> None:
    """Random head weights giving logits of spread ~2 (He init zeroes the classifier,
    which would make every export trivially equal: uniform probabilities)."""
    import keras

    head = model.get_layer("predictions")
    features = np.asarray(keras.Model(model.inputs, head.input).predict_on_batch(images))
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 1, head.kernel.shape)
    kernel *= 2.0 / max(float(np.std((features - features.mean(0)) @ kernel)), 1e-12)
    bias = -(features.mean(0) @ kernel)
    head.set_weights([kernel.astype("float32"), bias.astype("float32")])


def build(variant: str):
    from alexkit.model import build_alexnet

    model = build_alexnet(variant, seed=0, kernel_init="he")
    size = int(model.input_shape[1])
    rng = np.random.default_rng(0)
    spread_head(model, rng.uniform(0, 255, (8, size, size, 3)).astype("float32"))
    single = rng.uniform(0, 255, (1, size, size, 3)).astype("float32")
    batch = rng.uniform(0, 255, (32, size, size, 3)).astype("float32")
    return model, single, batch


def run_job(job: str, root: Path, args) -> dict:
    """One measurement in this process: ``variant:keras`` or ``variant:format:quantize``."""
    from alexkit.export import export_model, load_exported

    variant, *what = job.split(":")
    model, single, batch = build(variant)
    if what == ["keras"]:
        keras_file = root / f"{variant}.keras"
        model.save(keras_file)
        out = measure(lambda x: np.asarray(model.predict_on_batch(x)), single, batch, args)
        return {
            "image_size": int(model.input_shape[1]),
            "params": int(model.count_params()),
            **out,
            "size_mb": round(keras_file.stat().st_size / 1e6, 1),
        }
    fmt, quantize = what
    start = time.perf_counter()
    result = export_model(model, fmt, root / f"{variant}-{fmt}-{quantize}", quantize=quantize)
    entry = {
        "format": fmt,
        "quantize": quantize,
        "size_mb": round(result.size_bytes / 1e6, 1),
        "export_s": round(time.perf_counter() - start, 1),
        "parity_max_abs_diff": result.parity["max_abs_diff"],
        "parity_top1_agreement": result.parity["top1_agreement"],
        "parity_claimed": result.parity["claimed"],
    }
    if fmt != "savedmodel":
        loaded = load_exported(result.path, threads=args.threads)
        entry.update(measure(loaded.predict_on_batch, single, batch, args))
    return entry


def run_variant(variant: str, args) -> dict:
    """Each measurement in a fresh process: TensorFlow keeps every frozen graph a
    conversion makes (~1-3 GB per AlexNet ONNX conversion), which adds up."""
    import subprocess

    def job(spec: str) -> dict:
        cmd = [sys.executable, __file__, "--job", spec, "--threads", str(args.threads)]
        cmd += ["--single-runs", str(args.single_runs), "--batch-runs", str(args.batch_runs)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{spec} failed ({done.returncode}): {done.stderr[-2000:]}")
        entry = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps({variant: entry}), flush=True, file=sys.stderr)
        return entry

    out = job(f"{variant}:keras")
    out = {"image_size": out.pop("image_size"), "params": out.pop("params"), "keras": out}
    out["exports"] = []
    for fmt, quantize in EXPORTS:
        entry = job(f"{variant}:{fmt}:{quantize}")
        if fmt != "savedmodel":
            entry["single_p50_vs_keras"] = round(
                out["keras"]["single_p50_ms"] / entry["single_p50_ms"], 2
            )
            entry["batch32_vs_keras"] = round(
                entry["batch32_images_per_s"] / out["keras"]["batch32_images_per_s"], 2
            )
        out["exports"].append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="original,torchvision")
    parser.add_argument("--single-runs", type=int, default=30)
    parser.add_argument("--batch-runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--job", help=argparse.SUPPRESS)  # one measurement, for run_variant
    args = parser.parse_args()
    if args.job:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_job(args.job, Path(tmp), args)))
        return

    import keras
    import tensorflow as tf

    from alexkit import __version__
    from alexkit.export import _versions

    report = {
        "cpu": read_cpu_info().model_name,
        "cores": os.cpu_count(),
        "threads": args.threads,
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "versions": {**_versions(), "alexkit": __version__, "keras": keras.__version__},
        "tensorflow_threads": tf.config.threading.get_intra_op_parallelism_threads() or "auto",
        "variants": {},
    }
    for variant in args.variants.split(","):
        report["variants"][variant] = run_variant(variant, args)
    report["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
