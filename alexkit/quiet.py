"""Keep third-party chatter about one user file quiet: capture it, then say it once.

pydicom, Pillow, PyAV and nibabel report problems in a file with ``warnings.warn`` and
log records (pydicom does both for the same problem). Printed as they come, a folder of
odd files floods stderr with dozens of lines. Inside :func:`quiet_read` those warnings
and records (WARNING and above) raised *by the calling thread* are collected instead:

- the read fails: the reader's one-line reason gets the first captured message appended
  (:meth:`Captured.explain`);
- the read succeeds: the file is counted in a process-wide tally (:func:`tally`), for
  reports such as ``data check`` ("N files read with library warnings").

Either way every message is logged at INFO on ``alexkit.quiet``, so ``--verbose`` shows
the detail. Warnings and records of other threads, and of code outside a
``quiet_read``, pass through unchanged.

Why not ``warnings.catch_warnings``: it swaps module-wide state and is not thread-safe
(tf.data decodes on several threads at once); here one hook routes by thread instead.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from alexkit.errors import UnreadableImage

log = logging.getLogger(__name__)

# Top-level loggers of the libraries that read user files (their children included).
THIRD_PARTY_LOGGERS = ("pydicom", "PIL", "av", "libav", "nibabel", "tensorflow", "h5py")

# At most this many messages are kept per file, and this many files in the tally.
_MAX_MESSAGES = 20
_MAX_TALLY_FILES = 10_000
_MESSAGE_CHARS = 160

_local = threading.local()
_install_lock = threading.Lock()
_tally_lock = threading.Lock()
_tally: dict[str, int] = {}
_tally_extra = 0  # files with warnings beyond _MAX_TALLY_FILES


@dataclass
class Captured:
    """What third-party code said while one file was read.

    Attributes:
        path: the file.
        messages: distinct one-line messages, ``"library: text"``, in order.
        redact_quotes: replace quoted text in messages by ``'…'`` (DICOM: header values).
    """

    path: str
    redact_quotes: bool = False
    messages: list[str] = field(default_factory=list)
    dropped: int = 0

    def add(self, library: str, text: str) -> None:
        line = _one_line(text, self.redact_quotes)
        message = f"{library}: {line}" if library else line
        if message in self.messages:
            return  # pydicom logs and warns the same text
        if len(self.messages) >= _MAX_MESSAGES:
            self.dropped += 1
            return
        self.messages.append(message)

    @property
    def count(self) -> int:
        return len(self.messages) + self.dropped

    def explain(self, reason: str) -> str:
        """``reason`` plus the first captured message it does not already say (and how
        many more), one line."""
        said = _QUOTED.sub("'…'", reason)
        new = [m for m in self.messages if m.split(": ", 1)[-1] not in said]
        if not new:
            return reason
        extra = len(new) - 1 + self.dropped
        more = f" (+{extra} more)" if extra else ""
        return f"{reason} [{new[0]}{more}]"


_QUOTED = re.compile(r"""b?'[^']*'|b?"[^"]*\"""")


def _one_line(text: str, redact_quotes: bool) -> str:
    text = " ".join(str(text).split())
    if redact_quotes:
        text = _QUOTED.sub("'…'", text)
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


def _current() -> Captured | None:
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def quiet_read(path: str, *, redact_quotes: bool = False) -> Iterator[Captured]:
    """Capture third-party warnings and log records while ``path`` is read.

    Args:
        path: the user's file (for messages and the tally).
        redact_quotes: hide quoted text in messages (values from a DICOM header).

    Yields:
        The :class:`Captured` messages (filled as the block runs).

    Raises:
        UnreadableImage: re-raised from the block with the first captured message added
            to its reason.
    """
    _install()
    captured = Captured(str(path), redact_quotes=redact_quotes)
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(captured)
    try:
        yield captured
    except UnreadableImage as exc:
        if captured.messages:
            _log_details(captured, failed=True)
            raise UnreadableImage(captured.explain(exc.reason), exc.path) from exc
        raise
    finally:
        stack.pop()
    if captured.messages:
        _log_details(captured, failed=False)
        _count(captured)


def _log_details(captured: Captured, failed: bool) -> None:
    outcome = "unreadable" if failed else "read"
    for message in captured.messages:
        log.info("%s (%s): %s", captured.path, outcome, message)
    if captured.dropped:
        log.info("%s: %d more library message(s) not shown", captured.path, captured.dropped)


def _count(captured: Captured) -> None:
    global _tally_extra
    with _tally_lock:
        if captured.path in _tally or len(_tally) < _MAX_TALLY_FILES:
            _tally[captured.path] = _tally.get(captured.path, 0) + captured.count
        else:
            _tally_extra += 1


def tally(reset: bool = False) -> tuple[dict[str, int], int]:
    """Files read successfully despite library warnings, since the last reset.

    Returns:
        ``({path: number of messages}, files beyond the kept 10,000)``.
    """
    global _tally_extra
    with _tally_lock:
        result = (dict(_tally), _tally_extra)
        if reset:
            _tally.clear()
            _tally_extra = 0
    return result


def tally_summary(reset: bool = True) -> str | None:
    """One line for a report: how many files were read despite library warnings, or None.

    E.g. ``"3 file(s) were read despite library warnings (7 messages); --verbose shows them"``.
    """
    files, extra = tally(reset=reset)
    if not files and not extra:
        return None
    count = len(files) + extra
    messages = sum(files.values())
    return (
        f"{count} file(s) were read despite library warnings ({messages} message(s)"
        f"{' in the first 10,000 files' if extra else ''}); --verbose shows them"
    )


# ------------------------------------------------------------------ hooks


def _library_of(filename: str) -> str:
    parts = Path(filename).parts
    for name in ("pydicom", "PIL", "av", "nibabel", "tensorflow", "numpy", "h5py"):
        if name in parts:
            return name
    return Path(filename).stem


_previous_showwarning = None


def _showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    captured = _current()
    if captured is None:
        _previous_showwarning(message, category, filename, lineno, file, line)
        return
    # pydicom warns and logs the same text: keep UserWarning's text bare so they match.
    text = str(message) if category is UserWarning else f"{category.__name__}: {message}"
    captured.add(_library_of(str(filename)), text)


class _CaptureFilter(logging.Filter):
    """A third-party WARNING+ record raised inside quiet_read is kept, not emitted.

    Set on the libraries' loggers (a logger's filter stops its handlers and propagation)
    and, for child loggers a library creates later (Pillow's plugins are imported on
    first use), on the root logger's handlers and on logging's last-resort handler.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        captured = _current()
        if (
            captured is None
            or record.levelno < logging.WARNING
            or record.name.split(".")[0] not in THIRD_PARTY_LOGGERS
        ):
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed third-party record is still a message
            text = str(record.msg)
        captured.add(record.name.split(".")[0], text)
        return False


_FILTER = _CaptureFilter()
_filtered: set[str] = set()
_known_loggers = -1
_known_handlers: tuple[int, ...] = ()


def _root_handlers() -> tuple[int, ...]:
    return tuple(id(h) for h in (*logging.root.handlers, logging.lastResort) if h is not None)


def _install() -> None:
    """Route warnings and third-party log records through the per-thread collector.

    Cheap when nothing changed: called on every quiet_read, since test runners (and
    users) swap ``warnings.showwarning`` and libraries create child loggers lazily.
    """
    global _previous_showwarning, _known_loggers, _known_handlers
    if (
        warnings.showwarning is _showwarning
        and _known_loggers == len(logging.root.manager.loggerDict)
        and _known_handlers == _root_handlers()
    ):
        return
    with _install_lock:
        if warnings.showwarning is not _showwarning:
            _previous_showwarning = warnings.showwarning
            warnings.showwarning = _showwarning
        names = list(logging.root.manager.loggerDict)
        for name in (*THIRD_PARTY_LOGGERS, *names):
            if name in _filtered or name.split(".")[0] not in THIRD_PARTY_LOGGERS:
                continue
            logging.getLogger(name).addFilter(_FILTER)
            _filtered.add(name)
        for handler in (*logging.root.handlers, logging.lastResort):
            if handler is not None:
                handler.addFilter(_FILTER)
        _known_loggers = len(logging.root.manager.loggerDict)
        _known_handlers = _root_handlers()
