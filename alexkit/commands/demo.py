"""`alexkit demo`: the whole toolkit on embedded data, in minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from alexkit.commands._common import err_console, guarded, out_console, print_json


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @guarded
    def demo(
        out: Path = typer.Option(Path("alexkit-demo"), "--out", "-o", help="Demo folder."),
        quick: bool = typer.Option(False, "--quick", help="A much smaller run (about a minute)."),
        force: bool = typer.Option(False, "--force", help="Replace --out if it holds files."),
        seed: int = typer.Option(0, "--seed", help="Seed of the data choice and training."),
        keep_checkpoints: int = typer.Option(
            0,
            "--keep-checkpoints",
            min=0,
            help="Checkpoints each training run keeps (default 0: none; the demo has no --resume).",
        ),
        variant: str = typer.Option(
            "original",
            "--variant",
            help="The AlexNet trained: original (the 2012 network) or tiny (the same layout "
            "at 1/8 width: checks an installation in seconds, learns little).",
        ),
        json_output: bool = typer.Option(False, "--json", help="Print only JSON on stdout."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress view."),
    ) -> None:
        """Transfer learning in miniature on embedded digits: nothing to download.

        Pretrains AlexNet on digits 0-4, fine-tunes on a few labelled digits 5-9 twice
        (from those weights and from scratch), evaluates both, extracts fc7 features.

        Example: [bold]alexkit demo --out alexkit-demo[/]   (≈3 min on 2 idle cores; --quick ≈1 min)
        """
        from alexkit.commands.train import LiveView
        from alexkit.demo import run_demo

        console = err_console()

        def say(message: str) -> None:
            if not quiet:
                console.print(f"[bold cyan]→[/] {message}", highlight=False)

        with LiveView(enabled=not quiet and not json_output) as view:
            result = run_demo(
                out, quick=quick, force=force, seed=seed, progress=say, train_progress=view,
                keep_checkpoints=keep_checkpoints, variant=variant,
            )  # fmt: skip
        if json_output:
            print_json(result.to_dict())
            return
        from rich.table import Table

        table = Table(title="Transfer vs scratch on digits 5-9 (held-out test images)")
        for column in ("approach", "weights", "labelled", "test", "accuracy", "macro F1", "s"):
            left = column in ("approach", "weights")
            table.add_column(column, justify="left" if left else "right")
        for row in result.rows:
            table.add_row(
                row["approach"],
                row["weights"],
                str(row["labelled_images"]),
                str(row["test_images"]),
                f"{row['accuracy']:.3f}",
                f"{row['macro_f1']:.3f}",
                f"{row['seconds']:.0f}",
            )
        console_out = out_console()
        console_out.print(table)
        for name, path in result.artefacts.items():
            console_out.print(f"  {name}: {path}", highlight=False)
        console_out.print(f"Done in {result.seconds:.0f} s.", highlight=False)
