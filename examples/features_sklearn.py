"""AlexNet features + scikit-learn: extract a layer's activations, fit linear classifiers.

The classic "CNN features off the shelf" workflow: a frozen AlexNet turns every image
into a vector (fc7: 4096 numbers), and a linear model is fitted on those vectors. It needs
no GPU and no fine-tuning, and it is a strong baseline to beat.

By default it runs on scikit-learn's digits (embedded, nothing to download) with a
randomly initialised AlexNet, so it works anywhere; give ``--weights imagenet`` (or a run
directory / ``.keras`` file with ``--model``) and ``--data`` for the real thing::

    python examples/features_sklearn.py --quick                  # ~20 s on 2 CPU cores
    python examples/features_sklearn.py --weights imagenet --data ~/data/2750 --layer fc7
    python examples/features_sklearn.py --model runs/plants/run --data ~/data/plantvillage/color \
        --per-class 50

The same with the CLI and pandas (``alexkit probe -w imagenet --train TRAIN --data TEST
--probe svm`` does it in one step, with the evaluate report)::

    alexkit extract --weights imagenet --data photos/ --layer fc7 --out feats.csv
    python - <<'EOF'
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    df = pd.read_csv("feats.csv")                      # path, label, f0 … f4095
    X, y = df.filter(regex=r"^f\\d+$").to_numpy(), df["label"]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    print(LogisticRegression(max_iter=2000).fit(Xtr, ytr).score(Xte, yte))
    EOF

Output: one line per classifier, ``<name> accuracy: <value>`` on the held-out images,
plus the majority-class baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def take(spec: Any, index: list[int]) -> Any:
    """The items of a ``DatasetSpec`` at ``index`` (a plain frozen dataclass)."""
    return dataclasses.replace(
        spec,
        items=tuple(spec.items[i] for i in index),
        labels=tuple(spec.labels[i] for i in index),
        splits=tuple(spec.splits[i] for i in index),
        groups=tuple(spec.groups[i] for i in index),
    )


def _per_class(spec: Any, n: int, seed: int) -> Any:
    """Keep at most ``n`` items per class (a seeded choice), for a quick run."""
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    labels = np.asarray(spec.labels)
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        keep.extend(sorted(rng.permutation(index)[:n].tolist()))
    return take(spec, sorted(keep))


def load_model(model: str | None, weights: str, variant: str, seed: int) -> tuple[Any, bool]:
    """The feature model and whether it wants grayscale input (as it was trained)."""
    if model is not None:
        from alexkit.evaluate import load_trained

        keras_model, _, config = load_trained(model)
        return keras_model, bool(config.get("grayscale", False))
    if weights != "none":
        from alexkit.weights import load_weights_model

        return load_weights_model(weights, variant), False
    from alexkit.model import build_alexnet

    # Random weights still give usable features for simple images; pretrained ones are
    # what make this workflow worth it on real photos.
    return build_alexnet(variant, num_classes=1000, seed=seed), False


def features_and_scores(
    data: str | Path | None = None,
    *,
    model: str | None = None,
    weights: str = "none",
    variant: str = "torchvision",
    layer: str = "fc7",
    per_class: int | None = None,
    test_fraction: float = 0.3,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Extract ``layer`` features, fit LogisticRegression and LinearSVC, return accuracies.

    The data's own ``test`` split is the held-out set when it has one, else a stratified
    ``test_fraction`` of it (alexkit's seeded splitter).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from alexkit.data import load_spec
    from alexkit.extract import extract_arrays

    if data is None:
        from alexkit.datasets import materialize_digits

        data = materialize_digits()  # sklearn's 8x8 digits as PNG class folders
    spec = load_spec(data, val_fraction=0.0)
    if "test" in set(spec.splits):
        train = take(spec, [i for i, s in enumerate(spec.splits) if s != "test"])
        test = spec.subset("test")
    else:
        spec = load_spec(data, val_fraction=test_fraction, seed=seed)
        train, test = spec.subset("train"), spec.subset("val")
    if per_class is not None:
        train = _per_class(train, per_class, seed)
        test = _per_class(test, max(2, per_class // 2), seed)

    net, grayscale = load_model(model, weights, variant, seed)
    common = {"layer": layer, "batch_size": batch_size, "grayscale": grayscale}
    _, y_train, x_train = extract_arrays(net, train, **common)
    _, y_test, x_test = extract_arrays(net, test, **common)

    # Standardising matters: fc7 of a random net is tiny, of a trained one large.
    classifiers = {
        "logreg": LogisticRegression(max_iter=2000, random_state=seed),
        "linear_svm": LinearSVC(C=0.1, random_state=seed),
    }
    scores = {"majority": Counter(y_test.tolist()).most_common(1)[0][1] / len(y_test)}
    for name, clf in classifiers.items():
        pipe = make_pipeline(StandardScaler(), clf).fit(x_train, y_train)
        scores[name] = float(pipe.score(x_test, y_test))
    scores["train_images"] = float(len(y_train))
    scores["test_images"] = float(len(y_test))
    scores["dim"] = float(x_train.shape[1])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="Images (any alexkit layout); default: digits.")
    parser.add_argument("--model", help="Run directory or .keras file to take features from.")
    parser.add_argument("--weights", default="none", help="imagenet | store name | none.")
    parser.add_argument(
        "--variant", default="torchvision", help="original | torchvision | tiny (smoke test)."
    )
    parser.add_argument("--layer", default="fc7", help="fc7, fc6, pool5, conv5, ...")
    parser.add_argument("--per-class", type=int, help="Use at most N training images a class.")
    parser.add_argument("--quick", action="store_true", help="Same as --per-class 8.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    per_class = args.per_class if args.per_class is not None else (8 if args.quick else None)
    from alexkit.errors import AlexkitError

    try:
        scores = features_and_scores(
            args.data,
            model=args.model,
            weights=args.weights,
            variant=args.variant,
            layer=args.layer,
            per_class=per_class,
            batch_size=args.batch_size,
            seed=args.seed,
        )
    except AlexkitError as err:  # one-line message and exit code, as the CLI gives
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    print(
        f"{args.layer} features: {int(scores['dim'])} dims, "
        f"{int(scores['train_images'])} train / {int(scores['test_images'])} test images"
    )
    for name in ("majority", "logreg", "linear_svm"):
        print(f"{name} accuracy: {scores[name]:.4f}")


if __name__ == "__main__":
    main()
