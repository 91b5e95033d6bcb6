"""Finding recipes: the built-in ones by name, any other file by path."""

from __future__ import annotations

from pathlib import Path

from alexkit.errors import RecipeError
from alexkit.recipes.io import read_recipe_file
from alexkit.recipes.reader import did_you_mean, join_choices, recipe_from_dict
from alexkit.recipes.schema import Recipe


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
                f"recipe file '{path}' not found; built-in recipes: {join_choices(recipe_names())}"
            )
    else:
        files = _builtin_files()
        name = str(name_or_path)
        if name not in files:
            raise RecipeError(
                f"unknown recipe '{name}'{did_you_mean(name, list(files))}; available: "
                f"{join_choices(list(files))} (or pass a path to a .toml file)"
            )
        path = files[name]
    return read_recipe_file(path)


def list_recipes() -> list[Recipe]:
    """Every built-in recipe, parsed and validated, sorted by name."""
    return [read_recipe_file(path) for path in _builtin_files().values()]


def default_recipe() -> Recipe:
    """The recipe used when none is given: the paper's SGD settings, head-only training."""
    return recipe_from_dict({}, source="<defaults>", default_name="default")
