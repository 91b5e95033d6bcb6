"""Reading a recipe dict: every key checked, every message naming the file and the key."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from alexkit.data.augment import AugmentConfig
from alexkit.errors import RecipeError, UsageError
from alexkit.recipes.schema import (
    BUILTIN_DATA,
    CLASS_WEIGHT_MODES,
    COLORS,
    DEFAULT_LR,
    LAYER_NAMES,
    METRICS,
    MODES,
    MONITORS,
    OPTIMIZERS,
    VARIANT_IMAGE_SIZE,
    DatasetHint,
    EarlyStopping,
    HeadConfig,
    Recipe,
    Stage,
    mode_for,
)


def join_choices(values: Sequence[str]) -> str:
    """Values as a comma-separated list, for messages."""
    return ", ".join(values)


def did_you_mean(word: str, values: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a close match among ``values``, else nothing."""
    close = difflib.get_close_matches(word, list(values), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def show_value(value: Any) -> str:
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
                    f"{self.source}: unknown key '{full}'{did_you_mean(key, valid)}; "
                    f"valid keys in {place}: {join_choices(sorted(valid))}"
                )

    def table(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a table ([{key}]), got {show_value(value)}")
        # None means "not set" (recipe_to_dict writes None for unset optional keys).
        return {k: v for k, v in value.items() if v is not None}

    def string(self, value: Any, key: str, choices: Sequence[str] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {show_value(value)}")
        if choices is not None and value not in choices:
            raise self.fail(
                key,
                f"must be one of {join_choices(choices)}; got {show_value(value)}"
                f"{did_you_mean(value, choices)}",
            )
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {show_value(value)}")
        return value

    def integer(self, value: Any, key: str, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {show_value(value)}")
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
            raise self.fail(key, f"must be a number, got {show_value(value)}")
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
            raise self.fail(key, f"must be a list of strings, got {show_value(value)}")
        items = tuple(self.string(v, f"{key}[{i}]", choices) for i, v in enumerate(value))
        duplicates = sorted({v for v in items if items.count(v) > 1})
        if duplicates:
            raise self.fail(key, f"lists {show_value(duplicates[0])} twice; names must be unique")
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
    # Keys are read in this order so that, of several mistakes, the same one is reported.
    about = _read_about(r, data, default_name)
    variant, image_size = _read_variant(r, data, base.variant)
    classes = _read_classes(r, data)
    color = r.string(data.get("color", base.color), "color", COLORS)
    augment = _read_augment(r, r.table(data.get("augment", {}), "augment"), image_size, color)
    class_weights = _read_class_weights(r, data.get("class_weights", "none"), classes)
    head = _read_head(r, data)
    stages = _read_stages(r, data.get("stages", [{}]))
    weight_decay = r.number(data.get("weight_decay", base.weight_decay), "weight_decay", 0, 1)
    metrics, monitor = _read_metrics(r, data, classes, base.metrics)
    early_stopping = _read_early_stopping(r, data, ("loss", *metrics), monitor)
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
        **about,
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


def _read_about(r: _Reader, data: Mapping[str, Any], default_name: str) -> dict[str, Any]:
    """The descriptive keys: name, description, licence, citation and the dataset hint."""
    name = r.string(data.get("name", default_name), "name")
    if not name.strip():
        raise r.fail("name", "must not be empty")
    description = r.string(data.get("description", ""), "description")
    licence = r.string(data.get("licence", ""), "licence")
    citation = r.string(data.get("citation", ""), "citation")
    hint = r.table(data.get("dataset", {}), "dataset")
    r.check_keys(hint, _DATASET_KEYS, "dataset")
    dataset = DatasetHint(**{k: r.string(v, f"dataset.{k}") for k, v in hint.items()})
    return {
        "name": name,
        "description": description,
        "licence": licence,
        "citation": citation,
        "dataset": dataset,
    }


def _read_variant(r: _Reader, data: Mapping[str, Any], default: str) -> tuple[str, int]:
    """The variant, and the image size it needs (a different ``image_size`` is an error)."""
    variant = r.string(data.get("variant", default), "variant", tuple(VARIANT_IMAGE_SIZE))
    needed = VARIANT_IMAGE_SIZE[variant]
    image_size = r.integer(data.get("image_size", needed), "image_size", 1)
    if image_size != needed:
        raise r.fail(
            "image_size",
            f"is {image_size} but variant '{variant}' needs {needed} (the size its "
            f"classifier and weights were built for); remove the key or change variant",
        )
    return variant, image_size


def _read_classes(r: _Reader, data: Mapping[str, Any]) -> tuple[str, ...] | None:
    if "classes" not in data:
        return None
    classes = r.string_list(data["classes"], "classes")
    if len(classes) < 2:
        raise r.fail("classes", f"must list at least 2 classes, got {len(classes)}")
    if any(not c.strip() for c in classes):
        raise r.fail("classes", "must not contain empty names")
    return classes


def _read_head(r: _Reader, data: Mapping[str, Any]) -> HeadConfig:
    table = r.table(data.get("head", {}), "head")
    r.check_keys(table, _HEAD_KEYS, "head")
    return HeadConfig(
        dropout=r.number(table.get("dropout", 0.5), "head.dropout", 0, 1, hi_open=True),
        hidden_units=(
            r.integer(table["hidden_units"], "head.hidden_units", 1, 65536)
            if "hidden_units" in table
            else None
        ),
    )


def _read_metrics(
    r: _Reader,
    data: Mapping[str, Any],
    classes: tuple[str, ...] | None,
    default: tuple[str, ...],
) -> tuple[tuple[str, ...], str]:
    """The metrics to compute and the one to monitor (which must be computed)."""
    metrics = default
    if "metrics" in data:
        metrics = r.string_list(data["metrics"], "metrics", METRICS)
        if not metrics:
            raise r.fail("metrics", f"must list at least one of {join_choices(METRICS)}")
    if "top5" in metrics and classes is not None and len(classes) <= 5:
        raise r.fail("metrics", f"asks for top5 but the recipe has only {len(classes)} classes")
    monitor = r.string(data.get("monitor", metrics[0]), "monitor", MONITORS)
    if monitor not in ("loss", *metrics):
        raise r.fail(
            "monitor", f"is '{monitor}' but metrics does not compute it; add it to metrics"
        )
    return metrics, monitor


def _read_early_stopping(
    r: _Reader, data: Mapping[str, Any], computed: tuple[str, ...], monitor: str
) -> EarlyStopping | None:
    if "early_stopping" not in data:
        return None
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
        mode = mode_for(metric)
    elif mode != mode_for(metric):
        raise r.fail(
            "early_stopping.mode",
            f"is '{mode}' but '{metric}' improves when it goes "
            f"{'down' if metric == 'loss' else 'up'}; use 'auto'",
        )
    patience = r.integer(early.get("patience", 5), "early_stopping.patience", 1, 10000)
    return EarlyStopping(metric=metric, patience=patience, mode=mode)


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
                    full, f"must be a list [min, max] of area fractions, got {show_value(value)}"
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
            f"must be 'balanced', 'none' or a table of class = weight, got {show_value(value)}",
        )
    weights = {}
    for name, weight in value.items():
        if classes is not None and name not in classes:
            raise r.fail(
                f"class_weights.{name}",
                f"names an unknown class{did_you_mean(name, classes)}; "
                f"classes: {join_choices(classes)}",
            )
        weights[name] = r.number(weight, f"class_weights.{name}", 0, None, lo_open=True)
    if not weights:
        raise r.fail("class_weights", "is an empty table; use 'none' for no weighting")
    return weights


def _read_stages(r: _Reader, value: Any) -> tuple[Stage, ...]:
    if not isinstance(value, list) or not value:
        raise r.fail(
            "stages", f"must be a non-empty list of [[stages]] tables, got {show_value(value)}"
        )
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
