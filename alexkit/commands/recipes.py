"""``alexkit recipes``: list the built-in recipes and show one, resolved."""

from __future__ import annotations

import sys

import typer

from alexkit.commands._common import guarded, out_console, print_json

recipes_app = typer.Typer(
    help=(
        "Training recipes: TOML files with every choice for one domain (built-in or your "
        "own).\n\nExample: alexkit recipes show xray > my-xray.toml"
    ),
    no_args_is_help=True,
)


@recipes_app.command("list")
@guarded(light=True)  # never touches TensorFlow: stays fast
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the recipes as JSON."),
) -> None:
    """List the built-in recipes: name, variant, colour, stages and description.

    Example: alexkit recipes list --json
    """
    from alexkit.recipes import list_recipes

    recipes = list_recipes()
    if as_json:
        print_json(
            [
                {
                    "name": r.name,
                    "variant": r.variant,
                    "color": r.color,
                    "stages": [s.name for s in r.stages],
                    "epochs": r.total_epochs,
                    "monitor": r.monitor,
                    "builtin_data": r.builtin_data,
                    "description": r.description,
                    "source": r.source,
                }
                for r in recipes
            ]
        )
        return
    from rich.table import Table

    table = Table(title="alexkit recipes (use with: alexkit finetune --recipe NAME)")
    table.add_column("name", style="bold")
    table.add_column("variant")
    table.add_column("colour")
    table.add_column("epochs", justify="right")
    table.add_column("description")
    for r in recipes:
        table.add_row(r.name, r.variant, r.color, str(r.total_epochs), r.description)
    out_console().print(table)


@recipes_app.command("show")
@guarded(light=True)  # never touches TensorFlow: stays fast
def show_cmd(
    recipe: str = typer.Argument(..., help="A built-in recipe name or a path to a .toml file."),
    as_json: bool = typer.Option(False, "--json", help="Print the resolved recipe as JSON."),
) -> None:
    """Print a recipe with every default filled in, as TOML (or JSON).

    The TOML output is itself a valid recipe: save it, edit it, pass it to --recipe.

    Example: alexkit recipes show xray > my-xray.toml
    """
    from alexkit.recipes import load_recipe, recipe_to_dict, recipe_to_toml

    resolved = load_recipe(recipe)
    if as_json:
        print_json(recipe_to_dict(resolved))
        return
    # Plain write, not rich: the text must stay byte-exact TOML when redirected.
    sys.stdout.write(recipe_to_toml(resolved))
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add the ``recipes`` command group to the root app."""
    app.add_typer(recipes_app, name="recipes")
