"""`alexkit evaluate|extract|predict|probe`: use a trained (or pretrained) AlexNet."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

from alexkit.commands._common import err_console, guarded, out_console, print_json
from alexkit.precision import DEFAULT_PRECISION, PRECISION_ENV

LAYER_HELP = "Layer to read: fc7, fc6, pool5, conv5 or any layer name."
PRECISION_HELP = (
    "float32 | mixed_bfloat16 | mixed_float16 | auto (bfloat16 where the CPU has AMX or "
    "AVX512-BF16 or the GPU has compute capability >= 8.0, else float32). "
    f"Default: ${PRECISION_ENV} if set, else {DEFAULT_PRECISION}."
)


def precision_option() -> Any:
    """``--precision``, as every inference command declares it (None: the default)."""
    return typer.Option(None, "--precision", help=PRECISION_HELP)


def ci_level_option() -> Any:
    """``--ci-level``, as evaluate and probe declare it."""
    return typer.Option(0.95, "--ci-level", help="Confidence level of the intervals.")


def n_boot_option() -> Any:
    """``--n-boot``, as evaluate and probe declare it."""
    return typer.Option(
        2000, "--n-boot", help="Bootstrap resamples (groups resampled whole); 0: none."
    )


def check_interval_options(ci_level: float, n_boot: int) -> None:
    """``--ci-level`` in (0, 1) and ``--n-boot`` 0 or >= 100 (exit 2 before any loading)."""
    from alexkit.stats import check_level, check_n_boot

    check_level(ci_level)
    check_n_boot(n_boot)


def choose_and_show_precision(requested: str | None, model: Any = None) -> Any:
    """Resolve ``--precision`` (a bad name: exit 2 before anything loads).

    Said once on stderr when it was asked for or chosen by ``auto`` (a choice that
    depends on the machine); a plain default run stays quiet, and its choice is still
    recorded (reason ``"default"``). ``model``: the MODEL argument, so ``auto`` on an
    exported file says it runs as exported.

    Returns:
        The ``PrecisionChoice`` the library records (e.g. in ``metrics.json``'s meta).
    """
    import dataclasses

    from alexkit.precision import choose_precision, default_precision

    name = default_precision() if requested is None else requested
    choice = choose_precision(name)
    if requested is None and choice.reason == "asked for":
        choice = dataclasses.replace(choice, reason="default")
    if model is not None:
        from alexkit.loading import exported_choice, is_exported

        if is_exported(model):
            choice = exported_choice(choice)
    if requested is not None or choice.requested == "auto":
        err_console().print(f"precision {choice.policy} ({choice.reason})", highlight=False)
    return choice


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr with img/s; yields ``update(done, total)``."""
    if not enabled:
        yield lambda done, total: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class SpeedColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            # Overall rate since the first image (rich's windowed speed needs many updates).
            elapsed = task.elapsed or 0.0
            if not task.completed or elapsed <= 0:
                return Text("  -- img/s")
            return Text(f"{task.completed / elapsed:6.1f} img/s")

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        SpeedColumn(),
        TimeElapsedColumn(),
    )
    # Started on the first update, so errors found before any image is read
    # (unknown classes, bad paths) are not preceded by an empty bar.
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if not state:
            state["progress"] = Progress(*columns, console=err_console(), transient=False)
            state["progress"].start()
            state["task"] = state["progress"].add_task(description, total=total)
        state["progress"].update(state["task"], completed=done, total=total)

    try:
        yield update
    finally:
        if state:
            progress, task = state["progress"], state["task"]
            done = progress.tasks[0].completed
            progress.update(task, completed=done, total=done)  # skipped images never arrive
            progress.stop()


MODEL_HELP = "Run directory, .keras file, or an exported .onnx/.tflite/SavedModel."


def _load_source(
    model: str | None, weights: str | None, variant: str
) -> tuple[Any, list[str] | None, dict[str, Any]]:
    """A trained model/run (MODEL) or stored weights (--weights), never both."""
    from alexkit.errors import UsageError

    if (model is None) == (weights is None):
        raise UsageError("give either MODEL (a run directory or .keras file) or --weights NAME.")
    if weights is not None:
        from alexkit.weights import load_weights_model

        net = load_weights_model(weights, variant)
        return net, None, {}
    from alexkit.evaluate import is_exported, load_trained

    if is_exported(model):
        raise UsageError(
            f"{model} is an exported model: this command needs the Keras model (a run "
            "directory or .keras file); predict and evaluate take exported files."
        )
    return load_trained(model)


def _warn_skipped(skipped: list[tuple[str, str]] | list[dict[str, str]]) -> None:
    if not skipped:
        return
    console = err_console()
    console.print(f"[yellow]warning:[/] {len(skipped)} unreadable image(s) skipped:")
    for entry in skipped[:20]:
        path, reason = (entry["path"], entry["reason"]) if isinstance(entry, dict) else entry
        console.print(f"  {path}: {reason}", highlight=False, markup=False)
    if len(skipped) > 20:
        console.print(f"  … and {len(skipped) - 20} more (all listed in the JSON output)")


def _show_report(report: Any, out: Path | None, json_output: bool, strict: bool = False) -> None:
    from alexkit.report import render_tables, write_report

    written = write_report(report, out) if out is not None else {}
    group = getattr(report, "group_eval", None)
    if out is not None and group is not None:
        from alexkit.paths import atomic_write_text
        from alexkit.report import predictions_csv

        # One row per clip/volume: its frames'/slices' mean probabilities.
        atomic_write_text(out / "group_predictions.csv", predictions_csv(group))
        written["group_predictions.csv"] = out / "group_predictions.csv"
    _warn_skipped(report.meta.get("skipped", []))
    leak = getattr(report, "leakage", None)
    if leak and leak.get("leaked"):
        from alexkit.leakage import leakage_message

        console = err_console()
        console.rule("[bold red]LEAKAGE[/]", style="red")
        console.print(f"[bold red]warning:[/] {leakage_message(leak)}.", highlight=False)
        for example in leak.get("examples", [])[:5]:
            console.print(f"  {example}", highlight=False, markup=False)
        console.print("  These numbers overstate performance on unseen data.", highlight=False)
        console.rule(style="red")
    if json_output:
        data = report.to_dict()
        if written:
            data["files"] = {k: str(v) for k, v in written.items()}
        print_json(data)
    else:
        console = out_console()
        for table in render_tables(report):
            console.print(table)
        if report.groups:
            console.print(_group_table(report.groups, report.num_samples))
        if written:
            console.print(f"wrote {len(written)} files to {out}: {', '.join(written)}")
    if strict and leak and leak.get("leaked"):
        from alexkit.errors import DataError

        raise DataError(
            "--strict: evaluation data overlaps the run's training/validation data "
            f"({leak['duplicate_items']} identical items, {leak['shared_group_items']} items of "
            "shared groups); the report was still written."
        )


def _group_table(groups: dict[str, Any], num_items: int) -> Any:
    """Frame/slice-level next to clip/volume-level numbers, side by side."""
    from rich.table import Table

    level = groups.get("level", "file")
    table = Table(title=f"Per {level} (mean probability of its frames/slices)")
    table.add_column("metric", style="bold")
    table.add_column(f"per {level}", justify="right")
    table.add_row(f"{level}s", str(groups["num_groups"]))
    table.add_row("items (frames/slices)", str(num_items))
    table.add_row("accuracy", f"{groups['accuracy']:.4f}")
    table.add_row("macro F1", f"{groups['macro_avg']['f1']:.4f}")
    binary = groups.get("binary")
    if binary:
        for key, label in (("roc_auc", "ROC AUC"), ("sensitivity", "sensitivity")):
            value = binary.get(key)
            table.add_row(label, "n/a" if value is None else f"{value:.4f}")
        table.add_row("specificity", f"{binary['specificity']:.4f}")
    return table


# --------------------------------------------------------------------------- commands


@guarded
def evaluate(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: Path = typer.Option(..., "--data", "-d", help="Labelled images (folders or manifest)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write metrics/CSV/PNG here."),
    tta: str = typer.Option("center", "--tta", help="center or ten-crop (softmax averaged)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass."),
    threshold: float = typer.Option(0.5, "--threshold", help="Binary: P(class 1) cut-off."),
    probe: str | None = typer.Option(
        None, "--probe", help="logreg or svm: fit a linear probe on --train features instead."
    ),
    train: Path | None = typer.Option(None, "--train", help="Training images for --probe."),
    layer: str = typer.Option("fc7", "--layer", help=f"--probe only. {LAYER_HELP}"),
    json_output: bool = typer.Option(False, "--json", help="Print metrics JSON only."),
    ci_level: float = ci_level_option(),
    n_boot: int = n_boot_option(),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    no_calibration: bool = typer.Option(
        False, "--no-calibration", help="Ignore the run's saved temperature: raw probabilities."
    ),
    subgroups: Path | None = typer.Option(
        None, "--subgroups", help="CSV: a path column + attribute columns (site, sex, …)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 3 when items or groups were in the run's train/val data."
    ),
    explain: bool = typer.Option(
        False, "--explain", help="report.html: Grad-CAM overlays beside the wrong images."
    ),
    precision: str | None = precision_option(),
) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix (and ROC for 2 classes),
    each with a confidence interval; calibration (ECE, Brier, reliability diagram).

    Class names come from the run; data with other classes is refused.
    A run's saved temperature (calibration.json) is applied unless
    --no-calibration; its saved thresholds are reported too. With
    data-hashes.json in the run, evaluation items identical to
    training/validation ones are counted (--strict: exit 3).
    --out also writes report.html, one self-contained page; with --explain
    its gallery of confidently wrong images shows Grad-CAM overlays
    (conv5, predicted class).
    Example: [bold]alexkit evaluate runs/xray --data chest_xray/test --out eval/[/]
    """
    from alexkit.errors import UsageError

    check_interval_options(ci_level, n_boot)
    chosen = choose_and_show_precision(precision, model)  # the model, or the probe's features
    if explain and (out is None or probe is not None):
        raise UsageError(
            "--explain draws Grad-CAM overlays into report.html: it needs --out DIR "
            "(and a trained model, not --probe)."
        )
    if probe is not None:
        if train is None:
            raise UsageError("--probe needs --train PATH (the images to fit the probe on).")
        from alexkit.evaluate import load_trained, model_image_size, trained_precision
        from alexkit.probe import run_probe

        net, _names, config = load_trained(model)
        report = run_probe(
            net,
            str(train),
            str(data),
            kind=probe,
            layer=layer,
            batch_size=batch_size,
            threshold=threshold,
            image_size=model_image_size(net, config),
            grayscale=bool(config.get("grayscale", False)),
            seed=seed,
            ci_level=ci_level,
            n_boot=n_boot,
            precision=chosen,
        )
        report.meta["model"] = model
        report.meta["trained_precision"] = trained_precision(config)
        _show_report(report, out, json_output)
        return
    if train is not None:
        raise UsageError("--train is only used with --probe logreg|svm.")

    from alexkit.evaluate import evaluate_model

    with progress_bar("evaluating") as update:
        report = evaluate_model(
            model,
            str(data),
            tta=tta,
            batch_size=batch_size,
            threshold=threshold,
            progress=update,
            ci_level=ci_level,
            n_boot=n_boot,
            seed=seed,
            calibrate=not no_calibration,
            subgroups=subgroups,
            explain=explain,
            precision=chosen,
        )
    _show_report(report, out, json_output, strict=strict)


@guarded
def extract(
    model: str | None = typer.Argument(None, help="Run directory or .keras file."),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Stored weights instead of MODEL, e.g. imagenet."
    ),
    variant: str = typer.Option("torchvision", "--variant", help="Variant for --weights."),
    data: Path = typer.Option(..., "--data", "-d", help="Images (folders, manifest, …)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file (.csv, .parquet, .npy)."),
    layer: str = typer.Option("fc7", "--layer", help=LAYER_HELP),
    fmt: str | None = typer.Option(None, "--format", "-f", help="csv, parquet or npy."),
    pool: str = typer.Option("none", "--pool", help="avg: average conv maps; none: flatten."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass."),
    pool_frames: str | None = typer.Option(
        None, "--pool-frames", help="mean or max: one row per clip/volume instead of per frame."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary only."),
    precision: str | None = precision_option(),
) -> None:
    """Write one row of features per image: path, label, then the layer's activations.

    Streams in batches (bounded memory); unreadable images are listed, not fatal.
    Video frames / volume slices add frame and time columns; --pool-frames mean
    writes one row per clip or volume. Clips and volumes are sampled with the run's
    recipe [media] settings.
    Example: [bold]alexkit extract --weights imagenet --data photos/ --out fc7.parquet[/]
    """
    from alexkit.errors import UsageError
    from alexkit.evaluate import load_eval_spec, media_options_from_config, model_image_size
    from alexkit.extract import extract_features, resolve_format

    resolve_format(out, fmt)  # fail on a bad name before loading anything
    if pool_frames is not None and pool_frames not in ("mean", "max"):
        raise UsageError(f"--pool-frames must be 'mean' or 'max'; received {pool_frames!r}.")
    chosen = choose_and_show_precision(precision)
    net, names, config = _load_source(model, weights, variant)
    spec = load_eval_spec(  # every image, never re-split
        str(data), prefer_splits=(), media_options=media_options_from_config(config)
    )
    with progress_bar(f"extracting {layer}") as update:
        result = extract_features(
            net,
            spec,
            out,
            layer=layer,
            pool=pool,
            fmt=fmt,
            batch_size=batch_size,
            image_size=model_image_size(net, config),
            grayscale=bool(config.get("grayscale", False)),
            progress=update,
            pool_frames=pool_frames,
            precision=chosen,
        )
    _warn_skipped(result.skipped)
    if json_output:
        print_json(result.to_dict())
        return
    extra = f" (+ {result.index_path})" if result.index_path else ""
    pooled = f" ({pool_frames} of {result.images} frames/slices)" if pool_frames else ""
    out_console().print(
        f"wrote {result.rows} × {result.dim} {layer} features to {result.path}{extra}{pooled} "
        f"at {result.images_per_second:.1f} img/s; {len(result.skipped)} skipped"
    )


@guarded
def predict(
    model: str = typer.Argument(..., help=MODEL_HELP),
    images: list[Path] = typer.Argument(..., help="Image files and/or folders."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many classes per image."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON only."),
    csv_output: bool = typer.Option(False, "--csv", help="Print CSV: path, class, probability."),
    per_frame: bool = typer.Option(
        False, "--per-frame", help="Clips/volumes: a row per frame/slice, not one per source."
    ),
    no_calibration: bool = typer.Option(
        False, "--no-calibration", help="Ignore the run's saved temperature: raw probabilities."
    ),
    precision: str | None = precision_option(),
) -> None:
    """Class names and probabilities for each image.

    A clip or volume gets one row: its frames'/slices' probabilities averaged
    (sampled with the run's recipe [media] settings); --per-frame lists every frame.
    A run's saved temperature (calibration.json) is applied unless --no-calibration.
    Example: [bold]alexkit predict runs/plants leaf1.jpg leaves/ --top-k 3[/]
    """
    from alexkit.errors import UsageError

    if json_output and csv_output:
        raise UsageError("choose one of --json and --csv.")
    if top_k < 1:
        raise UsageError(f"--top-k must be >= 1; received {top_k}.")
    chosen = choose_and_show_precision(precision, model)
    from alexkit.evaluate import load_trained, media_options_from_config, model_image_size
    from alexkit.predict import predict_images

    net, names, config = load_trained(model)
    with progress_bar("predicting", enabled=True) as update:
        result = predict_images(
            net,
            names,
            [str(p) for p in images],
            batch_size=batch_size,
            image_size=model_image_size(net, config),
            grayscale=bool(config.get("grayscale", False)),
            progress=update,
            media_options=media_options_from_config(config),
            precision=chosen,
        )
    if not no_calibration:
        from alexkit.calibration import apply_saved_temperature
        from alexkit.evaluate import run_dir_of

        result.probs, _ = apply_saved_temperature(result.probs, run_dir_of(model))
    _warn_skipped(result.skipped)
    records = result.to_records(top_k, per_frame=per_frame)
    if json_output:
        print_json(
            {
                "predictions": records,
                "skipped": [{"path": p, "reason": r} for p, r in result.skipped],
                "precision": result.precision,
            }
        )
        return
    if csv_output:
        import csv
        import sys

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", "rank", "class", "probability"])
        for rec in records:
            for rank, entry in enumerate(rec["top_k"], 1):
                writer.writerow([rec["path"], rank, entry["class"], f"{entry['probability']:.6g}"])
        return
    from rich.table import Table

    table = Table(title=f"Top-{min(top_k, len(names))} predictions")
    table.add_column("image", overflow="fold")
    table.add_column("predicted", style="bold")
    table.add_column("probability", justify="right")
    table.add_column("others")
    pooled = any("frames" in rec for rec in records)
    if pooled:
        table.add_column("frames", justify="right")
    for rec in records:
        others = ", ".join(f"{e['class']} {e['probability']:.1%}" for e in rec["top_k"][1:])
        cells = [rec["path"], rec["predicted"], f"{rec['probability']:.1%}", others]
        table.add_row(*cells, *([str(rec.get("frames", 1))] if pooled else []))
    out_console().print(table)


@guarded
def probe(
    model: str | None = typer.Argument(None, help="Run directory or .keras file (features)."),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Stored weights instead of MODEL, e.g. imagenet."
    ),
    variant: str = typer.Option("torchvision", "--variant", help="Variant for --weights."),
    train: Path = typer.Option(..., "--train", help="Labelled images to fit the probe on."),
    data: Path = typer.Option(..., "--data", "-d", help="Labelled images to evaluate on."),
    kind: str = typer.Option("logreg", "--probe", help="logreg or svm."),
    layer: str = typer.Option("fc7", "--layer", help=LAYER_HELP),
    pool: str = typer.Option("none", "--pool", help="avg: average conv maps; none: flatten."),
    c: float = typer.Option(1.0, "--c", help="Inverse regularisation strength."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write metrics/CSV/PNG here."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass."),
    threshold: float = typer.Option(0.5, "--threshold", help="Binary: P(class 1) cut-off."),
    json_output: bool = typer.Option(False, "--json", help="Print metrics JSON only."),
    ci_level: float = ci_level_option(),
    n_boot: int = n_boot_option(),
    seed: int = typer.Option(0, "--seed", help="Bootstrap and probe solver seed."),
    precision: str | None = precision_option(),
) -> None:
    """Linear probe: fit logistic regression or a linear SVM on frozen AlexNet features.

    The classic "AlexNet fc7 + SVM" baseline, with the same report as `evaluate`
    (intervals included). --precision is what the features are computed in.
    Example: [bold]alexkit probe -w imagenet --train data/train --data data/test --probe svm[/]
    """
    from alexkit.evaluate import model_image_size, trained_precision
    from alexkit.probe import run_probe

    check_interval_options(ci_level, n_boot)
    chosen = choose_and_show_precision(precision, model)
    net, _names, config = _load_source(model, weights, variant)
    report = run_probe(
        net,
        str(train),
        str(data),
        kind=kind,
        layer=layer,
        pool=pool,
        c=c,
        batch_size=batch_size,
        threshold=threshold,
        image_size=model_image_size(net, config),
        grayscale=bool(config.get("grayscale", False)),
        seed=seed,
        ci_level=ci_level,
        n_boot=n_boot,
        precision=chosen,
    )
    report.meta["model"] = model or f"weights:{weights}"
    report.meta["trained_precision"] = trained_precision(config)
    _show_report(report, out, json_output)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("extract")(extract)
    app.command("predict")(predict)
    app.command("probe")(probe)
