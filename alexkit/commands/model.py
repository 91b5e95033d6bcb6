"""`alexkit model ...`: inspect the network."""

from __future__ import annotations

import typer

from alexkit.commands._common import guarded, out_console, print_json

model_app = typer.Typer(help="Inspect the AlexNet model.", no_args_is_help=True)


@model_app.command("summary")
@guarded
def summary(
    variant: str = typer.Option(
        "original",
        "--variant",
        help="original (2012) | torchvision | tiny (1/8 width, 99 px: smoke tests).",
    ),
    classes: int = typer.Option(1000, "--classes", "-c", help="Size of the predictions layer."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Print every layer with its output shape and parameters, and the total.

    Example: [bold]alexkit model summary --variant original --classes 2 --json[/]
    """
    from alexkit.errors import UsageError
    from alexkit.variants import VARIANTS

    if variant not in VARIANTS:
        raise UsageError(
            f"--variant must be one of {', '.join(sorted(VARIANTS))}. Received: {variant!r}"
        )
    if classes < 1:
        raise UsageError(f"--classes must be at least 1. Received: {classes}")

    from alexkit.model import build_alexnet, layer_table

    model = build_alexnet(variant, num_classes=classes)
    rows = layer_table(model)
    total = int(model.count_params())
    trainable = int(sum(int(w.numpy().size) for w in model.trainable_weights))
    if json_output:
        print_json(
            {
                "variant": variant,
                "num_classes": classes,
                "input_shape": list(model.input_shape[1:]),
                "layers": rows,
                "total_params": total,
                "trainable_params": trainable,
            }
        )
        return
    from rich.table import Table

    table = Table(title=f"AlexNet ({variant}, {classes} classes)")
    table.add_column("layer")
    table.add_column("type")
    table.add_column("output shape")
    table.add_column("params", justify="right")
    for row in rows:
        shape = "×".join(str(d) for d in row["output_shape"]) if row["output_shape"] else "-"
        table.add_row(row["name"], row["type"], shape, f"{row['params']:,}")
    table.add_section()
    table.add_row("total", "", "", f"{total:,}")
    out_console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
