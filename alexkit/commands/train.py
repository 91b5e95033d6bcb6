"""``alexkit finetune`` and ``alexkit pretrain``: thin wrappers over :mod:`alexkit.train`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import typer

from alexkit.commands._common import err_console, guarded, out_console, print_json


class LiveView:
    """A rich progress view of a run on stderr: one bar per epoch with loss, metric, img/s.

    It is the ``progress`` callback of :func:`alexkit.train.finetune`/``pretrain``.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.console = err_console()
        self.progress: Any = None
        self.task: Any = None
        self.monitor = "val_accuracy"
        self.total_epochs = 0

    def __enter__(self) -> LiveView:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("acc {task.fields[acc]}"),
                TextColumn("{task.fields[speed]} img/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        kind = event["event"]
        if kind == "start":
            self.total_epochs = event["total_epochs"]
            verb = "resuming" if event["resumed"] else "training"
            stages = ", ".join(f"{s['name']} ×{s['epochs']}" for s in event["stages"])
            self.console.print(f"{verb} into {event['run_dir']} ({stages})", highlight=False)
        elif kind == "resume":
            self.console.print(
                f"resumed from {event['checkpoint']} (epoch {event['epoch'] + 1}, "
                f"step {event['step_in_epoch']})",
                highlight=False,
            )
        elif kind == "stage":
            start = event["trainable_from"]
            trainable = {None: "the head only", "all": "every layer"}.get(start, f"{start} up")
            self.console.print(
                f"[bold]stage {event['stage']}[/] {event['name']}: trains {trainable} "
                f"({event['trainable_params']:,} parameters)",
                highlight=False,
            )
        elif kind == "epoch_start":
            description = (
                f"{event['stage_name']} epoch {event['epoch']}/{self.total_epochs} "
                f"lr {event['lr']:.2g}"
            )
            self.task = self.progress.add_task(
                description,
                total=event["steps"],
                completed=event["start_step"],
                loss="-",
                acc="-",
                speed="-",
            )
        elif kind == "batch" and self.task is not None:
            self.progress.update(
                self.task,
                completed=event["step"],
                loss=f"{event['loss']:.4f}",
                acc=f"{event['accuracy']:.3f}",
                speed=f"{event['img_per_s']:.1f}",
            )
        elif kind == "epoch_end":
            row = event["row"]
            monitor = event["monitor"]
            value = row.get(monitor)
            shown = "-" if value is None else f"{value:.4f}"
            mark = " [green](best)[/]" if event["improved"] else ""
            self.console.print(
                f"  epoch {row['epoch']}: loss {row['loss']:.4f} acc {row['accuracy']:.3f} "
                f"{monitor} {shown}{mark} {row['img_per_s']:.1f} img/s",
                highlight=False,
            )
        elif kind == "registered":
            self.console.print(f"registered weights as '{event['name']}'", highlight=False)
        elif kind == "precision":
            self.console.print(f"precision {event['policy']} ({event['reason']})", highlight=False)


def _retention(keep: int | None) -> Any:
    """``--keep-checkpoints``: the runs started inside keep that many (None: the default)."""
    if keep is None:
        return contextlib.nullcontext()
    from alexkit.train.common import keep_checkpoints

    return keep_checkpoints(keep)


def _summary(result: Any, as_json: bool, started: float) -> None:
    if as_json:
        data = result.to_dict()
        if data.get("metrics"):
            keep = ("accuracy", "top5_accuracy", "macro_avg", "binary", "num_samples")
            data["metrics"] = {k: data["metrics"][k] for k in keep if k in data["metrics"]}
        print_json(data)
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_row("run directory", str(result.run_dir))
    table.add_row("best model", str(result.model_path))
    best = "-" if result.best_value is None else f"{result.best_value:.4f}"
    table.add_row(f"best {result.monitor}", f"{best} (epoch {result.best_epoch})")
    if result.metrics:
        table.add_row("validation accuracy", f"{result.metrics.get('accuracy', float('nan')):.4f}")
        if result.metrics.get("top5_accuracy") is not None:
            table.add_row("validation top-5", f"{result.metrics['top5_accuracy']:.4f}")
    if result.weights_name:
        table.add_row("weights entry", result.weights_name)
    if getattr(result, "worker", None):
        table.add_row("worker", f"{result.worker} (worker 0, the chief, writes the run directory)")
    table.add_row("epochs", str(len(result.history)))
    if getattr(result, "run_dir_bytes", None) is not None:
        table.add_row("run directory size", f"{result.run_dir_bytes / 1e6:.1f} MB")
    table.add_row("time", f"{time.perf_counter() - started:.1f} s")
    out_console().print(table)


KEEP_CHECKPOINTS_HELP = (
    "Checkpoints kept, newest first (default 2); 0 writes none (Ctrl-C still saves one) "
    "and leaves none at the end."
)
RUN_PRECISION_HELP = (
    "auto (default: bfloat16 where the CPU/GPU has it natively, else float32; "
    "$ALEXKIT_PRECISION overrides) | float32 | mixed_bfloat16 | mixed_float16. "
    "A --resume keeps the run's own."
)


def _run_precision(precision: str | None, resume: bool) -> str | None:
    """``--precision``, else ``$ALEXKIT_PRECISION`` or ``auto`` for a new run; a resumed run
    keeps the precision saved in its config (None)."""
    if precision is not None or resume:
        return precision
    from alexkit.precision import default_precision

    return default_precision()


def register(app: typer.Typer) -> None:
    """Add ``finetune`` and ``pretrain`` to the root app."""

    @app.command("finetune")
    @guarded
    def finetune_cmd(
        recipe: str | None = typer.Option(
            None,
            "--recipe",
            "-r",
            help="Recipe name (`alexkit recipes list`) or TOML file (default: the paper's SGD).",
        ),
        data: Path | None = typer.Option(
            None, "--data", "-d", help="Training images; optional for the digits recipe."
        ),
        val: Path | None = typer.Option(None, "--val", help="Validation images."),
        positive_class: str | None = typer.Option(
            None,
            "--positive-class",
            help="Two classes: the positive one (label 1: sensitivity, AUC). Needed when a "
            "binary recipe's class names are not your folders'.",
        ),
        target_sensitivity: float | None = typer.Option(
            None,
            "--target-sensitivity",
            min=0.0,
            max=1.0,
            help="Two classes: also pick a threshold on validation reaching this sensitivity.",
        ),
        weights: str | None = typer.Option(
            None, "--weights", "-w", help="imagenet (default) | none | store name | .keras file."
        ),
        out: Path | None = typer.Option(None, "--out", "-o", help="Run directory."),
        epochs: int | None = typer.Option(None, "--epochs", help="Epochs per stage."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size."),
        lr: float | None = typer.Option(None, "--lr", help="First stage's learning rate."),
        seed: int | None = typer.Option(None, "--seed", help="Run seed."),
        steps_per_epoch: int | None = typer.Option(
            None, "--steps-per-epoch", help="Batches per epoch (default: one pass)."
        ),
        checkpoint_every: int | None = typer.Option(
            None, "--checkpoint-every", help="Also checkpoint every N steps."
        ),
        keep_checkpoints: int | None = typer.Option(
            None, "--keep-checkpoints", min=0, help=KEEP_CHECKPOINTS_HELP
        ),
        feature_cache_views: int | None = typer.Option(
            None,
            "--feature-cache-views",
            min=0,
            help="A stage training only layers above frozen ones runs the frozen layers on "
            "K augmented views per image (the first K epochs') and feeds later epochs from "
            "them; 0: every epoch uncached (default 4). Over "
            "ALEXKIT_FEATURE_CACHE_MEMORY (default 1G) the views stream from the run dir, "
            "or the stage runs uncached when the disk is short.",
        ),
        precision: str | None = typer.Option(None, "--precision", help=RUN_PRECISION_HELP),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
        force: bool = typer.Option(False, "--force", help="Overwrite a non-empty --out."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress view."),
    ) -> None:
        """Fine-tune AlexNet on your images following a recipe.

        Flags beat the recipe, the recipe beats the defaults. The run directory gets
        config.json, history.csv, TensorBoard logs, checkpoints, the best model.keras
        and metrics.json.

        Example: alexkit finetune --recipe xray --data chest_xray/train --out runs/xray
        """
        from alexkit.train import finetune

        started = time.perf_counter()
        with LiveView(enabled=not quiet) as view, _retention(keep_checkpoints):
            result = finetune(
                recipe,
                data,
                val=val,
                positive_class=positive_class,
                target_sensitivity=target_sensitivity,
                weights=weights,
                out=out,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                resume=resume,
                force=force,
                progress=view,
                steps_per_epoch=steps_per_epoch,
                checkpoint_every=checkpoint_every,
                feature_cache_views=feature_cache_views,
                precision=_run_precision(precision, resume),
            )
        _summary(result, as_json, started)

    @app.command("pretrain")
    @guarded
    def pretrain_cmd(
        data: Path | None = typer.Option(
            None,
            "--data",
            "-d",
            help="Training images: folders, ImageNet layout or TFRecords (required unless "
            "--resume).",
        ),
        val: Path | None = typer.Option(None, "--val", help="Validation images."),
        variant: str | None = typer.Option(
            None, "--variant", help="original (default) | torchvision | tiny (smoke tests)."
        ),
        epochs: int | None = typer.Option(None, "--epochs", help="Epochs (default 90)."),
        batch_size: int | None = typer.Option(
            None, "--batch-size", help="Global batch size (default 128)."
        ),
        lr: float | None = typer.Option(None, "--lr", help="Learning rate (default 0.01)."),
        schedule: str | None = typer.Option(
            None, "--schedule", help="plateau (default, ÷10 on val plateau) | step (÷10 / 30 ep)."
        ),
        patience: int | None = typer.Option(
            None, "--patience", help="Plateau patience in epochs (default 5)."
        ),
        out: Path | None = typer.Option(None, "--out", "-o", help="Run directory."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
        force: bool = typer.Option(False, "--force", help="Overwrite --out / the store entry."),
        precision: str | None = typer.Option(None, "--precision", help=RUN_PRECISION_HELP),
        jit: bool | None = typer.Option(
            None, "--jit/--no-jit", help="XLA-compile the train step (default: Keras auto)."
        ),
        distribute: str | None = typer.Option(
            None, "--distribute", help="none (default) | mirrored | multiworker."
        ),
        steps_per_epoch: int | None = typer.Option(
            None, "--steps-per-epoch", help="Batches per epoch (default: one pass)."
        ),
        checkpoint_every: int | None = typer.Option(
            None, "--checkpoint-every", help="Checkpoint every N steps (default 1000)."
        ),
        keep_checkpoints: int | None = typer.Option(
            None, "--keep-checkpoints", min=0, help=KEEP_CHECKPOINTS_HELP
        ),
        name: str | None = typer.Option(
            None, "--name", help="Weights-store entry name for the final model."
        ),
        seed: int | None = typer.Option(None, "--seed", help="Run seed (default 0)."),
        init: str | None = typer.Option(
            None, "--init", help="paper (N(0,0.01), default) | he (faster on small data)."
        ),
        ten_crop: bool = typer.Option(
            False, "--ten-crop", help="Ten-crop evaluation of the best model at the end."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress view."),
    ) -> None:
        """Train AlexNet from scratch the 2012 paper's way; register the weights.

        SGD momentum 0.9, weight decay 5e-4 (the paper's coupled rule), batch 128,
        LR 0.01 ÷10 on plateau; top-1/top-5 on centre crops. Checkpoints every N steps
        and every epoch; --resume continues after a crash or Ctrl-C.

        Example: alexkit pretrain --data imagenet/ --out runs/alexnet --epochs 90
        """
        from alexkit.train import pretrain

        started = time.perf_counter()
        with LiveView(enabled=not quiet) as view, _retention(keep_checkpoints):
            result = pretrain(
                data,
                val=val,
                variant=variant,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                schedule=schedule,
                out=out,
                resume=resume,
                precision=_run_precision(precision, resume),
                jit=jit,
                distribute=distribute,
                steps_per_epoch=steps_per_epoch,
                name=name,
                seed=seed,
                force=force,
                checkpoint_every=checkpoint_every,
                patience=patience,
                ten_crop=ten_crop,
                init=init,
                progress=view,
            )
        _summary(result, as_json, started)
