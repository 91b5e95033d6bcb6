"""Recipes to and from text: TOML files in, dicts/TOML/fingerprints out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from alexkit.data.augment import AugmentConfig
from alexkit.errors import RecipeError
from alexkit.recipes.reader import recipe_from_dict
from alexkit.recipes.schema import FINGERPRINT_IGNORES, Recipe


def read_recipe_file(path: Path) -> Recipe:
    """Parse and validate one recipe file (its stem is the default name).

    Raises:
        RecipeError: unreadable file, invalid TOML or an invalid recipe.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        detail = " ".join(str(exc).split())
        raise RecipeError(f"{path}: not valid TOML: {detail}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
    return recipe_from_dict(data, source=str(path), default_name=path.stem)


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
