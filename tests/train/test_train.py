"""Fast tests of the training engine's parts: run directory, checkpoints, history, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from alexkit.errors import CheckpointError
from alexkit.runs import CheckpointManager, RunDir, read_history, write_history


def _arrays(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 4)).astype("float32"), np.array(seed, dtype="int64")]


def test_history_is_deduplicated_by_epoch_and_round_trips(tmp_path):
    rows = [
        {"epoch": 1, "loss": 2.0, "val_accuracy": 0.25},
        {"epoch": 2, "loss": 1.5, "val_accuracy": 0.5},
        {"epoch": 2, "loss": 1.25, "val_accuracy": 0.75},  # a redone epoch replaces the old row
    ]
    path = tmp_path / "history.csv"
    write_history(path, rows)
    back = read_history(path)
    assert [r["epoch"] for r in back] == [1, 2]
    assert back[1]["loss"] == 1.25 and back[1]["val_accuracy"] == 0.75
    assert path.read_text().count("\n") == 3  # header + 2 rows


def test_checkpoints_keep_two_and_fall_back_from_a_truncated_newest(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints")
    for step in (1, 2, 3):
        manager.save(_arrays(step), _arrays(10 + step), {"global_step": step, "epoch": step})
    names = [p.name for p in manager.list()]
    assert names == ["ckpt-000000002", "ckpt-000000003"]
    index = json.loads((tmp_path / "checkpoints" / "index.json").read_text())
    assert index["complete"] == names

    state, model_arrays, opt_arrays, folder = manager.load_latest()
    assert state["global_step"] == 3 and folder.name == "ckpt-000000003"
    np.testing.assert_array_equal(model_arrays[0], _arrays(3)[0])
    np.testing.assert_array_equal(opt_arrays[0], _arrays(13)[0])

    # Truncate the newest model file: loading falls back to the previous checkpoint.
    newest = tmp_path / "checkpoints" / "ckpt-000000003" / "model.npz"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    state, model_arrays, _, folder = manager.load_latest()
    assert state["global_step"] == 2 and folder.name == "ckpt-000000002"
    np.testing.assert_array_equal(model_arrays[0], _arrays(2)[0])

    # A half-written temporary folder from a killed process is never a candidate.
    (tmp_path / "checkpoints" / ".tmp-ckpt-000000009-123").mkdir()
    assert [p.name for p in manager.list()] == names

    # Both damaged: a clear CheckpointError, not a traceback.
    (tmp_path / "checkpoints" / "ckpt-000000002" / "state.json").write_text("{trunc")
    with pytest.raises(CheckpointError, match="damaged"):
        manager.load_latest()


def test_run_dir_needs_force_or_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something.txt").write_text("x")
    with pytest.raises(CheckpointError, match="--resume .* --force"):
        RunDir.prepare(out, resume=False, force=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        RunDir.prepare(out, resume=True, force=False)
    run = RunDir.prepare(out, resume=False, force=True)
    assert run.path.is_dir() and not any(run.path.iterdir())
    # An empty or missing directory needs neither flag.
    assert RunDir.prepare(tmp_path / "fresh", resume=False, force=False).path.is_dir()


def test_val_metrics_match_sklearn_and_hand_formulas():
    from sklearn import metrics as skm

    from alexkit.metrics import compute_val_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=40)
    p1 = np.clip(y * 0.4 + rng.uniform(0, 0.6, size=40), 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    got = compute_val_metrics(y, probs, ["auc", "pr_auc", "sensitivity", "specificity", "f1"])
    pred = probs.argmax(1)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert got["auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(y, p1))
    assert got["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert got["specificity"] == pytest.approx(tn / (tn + fp))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert got["loss"] == pytest.approx(skm.log_loss(y, probs))
    assert got["accuracy"] == pytest.approx(np.mean(pred == y))

    # Multi-class: top-5 by hand.
    y = rng.integers(0, 7, size=50)
    logits = rng.normal(size=(50, 7))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = compute_val_metrics(y, probs, ["top5"])
    ranks = (probs > probs[np.arange(50), y][:, None]).sum(1)
    assert got["top5"] == pytest.approx(np.mean(ranks < 5))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))


def test_cli_help_shows_examples_and_options():
    from alexkit.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["finetune", "--help"])
    assert result.exit_code == 0
    assert "Example: alexkit finetune" in result.stdout
    for flag in ("--recipe", "--weights", "--resume", "--force", "--epochs", "--lr"):
        assert flag in result.stdout
    result = runner.invoke(app, ["pretrain", "--help"])
    assert result.exit_code == 0
    assert "Example: alexkit pretrain" in result.stdout
    for flag in ("--schedule", "--precision", "--distribute", "--steps-per-epoch", "--no-jit"):
        assert flag in result.stdout


def test_cli_refuses_an_existing_run_dir_and_missing_weights(tmp_path, class_folder):
    from alexkit.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    result = runner.invoke(
        app, ["finetune", "--data", str(class_folder), "--out", str(out), "--weights", "none"]
    )
    assert result.exit_code == 4, result.stderr
    assert "--force" in result.stderr and "--resume" in result.stderr

    # --weights imagenet with an empty store: exit 2 naming the three ways to get weights,
    # before the run directory is created.
    fresh = tmp_path / "fresh"
    result = runner.invoke(app, ["finetune", "--data", str(class_folder), "--out", str(fresh)])
    assert result.exit_code == 2
    for way in ("weights download", "weights import", "pretrain"):
        assert way in result.stderr
    assert not fresh.exists()


def test_token_val_split_is_resplit_from_train(tmp_path):
    """Kermany-style data: val has 2 images a class, so training carves its own."""
    from conftest import write_class_images

    from alexkit.train.plan import load_specs as _load_specs

    root = tmp_path / "chest_xray"
    write_class_images(root / "train", ["NORMAL", "PNEUMONIA"], 20)
    write_class_images(root / "val", ["NORMAL", "PNEUMONIA"], 2, seed=1)
    write_class_images(root / "test", ["NORMAL", "PNEUMONIA"], 3, seed=2)
    train, val = _load_specs(root, None, seed=0, val_fraction=0.2)
    # 44 train+val images, 20% stratified → 4-5 per class in val; test untouched.
    assert len(train) + len(val) == 44
    assert min(val.counts().values()) >= 4
    assert not set(train.items) & set(val.items)
    # A val split that is big enough is kept as given.
    write_class_images(root / "val", ["NORMAL", "PNEUMONIA"], 6, seed=3)
    train, val = _load_specs(root, None, seed=0, val_fraction=0.2)
    assert len(val) == 12 and len(train) == 40
