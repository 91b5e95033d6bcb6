"""`alexkit explain`: where the network looked (Grad-CAM, Grad-CAM++, occlusion)."""

from __future__ import annotations

from pathlib import Path

import typer

from alexkit.commands._common import guarded, out_console, print_json
from alexkit.commands.evaluate import precision_option


@guarded
def explain(
    sources: list[str] | None = typer.Argument(
        None,
        metavar="MODEL|IMAGE",
        help="MODEL (run directory or .keras file), then image files/folders.",
    ),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Stored weights instead of MODEL, e.g. imagenet."
    ),
    variant: str = typer.Option("torchvision", "--variant", help="Variant for --weights."),
    data: Path | None = typer.Option(
        None, "--data", "-d", help="Images: folders, CSV manifest, clips, DICOM, NIfTI."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for overlays and explain.csv."),
    method: str = typer.Option(
        "gradcam", "--method", "-m", help="gradcam, gradcam++ or occlusion."
    ),
    layer: str = typer.Option("conv5", "--layer", help="Convolutional layer for Grad-CAM."),
    target: str = typer.Option(
        "predicted", "--class", "-c", help="Whose evidence: predicted, true or a class name."
    ),
    alpha: float = typer.Option(0.4, "--alpha", help="Heat-map opacity in the overlay (0-1)."),
    colormap: str | None = typer.Option(
        None, "--colormap", help="A matplotlib colormap (default jet; occlusion: coolwarm)."
    ),
    save_maps: bool = typer.Option(
        False, "--save-maps", help="Also write maps.npz (raw maps, keyed by relative path)."
    ),
    patch: int = typer.Option(32, "--patch", help="Occlusion: patch side in pixels."),
    stride: int = typer.Option(16, "--stride", help="Occlusion: step between patches."),
    baseline: str = typer.Option(
        "mean", "--baseline", help="Occlusion: patch colour: mean, black or a pixel value."
    ),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per pass."),
    limit: int | None = typer.Option(None, "--limit", help="Explain at most N images."),
    sanity: bool = typer.Option(
        False,
        "--sanity-check",
        help="Also check the maps (Adebayo 2018) on up to 16 images: sanity.json.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace the outputs in a non-empty --out."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary only."),
    precision: str | None = precision_option(),
) -> None:
    """Heat maps of what drove each prediction: an overlay PNG per image.

    Grad-CAM(++) weighs a conv layer's maps by the gradient of the class
    logit (conv5: a coarse 13×13 grid); occlusion measures the drop in
    probability when a patch hides each region. explain.csv lists each
    image's prediction, the map's peak (row, col) and the share of heat in
    the central half of the image (low: borders, corners: look for
    shortcuts); a blank map (no positive heat) leaves both empty, and their
    count is printed. Clips and volumes give one overlay per frame or slice.
    Example: [bold]alexkit explain runs/xray --data chest_xray/test --out cams/[/]
    """
    from alexkit.commands.evaluate import _warn_skipped, choose_and_show_precision, progress_bar
    from alexkit.errors import UsageError
    from alexkit.evaluate import load_eval_spec, media_options_from_config, model_image_size
    from alexkit.explain import METHODS, check_colormap, explain_data, resolve_target

    sources = list(sources or [])
    if weights is None:
        if not sources:
            raise UsageError("give MODEL (a run directory or .keras file) or --weights NAME.")
        model, images = sources[0], sources[1:]
    else:
        model, images = None, sources
    if (data is None) == (not images):
        raise UsageError("give the images either as --data PATH or as IMAGE arguments, not both.")
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}; received {method!r}.")
    colormap = colormap or ("coolwarm" if method == "occlusion" else "jet")
    check_colormap(colormap)
    baseline_value: str | float = baseline
    if baseline not in ("mean", "black"):
        try:
            baseline_value = float(baseline)
        except ValueError:
            raise UsageError(
                f"--baseline must be mean, black or a pixel value; received {baseline!r}."
            ) from None

    from alexkit.commands.evaluate import _load_source

    chosen = choose_and_show_precision(precision)
    net, names, config = _load_source(model, weights, variant)
    names = names or [str(i) for i in range(int(net.output_shape[-1]))]
    resolve_target(target, names)  # a bad class name fails before any image is read
    media_options = media_options_from_config(config)
    broken: list[tuple[str, str]] = []
    if data is not None:
        spec = load_eval_spec(str(data), prefer_splits=(), media_options=media_options)
        spec = _labels_in_model_order(spec, names)
    else:
        from alexkit.predict import collect_images, make_spec

        items = collect_images(images, media_options, broken)
        spec = make_spec(items, names)
    skipped = None
    if broken:
        from alexkit.data import SkipLog

        skipped = SkipLog()
        for path, reason in broken:
            skipped.add(path, reason)
    with progress_bar(f"explaining ({method})") as update:
        result = explain_data(
            net,
            spec,
            out,
            class_names=names,
            method=method,
            layer=layer,
            target=target,
            alpha=alpha,
            colormap=colormap,
            save_maps=save_maps,
            image_size=model_image_size(net, config),
            grayscale=bool(config.get("grayscale", False)),
            batch_size=batch_size,
            patch=patch,
            stride=stride,
            baseline=baseline_value,
            limit=limit,
            force=force,
            sanity=sanity,
            skipped=skipped,
            progress=update,
            precision=chosen,
        )
    _warn_skipped(result.skipped)
    _warn_blank(result.blank_maps, result.images, method, layer)
    if json_output:
        summary = result.to_dict()
        summary.pop("rows")
        print_json(summary)
        return
    low = [r for r in result.rows if r["center_share"] is not None and r["center_share"] < 0.3]
    console = out_console()
    console.print(
        f"explained {result.images} images with {method}"
        f"{f' at {layer}' if method != 'occlusion' else ''} in {result.seconds:.1f} s "
        f"({result.images_per_second:.1f} img/s); wrote {', '.join(result.files)} to {out}"
    )
    if result.sanity is not None:
        head, contrast = result.sanity["head_randomisation"], result.sanity["class_contrast"]
        verdict = "passed" if result.sanity["passed"] else "[bold red]FAILED[/]"
        console.print(
            "sanity checks (Adebayo et al. 2018; rank correlation, want well below 1): "
            f"head re-initialised {head['mean_rank_correlation']:.2f}, "
            f"top-2 classes {contrast['mean_rank_correlation']:.2f} → {verdict}"
        )
    if low:
        console.print(
            f"{len(low)} image(s) have < 30 % of the heat in the central half of the image "
            "(see center_share in explain.csv): check them for border or marker shortcuts."
        )


def _warn_blank(blank: int, images: int, method: str, layer: str) -> None:
    """Say on stderr how many maps had no positive heat (their centre share is undefined)."""
    if not blank:
        return
    from alexkit.commands._common import err_console

    if method == "occlusion":
        why = "no occluding patch lowered the target's score"
    else:
        why = (
            f"no positive evidence for the target at {layer}: its units are all off for "
            "the image (dead ReLUs) or the class gets no support there"
        )
    err_console().print(
        f"[yellow]warning:[/] {blank} of {images} map(s) are blank ({why}); their "
        "center_share and peak are left empty in explain.csv (null in JSON).",
        highlight=False,
    )


def _labels_in_model_order(spec, names):
    """Re-index labels to the model's classes; unknown classes lose their label (warned)."""
    import dataclasses
    import logging

    from alexkit.errors import DataError
    from alexkit.evaluate import align_spec

    try:
        return align_spec(spec, names, require_labels=False)
    except DataError as exc:
        logging.getLogger("alexkit.explain").warning("%s Explaining without true labels.", exc)
        return dataclasses.replace(spec, labels=(-1,) * len(spec), class_names=tuple(names))


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
