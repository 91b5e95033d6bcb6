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

Modules: :mod:`~alexkit.recipes.schema` (the frozen dataclasses and allowed values),
:mod:`~alexkit.recipes.reader` (dict -> validated :class:`Recipe`),
:mod:`~alexkit.recipes.io` (TOML files in; dict, TOML and fingerprint out),
:mod:`~alexkit.recipes.builtin` (built-in recipes by name, files by path),
:mod:`~alexkit.recipes.overrides` (CLI flags on top; class weights as numbers) and
:mod:`~alexkit.recipes.classes` (the recipe's classes against the data's folder names).

Example::

    from alexkit.recipes import load_recipe, apply_overrides
    recipe = apply_overrides(load_recipe("xray"), epochs=2)
    recipe.stages[1].trainable_from   # 'conv4'
"""

from __future__ import annotations

from alexkit.recipes.builtin import (
    default_recipe,
    list_recipes,
    load_recipe,
    recipe_dirs,
    recipe_names,
)
from alexkit.recipes.classes import ClassMatch, apply_class_match, match_classes
from alexkit.recipes.io import recipe_fingerprint, recipe_to_dict, recipe_to_toml
from alexkit.recipes.overrides import apply_overrides, compute_class_weights, with_variant
from alexkit.recipes.reader import recipe_from_dict
from alexkit.recipes.schema import (
    BUILTIN_DATA,
    CLASS_WEIGHT_MODES,
    COLORS,
    DEFAULT_LR,
    FINGERPRINT_IGNORES,
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
)

__all__ = [
    "with_variant",
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
    "ClassMatch",
    "match_classes",
    "apply_class_match",
    # The allowed values, for messages and other modules.
    "BUILTIN_DATA",
    "CLASS_WEIGHT_MODES",
    "COLORS",
    "DEFAULT_LR",
    "FINGERPRINT_IGNORES",
    "MODES",
    "MONITORS",
    "OPTIMIZERS",
]
