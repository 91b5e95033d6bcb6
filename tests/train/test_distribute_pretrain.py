"""``alexkit pretrain --distribute mirrored|multiworker`` end to end, through the CLI.

Every distributed run is a subprocess (logical CPUs and the multi-worker runtime must be
set up before TensorFlow starts). The oracle is a single-process run of the same command
on the same global batches, in the test process (one device needs no set-up): the
distributed runs split each global batch of 8 over 2 replicas (2 logical CPUs, or 2
worker processes on 127.0.0.1 that each decode only their half) and must end with the
same losses and weights. All runs compute in float32. Dropout is set to 0 in these runs
only (``build_alexnet`` is patched): its masks are drawn per replica, so they cannot
match a single device's; everything else is the real model and the real CLI.

The runs train the ``tiny`` variant (the 2012 layout, LRN and grouped convolutions
included, at 1/8 width on 99x99): what is under test is the distribution of the loop,
which the 0.2M-parameter network goes through exactly as AlexNet does, in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import free_ports

# 4 classes: top-5 is undefined (None), which the cross-worker metric mean must pass through.
WNIDS = [f"n0{i:07d}" for i in range(4)]
ARGS = [
    "pretrain",
    "--variant", "tiny",
    "--batch-size", "8",
    "--steps-per-epoch", "2",
    "--lr", "2e-4",
    "--init", "he",
    "--no-jit",
    "--seed", "0",
    "--quiet",
    "--json",
]  # fmt: skip

# The runner imports Keras before the CLI can, so it pauses the garbage collector over
# the imports as the CLI itself does (alexkit.commands._common.collector_paused): 8.8 ->
# 6.1 CPU-s for the single run. No number changes.
RUNNER = """
import sys
from alexkit.commands._common import collector_paused
with collector_paused():
    if sys.argv[1] == "mirrored":
        from alexkit.distribute import use_logical_cpus
        use_logical_cpus(2)
    import alexkit.model as model
    from alexkit.cli import main
build = model.build_alexnet
def no_dropout(*args, **kwargs):
    kwargs["dropout"] = 0.0
    return build(*args, **kwargs)
model.build_alexnet = no_dropout
sys.argv = ["alexkit", *sys.argv[2:]]
main()
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from conftest import write_class_images

    root = tmp_path_factory.mktemp("distpretrain")
    write_class_images(root / "data" / "train", WNIDS, 10, size=(64, 56), fmt="JPEG")
    (root / "runner.py").write_text(RUNNER)
    (root / "tmp").mkdir()
    yield root
    # Four run dirs (checkpoints with optimizer state): a few MB with `tiny`, ~4 GB with AlexNet.
    shutil.rmtree(root, ignore_errors=True)


def _env(root: Path, **extra: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(root / "tmp"))
    env.pop("TF_CONFIG", None)
    env["ALEXKIT_HOME"] = str(root / "home")
    return {**env, **extra}


def _start(root: Path, mode: str, out: str, epochs: int, *extra: str, **env: str):
    cmd = [sys.executable, str(root / "runner.py"), mode, *ARGS, "--data", "data"]
    cmd += ["--out", out, "--epochs", str(epochs), *extra]
    return subprocess.Popen(
        cmd, cwd=root, env=_env(root, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _finish(procs) -> list[dict]:
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a training process hung (a collective waited forever?)")
        assert proc.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out))
    return results


def _multiworker(root: Path, out: str, epochs: int, *extra: str) -> list[dict]:
    return _finish(_start_workers(root, out, epochs, *extra))


def _start_workers(root: Path, out: str, epochs: int, *extra: str) -> list:
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = [
        _start(
            root,
            "multiworker",
            out,
            epochs,
            "--distribute",
            "multiworker",
            *extra,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
        )
        for i in range(2)
    ]
    return procs


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    import alexkit.layers  # noqa: F401
    import alexkit.optim  # noqa: F401

    return keras.saving.load_model(path, compile=False).get_weights()


def _assert_same_run(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra["images"] == rb["images"] == 16
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert ra[key] == pytest.approx(rb[key], abs=2e-5), (ra["epoch"], key)


@pytest.fixture(scope="module")
def single(setup):
    """The oracle: the same command with no --distribute, run here as the runner would.

    Same cwd, ALEXKIT_HOME, no TF_CONFIG and dropout 0 (float32: conftest sets
    ALEXKIT_PRECISION for the whole test process and its children); what the run sets
    process-wide (the global seeds, op determinism) is put back afterwards.
    """
    import random

    from tensorflow.python.framework import config as tf_config
    from typer.testing import CliRunner

    import alexkit.model
    from alexkit.cli import app

    build = alexkit.model.build_alexnet

    def no_dropout(*args, **kwargs):
        return build(*args, **{**kwargs, "dropout": 0.0})

    states = random.getstate(), np.random.get_state(), tf_config.is_op_determinism_enabled()
    args = [*ARGS, "--data", "data", "--out", "single", "--epochs", "3"]
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(setup)
            patch.setenv("ALEXKIT_HOME", str(setup / "home"))
            patch.delenv("TF_CONFIG", raising=False)
            patch.setattr(alexkit.model, "build_alexnet", no_dropout)
            cli = CliRunner().invoke(app, args)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        if not states[2]:
            tf_config.disable_op_determinism()
    assert cli.exit_code == 0, cli.output[-3000:]
    return json.loads(cli.stdout)


@pytest.mark.slow
def test_pretrain_multiworker_two_processes_matches_single_process_and_resumes(setup, single):
    first = _multiworker(setup, "mw", 2)
    chief, other = first
    assert chief["worker"] == 0 and other["worker"] == 1
    assert Path(chief["run_dir"]) == Path("mw") == Path(other["run_dir"])
    assert chief["weights_name"] and other["weights_name"] is None
    assert other["metrics"] is None and chief["metrics"]["num_samples"] == 8
    assert chief["history"][0].get("val_top5") is None
    _assert_same_run(chief["history"], single["history"][:2])
    _assert_same_run(other["history"], single["history"][:2])
    run = setup / "mw"
    for name in ("config.json", "history.csv", "model.keras", "last.keras", "metrics.json"):
        assert (run / name).is_file(), name
    assert len((run / "history.csv").read_text().splitlines()) == 3
    # Worker 1 trained in a scratch dir and removed it; only the chief registered.
    assert list((setup / "tmp").iterdir()) == []
    entries = sorted(p.name for p in (setup / "home" / "weights").iterdir())
    assert "pretrain-tiny-mw" in entries and not any("worker" in e for e in entries)

    # The same command again without --force: the chief refuses to overwrite --out and
    # the other worker stops too instead of waiting for it forever.
    procs = _start_workers(setup, "mw", 2)
    errors = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a worker hung after the chief refused to start")
        errors.append((proc.returncode, err.decode().strip().splitlines()[-1]))
    assert errors[0][0] == 4 and "--force" in errors[0][1]  # the chief's run-dir refusal
    assert errors[1][0] == 2 and "another worker could not start" in errors[1][1]

    # Both workers resume from the chief's newest checkpoint (worker 1 reads it through
    # the shared filesystem) and finish epoch 3 exactly as the uninterrupted run did.
    resumed = _multiworker(setup, "mw", 3, "--resume")
    for result in resumed:
        assert result["resumed"]
        _assert_same_run(result["history"], single["history"])
    a, b = _weights(run / "last.keras"), _weights(setup / "single" / "last.keras")
    assert len(a) == len(b) == 16
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=2e-5)


@pytest.mark.slow
def test_pretrain_mirrored_on_two_logical_cpus_matches_single_process(setup, single):
    (result,) = _finish([_start(setup, "mirrored", "mirrored", 3, "--distribute", "mirrored")])
    assert result["worker"] is None
    _assert_same_run(result["history"], single["history"])
    a, b = _weights(setup / "mirrored" / "last.keras"), _weights(setup / "single" / "last.keras")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=2e-5)


def test_distributed_pretrain_needs_one_full_global_batch(setup, tmp_path):
    from alexkit.errors import UsageError
    from alexkit.train import pretrain

    with pytest.raises(UsageError, match="at least one full global batch"):
        pretrain(
            setup / "data", out=tmp_path / "run", batch_size=64, steps_per_epoch=1,
            distribute="mirrored", epochs=1, init="he", jit=False,
        )  # fmt: skip
