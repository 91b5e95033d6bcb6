"""Where alexkit keeps things on disk, and how it writes them safely."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from alexkit.errors import AlexkitError, CheckpointError, UsageError

log = logging.getLogger(__name__)


def alexkit_home() -> Path:
    """The root of alexkit's local state: ``$ALEXKIT_HOME`` or ``~/.cache/alexkit``.

    Holds the weights store (``weights/``) and materialised datasets (``datasets/``).
    """
    env = os.environ.get("ALEXKIT_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "alexkit"


# The per-installation secret: the default HMAC key of patient split groups.
SECRET_FILE = "secret.key"
_SECRETS: dict[str, bytes] = {}
_SECRETS_LOCK = threading.Lock()


def installation_secret() -> bytes:
    """A random 32-byte key made once per installation: ``$ALEXKIT_HOME/secret.key``.

    The file (64 hex digits, mode 0600) is written to a temporary file and hard-linked
    into place, so processes starting together all end up with the first one's key.
    It keys the HMAC that turns patient identifiers into split groups: without it, a
    short numeric ID is found again by hashing every candidate.

    Raises:
        UsageError: the key cannot be created or read (the message names the file and
            what to do).
    """
    path = alexkit_home() / SECRET_FILE
    key = str(path.absolute())
    with _SECRETS_LOCK:
        if key not in _SECRETS:
            _SECRETS[key] = _load_or_create_secret(path)
        return _SECRETS[key]


def _load_or_create_secret(path: Path) -> bytes:
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise _secret_error(path, err) from err
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # fails when another process was first: its key wins
            except FileExistsError:
                pass
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                _create_exclusive(path, Path(tmp).read_text(encoding="ascii"))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return _read_secret(path)
    except OSError as err:
        raise _secret_error(path, err) from err


def _secret_error(path: Path, err: OSError) -> UsageError:
    return UsageError(
        f"cannot create or read the installation key {path} ({err.strerror or err}); set "
        "ALEXKIT_HOME to a writable folder, or ALEXKIT_PATIENT_SALT to a secret of your own."
    )


def _create_exclusive(path: Path, text: str) -> None:
    """Create ``path`` with ``text`` unless it exists (filesystems without hard links)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)


def _read_secret(path: Path) -> bytes:
    # A file made by _create_exclusive may be read half-written for a moment: retry briefly.
    for attempt in range(10):
        text = path.read_text(encoding="ascii", errors="replace").strip()
        try:
            if len(text) >= 64:
                return bytes.fromhex(text[:64])
        except ValueError:
            break
        time.sleep(0.02 * (attempt + 1))
    raise UsageError(
        f"{path} is damaged (not 64 hex digits); delete it to make a new key (patient split "
        "groups will change), or set ALEXKIT_PATIENT_SALT."
    )


# OSError numbers that mean "this place cannot take the file", with how to say so.
_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def write_errno(exc: BaseException) -> int | None:
    """The errno of a full-disk or permission problem behind ``exc``, else None.

    Looks through the exception's causes (Keras and numpy wrap OSError) and, for errors
    that only carry text (TensorFlow's file system), the C library's wording.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _WRITE_ERRNOS:
            return current.errno
        text = str(current)
        if "No space left on device" in text:
            return errno.ENOSPC
        if "Disk quota exceeded" in text:
            return errno.EDQUOT
        current = current.__cause__ or current.__context__
    return None


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free space for unprivileged users on the file system of ``path`` (or its parents)."""
    probe = Path(path)
    while True:
        try:
            return shutil.disk_usage(probe).free
        except OSError:
            if probe.parent == probe:
                return None
            probe = probe.parent


def write_failure(
    path: str | os.PathLike, code: int, needed: int | None = None, *, what: str = "write"
) -> CheckpointError:
    """The one-line error for a write that the disk refused (exit 4).

    Args:
        path: what was being written.
        code: the errno (see :func:`write_errno`).
        needed: bytes the write needed, when known.
        what: the verb phrase ("write", "save checkpoint").
    """
    reason = _WRITE_ERRNOS.get(code, os.strerror(code))
    if code in _SPACE_ERRNOS:
        free = free_bytes(Path(path).parent)
        amounts = [f"needs about {_size(needed)}"] if needed else []
        amounts += [f"{_size(free)} free"] if free is not None else []
        detail = f" ({', '.join(amounts)})" if amounts else ""
        todo = "free some space or choose another --out"
    else:
        detail = ""
        todo = "choose a writable place (another --out) or fix the folder's permissions"
    return CheckpointError(
        f"cannot {what} {path}: {reason}{detail}; {todo}, then run the command again "
        "(a training run continues with --resume)."
    )


@contextlib.contextmanager
def atomic_path(
    target: str | os.PathLike, suffix: str | None = None, *, needed: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    A crash or exception leaves ``target`` as it was (the temporary file is removed),
    so readers never see a half-written file.

    Args:
        target: the file to write.
        suffix: the temporary file's suffix (default: the target's).
        needed: the bytes the write needs, when known (for the out-of-space message).

    Raises:
        CheckpointError: the disk is full, over quota, read-only or forbidden (exit 4;
            the message names the path, the space and what to do).
    """
    target = Path(target)
    tmp_path: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=suffix or target.suffix or ".tmp"
        )
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    except Exception as exc:
        code = None if isinstance(exc, AlexkitError) else write_errno(exc)
        if code is None:
            raise
        _discard(tmp_path)  # first, so the message counts the space it held as free
        raise write_failure(target, code, needed) from exc
    finally:
        _discard(tmp_path)


def _discard(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8); see :func:`atomic_path`."""
    data = text.encode("utf-8")
    with atomic_path(target, needed=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically; see :func:`atomic_path`."""
    with atomic_path(target, needed=len(data)) as tmp:
        tmp.write_bytes(data)
