"""alexkit's exceptions and the exit codes the CLI maps them to.

The library raises these; only the CLI turns them into a one-line message and an
exit code. Exit codes are part of the public interface (documented in README.md):

=====  ==========================================================
code   meaning
=====  ==========================================================
0      success
1      an unexpected bug (traceback shown with ``--debug``)
2      usage: bad option, bad recipe, bad weights file, missing input
3      data: no readable images, unknown classes, bad manifest
4      checkpoint/run directory: nothing to resume, corrupt, mismatch
130    interrupted (Ctrl-C); state was saved where possible
=====  ==========================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_CHECKPOINT = 4
EXIT_INTERRUPTED = 130


class AlexkitError(Exception):
    """Base class of every error a user can cause. ``str(err)`` is one line."""

    exit_code = EXIT_USAGE
    kind = "error"


class UsageError(AlexkitError):
    """A bad argument or option value."""

    exit_code = EXIT_USAGE
    kind = "usage"


class RecipeError(AlexkitError):
    """A recipe that cannot be found, parsed or validated."""

    exit_code = EXIT_USAGE
    kind = "recipe"


class WeightsError(AlexkitError):
    """A weights file that is missing, malformed, unsafe or of the wrong shape."""

    exit_code = EXIT_USAGE
    kind = "weights"


class DataError(AlexkitError):
    """Input data that cannot be used (no images, unknown classes, bad manifest)."""

    exit_code = EXIT_DATA
    kind = "data"


class UnreadableImage(DataError):
    """A file that cannot be decoded into an image; ``reason`` is a short phrase.

    Raised by the image decoders and the media readers (clips, DICOM, volumes) alike,
    so the data pipeline skips and counts every broken input the same way.
    """

    def __init__(self, reason: str, path: str = ""):
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class CheckpointError(AlexkitError):
    """A run directory or checkpoint that cannot be created, resumed or trusted."""

    exit_code = EXIT_CHECKPOINT
    kind = "checkpoint"


class MissingExtraError(UsageError):
    """An optional dependency is needed; the message names the pip command."""

    def __init__(self, what: str, extra: str, package: str):
        super().__init__(
            f"{what} needs the optional package '{package}': "
            f"run `pip install 'alexkit[{extra}]'` (or `pip install {package}`)."
        )


class Interrupted(AlexkitError):
    """The user pressed Ctrl-C; whatever could be saved was saved."""

    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"


def one_line(exc: BaseException, *, typed: bool = False, limit: int = 160) -> str:
    """An exception as one short line: its first line of text (or its type's name).

    Args:
        exc: the exception.
        typed: prefix the type's name (``"OSError: ..."``), for third-party errors whose
            message alone does not say what went wrong.
        limit: at most this many characters of the message.
    """
    lines = str(exc).strip().splitlines()
    text = lines[0][:limit] if lines else ""
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}" if typed else text
