"""The ``alexkit`` command line: a thin Typer app over the library.

Every command lives in ``alexkit/commands/<area>.py`` and is registered here. No
TensorFlow is imported at module level anywhere on this path, so ``--help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

import typer
from typer.core import TyperGroup

try:  # Typer >= 0.25 vendors click; older releases use the click package.
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover
    import click  # type: ignore[no-redef]

from alexkit import __version__
from alexkit.commands._common import STATE, err_console, setup_logging
from alexkit.errors import EXIT_BUG, EXIT_INTERRUPTED, EXIT_USAGE

# Typer 0.29's vendored click has no Abort of its own (Typer raises typer.Abort); older
# Typer releases with the click package raise click's. Catch whichever exist.
_ABORTS = tuple({typer.Abort, getattr(click, "Abort", typer.Abort)})


class AlexkitGroup(TyperGroup):
    """Root group: click's usage errors become one line on stderr and exit 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            _one_line(f"{exc.format_message()}{hint}")
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            _one_line(exc.format_message())
            sys.exit(exc.exit_code)
        except (*_ABORTS, KeyboardInterrupt):
            _one_line("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # the last line of defence: a bug, in one line
            if STATE.get("debug"):
                raise
            _one_line(
                f"alexkit hit a bug: {type(exc).__name__}: {exc}; "
                "rerun with --debug for the traceback"
            )
            sys.exit(EXIT_BUG)
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line(message: str) -> None:
    from rich.markup import escape

    text = " ".join(message.split())
    err_console().print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


app = typer.Typer(
    cls=AlexkitGroup,
    name="alexkit",
    help="AlexNet transfer learning: pretrain, finetune, evaluate, extract.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Order is the order of `alexkit --help`.
COMMAND_MODULES = (
    "demo",
    "model",
    "weights",
    "data",
    "recipes",
    "train",
    "crossval",
    "evaluate",
    "explain",
    "export",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"alexkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """AlexNet transfer learning on Keras 3: the 2012 paper, faithfully, on your images.

    Exit codes: 0 ok, 1 bug, 2 usage, 3 data, 4 checkpoint, 130 interrupted.
    """
    STATE["debug"] = debug
    setup_logging(verbose)


for _name in COMMAND_MODULES:
    importlib.import_module(f"alexkit.commands.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
