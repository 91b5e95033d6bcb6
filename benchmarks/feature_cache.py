"""Accuracy and wall time of head-only fine-tuning with and without the training-view cache.

The demo's task (``alexkit demo``): AlexNet (original) pretrained on scikit-learn's digits
0-4, then the ``digits-fewshot`` recipe (30 head-only epochs, batch 16) on 5 labelled
images per digit 5-9, tested on 60 held-out images per digit. The pretrained model is
made once (kept in ``--out``); every fine-tune runs with each ``--views`` K (0: uncached)
and each ``--seeds`` seed, interleaved so that a loaded machine slows all of them alike.

Prints one JSON object: the CPU, per run the held-out accuracy, the best validation
accuracy, the wall time and the training seconds (epoch loops only), and per K the mean
accuracy and the time ratio to K=0.

    python benchmarks/feature_cache.py --out /tmp/fc-bench --seeds 0 1 2 --views 0 2 4 8
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np

from alexkit.precision import read_cpu_info  # TensorFlow-free

SOURCE, TARGET = range(0, 5), range(5, 10)


def _manifests(out: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    from alexkit import datasets

    rng = np.random.default_rng(0)
    roots = {
        "source": Path(datasets.materialize_digits(digits=SOURCE)),
        "target": Path(datasets.materialize_digits(digits=TARGET)),
    }
    plans = {
        "source": (SOURCE, [("train", args.source_per_class), ("val", 20)]),
        "target": (TARGET, [("train", args.shots), ("val", 10), ("test", args.test_per_class)]),
    }
    paths = {}
    for kind, (digits, splits) in plans.items():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["path", "label", "split"])
        for digit in digits:
            files = sorted((roots[kind] / str(digit)).glob("*.png"))
            order = rng.permutation(len(files))
            names = [split for split, count in splits for _ in range(count)]
            for index, split in zip(order, names, strict=False):
                writer.writerow([str(files[index]), str(digit), split])
        paths[kind] = out / f"{kind}.csv"
        paths[kind].write_text(buf.getvalue())
    return paths["source"], paths["target"]


def _pretrained(out: Path, source: Path, args: argparse.Namespace) -> Path:
    from alexkit import train

    model = out / "pretrain" / "model.keras"
    if model.exists():
        return model
    train.pretrain(
        source, val=source, variant="original", epochs=args.pretrain_epochs, batch_size=32,
        init="he", lr=2e-4, schedule="step", out=out / "pretrain", seed=0, register=False,
        force=True,
    )  # fmt: skip
    return model


def _finetune(out: Path, target: Path, weights: Path, seed: int, views: int, epochs: int | None):
    from alexkit import train
    from alexkit.data import load_spec
    from alexkit.evaluate import evaluate_model, load_trained

    result = train.finetune(
        "digits-fewshot", target, weights=str(weights), out=out / f"ft-k{views}-s{seed}",
        epochs=epochs, batch_size=16, seed=seed, force=True, feature_cache_views=views,
    )  # fmt: skip
    model, class_names, config = load_trained(result.run_dir)
    test = load_spec(str(target), class_names=class_names, split="test")
    report = evaluate_model(model, test, class_names=class_names, config=config, batch_size=32)
    return {
        "views": views,
        "seed": seed,
        "test_accuracy": round(float(report.accuracy), 4),
        "best_val_accuracy": round(float(result.best_value), 4),
        "seconds": round(result.seconds, 2),
        "train_seconds": round(sum(r["seconds"] for r in result.history), 2),
        "epochs": len(result.history),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--views", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--source-per-class", type=int, default=120)
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--test-per-class", type=int, default=60)
    parser.add_argument("--finetune-epochs", type=int, default=None, help="default: recipe's")
    args = parser.parse_args()

    import keras

    from alexkit.train.common import keep_checkpoints

    args.out.mkdir(parents=True, exist_ok=True)
    source, target = _manifests(args.out, args)
    t0 = time.perf_counter()
    with keep_checkpoints(0):
        weights = _pretrained(args.out, source, args)
        pretrain_seconds = time.perf_counter() - t0
        runs = []
        for seed in args.seeds:
            for views in args.views:
                runs.append(_finetune(args.out, target, weights, seed, views, args.finetune_epochs))
                keras.backend.clear_session()
    base = {r["seed"]: r for r in runs if r["views"] == 0}
    summary = {}
    for views in args.views:
        mine = [r for r in runs if r["views"] == views]
        accs = [r["test_accuracy"] for r in mine]
        summary[str(views)] = {
            "test_accuracy_mean": round(statistics.mean(accs), 4),
            "test_accuracies": accs,
            "seconds_mean": round(statistics.mean(r["seconds"] for r in mine), 2),
        }
        if base:
            summary[str(views)]["time_ratio_to_uncached"] = [
                round(r["seconds"] / base[r["seed"]]["seconds"], 3)
                for r in mine
                if r["seed"] in base
            ]
            summary[str(views)]["train_time_ratio_to_uncached"] = [
                round(r["train_seconds"] / base[r["seed"]]["train_seconds"], 3)
                for r in mine
                if r["seed"] in base
            ]
    print(
        json.dumps(
            {
                "cpu": read_cpu_info().model_name,
                "pretrain_seconds": round(pretrain_seconds, 1),
                "runs": runs,
                "by_views": summary,
            },
            indent=2,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
