"""Hold out a test set from a dataset that ships without one (PlantVillage, EuroSAT).

Writes two CSV manifests (``path,label``) that every alexkit command reads:
``OUT/train.csv`` (give it to ``alexkit finetune --data``, which carves its own
validation split from it) and ``OUT/test.csv`` (give it to ``alexkit evaluate --data``
once, at the end). The split is stratified per class and seeded, using the same
splitter alexkit uses for validation (:func:`alexkit.data.load_spec`).

Usage::

    python examples/holdout.py ~/data/PlantVillage --out runs/plants/split --test-fraction 0.1
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from alexkit.data import load_spec


def write_holdout(
    root: str | Path, out: str | Path, *, test_fraction: float = 0.1, seed: int = 0
) -> tuple[Path, Path]:
    """Split ``root`` into ``out/train.csv`` and ``out/test.csv``; return both paths."""
    # load_spec's carved "val" part is our test set: stratified, group-aware, seeded.
    spec = load_spec(root, val_fraction=test_fraction, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.csv", "val": out / "test.csv"}
    for split, path in paths.items():
        part = spec.subset(split)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label"])
            for item, label in zip(part.items, part.labels, strict=True):
                writer.writerow([str(Path(item).resolve()), part.class_names[label]])
    return paths["train"], paths["val"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="Folder of class folders.")
    parser.add_argument("--out", type=Path, required=True, help="Folder for the manifests.")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, test = write_holdout(
        args.root, args.out, test_fraction=args.test_fraction, seed=args.seed
    )
    print(f"{train}\n{test}")


if __name__ == "__main__":
    main()
