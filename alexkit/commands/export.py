"""``alexkit export``: a trained model as SavedModel, ONNX or LiteRT, checked against Keras."""

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


@guarded(light=True)  # options and the extra are checked before TensorFlow starts
def export(
    model: str | None = typer.Argument(None, help="Run directory or .keras file."),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Stored weights instead of MODEL, e.g. imagenet."
    ),
    variant: str = typer.Option("torchvision", "--variant", help="Variant for --weights."),
    fmt: str = typer.Option(..., "--format", "-f", help="savedmodel, onnx or tflite."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="A folder, or a .onnx/.tflite file (savedmodel: a folder)."
    ),
    quantize: str = typer.Option(
        "none", "--quantize", "-q", help="none; float16 (tflite); dynamic-int8 (tflite, onnx)."
    ),
    data: Path | None = typer.Option(
        None, "--data", "-d", help="Images to check parity on (default: generated images)."
    ),
    batch: str = typer.Option("dynamic", "--batch", help="dynamic, or a fixed batch size N."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
) -> None:
    """Export for deployment and prove the file gives Keras' answers.

    The exported model takes raw RGB pixels in [0, 255] (NHWC, float32, the variant's
    size) and returns class probabilities (calibrated when the run has a temperature);
    a model-card.json is written beside it. Float32 exports must match Keras to 1e-4
    with the same top-1 class on every checked image, or the command fails (exit 4).
    Example: [bold]alexkit export runs/plants --format tflite --out deploy/plants/[/]
    """
    from alexkit.errors import UsageError
    from alexkit.export import check_options, export_model, require_export_tools

    if (model is None) == (weights is None):
        raise UsageError("give either MODEL (a run directory or .keras file) or --weights NAME.")
    check_options(fmt, quantize, batch)
    require_export_tools(fmt)
    import_tensorflow_quietly()

    def say(message: str) -> None:
        if not json_output:
            err_console().print(f"[dim]{message}…[/]", highlight=False)

    result = export_model(
        model if model is not None else weights,
        fmt,
        out,
        quantize=quantize,
        data=data,
        batch=batch,
        weights=weights is not None,
        variant=variant,
        progress=say,
    )
    if json_output:
        print_json(result.to_dict())
        return
    p = result.parity
    console = out_console()
    console.print(
        f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {fmt}"
        f"{'' if quantize == 'none' else ', ' + quantize}) and {result.card_path.name}",
        highlight=False,
    )
    agree = p["num_images"] - p["top1_disagreements"]
    line = (
        f"parity vs Keras on {p['images']}: max |Δp| {p['max_abs_diff']:.2e}, "
        f"top-1 agreement {agree}/{p['num_images']}"
    )
    console.print(line + (" (within 1e-4: parity holds)" if p["claimed"] else ""), highlight=False)
    if "accuracy_change" in p:
        console.print(
            f"accuracy: Keras {p['accuracy_keras']:.4f}, exported {p['accuracy_exported']:.4f} "
            f"(change {p['accuracy_change']:+.4f})",
            highlight=False,
        )
    elif not p["claimed"]:
        console.print(
            "no parity claimed for a quantized export; give labelled --data to measure "
            "the accuracy change",
            highlight=False,
        )
    if result.lrn_ops:
        console.print(f"LRN became: {', '.join(result.lrn_ops)}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
