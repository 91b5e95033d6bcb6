"""One process per run directory: a lock file that says who holds it.

Two ``finetune``/``pretrain`` processes writing one ``--out`` (a job submitted twice, or
``--resume`` while the run is still going) would interleave checkpoints and history. The
run holds ``RUN/run.lock`` for its whole life::

    with hold_run_lock(out):
        run = RunDir.prepare(out, resume=resume, force=force)
        ...  # train

The file records the holder's PID, host and start time. It is locked with ``flock``, which
the kernel drops when the process dies however it dies, so a lock left by a crash (same
host, PID gone) is simply taken over. On file systems without ``flock`` the file is
created exclusively instead and judged by what it records: a lock of this host whose PID
is dead is stale and taken over; a live one, or one from another host, is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alexkit.errors import CheckpointError
from alexkit.paths import write_errno, write_failure

try:
    import fcntl
except ImportError:  # Windows: the exclusive-create path alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"

# flock errors that mean "this file system cannot lock": fall back to exclusive create.
_NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


class RunLock:
    """The lock of one run directory; see the module docstring.

    Args:
        run_dir: the run directory (created if missing).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._inode: int | None = None
        self._created = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise.

        Raises:
            CheckpointError: another live process holds it (exit 4; the message names its
                PID and host), or the directory cannot be written.
        """
        if self.held:
            return self
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise CheckpointError(
                f"{self.run_dir} is a file, not a run directory; choose another --out."
            )
        try:
            self._created = not self.run_dir.exists()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if fcntl is None or not self._acquire_flock():
                self._acquire_exclusive()
        except OSError as exc:
            code = write_errno(exc)
            if code is None:
                raise
            raise write_failure(self.path, code, what="create the run lock") from exc
        return self

    def _acquire_flock(self) -> bool:
        """True when locked; False when the file system has no flock."""
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise _in_use(self.run_dir, holder) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in _NO_FLOCK:
                    return False
                raise
            # The holder before us may have removed the file between our open and flock.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read(fd)
            if previous:
                log.info(
                    "taking over the lock of a run that ended without releasing it: %s",
                    _describe(previous),
                )
            _write(fd)
            self._fd, self._inode = fd, os.fstat(fd).st_ino
            return True
        raise CheckpointError(f"{self.path} keeps changing; is another process starting there?")

    def _acquire_exclusive(self) -> None:
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                holder = _read_path(self.path)
                if holder is None or not _is_stale(holder):
                    raise _in_use(self.run_dir, holder) from None
                log.info("taking over a stale run lock: %s", _describe(holder))
                # Remove it only if it is still the stale one we judged.
                if _read_path(self.path) == holder:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                continue
            _write(fd)
            self._fd, self._inode = fd, os.fstat(fd).st_ino
            return
        raise CheckpointError(f"{self.path} keeps changing; is another process starting there?")

    def release(self) -> None:
        """Remove the lock file (if still ours) and drop the lock. Safe to call twice.

        A run directory the lock created is removed too when it is still empty.
        """
        if self._fd is None:
            return
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)  # before unlocking: no one can lock a file we delete
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = self._inode = None
        if self._created:  # e.g. --resume of nothing: leave no empty folder behind
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def hold_run_lock(run_dir: str | os.PathLike) -> Iterator[RunLock]:
    """Hold ``run_dir``'s lock for the block (see :class:`RunLock`)."""
    lock = RunLock(run_dir).acquire()
    try:
        yield lock
    finally:
        lock.release()


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(_holder()) + "\n").encode())
    os.fsync(fd)


def _read(fd: int) -> dict[str, Any] | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        holder = json.loads(data.decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _read_path(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _is_stale(holder: dict[str, Any]) -> bool:
    """A lock of this host whose process is gone. Other hosts' locks cannot be checked."""
    try:
        pid = int(holder["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    return holder.get("host") == socket.gethostname() and not _pid_alive(pid)


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an alexkit process"
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        return "this process"
    since = f", since {holder['started']}" if holder.get("started") else ""
    return f"alexkit process {holder.get('pid')} on {holder.get('host')}{since}"


def _in_use(run_dir: Path, holder: dict[str, Any] | None) -> CheckpointError:
    return CheckpointError(
        f"{run_dir} is in use by {_describe(holder)}; wait for that run to finish, or choose "
        f"another --out (a lock left by a crash on this host is taken over by itself; one "
        f"from another host that is gone: delete {run_dir / LOCK_NAME})."
    )
