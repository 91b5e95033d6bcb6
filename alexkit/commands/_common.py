"""What every CLI command shares: consoles, error mapping, JSON output."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console

from alexkit.errors import EXIT_INTERRUPTED, AlexkitError, one_line

F = TypeVar("F", bound=Callable[..., Any])

# Set by the root callback (--debug); read by `guarded`.
STATE: dict[str, Any] = {"debug": False}


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def out_console() -> Console:
    """Console for results (stdout). No colour when NO_COLOR is set or not a TTY."""
    return Console(file=sys.stdout, no_color=_no_color(), soft_wrap=True)


def err_console() -> Console:
    """Console for progress and diagnostics (stderr)."""
    return Console(file=sys.stderr, no_color=_no_color(), stderr=True)


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout, and nothing else."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    err_console().print(
        f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True
    )
    return typer.Exit(code)


def guarded(func: F | None = None, *, light: bool = False) -> Any:
    """Map AlexkitError to a one-line message and its exit code; Ctrl-C to 130.

    With ``alexkit --debug`` the traceback is kept instead. Unless ``light=True`` (for
    commands that never touch TensorFlow), TensorFlow is imported first with its C++
    start-up chatter (oneDNN, CUDA probes) kept off the user's terminal.
    """
    if func is None:
        return functools.partial(guarded, light=light)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if not light:
                import_tensorflow_quietly()
            return func(*args, **kwargs)
        except AlexkitError as exc:
            if STATE["debug"]:
                raise
            message = one_line(exc, limit=10_000)
            raise fail(_escape(message), exc.exit_code) from None
        except KeyboardInterrupt:
            if STATE["debug"]:
                raise
            raise fail("interrupted", EXIT_INTERRUPTED) from None
        except OSError as exc:
            # A full disk, a quota, a read-only or forbidden place, wherever it is written
            # (features, reports, exports): one line naming the path, exit 4.
            from alexkit.paths import write_errno, write_failure

            code = write_errno(exc)
            if code is None or STATE["debug"]:
                raise
            error = write_failure(exc.filename or "the output", code, what="write to")
            raise fail(_escape(str(error)), error.exit_code) from None

    return wrapper  # type: ignore[return-value]


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at a temporary file.

    TensorFlow's C++ runtime logs to stderr before Python can configure it (and
    ``TF_CPP_MIN_LOG_LEVEL`` no longer silences all of it). The captured text is replayed
    if the import fails, so real problems stay visible; ``--debug`` keeps it all.
    """
    if "tensorflow" in sys.modules or STATE["debug"]:
        return
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured, collector_paused():
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            # Device discovery (CUDA probes) logs too: do it here, once.
            tensorflow.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside; what was made inside frozen after.

    Importing TensorFlow and Keras creates a few hundred thousand long-lived objects, and
    the collector walks all of them again and again while they are made: with it paused,
    ``import tensorflow`` takes 3.4 instead of 5.7 CPU-seconds (2-core AMD EPYC, Python
    3.11). ``gc.freeze()`` then moves them out of the collector's reach for the rest of
    the process, so later collections during training do not walk them either. They
    live as long as the process anyway; only what the import leaves as cyclic garbage
    (little) is never freed.
    """
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def setup_logging(verbose: bool = False) -> None:
    """Library logs go to stderr; INFO with --verbose, WARNING otherwise."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # TensorFlow's C++ chatter is noise for our users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # So is its "N out of the last M calls ... triggered tf.function retracing" hint: a
    # last batch of another size retraces once; nothing a user can act on (--verbose shows it).
    if not verbose:
        logging.getLogger("tensorflow").addFilter(_drop_retracing_hint)


def _drop_retracing_hint(record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()
