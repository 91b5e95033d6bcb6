"""``kill -9`` in the middle of an epoch, then ``--resume``: a real subprocess each time.

These guard the run loop's resume, not AlexNet, so they train the ``tiny`` variant (the
2012 layout at 1/8 width) through the real CLI. Its steps take milliseconds, so the child
pauses right after saving the checkpoint the test waits for (a runner wraps
``CheckpointManager.save``) and is killed there, in the middle of an epoch, instead of
finishing before the parent's next look.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from alexkit.cli import app

RECIPE = """
name = "resume-test"
variant = "tiny"
batch_size = 4
seed = 0
monitor = "accuracy"
[augment]
crop = false
pca_lighting = 0.0
[[stages]]
name = "head"
epochs = 2
trainable_from = "head"
optimizer = "adam"
lr = 0.001
[[stages]]
name = "top"
epochs = 1
trainable_from = "fc7"
optimizer = "sgd"
lr = 0.0001
"""


# `python -m alexkit ARGS` whose checkpoint saves pause (for the SIGKILL) from step PAUSE_AT,
# after the runs in FIRST (JSON: [[args, stdout file], ...]) have finished.
RUNNER = """
import contextlib
import json
import sys
import time

from alexkit import runs
from alexkit.cli import app, main

pause_at, first = int(sys.argv[1]), json.loads(sys.argv[2])
save = runs.CheckpointManager.save
armed = False


def save_then_pause(self, model_arrays, optimizer_arrays, state, *args, **kwargs):
    path = save(self, model_arrays, optimizer_arrays, state, *args, **kwargs)
    if armed and state["global_step"] >= pause_at:
        time.sleep(600)  # the test kills the process here
    return path


runs.CheckpointManager.save = save_then_pause
for first_args, stdout in first:
    with open(stdout, "w") as f, contextlib.redirect_stdout(f):
        code = app(first_args, prog_name="alexkit", standalone_mode=False)
    if code:
        sys.exit(f"alexkit {' '.join(first_args)} exited with {code}")
armed = True
sys.argv = ["alexkit", *sys.argv[3:]]
main()
"""


def _checkpoint_steps(out):
    try:
        index = json.loads((out / "checkpoints" / "index.json").read_text())
    except (OSError, ValueError):
        return []
    return [int(name.split("-")[1]) for name in index["complete"]]


def _run_until_killed(args, out, kill_after_step, first=(), timeout=240.0):
    """Start ``alexkit ARGS``; SIGKILL it once a checkpoint >= the step exists.

    ``first``: ``(args, stdout_path)`` pairs, runs the same process makes to the end
    before it starts ``alexkit ARGS`` (one TensorFlow start-up for both).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", NO_COLOR="1")
    runner = out.parent / "runner.py"
    runner.write_text(RUNNER)
    proc = subprocess.Popen(
        [sys.executable, str(runner), str(kill_after_step), json.dumps(first), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(
                    f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
                )
            if any(step >= kill_after_step for step in _checkpoint_steps(out)):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            time.sleep(0.05)
        raise AssertionError("no checkpoint appeared in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _cli_json(args):
    """``python -m alexkit ARGS`` in a fresh process; its ``--json`` output, parsed."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "alexkit", *args], env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)


def _rows(history):
    """History rows without the wall-clock columns."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in history]


@pytest.mark.slow
def test_finetune_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_history(
    tmp_path, class_folder, tiny_weights
):
    weights = tiny_weights  # a store entry (variant tiny) the subprocesses see too
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    common = ["finetune", "--recipe", str(recipe), "--data", str(class_folder), "--quiet"]
    common += ["--weights", str(weights), "--steps-per-epoch", "3"]

    # The reference: the same run, uninterrupted, first thing in a fresh process (this
    # process's TensorFlow has run other tests: its state must not decide the numbers).
    # That process then starts the run that is killed: one TensorFlow start-up less, and
    # the kill and the resume below are as before.
    out = tmp_path / "run"
    reference_json = tmp_path / "reference.json"
    reference_args = [*common, "--out", str(tmp_path / "ref"), "--json"]
    # 3 steps per epoch; checkpoint every step; kill once step 5 (epoch 2, step 2) is saved.
    _run_until_killed(
        [*common, "--out", str(out), "--checkpoint-every", "1"], out, 5,
        first=[(reference_args, str(reference_json))],
    )  # fmt: skip
    reference = json.loads(reference_json.read_text())
    assert reference["history"][-1]["stage_name"] == "top"
    assert (out / "config.json").is_file()
    before = [int(line.split(",")[0]) for line in (out / "history.csv").read_text().split()[1:]]
    assert before and before[-1] < 3  # killed before the end

    # `--resume` needs only --out: recipe, data, weights and options come from the run.
    result = _cli_json(["finetune", "--out", str(out), "--resume", "-q", "--json"])
    history = result["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]  # every epoch exactly once
    assert [r["stage_name"] for r in history] == ["head", "head", "top"]
    assert [r["images"] for r in history] == [12, 12, 12]  # full epochs, no steps lost
    csv_epochs = [int(line.split(",")[0]) for line in (out / "history.csv").read_text().split()[1:]]
    assert csv_epochs == [1, 2, 3]
    # Same seed on CPU, another process, killed and resumed: the very same history
    # (determinism, and the resume continues at the right stage, epoch and step).
    assert _rows(history) == _rows(reference["history"])
    # The best model is kept: its epoch is the best of the whole history.
    best = max(history, key=lambda r: (r["val_accuracy"], -r["epoch"]))
    assert result["best_epoch"] == best["epoch"] == reference["best_epoch"]
    assert (out / "model.keras").is_file() and (out / "metrics.json").is_file()
    assert result["metrics"]["accuracy"] == reference["metrics"]["accuracy"]


@pytest.mark.slow
def test_pretrain_kill_9_mid_epoch_then_resume(tmp_path):
    from conftest import write_class_images

    data = tmp_path / "imagenet"
    write_class_images(data / "train", [f"n0{i:07d}" for i in range(4)], 10, fmt="JPEG")
    out = tmp_path / "run"
    # 32 training images, batch 8: 4 steps per epoch; checkpoints every 3 steps.
    args = ["pretrain", "--data", str(data), "--out", str(out), "--epochs", "2", "--quiet"]
    args += ["--variant", "tiny", "--batch-size", "8", "--lr", "0.0001", "--init", "he"]
    args += ["--no-jit"]
    args += ["--checkpoint-every", "3"]
    _run_until_killed(args, out, kill_after_step=6)  # step 6 = epoch 2, step 2
    cli = CliRunner().invoke(app, ["pretrain", "--out", str(out), "--resume", "-q", "--json"])
    assert cli.exit_code == 0, cli.stderr
    result = json.loads(cli.stdout)
    assert [r["epoch"] for r in result["history"]] == [1, 2]
    assert [r["images"] for r in result["history"]] == [32, 32]
    assert result["weights_name"] == "pretrain-tiny-run"  # registered at the end
    state = json.loads(
        sorted((out / "checkpoints").glob("ckpt-*"))[-1].joinpath("state.json").read_text()
    )
    assert state["global_step"] == 8 and state["epoch"] == 2
    assert state["schedule"]["kind"] == "plateau"  # LR-schedule state travels with it
    assert (out / "last.keras").is_file()
