"""Does bfloat16 inference give the same answers as float32? fc7 features and predictions.

Prints one JSON object. The measurement issue #18 asks for before ``--precision auto``
may become the default of ``extract``/``evaluate``/``predict``/``explain``:

1. A model whose weights mean something: AlexNet ``original`` pretrained the demo's way
   (``alexkit demo``'s source task: digits 0-4 of scikit-learn's digits upscaled to PNGs,
   120 per digit, He init, lr 2e-4, batch 32) for ``--pretrain-epochs`` epochs; or
   ``--model PATH`` (a run directory or ``.keras`` file) to skip that.
2. fc7 features of held-out digits 5-9 (the demo's transfer task; ``--per-class`` images
   per digit) in float32 and in ``mixed_bfloat16`` (the loaded model rebuilt by
   :func:`alexkit.loading.model_with_precision`), through ``extract_arrays`` (the code
   ``alexkit extract`` runs): per-feature Pearson correlation over the images (median,
   5th percentile, min; features constant in either precision, e.g. dead ReLUs, are
   counted and left out), relative Frobenius error, per-image cosine similarity.
3. Linear probes (scikit-learn ``LogisticRegression`` on standardised features) on
   ``--seeds`` stratified 50/50 splits, the same split for both precisions: accuracy in
   float32, in bfloat16, the float32 probe applied to bfloat16 features, and how many
   test predictions differ; with the binomial standard error of one accuracy as the
   noise yardstick.
4. The pretrained classifier itself on held-out source digits 0-4 in both precisions:
   accuracy, agreement of the predicted classes, max |Δp|.
5. Wall time of the feature extraction in each precision, alternated (fp32, bf16, fp32,
   bf16) so machine load hits both; the first pass of each includes tracing.
6. With ``--transfer-seeds``: the demo's transfer step in each precision: the pretrained
   model fine-tuned with the ``digits-fewshot`` recipe on 5 labelled images per digit 5-9
   (10 val, 60 test per digit, drawn by the seed), evaluated on the test images in the
   same precision. Needs ``finetune(precision=...)``; where the installed alexkit lacks
   it the section says so and is skipped.

The CPU is named with its bfloat16 flags (AMX / AVX512-BF16): bfloat16 is only fast
where the CPU multiplies it natively.

Usage::

    python benchmarks/bf16_parity.py                          # pretrains first (minutes)
    python benchmarks/bf16_parity.py --model runs/pretrain-x  # reuse a model
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SOURCE_DIGITS = range(0, 5)
TARGET_DIGITS = range(5, 10)
PRECISIONS = ("float32", "mixed_bfloat16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="run directory or .keras file (default: pretrain one)")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--source-per-class", type=int, default=120)
    parser.add_argument("--per-class", type=int, default=100, help="target images per digit")
    parser.add_argument("--holdout-per-class", type=int, default=50, help="source test images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", help="where digits and the pretrain run go (default: temp)")
    parser.add_argument(
        "--transfer-seeds", type=int, nargs="*", default=[], help="demo transfer runs (minutes)"
    )
    return parser.parse_args(argv)


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def pick(root: Path, digits: range, start: int, count: int) -> list[tuple[str, str]]:
    """``count`` images per digit from position ``start`` of its sorted files."""
    rows = []
    for digit in digits:
        files = sorted((root / str(digit)).glob("*.png"))[start : start + count]
        rows += [(str(p), str(digit)) for p in files]
    return rows


def pretrain_model(work: Path, args: argparse.Namespace) -> tuple[Path, float]:
    """The demo's source-task pretraining; returns (model path, seconds)."""
    from alexkit import train

    source = pick(work / "digits", SOURCE_DIGITS, 0, args.source_per_class)
    csv_path = write_manifest(work / "source.csv", source)
    t0 = time.perf_counter()
    run = train.pretrain(
        csv_path,
        variant="original",
        epochs=args.pretrain_epochs,
        batch_size=32,
        init="he",
        lr=2e-4,
        schedule="step",
        out=work / "pretrain",
        seed=0,
        register=False,
        force=True,
    )
    return Path(run.model_path), time.perf_counter() - t0


def feature_parity(x32: np.ndarray, xbf: np.ndarray) -> dict:
    """Per-feature Pearson correlation over images, and whole-matrix agreement."""
    sd32, sdbf = x32.std(axis=0), xbf.std(axis=0)
    live = (sd32 > 0) & (sdbf > 0)
    a = (x32[:, live] - x32[:, live].mean(axis=0)) / sd32[live]
    b = (xbf[:, live] - xbf[:, live].mean(axis=0)) / sdbf[live]
    corr = (a * b).mean(axis=0)
    cos = np.sum(x32 * xbf, axis=1) / (
        np.linalg.norm(x32, axis=1) * np.linalg.norm(xbf, axis=1) + 1e-30
    )
    return {
        "features": int(x32.shape[1]),
        "features_constant_in_either": int((~live).sum()),
        "constant_in_one_only": int(((sd32 > 0) != (sdbf > 0)).sum()),
        "pearson_median": round(float(np.median(corr)), 6),
        "pearson_p05": round(float(np.percentile(corr, 5)), 6),
        "pearson_min": round(float(corr.min()), 6),
        "relative_frobenius_error": round(
            float(np.linalg.norm(xbf - x32) / np.linalg.norm(x32)), 6
        ),
        "cosine_per_image_median": round(float(np.median(cos)), 6),
        "cosine_per_image_min": round(float(cos.min()), 6),
        "zero_pattern_agreement": round(float(np.mean((x32 > 0) == (xbf > 0))), 6),
    }


def probe_parity(x32: np.ndarray, xbf: np.ndarray, y: np.ndarray, seeds: list[int]) -> dict:
    """Logistic-regression probes, same split for both precisions, one per seed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = []
    for seed in seeds:
        train, test = train_test_split(
            np.arange(len(y)), test_size=0.5, stratify=y, random_state=seed
        )

        p32, pbf = (
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(
                x[train], y[train]
            )
            for x in (x32, xbf)
        )
        pred32, predbf = p32.predict(x32[test]), pbf.predict(xbf[test])
        cross = p32.predict(xbf[test])
        acc32 = float(np.mean(pred32 == y[test]))
        rows.append(
            {
                "seed": seed,
                "test_images": len(test),
                "accuracy_float32": round(acc32, 4),
                "accuracy_bfloat16": round(float(np.mean(predbf == y[test])), 4),
                "accuracy_float32_probe_on_bf16_features": round(
                    float(np.mean(cross == y[test])), 4
                ),
                "predictions_differing": int(np.sum(pred32 != predbf)),
                "binomial_se": round(float(np.sqrt(acc32 * (1 - acc32) / len(test))), 4),
            }
        )
    diffs = [r["accuracy_bfloat16"] - r["accuracy_float32"] for r in rows]
    return {
        "splits": rows,
        "mean_accuracy_float32": round(statistics.mean(r["accuracy_float32"] for r in rows), 4),
        "mean_accuracy_bfloat16": round(statistics.mean(r["accuracy_bfloat16"] for r in rows), 4),
        "mean_difference_bf16_minus_fp32": round(statistics.mean(diffs), 4),
        "max_abs_difference": round(max(abs(d) for d in diffs), 4),
        "mean_binomial_se": round(statistics.mean(r["binomial_se"] for r in rows), 4),
    }


def classifier_parity(models: dict, spec, batch_size: int) -> dict:
    """The pretrained 5-digit classifier on held-out source digits, both precisions."""
    from alexkit.evaluate import evaluate_model

    out = {}
    probs = {}
    for name, model in models.items():
        report = evaluate_model(
            model, spec, batch_size=batch_size, ci_level=None, calibrate=False, check_leaks=False
        )
        probs[name] = report.probs
        out[f"accuracy_{name}"] = round(float(report.accuracy), 4)
    a, b = probs["float32"], probs["mixed_bfloat16"]
    out["images"] = int(len(a))
    out["predicted_class_agreement"] = round(float(np.mean(a.argmax(1) == b.argmax(1))), 4)
    out["max_abs_probability_difference"] = round(float(np.abs(a - b).max()), 5)
    return out


def transfer_parity(model_path: Path, work: Path, seeds: list[int], batch_size: int) -> dict:
    """The demo's few-shot transfer, fine-tuned and evaluated in each precision per seed."""
    import inspect

    from alexkit import train
    from alexkit.evaluate import evaluate_model, load_eval_spec

    if "precision" not in inspect.signature(train.finetune).parameters:
        return {"skipped": "this alexkit's finetune() takes no precision"}
    weights = model_path / "model.keras" if model_path.is_dir() else model_path
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        manifest = [("path", "label", "split")]
        for digit in TARGET_DIGITS:
            files = sorted((work / "digits" / str(digit)).glob("*.png"))
            chosen = rng.choice(len(files), size=75, replace=False)
            splits = ["train"] * 5 + ["val"] * 10 + ["test"] * 60
            picked = zip(chosen, splits, strict=True)
            manifest += [(str(files[i]), str(digit), split) for i, split in picked]
        csv_path = work / f"transfer-{seed}.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(manifest)
        row: dict = {"seed": seed}
        for policy in PRECISIONS:
            t0 = time.perf_counter()
            run = train.finetune(
                "digits-fewshot",
                csv_path,
                weights=str(weights),
                out=work / f"transfer-{seed}-{policy}",
                batch_size=16,
                seed=seed,
                force=True,
                precision=policy,
            )
            spec = load_eval_spec(csv_path, None)
            report = evaluate_model(
                run.run_dir, spec, batch_size=batch_size, ci_level=None, precision=policy
            )
            row[f"accuracy_{policy}"] = round(float(report.accuracy), 4)
            row[f"seconds_{policy}"] = round(time.perf_counter() - t0, 1)
            row["test_images"] = int(report.num_samples)
        rows.append(row)
    diffs = [r["accuracy_mixed_bfloat16"] - r["accuracy_float32"] for r in rows]
    n = rows[0]["test_images"]
    mean32 = statistics.mean(r["accuracy_float32"] for r in rows)
    return {
        "recipe": "digits-fewshot, 5 shots per digit 5-9, batch 16",
        "runs": rows,
        "mean_accuracy_float32": round(mean32, 4),
        "mean_accuracy_bfloat16": round(
            statistics.mean(r["accuracy_mixed_bfloat16"] for r in rows), 4
        ),
        "mean_difference_bf16_minus_fp32": round(statistics.mean(diffs), 4),
        "sd_across_seeds_float32": round(statistics.stdev(r["accuracy_float32"] for r in rows), 4)
        if len(rows) > 1
        else None,
        "binomial_se_one_run": round(float(np.sqrt(mean32 * (1 - mean32) / n)), 4),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.workdir:
        return measure(args, Path(args.workdir))
    with tempfile.TemporaryDirectory(prefix="bf16-parity-") as tmp:  # ~1 GB: model, checkpoints
        return measure(args, Path(tmp))


def measure(args: argparse.Namespace, work: Path) -> dict:
    from alexkit import datasets
    from alexkit.data import load_spec
    from alexkit.extract import extract_arrays
    from alexkit.loading import layer_policies, load_trained, model_with_precision
    from alexkit.precision import choose_precision, read_cpu_info

    datasets.materialize_digits(work / "digits", digits=range(10))
    report: dict = {"benchmark": "bf16_parity"}
    if args.model:
        model_path, pretrain_seconds = Path(args.model), None
        report["model"] = {"source": str(model_path)}
    else:
        model_path, pretrain_seconds = pretrain_model(work, args)
        report["model"] = {
            "source": "pretrained here: alexkit.train.pretrain on digits 0-4 (the demo's "
            "source task, its settings: he init, lr 2e-4, batch 32, step schedule)",
            "source_images": args.source_per_class * len(SOURCE_DIGITS),
            "epochs": args.pretrain_epochs,
            "pretrain_seconds": round(pretrain_seconds, 1),
        }
    model, _names, _config = load_trained(model_path)
    t0 = time.perf_counter()
    models = {"float32": model, "mixed_bfloat16": model_with_precision(model, "mixed_bfloat16")}
    report["model"]["rebuild_seconds"] = round(time.perf_counter() - t0, 2)
    policies: dict[str, list[str]] = {}
    for layer, policy in layer_policies(models["mixed_bfloat16"]).items():
        policies.setdefault(policy, []).append(layer)
    report["model"]["bf16_layer_policies"] = policies

    target = load_spec(
        write_manifest(
            work / "target.csv", pick(work / "digits", TARGET_DIGITS, 0, args.per_class)
        ),
        val_fraction=0.0,
    )
    features, seconds = {}, {p: [] for p in PRECISIONS}
    for _ in range(2):  # alternate so load on the shared machine hits both precisions
        for name in PRECISIONS:
            t0 = time.perf_counter()
            _items, labels, x = extract_arrays(
                models[name], target, layer="fc7", batch_size=args.batch_size
            )
            seconds[name].append(time.perf_counter() - t0)
            features[name] = x
    n = len(labels)
    report["extraction"] = {
        "images": n,
        "batch_size": args.batch_size,
        **{
            name: {
                "seconds_first_pass_with_tracing": round(seconds[name][0], 2),
                "seconds_second_pass": round(seconds[name][1], 2),
                "images_per_second": round(n / seconds[name][1], 1),
            }
            for name in PRECISIONS
        },
        "bf16_speedup_second_pass": round(seconds["float32"][1] / seconds["mixed_bfloat16"][1], 3),
    }
    x32, xbf = features["float32"], features["mixed_bfloat16"]
    report["fc7_features"] = feature_parity(x32, xbf)
    report["linear_probe"] = probe_parity(x32, xbf, labels, args.seeds)
    start = args.source_per_class  # source images the pretraining never saw
    holdout = load_spec(
        write_manifest(
            work / "holdout.csv",
            pick(work / "digits", SOURCE_DIGITS, start, args.holdout_per_class),
        ),
        val_fraction=0.0,
    )
    report["classifier_on_held_out_source_digits"] = classifier_parity(
        models, holdout, args.batch_size
    )
    if args.transfer_seeds:
        del models, model  # the transfer runs load their own
        report["demo_transfer"] = transfer_parity(
            model_path, work, args.transfer_seeds, args.batch_size
        )
    from importlib.metadata import version

    report["machine"] = {
        "cpu": read_cpu_info().as_dict(),
        "auto_would_choose": choose_precision("auto").as_dict(),
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "workdir": args.workdir,
    }
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
