"""``alexkit crossval``: stratified, group-aware K-fold fine-tuning (thin over alexkit.crossval)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from alexkit.commands._common import err_console, guarded, out_console, print_json


class FoldView:
    """Progress of a crossval: a line per fold, then each fold's finetune view."""

    def __init__(self, view: Any):
        self.view = view
        self.console = err_console()

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] != "fold":
            self.view(event)
            return
        what = {"skipped": "finished before, kept", "resumed": "resuming", "trained": "training"}
        self.console.print(
            f"[bold]fold {event['fold']}/{event['folds']}[/]: {what[event['status']]} "
            f"({event['num_train']} train, {event['num_val']} validation items) "
            f"→ {event['run_dir']}",
            highlight=False,
        )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def fold_table(summary: dict[str, Any]) -> Any:
    """A row per metric: each fold, mean ± sd over folds, pooled out-of-fold value (CI)."""
    from rich.table import Table

    table = Table(title=f"{summary['folds']}-fold cross-validation")
    table.add_column("metric", style="bold")
    for row in summary["per_fold"]:
        table.add_column(f"fold {row['fold']}", justify="right")
    table.add_column("mean ± sd", justify="right", style="bold")
    table.add_column("pooled (CI)", justify="right")
    pooled, ci = summary["pooled"], summary["pooled"].get("ci", {})
    for key, stats in summary["mean_sd"].items():
        sd = "" if stats["sd"] is None else f" ± {stats['sd']:.3f}"
        value: Any = pooled
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        shown = _fmt(value)
        interval = ci.get(key)
        if value is not None and interval and None not in interval:
            shown += f" ({interval[0]:.3f}–{interval[1]:.3f})"
        folds = [_fmt(row["metrics"].get(key)) for row in summary["per_fold"]]
        table.add_row(key, *folds, f"{stats['mean']:.3f}{sd}", shown)
    return table


def register(app: typer.Typer) -> None:
    """Add ``crossval`` to the root app."""

    @app.command("crossval")
    @guarded
    def crossval_cmd(
        recipe: str | None = typer.Option(
            None, "--recipe", "-r", help="Recipe name or TOML file (as finetune)."
        ),
        data: Path | None = typer.Option(
            None, "--data", "-d", help="Labelled images (folders or manifest; test split left out)."
        ),
        folds: int | None = typer.Option(None, "--folds", "-k", help="Number of folds K (>= 2)."),
        out: Path = typer.Option(..., "--out", "-o", help="Crossval directory."),
        group_column: str | None = typer.Option(
            None, "--group-column", help="Manifest column grouping items (e.g. patient_id)."
        ),
        weights: str | None = typer.Option(
            None, "--weights", "-w", help="imagenet (default) | none | store name | .keras file."
        ),
        epochs: int | None = typer.Option(None, "--epochs", help="Epochs per stage."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size."),
        lr: float | None = typer.Option(None, "--lr", help="First stage's learning rate."),
        seed: int | None = typer.Option(None, "--seed", help="Run and fold-assignment seed."),
        steps_per_epoch: int | None = typer.Option(
            None, "--steps-per-epoch", help="Batches per epoch (default: one pass)."
        ),
        ci_level: float = typer.Option(0.95, "--ci-level", help="Level of the pooled CIs."),
        n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples (groups whole)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the crossval in --out."),
        force: bool = typer.Option(False, "--force", help="Overwrite a non-empty --out."),
        as_json: bool = typer.Option(False, "--json", help="Print summary.json only."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress view."),
    ) -> None:
        """Stratified K-fold fine-tuning; one patient/clip/volume never in two folds.

        Each fold is a normal run directory OUT/fold-<k>. Then OUT/summary.json
        (per-fold metrics, mean ± sd) and the pooled out-of-fold evaluation
        (predictions.csv, metrics.json with CIs, report.html). --resume goes on
        from the fold and epoch a killed crossval reached.

        Example: alexkit crossval --recipe xray --data xray.csv --folds 5 --out cv/
        """
        from alexkit.commands.evaluate import check_interval_options
        from alexkit.commands.train import LiveView
        from alexkit.crossval import crossval

        check_interval_options(ci_level, n_boot)
        started = time.perf_counter()
        with LiveView(enabled=not quiet) as view:
            result = crossval(
                recipe, data, folds=folds, out=out, group_column=group_column,
                weights=weights, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                steps_per_epoch=steps_per_epoch, resume=resume, force=force,
                progress=FoldView(view), ci_level=ci_level, n_boot=n_boot,
            )  # fmt: skip
        if as_json:
            print_json({**result.summary, "files": {k: str(v) for k, v in result.files.items()}})
            return
        from alexkit.report import render_tables

        console = out_console()
        console.print(f"pooled out-of-fold evaluation ({result.report.num_samples} items):")
        for table in render_tables(result.report):
            console.print(table)
        console.print(fold_table(result.summary))
        console.print(
            f"wrote {len(result.files)} files to {result.out} "
            f"in {time.perf_counter() - started:.1f} s"
        )
