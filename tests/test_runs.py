"""alexkit.runs: a checkpoint write that the disk refuses leaves the run resumable."""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

import numpy as np
import pytest

from alexkit import runs
from alexkit.errors import CheckpointError
from alexkit.runs import CheckpointManager, RunDir


def arrays(step):
    rng = np.random.default_rng(step)
    return [rng.normal(size=(64, 32)).astype(np.float32), np.full(32, step, np.float32)]


def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("site", ["model.npz", "optimizer.npz", "state.json", "rename", "mkdir"])
def test_full_disk_at_each_checkpoint_write_keeps_the_newest_complete_one(
    tmp_path, monkeypatch, site
):
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.save(arrays(1), arrays(11), {"global_step": 1, "epoch": 0})
    if site in ("model.npz", "optimizer.npz"):
        real = runs._save_arrays
        monkeypatch.setattr(
            runs, "_save_arrays", lambda p, a: full() if p.name == site else real(p, a)
        )
    elif site == "state.json":
        monkeypatch.setattr(
            runs,
            "open",
            lambda p, *a, **k: full() if Path(p).name == site else builtins.open(p, *a, **k),
            raising=False,
        )
    elif site == "rename":
        real_replace = os.replace
        monkeypatch.setattr(
            os,
            "replace",
            lambda a, b: full() if ".tmp-ckpt-" in str(a) else real_replace(a, b),
        )
    else:
        real_mkdir = Path.mkdir
        monkeypatch.setattr(
            Path,
            "mkdir",
            lambda self, *a, **k: (
                full() if self.name.startswith(".tmp-") else real_mkdir(self, *a, **k)
            ),
        )
    with pytest.raises(CheckpointError) as info:
        manager.save(arrays(2), arrays(12), {"global_step": 2, "epoch": 1})
    message = str(info.value)
    assert info.value.exit_code == 4 and "\n" not in message
    final = manager.directory / "ckpt-000000002"
    assert message.startswith(f"cannot save checkpoint {final}: no space left on the device")
    # Needed: both arrays of model and optimizer, plus the state (~16.4 KB).
    assert "needs about 16." in message and "KB" in message
    assert "another --out" in message and "--resume" in message
    assert message.endswith("ckpt-000000001 is the newest complete checkpoint.")
    assert sorted(p.name for p in manager.directory.iterdir()) == ["ckpt-000000001", "index.json"]
    monkeypatch.undo()
    state, model, opt, folder = manager.load_latest()
    assert state["global_step"] == 1 and folder.name == "ckpt-000000001"
    np.testing.assert_array_equal(model[0], arrays(1)[0])


def test_full_disk_while_listing_a_renamed_checkpoint_still_leaves_it_usable(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.save(arrays(1), arrays(11), {"global_step": 1})
    real = Path.write_bytes
    monkeypatch.setattr(
        Path, "write_bytes", lambda self, d: full() if "index.json" in self.name else real(self, d)
    )
    with pytest.raises(CheckpointError, match="index.json: no space left"):
        manager.save(arrays(2), arrays(12), {"global_step": 2})
    monkeypatch.undo()
    assert not [p for p in manager.directory.iterdir() if p.name.startswith(".")]
    state, *_ = manager.load_latest()
    assert state["global_step"] == 2  # complete on disk, found without the index


def test_run_directory_that_cannot_be_created_is_one_line(tmp_path, monkeypatch):
    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(CheckpointError, match="cannot create run directory .*permission denied"):
        RunDir.prepare(tmp_path / "run", resume=False, force=False)


def test_interrupted_checkpoint_write_leaves_no_temporary_folder(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.save(arrays(1), arrays(11), {"global_step": 1})

    def interrupted(path, values):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "_save_arrays", interrupted)
    with pytest.raises(KeyboardInterrupt):
        manager.save(arrays(2), arrays(12), {"global_step": 2})
    assert sorted(p.name for p in manager.directory.iterdir()) == ["ckpt-000000001", "index.json"]


def test_full_disk_while_keeping_the_best_model_keeps_the_previous_best(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path / "checkpoints")
    best = {"epoch": 1}  # what the kept checkpoints say (an unreferenced best is dropped)
    first = manager.save(arrays(1), arrays(11), {"global_step": 1, "epoch": 1, "best": best})
    manager.save_best(1, first)
    second = manager.save(arrays(2), arrays(12), {"global_step": 2, "epoch": 2, "best": best})
    real_replace = os.replace

    def replace(a, b):  # the staged folder's rename fails; moving the old one aside works
        staged = ".tmp-best-" in str(a) and "-old-" not in str(a)
        return full() if staged else real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CheckpointError, match="no space left") as err:
        manager.save_best(1, second)  # a second save of epoch 1's best: refused by the disk
    assert "\n" not in str(err.value)
    assert not [p for p in manager.directory.iterdir() if p.name.startswith(".tmp-")]
    kept = manager.load_best(1)  # the first best is intact
    np.testing.assert_array_equal(kept.model_arrays[0], arrays(1)[0])
