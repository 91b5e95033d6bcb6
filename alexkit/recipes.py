"""Recipes: every training choice for one domain, in a TOML file.

A recipe is data, never code. It names the AlexNet variant, colour handling,
augmentation, class balancing, the head, the training stages (which layers train, with
which optimizer and learning rate), early stopping and the metrics to report. Built-in
recipes live in the repository's ``recipes/`` folder (shipped in the wheel as
``alexkit/_recipes``); any other ``.toml`` file can be passed by path.

Precedence is CLI flag > recipe > default (:func:`apply_overrides`):

* ``--epochs N`` sets *every* stage to N epochs (``--epochs 1`` is a quick smoke run of
  the whole schedule); a sequence gives one value per stage.
* ``--lr X`` sets the *first* stage's learning rate; later stages keep their ratio to
  it, so "fine-tune at a tenth of the head's rate" survives the override.
* ``--batch-size`` and ``--seed`` replace the recipe's values.

Example::

    from alexkit.recipes import load_recipe, apply_overrides
    recipe = apply_overrides(load_recipe("xray"), epochs=2)
    recipe.stages[1].trainable_from   # 'conv4'
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from alexkit.data.augment import AugmentConfig
from alexkit.errors import DataError, RecipeError, UsageError

__all__ = [
    "Recipe",
    "DatasetHint",
    "HeadConfig",
    "Stage",
    "EarlyStopping",
    "VARIANT_IMAGE_SIZE",
    "LAYER_NAMES",
    "METRICS",
    "load_recipe",
    "list_recipes",
    "recipe_names",
    "recipe_dirs",
    "default_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
    "recipe_to_toml",
    "apply_overrides",
    "compute_class_weights",
    "recipe_fingerprint",
]

# The input size each variant's classifier is built for. The original model's fc6 expects
# a 6x6x256 pool5, which only a 227 input gives; torchvision's weights were trained at 224.
# Kept here (not imported from model.py) so reading a recipe never imports Keras.
VARIANT_IMAGE_SIZE: dict[str, int] = {"original": 227, "torchvision": 224}
COLORS = ("rgb", "grayscale")
OPTIMIZERS = ("sgd", "adam")
# Layers a stage may train from (public layer names of alexkit.model).
LAYER_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "predictions")
METRICS = (
    "accuracy",
    "auc",
    "pr_auc",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
    "f1",
    "top5",
)
MONITORS = ("loss", *METRICS)
MODES = ("auto", "min", "max")
CLASS_WEIGHT_MODES = ("balanced", "none")
BUILTIN_DATA = ("digits",)
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001}
# Keys left out of the fingerprint: they describe a recipe but do not change training.
FINGERPRINT_IGNORES = ("name", "description", "dataset", "licence", "citation")


@dataclass(frozen=True)
class DatasetHint:
    """Where users get the data and how it must be laid out on disk."""

    url: str = ""
    layout: str = ""
    notes: str = ""


@dataclass(frozen=True)
class HeadConfig:
    """The new classifier head.

    Attributes:
        dropout: dropout rate before the new layers (0 <= dropout < 1).
        hidden_units: if set, a ReLU Dense layer of this width (plus dropout) between
            ``fc7`` and ``predictions``; None keeps AlexNet's head shape.
    """

    dropout: float = 0.5
    hidden_units: int | None = None


@dataclass(frozen=True)
class Stage:
    """One phase of fine-tuning.

    Attributes:
        name: label used in logs and history.
        epochs: epochs to run in this stage (>= 1).
        trainable_from: the first trainable layer (``conv1``..``conv5``, ``fc6``, ``fc7``,
            ``predictions``); everything before it is frozen. None trains the head only.
        optimizer: ``sgd`` (with momentum) or ``adam``.
        lr: learning rate.
        momentum: SGD momentum (ignored by Adam).
    """

    name: str = "head"
    epochs: int = 10
    trainable_from: str | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when the validation ``metric`` has not improved for ``patience`` epochs.

    ``mode`` is resolved: ``min`` for loss, ``max`` for every other metric.
    """

    metric: str = "loss"
    patience: int = 5
    mode: str = "min"


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Build with :func:`load_recipe` or :func:`recipe_from_dict`.

    Metric names (``monitor``, ``early_stopping.metric``) are validation metrics without
    the ``val_`` prefix. ``class_weights`` is ``"balanced"``, ``"none"`` or a mapping
    from class name to weight (classes not listed weigh 1). ``media`` holds the
    ``alexkit.media.MediaOptions`` of a ``[media]`` table (frame sampling, CT windows,
    volume slicing), None when the recipe has none.
    """

    name: str = "default"
    description: str = ""
    dataset: DatasetHint = field(default_factory=DatasetHint)
    licence: str = ""
    citation: str = ""
    variant: str = "original"
    classes: tuple[str, ...] | None = None
    color: str = "rgb"
    image_size: int = 227
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    class_weights: str | dict[str, float] = "none"
    head: HeadConfig = field(default_factory=HeadConfig)
    stages: tuple[Stage, ...] = (Stage(),)
    weight_decay: float = 5e-4
    early_stopping: EarlyStopping | None = None
    metrics: tuple[str, ...] = ("accuracy",)
    monitor: str = "accuracy"
    batch_size: int = 32
    seed: int = 0
    val_fraction: float = 0.2
    builtin_data: str | None = None
    # alexkit.media.MediaOptions for video/DICOM/NIfTI sources ([media] table), or None.
    media: Any = None
    # Where the recipe came from (file path or "<dict>"): not part of its identity.
    source: str = field(default="<defaults>", compare=False)

    @property
    def grayscale(self) -> bool:
        """True when images are read as grey and replicated to three channels."""
        return self.color == "grayscale"

    @property
    def total_epochs(self) -> int:
        """Epochs over all stages."""
        return sum(stage.epochs for stage in self.stages)

    @property
    def monitor_mode(self) -> str:
        """``min`` when monitoring loss, else ``max``."""
        return _mode_for(self.monitor)


# ----------------------------------------------------------------------------- parsing


def _mode_for(metric: str) -> str:
    return "min" if metric == "loss" else "max"


def _choices(values: Sequence[str]) -> str:
    return ", ".join(values)


def _suggest(word: str, values: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(values), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _show(value: Any) -> str:
    """A value as the user would have written it, type included."""
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class _Reader:
    """Validates one recipe dict; every message names the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> RecipeError:
        return RecipeError(f"{self.source}: key '{key}' {message}")

    def check_keys(self, table: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
        for key in table:
            if key not in valid:
                full = f"{where}.{key}" if where else key
                place = f"[{where}]" if where else "the top level"
                raise RecipeError(
                    f"{self.source}: unknown key '{full}'{_suggest(key, valid)}; "
                    f"valid keys in {place}: {_choices(sorted(valid))}"
                )

    def table(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a table ([{key}]), got {_show(value)}")
        # None means "not set" (recipe_to_dict writes None for unset optional keys).
        return {k: v for k, v in value.items() if v is not None}

    def string(self, value: Any, key: str, choices: Sequence[str] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {_show(value)}")
        if choices is not None and value not in choices:
            raise self.fail(
                key,
                f"must be one of {_choices(choices)}; got {_show(value)}{_suggest(value, choices)}",
            )
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {_show(value)}")
        return value

    def integer(self, value: Any, key: str, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {_show(value)}")
        self._bounds(value, key, lo, hi, lo_open=False, hi_open=False)
        return value

    def number(
        self,
        value: Any,
        key: str,
        lo: float | None = None,
        hi: float | None = None,
        *,
        lo_open: bool = False,
        hi_open: bool = False,
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r}")
        self._bounds(value, key, lo, hi, lo_open=lo_open, hi_open=hi_open)
        return float(value)

    def _bounds(self, value, key, lo, hi, *, lo_open, hi_open) -> None:
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if too_low or too_high:
            left = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
            right = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
            rule = " and ".join(part for part in (left, right) if part)
            raise self.fail(key, f"must be {rule}, got {value!r}")

    def string_list(
        self, value: Any, key: str, choices: Sequence[str] | None = None
    ) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of strings, got {_show(value)}")
        items = tuple(self.string(v, f"{key}[{i}]", choices) for i, v in enumerate(value))
        duplicates = sorted({v for v in items if items.count(v) > 1})
        if duplicates:
            raise self.fail(key, f"lists {_show(duplicates[0])} twice; names must be unique")
        return items


_TOP_KEYS = (
    "name",
    "description",
    "dataset",
    "licence",
    "citation",
    "variant",
    "classes",
    "color",
    "image_size",
    "augment",
    "class_weights",
    "head",
    "stages",
    "weight_decay",
    "early_stopping",
    "metrics",
    "monitor",
    "batch_size",
    "seed",
    "val_fraction",
    "builtin_data",
    "media",
)
_DATASET_KEYS = ("url", "layout", "notes")
_HEAD_KEYS = ("dropout", "hidden_units")
_STAGE_KEYS = ("name", "epochs", "trainable_from", "optimizer", "lr", "momentum")
_EARLY_KEYS = ("metric", "patience", "mode")
# Value ranges of the augmentation options; fields added to AugmentConfig later fall back
# to a type check against their default.
# (low, high, high is exclusive): contrast and saturation draw factors from [1 - x, 1 + x],
# so x must stay below 1 (AugmentConfig enforces the same).
_AUGMENT_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "resize": (1, 4096, False),
    "rotation": (0, 180, False),
    "brightness": (0, 1, False),
    "contrast": (0, 1, True),
    "saturation": (0, 1, True),
    "pca_lighting": (0, 10, False),
}


def recipe_from_dict(
    data: Mapping[str, Any], *, source: str = "<dict>", default_name: str = "custom"
) -> Recipe:
    """Validate a recipe given as a dict (a parsed TOML file or :func:`recipe_to_dict`).

    Args:
        data: the recipe's keys; missing keys take the defaults of :class:`Recipe`.
        source: the file name used in error messages.
        default_name: the name when ``data`` has none (the file's stem).

    Returns:
        The validated, frozen :class:`Recipe`.

    Raises:
        RecipeError: an unknown key, a wrong type or an impossible value; the message
            names ``source``, the key and the valid choices.
    """
    r = _Reader(source)
    data = r.table(data, "recipe")
    r.check_keys(data, _TOP_KEYS, "")
    base = Recipe()

    name = r.string(data.get("name", default_name), "name")
    if not name.strip():
        raise r.fail("name", "must not be empty")
    description = r.string(data.get("description", ""), "description")
    licence = r.string(data.get("licence", ""), "licence")
    citation = r.string(data.get("citation", ""), "citation")

    hint = r.table(data.get("dataset", {}), "dataset")
    r.check_keys(hint, _DATASET_KEYS, "dataset")
    dataset = DatasetHint(**{k: r.string(v, f"dataset.{k}") for k, v in hint.items()})

    variant = r.string(data.get("variant", base.variant), "variant", tuple(VARIANT_IMAGE_SIZE))
    needed = VARIANT_IMAGE_SIZE[variant]
    image_size = r.integer(data.get("image_size", needed), "image_size", 1)
    if image_size != needed:
        raise r.fail(
            "image_size",
            f"is {image_size} but variant '{variant}' needs {needed} (the size its "
            f"classifier and weights were built for); remove the key or change variant",
        )

    classes = None
    if "classes" in data:
        classes = r.string_list(data["classes"], "classes")
        if len(classes) < 2:
            raise r.fail("classes", f"must list at least 2 classes, got {len(classes)}")
        if any(not c.strip() for c in classes):
            raise r.fail("classes", "must not contain empty names")

    color = r.string(data.get("color", base.color), "color", COLORS)
    augment = _read_augment(r, r.table(data.get("augment", {}), "augment"), image_size, color)
    class_weights = _read_class_weights(r, data.get("class_weights", "none"), classes)

    head_table = r.table(data.get("head", {}), "head")
    r.check_keys(head_table, _HEAD_KEYS, "head")
    head = HeadConfig(
        dropout=r.number(head_table.get("dropout", 0.5), "head.dropout", 0, 1, hi_open=True),
        hidden_units=(
            r.integer(head_table["hidden_units"], "head.hidden_units", 1, 65536)
            if "hidden_units" in head_table
            else None
        ),
    )

    stages = _read_stages(r, data.get("stages", [{}]))
    weight_decay = r.number(data.get("weight_decay", base.weight_decay), "weight_decay", 0, 1)

    metrics = base.metrics
    if "metrics" in data:
        metrics = r.string_list(data["metrics"], "metrics", METRICS)
        if not metrics:
            raise r.fail("metrics", f"must list at least one of {_choices(METRICS)}")
    if "top5" in metrics and classes is not None and len(classes) <= 5:
        raise r.fail("metrics", f"asks for top5 but the recipe has only {len(classes)} classes")
    computed = ("loss", *metrics)
    monitor = r.string(data.get("monitor", metrics[0]), "monitor", MONITORS)
    if monitor not in computed:
        raise r.fail(
            "monitor", f"is '{monitor}' but metrics does not compute it; add it to metrics"
        )

    early_stopping = None
    if "early_stopping" in data:
        early = r.table(data["early_stopping"], "early_stopping")
        r.check_keys(early, _EARLY_KEYS, "early_stopping")
        metric = r.string(early.get("metric", monitor), "early_stopping.metric", MONITORS)
        if metric not in computed:
            raise r.fail(
                "early_stopping.metric",
                f"is '{metric}' but metrics does not compute it; add it to metrics",
            )
        mode = r.string(early.get("mode", "auto"), "early_stopping.mode", MODES)
        if mode == "auto":
            mode = _mode_for(metric)
        elif mode != _mode_for(metric):
            raise r.fail(
                "early_stopping.mode",
                f"is '{mode}' but '{metric}' improves when it goes "
                f"{'down' if metric == 'loss' else 'up'}; use 'auto'",
            )
        patience = r.integer(early.get("patience", 5), "early_stopping.patience", 1, 10000)
        early_stopping = EarlyStopping(metric=metric, patience=patience, mode=mode)

    batch_size = r.integer(data.get("batch_size", base.batch_size), "batch_size", 1, 65536)
    seed = r.integer(data.get("seed", base.seed), "seed", 0, 2**32 - 1)
    val_fraction = r.number(
        data.get("val_fraction", base.val_fraction), "val_fraction", 0, 1, hi_open=True
    )
    builtin_data = None
    if "builtin_data" in data:
        builtin_data = r.string(data["builtin_data"], "builtin_data", BUILTIN_DATA)
    media = None
    if "media" in data:
        # Imported only here: alexkit.media pulls in numpy, and most recipes have no media.
        from alexkit.media import MediaOptions

        media = MediaOptions.from_mapping(r.table(data["media"], "media"), source)

    return Recipe(
        name=name,
        description=description,
        dataset=dataset,
        licence=licence,
        citation=citation,
        variant=variant,
        classes=classes,
        color=color,
        image_size=image_size,
        augment=augment,
        class_weights=class_weights,
        head=head,
        stages=stages,
        weight_decay=weight_decay,
        early_stopping=early_stopping,
        metrics=metrics,
        monitor=monitor,
        batch_size=batch_size,
        seed=seed,
        val_fraction=val_fraction,
        builtin_data=builtin_data,
        media=media,
        source=source,
    )


def _read_augment(
    r: _Reader, table: Mapping[str, Any], image_size: int, color: str
) -> AugmentConfig:
    fields = {f.name: f for f in dataclasses.fields(AugmentConfig)}
    r.check_keys(table, tuple(fields), "augment")
    defaults = AugmentConfig()
    values: dict[str, Any] = {}
    for key, value in table.items():
        full = f"augment.{key}"
        default = getattr(defaults, key)
        if key == "random_resized_crop":
            if not isinstance(value, list) or len(value) != 2:
                raise r.fail(
                    full, f"must be a list [min, max] of area fractions, got {_show(value)}"
                )
            lo = r.number(value[0], f"{full}[0]", 0, 1, lo_open=True)
            hi = r.number(value[1], f"{full}[1]", 0, 1, lo_open=True)
            if lo > hi:
                raise r.fail(full, f"must have min <= max, got [{lo:g}, {hi:g}]")
            values[key] = (lo, hi)
        elif isinstance(default, bool):
            values[key] = r.boolean(value, full)
        elif isinstance(default, int):
            lo, hi, _ = _AUGMENT_RANGES.get(key, (0, None, False))
            values[key] = r.integer(value, full, lo, hi)
        elif isinstance(default, float):
            lo, hi, hi_open = _AUGMENT_RANGES.get(key, (0, None, False))
            values[key] = r.number(value, full, lo, hi, hi_open=hi_open)
        else:  # a field this module does not know yet: keep lists as tuples
            values[key] = tuple(value) if isinstance(value, list) else value
    try:
        augment = dataclasses.replace(defaults, **values)
    except (UsageError, ValueError, TypeError) as exc:
        # AugmentConfig's own checks: keep its words, add the file name.
        raise RecipeError(f"{r.source}: {' '.join(str(exc).split())}") from None
    if augment.crop and augment.random_resized_crop is None and augment.resize < image_size:
        raise r.fail(
            "augment.resize",
            f"is {augment.resize}, smaller than the {image_size}-pixel crop; "
            f"use resize >= {image_size} or crop = false",
        )
    if color == "grayscale" and augment.saturation > 0:
        raise r.fail(
            "augment.saturation",
            "has no effect on grayscale images; set it to 0 or use color = 'rgb'",
        )
    return augment


def _read_class_weights(
    r: _Reader, value: Any, classes: tuple[str, ...] | None
) -> str | dict[str, float]:
    if isinstance(value, str):
        return r.string(value, "class_weights", CLASS_WEIGHT_MODES)
    if not isinstance(value, Mapping):
        raise r.fail(
            "class_weights",
            f"must be 'balanced', 'none' or a table of class = weight, got {_show(value)}",
        )
    weights = {}
    for name, weight in value.items():
        if classes is not None and name not in classes:
            raise r.fail(
                f"class_weights.{name}",
                f"names an unknown class{_suggest(name, classes)}; classes: {_choices(classes)}",
            )
        weights[name] = r.number(weight, f"class_weights.{name}", 0, None, lo_open=True)
    if not weights:
        raise r.fail("class_weights", "is an empty table; use 'none' for no weighting")
    return weights


def _read_stages(r: _Reader, value: Any) -> tuple[Stage, ...]:
    if not isinstance(value, list) or not value:
        raise r.fail("stages", f"must be a non-empty list of [[stages]] tables, got {_show(value)}")
    stages = []
    for i, raw in enumerate(value):
        where = f"stages[{i}]"
        table = r.table(raw, where)
        r.check_keys(table, _STAGE_KEYS, where)
        optimizer = r.string(table.get("optimizer", "sgd"), f"{where}.optimizer", OPTIMIZERS)
        trainable_from = None
        if "trainable_from" in table:
            # TOML has no null: "head" spells "train the head only".
            trainable_from = r.string(
                table["trainable_from"], f"{where}.trainable_from", ("head", *LAYER_NAMES)
            )
            if trainable_from == "head":
                trainable_from = None
        stage = Stage(
            name=r.string(table.get("name", f"stage{i + 1}"), f"{where}.name"),
            epochs=r.integer(table.get("epochs", 10), f"{where}.epochs", 1, 100000),
            trainable_from=trainable_from,
            optimizer=optimizer,
            lr=r.number(table.get("lr", DEFAULT_LR[optimizer]), f"{where}.lr", 0, 10, lo_open=True),
            momentum=r.number(table.get("momentum", 0.9), f"{where}.momentum", 0, 1, hi_open=True),
        )
        stages.append(stage)
    names = [s.name for s in stages]
    for name in names:
        if names.count(name) > 1:
            raise r.fail("stages", f"has two stages named '{name}'; stage names must be unique")
    return tuple(stages)


# ----------------------------------------------------------------------- serialising


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as a JSON-able dict (None marks unset optional keys).

    ``recipe_from_dict(recipe_to_dict(r)) == r`` for every valid recipe.
    """
    augment = {}
    for f in dataclasses.fields(AugmentConfig):
        value = getattr(recipe.augment, f.name)
        augment[f.name] = list(value) if isinstance(value, tuple) else value
    return {
        "name": recipe.name,
        "description": recipe.description,
        "dataset": dataclasses.asdict(recipe.dataset),
        "licence": recipe.licence,
        "citation": recipe.citation,
        "variant": recipe.variant,
        "classes": None if recipe.classes is None else list(recipe.classes),
        "color": recipe.color,
        "image_size": recipe.image_size,
        "augment": augment,
        "class_weights": (
            dict(recipe.class_weights)
            if isinstance(recipe.class_weights, Mapping)
            else recipe.class_weights
        ),
        "head": dataclasses.asdict(recipe.head),
        "stages": [dataclasses.asdict(s) for s in recipe.stages],
        "weight_decay": recipe.weight_decay,
        "early_stopping": (
            None if recipe.early_stopping is None else dataclasses.asdict(recipe.early_stopping)
        ),
        "metrics": list(recipe.metrics),
        "monitor": recipe.monitor,
        "batch_size": recipe.batch_size,
        "seed": recipe.seed,
        "val_fraction": recipe.val_fraction,
        "builtin_data": recipe.builtin_data,
        "media": None if recipe.media is None else dataclasses.asdict(recipe.media),
    }


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # repr is valid TOML for finite floats ("0.001", "1e-05")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are TOML escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def recipe_to_toml(recipe: Recipe) -> str:
    """The resolved recipe as TOML text that :func:`load_recipe` reads back unchanged."""
    data = recipe_to_dict(recipe)
    lines = [f"# alexkit recipe '{recipe.name}' (resolved; source: {recipe.source})"]
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if value is None or key == "stages":
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, table in tables:
        lines += ["", f"[{key}]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    for stage in data["stages"]:
        stage = dict(stage, trainable_from=stage["trainable_from"] or "head")
        lines += ["", "[[stages]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in stage.items()]
    return "\n".join(lines) + "\n"


def recipe_fingerprint(recipe: Recipe, *, ignore: Sequence[str] = FINGERPRINT_IGNORES) -> str:
    """A stable 16-hex-digit hash of everything that changes training.

    Used to refuse resuming a run with a different recipe. Descriptive keys (name,
    description, dataset hint, licence, citation) are left out by default, so renaming
    a copied recipe does not change it.
    """
    data = {k: v for k, v in recipe_to_dict(recipe).items() if k not in set(ignore)}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# -------------------------------------------------------------------------- loading


def recipe_dirs() -> list[Path]:
    """Folders searched for built-in recipes, first match wins.

    ``alexkit/_recipes`` (inside an installed wheel), then the repository's top-level
    ``recipes/`` (editable installs).
    """
    import alexkit

    package = Path(alexkit.__file__).resolve().parent
    return [package / "_recipes", package.parent / "recipes"]


def _builtin_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for folder in recipe_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                files.setdefault(path.stem, path)
    return dict(sorted(files.items()))


def recipe_names() -> list[str]:
    """Names of the built-in recipes, sorted (cheap: files are not parsed)."""
    return list(_builtin_files())


def _looks_like_path(text: str) -> bool:
    return text.endswith(".toml") or "/" in text or "\\" in text


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a built-in recipe by name, or any recipe file by path.

    Args:
        name_or_path: ``"xray"`` (built-in) or ``"my/recipe.toml"``.

    Returns:
        The validated :class:`Recipe`.

    Raises:
        RecipeError: unknown name (the message lists the available ones), missing file,
            invalid TOML, or a recipe that does not validate.
    """
    if isinstance(name_or_path, Path) or _looks_like_path(str(name_or_path)):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise RecipeError(
                f"recipe file '{path}' not found; built-in recipes: {_choices(recipe_names())}"
            )
    else:
        files = _builtin_files()
        name = str(name_or_path)
        if name not in files:
            raise RecipeError(
                f"unknown recipe '{name}'{_suggest(name, list(files))}; available: "
                f"{_choices(list(files))} (or pass a path to a .toml file)"
            )
        path = files[name]
    return _load_file(path)


def _load_file(path: Path) -> Recipe:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        detail = " ".join(str(exc).split())
        raise RecipeError(f"{path}: not valid TOML: {detail}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
    return recipe_from_dict(data, source=str(path), default_name=path.stem)


def list_recipes() -> list[Recipe]:
    """Every built-in recipe, parsed and validated, sorted by name."""
    return [_load_file(path) for path in _builtin_files().values()]


def default_recipe() -> Recipe:
    """The recipe used when none is given: the paper's SGD settings, head-only training."""
    return recipe_from_dict({}, source="<defaults>", default_name="default")


# ----------------------------------------------------------------------- overrides


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


# ------------------------------------------------------------------- class weights


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
                f"class_weights must be one of {_choices(CLASS_WEIGHT_MODES)} or a table, "
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
                known = _choices(class_names) if class_names is not None else "none given"
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
