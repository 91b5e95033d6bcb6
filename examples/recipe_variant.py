"""Print a built-in recipe as TOML with another AlexNet variant (``--variant`` of the workflows).

Everything else stays the recipe's own: name, stages, augmentation, metrics. The input
size follows the variant, and so does the resize before cropping when the recipe used its
variant's default (256 for a 227/224 crop; ``tiny`` resizes to 112 for its 99 crop).

The ``tiny`` variant (the 2012 layout at 1/8 of the widths, 0.2M parameters, no published
weights) runs a whole workflow in seconds: it proves the commands, not the accuracy.

Usage::

    python examples/recipe_variant.py xray tiny > xray-tiny.toml
    alexkit finetune --recipe xray-tiny.toml --data chest_xray/train --weights none ...
"""

from __future__ import annotations

import argparse
import sys

from alexkit.errors import AlexkitError
from alexkit.recipes import load_recipe, recipe_to_toml, with_variant
from alexkit.variants import VARIANTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="Built-in recipe name or .toml file.")
    parser.add_argument("variant", choices=sorted(VARIANTS))
    args = parser.parse_args()
    try:
        recipe = with_variant(load_recipe(args.recipe), args.variant)
    except AlexkitError as err:  # one line and the CLI's exit code
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    sys.stdout.write(recipe_to_toml(recipe))


if __name__ == "__main__":
    main()
