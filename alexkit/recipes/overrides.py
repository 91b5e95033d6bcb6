"""Apply CLI flags on top of a recipe, and turn its class weighting into numbers."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from alexkit.errors import DataError, RecipeError, UsageError
from alexkit.recipes.reader import join_choices
from alexkit.recipes.schema import CLASS_WEIGHT_MODES, Recipe
from alexkit.variants import IMAGE_SIZES, VARIANTS


def apply_overrides(
    recipe: Recipe,
    *,
    epochs: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
) -> Recipe:
    """Apply CLI flags on top of a recipe (flag > recipe > default).

    Args:
        recipe: the recipe to override.
        epochs: an int sets every stage to that many epochs; a sequence sets each stage
            (its length must equal the number of stages).
        batch_size: replaces ``batch_size``.
        lr: the first stage's learning rate; later stages are scaled by the same factor,
            so their ratio to the first stage is kept.
        seed: replaces ``seed``.

    Returns:
        A new :class:`Recipe` (the input is unchanged).

    Raises:
        UsageError: a value out of range (the message names the flag).
    """
    stages = list(recipe.stages)
    if epochs is not None:
        per_stage = [epochs] * len(stages) if isinstance(epochs, int) else list(epochs)
        if len(per_stage) != len(stages):
            raise UsageError(
                f"--epochs got {len(per_stage)} values but recipe '{recipe.name}' has "
                f"{len(stages)} stages ({', '.join(s.name for s in stages)})"
            )
        for value in per_stage:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"--epochs must be a whole number >= 1, got {value!r}")
        stages = [dataclasses.replace(s, epochs=n) for s, n in zip(stages, per_stage, strict=True)]
    if lr is not None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and 0 < lr <= 10):
            raise UsageError(f"--lr must be a number > 0 and <= 10, got {lr!r}")
        first = stages[0].lr
        stages = [dataclasses.replace(s, lr=float(lr) * (s.lr / first)) for s in stages]
    changes: dict[str, Any] = {"stages": tuple(stages)}
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"--batch-size must be a whole number >= 1, got {batch_size!r}")
        changes["batch_size"] = batch_size
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise UsageError(f"--seed must be a whole number in 0..{2**32 - 1}, got {seed!r}")
        changes["seed"] = seed
    return dataclasses.replace(recipe, **changes)


def compute_class_weights(
    labels: Sequence[int],
    num_classes: int,
    mode: str | Mapping[str, float] | Mapping[int, float],
    class_names: Sequence[str] | None = None,
) -> dict[int, float] | None:
    """Per-class loss weights for Keras' ``class_weight``.

    ``"balanced"`` gives ``n_samples / (n_present_classes * count_c)``, exactly
    scikit-learn's ``compute_class_weight("balanced", classes=np.unique(y), y=y)``;
    classes absent from ``labels`` get 1.0 (they never reach the loss). Labels < 0
    (unknown) are ignored.

    Args:
        labels: integer training labels.
        num_classes: number of classes of the model.
        mode: ``"balanced"``, ``"none"`` or a mapping from class name (needs
            ``class_names``) or index to weight; unlisted classes weigh 1.0.
        class_names: names of classes 0..num_classes-1, to resolve named weights.

    Returns:
        ``{class_index: weight}`` for every class, or None for ``"none"``.

    Raises:
        DataError: labels out of range, no labelled samples, or unknown class names.
    """
    if isinstance(mode, str):
        if mode == "none":
            return None
        if mode != "balanced":
            raise RecipeError(
                f"class_weights must be one of {join_choices(CLASS_WEIGHT_MODES)} or a table, "
                f"got '{mode}'"
            )
        counts = [0] * num_classes
        for label in labels:
            label = int(label)
            if label < 0:
                continue
            if label >= num_classes:
                raise DataError(f"label {label} is out of range for {num_classes} classes")
            counts[label] += 1
        total = sum(counts)
        if total == 0:
            raise DataError("cannot balance class weights: no labelled training images")
        present = sum(1 for c in counts if c)
        return {k: (total / (present * c) if c else 1.0) for k, c in enumerate(counts)}

    weights = {k: 1.0 for k in range(num_classes)}
    for key, weight in mode.items():
        if isinstance(key, str):
            if class_names is None or key not in class_names:
                known = join_choices(class_names) if class_names is not None else "none given"
                raise DataError(
                    f"class_weights names class '{key}', which is not in the data; classes: {known}"
                )
            index = list(class_names).index(key)
        else:
            index = int(key)
            if not 0 <= index < num_classes:
                raise DataError(f"class_weights index {index} is out of range")
        weights[index] = float(weight)
    return weights


def with_variant(recipe: Recipe, variant: str) -> Recipe:
    """``recipe`` for another AlexNet ``variant``: its input size, and the resize before
    cropping when the recipe used its own variant's default (256 for a 227/224 crop;
    ``tiny`` resizes to 112 for its 99 crop). Everything else stays the recipe's own."""
    if variant not in VARIANTS:
        raise UsageError(
            f"variant must be one of {join_choices(sorted(VARIANTS))}; got {variant!r}."
        )
    augment = recipe.augment
    if augment.resize == VARIANTS[recipe.variant]["resize"]:
        augment = dataclasses.replace(augment, resize=VARIANTS[variant]["resize"])
    return dataclasses.replace(
        recipe, variant=variant, image_size=IMAGE_SIZES[variant], augment=augment
    )
