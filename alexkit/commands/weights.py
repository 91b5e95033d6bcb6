"""``alexkit weights``: list, import, download and remove pretrained weights."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from alexkit.commands._common import err_console, guarded, out_console, print_json


class WeightsFormat(str, Enum):
    """Formats ``alexkit weights import`` reads."""

    torchvision = "torchvision"
    bvlc_npy = "bvlc-npy"


class DownloadSource(str, Enum):
    """Weights ``alexkit weights download`` can fetch."""

    torchvision = "torchvision"


weights_app = typer.Typer(
    help=(
        "Pretrained weights: the local store (under $ALEXKIT_HOME/weights), "
        "importers and downloads.\n\nExample: alexkit weights download torchvision"
    ),
    no_args_is_help=True,
)


def _describe(entry) -> str:
    meta = entry.meta
    sha = (meta.get("sha256") or "")[:8] or "-"
    return (
        f"{entry.name}: variant {meta.get('variant')}, {meta.get('num_classes', '?')} classes, "
        f"sha256 {sha}"
    )


@weights_app.command("list")
@guarded(light=True)  # reads/deletes store folders only: no TensorFlow start-up
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON."),
) -> None:
    """List the weights in the local store.

    Example: alexkit weights list --json
    """
    from alexkit.weights import list_weights, weights_dir

    entries = list_weights()
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    console = out_console()
    if not entries:
        console.print(
            f"No weights in {weights_dir()}. Get some with `alexkit weights download "
            "torchvision` or `alexkit weights import FILE --format torchvision|bvlc-npy`.",
            highlight=False,
            markup=False,
        )
        return
    from rich import box
    from rich.table import Table

    # Sources and paths are long: they are in --json; the table stays readable at 80 columns.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("name", "variant", "kind", "classes", "sha256", "created"):
        table.add_column(column, no_wrap=True)
    for e in entries:
        m = e.meta
        if e.problem:
            table.add_row(e.name, "[red]unusable[/]", "-", "-", "-", e.problem)
            continue
        table.add_row(
            e.name,
            str(m.get("variant")),
            str(m.get("kind")),
            str(m.get("num_classes", "?")),
            (m.get("sha256") or "-")[:8],
            str(m.get("created", "-"))[:10],
        )
    console.print(table)
    console.print(
        f"in {weights_dir()} (sources and paths: alexkit weights list --json)",
        highlight=False,
        markup=False,
    )


@weights_app.command("import")
@guarded
def import_cmd(
    file: Path = typer.Argument(..., help="The weights file (.pth or bvlc_alexnet.npy)."),
    format: WeightsFormat = typer.Option(
        ..., "--format", "-f", help="torchvision (.pth state_dict) or bvlc-npy (Caffe's .npy)."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Store name [default: torchvision-imagenet / bvlc-imagenet]."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an entry of the same name."),
    as_json: bool = typer.Option(False, "--json", help="Print the new entry as JSON."),
) -> None:
    """Convert a published AlexNet weights file into a Keras model in the store.

    Files are read without executing code. Example:
    alexkit weights import alexnet-owt-7be5be79.pth --format torchvision
    """
    from alexkit.weights import import_weights

    with err_console().status(f"Importing {file} ..."):
        entry = import_weights(file, format.value, name=name, overwrite=force)
    _report(entry, as_json, f"Imported {file}")


@weights_app.command("download")
@guarded
def download_cmd(
    source: DownloadSource = typer.Argument(..., help="What to fetch: torchvision."),
    name: str | None = typer.Option(
        None, "--name", help="Store name [default: torchvision-imagenet]."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an entry of the same name."),
    as_json: bool = typer.Option(False, "--json", help="Print the new entry as JSON."),
) -> None:
    """Download torchvision's ImageNet AlexNet (233 MB), check its sha256, import it.

    Set ALEXKIT_WEIGHTS_URL to use a mirror. Example: alexkit weights download torchvision
    """
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from alexkit.weights import download_weights

    console = err_console()
    if not console.is_terminal:  # a progress bar in a log file is noise
        entry = download_weights(source.value, name=name, overwrite=force)
        _report(entry, as_json, "Downloaded and imported")
        return
    with Progress(
        *Progress.get_default_columns(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("Downloading", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        entry = download_weights(source.value, name=name, overwrite=force, progress=progress)
    _report(entry, as_json, "Downloaded and imported")


@weights_app.command("remove")
@guarded(light=True)  # reads/deletes store folders only: no TensorFlow start-up
def remove_cmd(name: str = typer.Argument(..., help="The entry to delete.")) -> None:
    """Delete an entry from the store.

    Example: alexkit weights remove bvlc-imagenet
    """
    from alexkit.weights import remove_weights

    path = remove_weights(name)
    out_console().print(f"Removed {name} ({path})", highlight=False, markup=False)


def _report(entry, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(entry.to_dict())
        return
    console = out_console()
    console.print(f"{verb} -> {_describe(entry)}", highlight=False, markup=False)
    console.print(f"  {entry.model_path}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``alexkit weights ...`` to the root app."""
    app.add_typer(weights_app, name="weights")
