"""``alexkit data check`` and ``alexkit data pack``: inspect a dataset, write TFRecord shards."""

from __future__ import annotations

from pathlib import Path

import typer

from alexkit.commands._common import (
    err_console,
    guarded,
    import_tensorflow_quietly,
    out_console,
    print_json,
)

data_app = typer.Typer(
    name="data",
    help="Inspect image folders/manifests and pack them into TFRecord shards.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the root app."""
    app.add_typer(data_app, name="data")


@data_app.command("check")
@guarded(light=True)  # header sniffing and Pillow only: no TensorFlow (~5 s of start-up)
def check(
    path: str = typer.Argument(
        ..., help="Folder, CSV manifest (path,label[,split][,group]) or shards."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print only JSON on stdout."),
    labels_file: Path | None = typer.Option(
        None, "--labels-file", help="ImageNet val labels (LOC_val_solution.csv or val.txt)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 3 when any file is unreadable or duplicated across splits."
    ),
    frames_per_clip: int | None = typer.Option(
        None, "--frames-per-clip", help="Video: frames sampled per clip (default 8)."
    ),
) -> None:
    """Count classes and splits, list unreadable files and cross-split duplicates.

    Every image is read once (JPEGs decoded at 1/8 scale, which still parses all data).
    Clips, DICOM and NIfTI volumes count their sampled frames/slices, and beside them
    the clips, volumes and patients they come from; broken ones are listed as unreadable
    with the reason. Warnings of the reading libraries are counted in one line
    (--verbose shows them).
    The --json output is stable for scripts: 'classes' (name → readable images),
    'unreadable' (list of {path, reason}), 'splits', 'counts' (split → class → n),
    'groups' (clips/volumes/patients: counts, splits, classes, total), 'sizes',
    'duplicates_across_splits', 'imbalance', 'library_warnings', 'warnings'.

    Example: alexkit data check chest_xray/ --json
    """
    from alexkit import data, quiet
    from alexkit.errors import DataError

    quiet.tally(reset=True)  # count library warnings of this check only (headers included)
    options = None
    if frames_per_clip is not None:
        from alexkit.media import MediaOptions

        options = MediaOptions(frames_per_clip=frames_per_clip)
    spec = data.load_spec(path, val_fraction=0.0, labels_file=labels_file, media_options=options)
    if spec.is_tfrecord:  # records are read with TensorFlow: import it without its chatter
        import_tensorflow_quietly()
    if not json_out:
        err_console().print(f"checking {len(spec)} item(s) in {spec.root} ...")
    report = data.scan(spec)
    if json_out:
        print_json(report.to_json())
    else:
        _render(report)
    if strict and (report.unreadable or report.duplicates_across_splits):
        raise DataError(
            f"{len(report.unreadable)} unreadable file(s), "
            f"{len(report.duplicates_across_splits)} cross-split duplicate(s) in {spec.root}."
        )


def _render(report) -> None:
    from rich.table import Table

    out = out_console()
    splits = list(report.counts)
    groups = report.groups  # {kind: {counts, splits, classes, total}}, kinds the data has
    caption = None
    if groups:  # e.g. "24 (3 clips)": frames with the clips they come from
        caption = "frames/slices (" + ", ".join(groups) + " they come from)"
    table = Table(title=f"{report.source} ({report.layout})", caption=caption)
    table.add_column("class")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")

    def cell(n: int, *path: str) -> str:
        """``n`` and, per group kind, the entry at ``path`` (e.g. "counts", split, class)."""
        extra = []
        for kind, entry in groups.items():
            for key in path:
                entry = entry[key]
            extra.append(f"{entry} {kind}")
        return f"{n} ({', '.join(extra)})" if extra else str(n)

    for name, total in report.classes.items():
        table.add_row(
            name,
            *[cell(report.counts[s][name], "counts", s, name) for s in splits],
            cell(total, "classes", name),
        )
    table.add_row(
        "[bold]all[/]",
        *[cell(sum(report.counts[s].values()), "splits", s) for s in splits],
        f"[bold]{cell(report.readable, 'total')}[/]",
    )
    out.print(table)
    sizes = report.sizes
    if sizes:
        w, h = sizes["width"], sizes["height"]
        out.print(
            f"sizes: width {w['min']}-{w['max']} (median {w['median']:g}), "
            f"height {h['min']}-{h['max']} (median {h['median']:g}); formats "
            + ", ".join(f"{k} {v}" for k, v in sorted(report.formats.items()))
        )
    # Plain lines, not a table: paths stay whole (copyable, grep-able) at any width.
    out.print(f"unreadable: {len(report.unreadable) or 'none'}", highlight=False)
    for p, r in report.unreadable:
        out.print(f"  {p}: {r}", highlight=False, markup=False, soft_wrap=True)
    for group in report.duplicates_across_splits[:20]:
        text = "duplicate across splits: " + ", ".join(f"{p} ({s})" for p, s in group)
        out.print(text, highlight=False, markup=False, soft_wrap=True)
    for text in report.warnings:
        out.print(f"[yellow]warning:[/] {text}", highlight=False)


@data_app.command("pack")
@guarded
def pack(
    src: str = typer.Argument(..., help="Folder or CSV manifest to pack."),
    out: Path = typer.Option(..., "--out", help="Output folder for the shards."),
    shards: int = typer.Option(16, "--shards", help="Shards for the train split (others scale)."),
    resize: int = typer.Option(256, "--resize", help="Shorter side at most this (0 keeps size)."),
    quality: int = typer.Option(90, "--quality", help="JPEG quality for re-encoded images."),
    val_fraction: float = typer.Option(
        0.0, "--val-fraction", help="Carve a stratified val split when there is none (0: no)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for shuffling and splitting."),
    json_out: bool = typer.Option(False, "--json", help="Print only JSON on stdout."),
) -> None:
    """Write TFRecord shards with the standard ImageNet keys, resized to cut I/O.

    Shards are named train-00000-of-00016 / validation-... / test-...; labels are stored
    1-based in image/class/label like TensorFlow's ImageNet builder, and class_names.json
    and pack.json go beside them. Unreadable files are skipped and listed.

    Example: alexkit data pack ~/data/plantvillage --out ~/data/pv-shards --shards 32
    """
    from alexkit import data

    spec = data.load_spec(src, val_fraction=val_fraction, seed=seed)
    console = err_console()
    step = max(1, len(spec) // 20)

    def progress(done: int, total: int) -> None:
        if not json_out and (done % step == 0 or done == total):
            console.print(f"packed {done}/{total}", highlight=False)

    result = data.pack_tfrecords(
        spec,
        out,
        shards=shards,
        resize=resize or None,
        quality=quality,
        seed=seed,
        progress=progress,
    )
    summary = {
        "out": result.out_dir,
        "counts": result.counts,
        "shards": {k: len(v) for k, v in result.shards.items()},
        "skipped": [{"path": p, "reason": r} for p, r in result.skipped],
    }
    if json_out:
        print_json(summary)
        return
    o = out_console()
    for prefix, n in result.counts.items():
        o.print(f"{prefix}: {n} image(s) in {len(result.shards[prefix])} shard(s)")
    for p, r in result.skipped:
        o.print(f"skipped {p}: {r}", highlight=False)
    o.print(f"wrote {result.out_dir}")
