"""A recipe's ``classes`` meet the user's folders: :func:`match_classes`.

A recipe's ``classes`` fix the label order (index 1 is the positive class of a binary
recipe: sensitivity, AUC and the ROC curve are about it). Datasets ship under many
spellings: Kermany's ``NORMAL``/``PNEUMONIA`` appear as ``normal``/``pneumonia`` in
Kaggle copies, the brain-MRI set has ``notumor`` in one release and ``no_tumor`` in
another. So names match when they are equal after :func:`class_key`: case folded and
``_``, ``-`` and spaces removed (``No_Tumor`` = ``notumor`` = ``no tumor``). Nothing looser
(no plurals, no synonyms): ``bleed`` is not ``hemorrhage``.

- Every data class matches a recipe class: the recipe's order, in the data's spelling
  (recipe classes the data lacks keep their place under the recipe's name).
- Otherwise the recipe's settings (augmentation, stages, metrics, weighting) apply to
  the user's own classes in sorted order; a binary recipe on two-class data then needs
  the positive class named (``--positive-class NAME``), which goes to index 1.
- ``positive_class`` always wins for two-class data: it goes to index 1.

Importing this module needs neither Keras nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alexkit.data.spec import class_key
from alexkit.errors import DataError, RecipeError, UsageError

__all__ = ["ClassMatch", "apply_class_match", "class_key", "match_classes"]


@dataclass(frozen=True)
class ClassMatch:
    """How a recipe's classes were resolved against the data's.

    Attributes:
        class_names: the label order to train with (data spellings where the data has
            the class).
        positive_index: the positive class's index for two-class data (always 1), else None.
        matched: True when every data class is one of the recipe's (its order applies).
        renamed: recipe name → data name for classes matched with another spelling.
        note: one line saying what was decided, for the log ("" when names were equal).
    """

    class_names: tuple[str, ...]
    positive_index: int | None
    matched: bool
    renamed: dict[str, str]
    note: str = ""

    @property
    def positive_class(self) -> str | None:
        return None if self.positive_index is None else self.class_names[self.positive_index]


def _quote(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _by_key(names: Sequence[str], whose: str) -> dict[str, str]:
    """key → name; two names with one key are ambiguous."""
    out: dict[str, str] = {}
    for name in names:
        key = class_key(name)
        if key in out and out[key] != name:
            raise DataError(
                f"{whose} classes {out[key]!r} and {name!r} differ only in case, '_', '-' or "
                "spaces; rename one so they cannot be confused."
            )
        out[key] = name
    return out


def match_classes(
    recipe: Any, data_class_names: Sequence[str], positive_class: str | None = None
) -> ClassMatch:
    """Resolve the label order for ``data_class_names`` under ``recipe``'s ``classes``.

    Args:
        recipe: a :class:`~alexkit.recipes.Recipe` (its ``name`` and ``classes`` are
            read; ``classes`` None means the data's sorted order).
        data_class_names: the classes the data has (e.g. ``spec.class_names``).
        positive_class: for two-class data, the class that goes to index 1 (matched
            like recipe names); needed when a binary recipe's classes are not the data's.

    Returns:
        A :class:`ClassMatch`.

    Raises:
        UsageError: a binary recipe whose classes the data does not have, without
            ``positive_class``; a ``positive_class`` that is not a data class, or given
            for data with more than two classes.
        DataError: two data (or recipe) classes that differ only in case/separators.
    """
    name = getattr(recipe, "name", "") or "the recipe"
    where = f"recipe {name!r}"
    data = sorted(dict.fromkeys(str(n) for n in data_class_names))
    data_keys = _by_key(data, "the data's")
    positive = _resolve_positive(positive_class, data_keys, data)
    recipe_classes = tuple(getattr(recipe, "classes", None) or ())
    if recipe_classes:
        recipe_keys = _by_key(recipe_classes, f"{where}'s")
        if set(data_keys) <= set(recipe_keys):  # every data class is one of the recipe's
            order = [data_keys.get(class_key(c), c) for c in recipe_classes]
            renamed = {
                c: data_keys[class_key(c)]
                for c in recipe_classes
                if data_keys.get(class_key(c), c) != c
            }
            note = ""
            if renamed:
                note = f"{where}: classes matched as " + ", ".join(
                    f"{c!r} = {d!r}" for c, d in renamed.items()
                )
            order = _with_positive(order, positive)
            index = 1 if len(order) == 2 else None
            return ClassMatch(tuple(order), index, True, renamed, note)
        if len(recipe_classes) == 2 and len(data) == 2 and positive is None:
            raise UsageError(
                f"{where} is for classes {_quote(recipe_classes)} (positive "
                f"{recipe_classes[1]!r}); the data has {_quote(data)}: say which of these is "
                "positive with --positive-class NAME."
            )
        note = (
            f"{where} is for classes {_quote(recipe_classes)}; its settings apply to the "
            f"data's own classes {_quote(data)}"
        )
    else:
        note = ""
    order = _with_positive(data, positive)
    if positive is not None:
        note = (note + "; " if note else "") + f"positive class {positive!r}"
    return ClassMatch(tuple(order), 1 if len(order) == 2 else None, False, {}, note)


def _resolve_positive(
    positive_class: str | None, data_keys: dict[str, str], data: list[str]
) -> str | None:
    if positive_class is None:
        return None
    if len(data) != 2:
        raise UsageError(
            f"--positive-class applies to two classes; the data has {len(data)}: {_quote(data)}."
        )
    found = data_keys.get(class_key(positive_class))
    if found is None:
        raise UsageError(
            f"--positive-class {positive_class!r} is not a class of the data; "
            f"classes: {_quote(data)}."
        )
    return found


def _with_positive(order: list[str], positive: str | None) -> list[str]:
    if positive is None:
        return list(order)
    return [n for n in order if n != positive] + [positive]


def apply_class_match(recipe: Any, match: ClassMatch) -> Any:
    """``recipe`` with ``classes`` set to the resolved order, and a table of
    ``class_weights`` renamed to the data's spellings.

    Raises:
        RecipeError: ``class_weights`` names a class the data does not have (only
            possible when the recipe's classes were not the data's).
    """
    weights = recipe.class_weights
    if isinstance(weights, dict):
        data_keys = {class_key(n): n for n in match.class_names}
        missing = [c for c in weights if class_key(c) not in data_keys]
        if missing:
            raise RecipeError(
                f"recipe {recipe.name!r} weights classes {_quote(missing)} by name, which the "
                f"data does not have ({_quote(match.class_names)}); set class_weights to "
                "'balanced' or name the data's classes."
            )
        weights = {data_keys[class_key(c)]: w for c, w in weights.items()}
    return dataclasses.replace(recipe, classes=tuple(match.class_names), class_weights=weights)
