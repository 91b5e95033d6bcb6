"""alexkit.paths: the installation secret and atomic writes that fail cleanly."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from alexkit import paths
from alexkit.errors import CheckpointError, UsageError


def test_installation_secret_is_random_private_and_stable(alexkit_home):
    key = paths.installation_secret()
    path = alexkit_home / "secret.key"
    assert len(key) == 32 and bytes.fromhex(path.read_text().strip()) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert paths.installation_secret() == key
    # Another home, another key; the first one comes back unchanged.
    other = alexkit_home / "other"
    os.environ["ALEXKIT_HOME"] = str(other)
    try:
        assert paths.installation_secret() != key
    finally:
        os.environ["ALEXKIT_HOME"] = str(alexkit_home)
    assert paths.installation_secret() == key
    assert not [p for p in alexkit_home.iterdir() if p.name.startswith(".secret")]


def test_processes_starting_together_agree_on_one_key(tmp_path):
    home = tmp_path / "fresh"
    code = "from alexkit.paths import installation_secret; print(installation_secret().hex())"
    env = dict(os.environ, ALEXKIT_HOME=str(home))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    keys = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(keys) == 1 and keys == {(home / "secret.key").read_text().strip()}
    assert sorted(p.name for p in home.iterdir()) == ["secret.key"]


def test_unwritable_home_and_damaged_key_are_one_line(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    monkeypatch.setenv("ALEXKIT_HOME", str(blocked / "home"))  # a folder under a file
    with pytest.raises(UsageError, match="ALEXKIT_PATIENT_SALT") as info:
        paths.installation_secret()
    assert "\n" not in str(info.value)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "secret.key").write_text(
        "not hex at all, but long enough to be read as a key!!!!!!!!!!"
    )
    monkeypatch.setenv("ALEXKIT_HOME", str(damaged))
    with pytest.raises(UsageError, match="damaged"):
        paths.installation_secret()


# ------------------------------------------------------------------ writes the disk refuses


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_during_atomic_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out" / "metrics.json"
    paths.atomic_write_text(target, "old\n")
    monkeypatch.setattr(Path, "write_bytes", _enospc)
    with pytest.raises(CheckpointError) as info:
        paths.atomic_write_text(target, "x" * 5000)
    message = str(info.value)
    assert info.value.exit_code == 4 and "\n" not in message
    assert message.startswith(f"cannot write {target}: no space left on the device (needs about")
    assert "4.9 KB" in message and "free" in message
    assert "another --out" in message and "--resume" in message
    assert target.read_text() == "old\n"  # the previous file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize(
    ("where", "code", "words"),
    [
        ("mkstemp", errno.EACCES, "permission denied; choose a writable place"),
        ("replace", errno.EROFS, "read-only file system"),
        ("body", errno.EDQUOT, "disk quota exceeded"),
    ],
)
def test_each_step_of_atomic_path_maps_disk_errors(tmp_path, monkeypatch, where, code, words):
    target = tmp_path / "report.csv"

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if where == "mkstemp":
        monkeypatch.setattr(paths.tempfile, "mkstemp", fail)
    elif where == "replace":
        monkeypatch.setattr(paths.os, "replace", fail)
    with pytest.raises(CheckpointError, match=words):
        with paths.atomic_path(target) as tmp:
            tmp.write_text("data")
            if where == "body":
                # A library that wraps the OSError (Keras, h5py) is still recognised.
                try:
                    fail()
                except OSError as err:
                    raise RuntimeError("saving failed") from err
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_through_and_the_temporary_file_goes(tmp_path):
    with pytest.raises(ValueError, match="mine"):
        with paths.atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise ValueError("mine")
    assert list(tmp_path.iterdir()) == []
    assert paths.write_errno(RuntimeError("write failed: No space left on device")) == errno.ENOSPC
    assert paths.write_errno(OSError(errno.ENOENT, "gone")) is None
