"""From a recipe (or pretrain's options) to what the engine runs: stages, data, weights.

:class:`StagePlan` is one stage of epochs; :class:`DataPlan` the data of a run; the
functions here read the typed :class:`alexkit.recipes.Recipe`, load and split the
dataset specs, and make the per-epoch ``tf.data`` pipelines.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import DataError, RecipeError, UsageError
from alexkit.metrics import KNOWN_METRICS
from alexkit.recipes import Recipe

log = logging.getLogger(__name__)


@dataclass
class StagePlan:
    """One stage of training (finetune has one or two; pretrain has one).

    Attributes:
        name: shown in progress and history (``head``, ``finetune``, ``pretrain``).
        epochs: epochs in this stage.
        trainable_from: first trainable layer; None trains only the head; ``"all"``
            trains everything.
        optimizer: ``paper_sgd``/``sgd`` (the paper's SGD with coupled weight decay,
            :class:`alexkit.optim.PaperSGD`) or ``adam``.
        lr: base learning rate.
        momentum: SGD momentum.
        weight_decay: coupled weight decay of SGD (Adam ignores it).
        schedule: ``{"kind": "constant"|"step"|"plateau", ...params}``.
        early_stopping: ``{"metric": "val_auc", "patience": 5, "mode": "max"}`` or None.
    """

    name: str
    epochs: int
    trainable_from: str | None = "all"
    optimizer: str = "paper_sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "constant"})
    early_stopping: dict[str, Any] | None = None


@dataclass
class DataPlan:
    """The data of a run: dataset specs, classes, input size, batch and augmentation."""

    train: Any  # DatasetSpec
    val: Any | None  # DatasetSpec or None
    class_names: list[str]
    image_size: int
    batch_size: int
    augment: Any  # alexkit.data.augment.AugmentConfig
    grayscale: bool = False
    num_train: int = 0


def monitor_mode(metric: str) -> str:
    """``min`` for losses, ``max`` for every other metric."""
    return "min" if metric.endswith("loss") else "max"


def _val_name(metric: str) -> str:
    return metric if metric.startswith("val_") else "val_" + metric


# --------------------------------------------------------------------------- recipe


def load_recipe(recipe: Any, overrides: dict[str, Any]) -> tuple[Recipe, dict[str, Any], str]:
    """Resolve a recipe (name, file or ``Recipe``), apply CLI overrides; dict + fingerprint."""
    from alexkit import recipes as recipes_mod

    if recipe is None or (recipe == "default" and "default" not in recipes_mod.recipe_names()):
        rec = recipes_mod.default_recipe()
    elif isinstance(recipe, (str, Path)):
        rec = recipes_mod.load_recipe(recipe)
    else:
        rec = recipe
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        rec = recipes_mod.apply_overrides(rec, **given)
    return rec, recipes_mod.recipe_to_dict(rec), recipes_mod.recipe_fingerprint(rec)


def stages_from_recipe(rec: Recipe) -> list[StagePlan]:
    """The recipe's ``[[stages]]`` with its weight decay and early stopping."""
    early = None
    if rec.early_stopping is not None:
        metric = _val_name(str(rec.early_stopping.metric))
        mode = rec.early_stopping.mode
        early = {
            "metric": metric,
            "patience": int(rec.early_stopping.patience),
            "mode": mode if mode in ("min", "max") else monitor_mode(metric),
        }
    stages = [
        StagePlan(
            name=st.name or f"stage{i + 1}",
            epochs=int(st.epochs),
            trainable_from=st.trainable_from,
            optimizer=st.optimizer.lower(),
            lr=float(st.lr),
            momentum=float(st.momentum),
            weight_decay=float(rec.weight_decay),
            schedule={"kind": "constant"},
            early_stopping=early,
        )
        for i, st in enumerate(rec.stages)
    ]
    if not stages:
        raise RecipeError("the recipe has no [[stages]]; add at least one stage.")
    return stages


def metrics_from_recipe(rec: Recipe) -> tuple[str, list[str]]:
    """The monitored metric (``val_...``) and the sorted validation metrics to compute."""
    monitor = _val_name(str(rec.monitor or "val_accuracy"))
    wanted = [str(m).lower() for m in rec.metrics]
    unknown = [m for m in wanted if m not in KNOWN_METRICS]
    if unknown:
        raise RecipeError(f"unknown metrics {unknown}; valid metrics: {list(KNOWN_METRICS)}.")
    if monitor[4:] not in KNOWN_METRICS:
        raise RecipeError(f"monitor {monitor!r} is not one of val_{{{','.join(KNOWN_METRICS)}}}.")
    return monitor, sorted(set(wanted) | {"loss", "accuracy", monitor[4:]})


def class_weights(rec: Recipe, spec: Any) -> dict[int, float] | None:
    """Keras ``class_weight`` for the recipe's ``class_weights`` setting, or None."""
    setting = rec.class_weights
    if not setting or setting == "none":
        return None
    from alexkit.recipes import compute_class_weights

    weights = compute_class_weights(
        [int(x) for x in spec.labels], len(spec.class_names), setting, list(spec.class_names)
    )
    if weights is None:
        return None
    return {int(k): float(v) for k, v in weights.items()}


def digits_path() -> Path:
    """The built-in digits data set (the ``digits`` recipe), written on first use."""
    try:
        from alexkit.datasets import materialize_digits
    except ImportError as err:
        raise UsageError(
            "this recipe's built-in digits data is unavailable in this install; pass --data."
        ) from err
    return Path(materialize_digits())


def preprocessing(variant: str, plan: DataPlan) -> dict[str, Any]:
    """The ``preprocessing`` block of ``config.json``: how a saved model expects its input."""
    from alexkit.variants import VARIANTS

    v = VARIANTS[variant]
    aug = plan.augment
    return {
        "image_size": plan.image_size,
        "resize": int(getattr(aug, "resize", v["resize"]) or v["resize"]),
        "crop": "center",
        "mean": [float(m) for m in v["mean"]],
        "std": [float(s) for s in v["std"]],
        "grayscale": plan.grayscale,
        "input": "RGB pixels in [0, 255]; the model's preprocess layer applies mean/std",
        "augment": dataclasses.asdict(aug) if dataclasses.is_dataclass(aug) else aug,
    }


# --------------------------------------------------------------------------- data


def load_specs(
    data: str | Path,
    val: str | Path | None,
    *,
    seed: int,
    class_names: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    media_options: Any = None,
) -> tuple[Any, Any | None]:
    """Train and validation specs: ``val`` if given, else the data's own val split.

    ``media_options`` (a recipe's ``[media]`` table) decide how clips, DICOM and NIfTI
    files expand into frames and slices.
    """
    from alexkit import data as data_mod

    def load(source: str | Path, names: Sequence[str] | None, fraction: float, **kw: Any) -> Any:
        return data_mod.load_spec(
            str(source),
            class_names=None if names is None else list(names),
            seed=seed,
            val_fraction=fraction,
            media_options=media_options,
            **kw,
        )

    spec = load(data, class_names, 0.0 if val is not None else val_fraction)
    if val is not None:
        train = spec.subset("train") if "train" in set(spec.splits) else spec
        if len(train) == 0:
            train = spec
        # The whole --val source is validation data (no carving); a split-folder root
        # contributes its val split.
        val_spec = load(val, spec.class_names, 0.0)
        if "val" in set(val_spec.splits):
            val_spec = val_spec.subset("val")
        return train, val_spec
    splits = set(spec.splits)
    if "val" in splits and val_fraction > 0:
        val_counts = spec.counts("val")
        if min(val_counts.values()) < data_mod.MIN_VAL_PER_CLASS:
            # A token val split (Kermany's chest X-rays ship 8 + 8) makes every metric
            # noise: merge it into train and carve a stratified, seeded one instead.
            log.warning(
                "%s: the val split has only %d image(s) in a class; re-splitting %.0f%% of "
                "train+val as validation.",
                data,
                min(val_counts.values()),
                100 * val_fraction,
            )
            spec = load(data, class_names, val_fraction, resplit_val=True)
            splits = set(spec.splits)
    train = spec.subset("train") if "train" in splits else spec
    val_spec = spec.subset("val") if "val" in splits else None
    if val_spec is not None and len(val_spec) == 0:
        val_spec = None
    if len(train) == 0:
        raise DataError(f"{data}: no training images found; check the folder layout.")
    return train, val_spec


def check_labels(spec: Any, what: str) -> None:
    """Refuse a training spec with unlabelled images."""
    labels = np.asarray(spec.labels)
    if labels.size and (labels < 0).any():
        raise DataError(
            f"{what}: {int((labels < 0).sum())} images have no label; training needs "
            "labelled images (folder-per-class or a manifest with labels)."
        )


def make_dataset_fns(
    plan: DataPlan, seed: int
) -> tuple[Callable[..., Any], Callable[[], Any] | None, Callable[..., Any] | None]:
    """Per-epoch training datasets (seeded by run seed and epoch) and the validation set.

    Returns:
        ``make_train(epoch, steps, shard=None)``, ``make_val()`` (centre crops) and
        ``make_eval(tta, with_paths)``; the last two are None without validation data.
    """
    from alexkit.data import make_dataset

    def make_train(epoch: int, steps: int, shard: tuple[int, int] | None = None) -> Any:
        natural = max(1, math.ceil(plan.num_train / plan.batch_size))
        # More steps than one pass: repeat, with full batches only so that every step
        # sees batch_size images (the partial batch would otherwise recur each pass).
        # Distributed (shard: this worker's slice of every full global batch): always
        # repeat, so every worker yields exactly `steps` batches even when an image
        # failed to decode on one worker only; otherwise that worker would run a step
        # short and leave the others waiting in the gradient all-reduce.
        repeat = shard is not None or steps > natural
        ds = make_dataset(
            plan.train,
            training=True,
            image_size=plan.image_size,
            batch_size=plan.batch_size,
            augment=plan.augment,
            seed=seed * 1_000_003 + epoch,
            shuffle=True,
            grayscale=plan.grayscale,
            drop_remainder=repeat and plan.num_train >= plan.batch_size,
            shard=shard,
        )
        if repeat:
            ds = ds.repeat()
        return ds.take(steps)

    if plan.val is None:
        return make_train, None, None

    def make_eval(tta: str = "center", with_paths: bool = False) -> Any:
        return make_dataset(
            plan.val,
            training=False,
            image_size=plan.image_size,
            batch_size=plan.batch_size,
            seed=seed,
            shuffle=False,
            tta=tta,
            grayscale=plan.grayscale,
            with_paths=with_paths,
        )

    return make_train, (lambda: make_eval("center")), make_eval
