"""alexkit.runlock: one process per run directory, stale locks taken over."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from alexkit import runlock
from alexkit.errors import CheckpointError
from alexkit.runlock import LOCK_NAME, RunLock, hold_run_lock
from alexkit.runs import RunDir

HOLD = textwrap.dedent(
    """
    import sys, time
    from alexkit.runlock import RunLock
    try:
        lock = RunLock(sys.argv[1]).acquire()
    except Exception as exc:
        print("refused", type(exc).__name__, exc.exit_code, flush=True)
        sys.exit(0)
    print("holding", flush=True)
    sys.stdin.readline()  # hold until told (or killed)
    lock.release()
    """
)


def start_holder(run_dir):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, proc.stdout.readline().strip()


def test_a_second_process_is_refused_until_the_first_releases(tmp_path):
    run = tmp_path / "run"
    proc, said = start_holder(run)
    try:
        assert said == "holding"
        holder = json.loads((run / LOCK_NAME).read_text())
        assert holder["pid"] == proc.pid and holder["host"] == socket.gethostname()
        with pytest.raises(CheckpointError) as info:
            RunLock(run).acquire()
        message = str(info.value)
        assert info.value.exit_code == 4 and "\n" not in message
        assert f"in use by alexkit process {proc.pid} on {socket.gethostname()}" in message
        assert "another --out" in message
        # A third process is refused the same way.
        other, said = start_holder(run)
        other.wait(60)
        assert said == "refused CheckpointError 4"
    finally:
        proc.communicate("go\n", timeout=60)
    assert not (run / LOCK_NAME).exists()  # released on exit
    with hold_run_lock(run) as lock:
        assert lock.held
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (run / LOCK_NAME).exists()


def test_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    proc, said = start_holder(run)
    assert said == "holding"
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    proc.stdin.close()
    proc.stdout.close()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == proc.pid  # left behind
    caplog.set_level(logging.INFO, logger="alexkit.runlock")
    with hold_run_lock(run):
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"alexkit process {proc.pid}" in caplog.text


def test_processes_starting_together_get_one_lock(tmp_path):
    run = tmp_path / "run"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HOLD, str(run)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(5)
    ]
    # Each answers once it has the lock or was refused; the holders wait for stdin.
    said = [p.stdout.readline().strip() for p in procs]
    for p in procs:
        p.communicate("go\n", timeout=60)
    assert sorted(said) == ["holding"] + ["refused CheckpointError 4"] * 4


def test_same_process_cannot_hold_it_twice(tmp_path):
    with hold_run_lock(tmp_path):
        with pytest.raises(CheckpointError, match="in use by this process"):
            RunLock(tmp_path).acquire()


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(60)
    return proc.pid


@pytest.mark.parametrize(
    ("pid", "host", "taken"),
    [
        ("dead", "here", True),
        ("live", "here", False),
        ("dead", "elsewhere", False),  # another host's PID cannot be checked
    ],
)
def test_without_flock_the_recorded_pid_and_host_decide(tmp_path, monkeypatch, pid, host, taken):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runlock.fcntl, "flock", no_flock)
    recorded = {
        "pid": dead_pid() if pid == "dead" else os.getppid(),
        "host": socket.gethostname() if host == "here" else "other-node-17",
        "started": "2026-01-01T00:00:00+0000",
    }
    (tmp_path / LOCK_NAME).write_text(json.dumps(recorded))
    if taken:
        with hold_run_lock(tmp_path):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
            with pytest.raises(CheckpointError, match="in use by this process"):
                RunLock(tmp_path).acquire()
        assert not (tmp_path / LOCK_NAME).exists()
    else:
        with pytest.raises(
            CheckpointError, match=f"process {recorded['pid']} on {recorded['host']}"
        ):
            RunLock(tmp_path).acquire()
        assert json.loads((tmp_path / LOCK_NAME).read_text()) == recorded


def test_run_dir_prepare_ignores_and_keeps_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    with hold_run_lock(run_dir):
        RunDir.prepare(run_dir, resume=False, force=False)  # only the lock: still "empty"
        (run_dir / "history.csv").write_text("epoch\n1\n")
        with pytest.raises(CheckpointError, match="not empty"):
            RunDir.prepare(run_dir, resume=False, force=False)
        RunDir.prepare(run_dir, resume=False, force=True)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]


def test_a_file_in_the_way_and_an_empty_folder_left_behind(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CheckpointError, match="is a file, not a run directory"):
        RunLock(tmp_path / "afile").acquire()
    with hold_run_lock(tmp_path / "new" / "run"):
        pass  # e.g. --resume of nothing: prepare refuses, nothing is written
    assert not (tmp_path / "new" / "run").exists()
    with hold_run_lock(tmp_path / "kept"):
        (tmp_path / "kept" / "config.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["config.json"]
