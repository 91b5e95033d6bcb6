"""`alexkit probe`: --precision, --ci-level, --n-boot and --seed, as `evaluate` has them.

Oracles: the intervals equal :func:`alexkit.stats.metric_intervals` run on the report's
own arrays; the float32 probe is the reference the bfloat16 one must follow (close,
not identical: the bf16 path really ran); `evaluate --probe` gives the same numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_class_images
from test_evaluate_cli import tiny_run
from typer.testing import CliRunner

from alexkit.cli import app

NAMES = ["alpha", "beta"]


@pytest.fixture(scope="module")
def probe_data(tmp_path_factory):
    """A run (tiny stand-in, config recording its training precision), train and test sets."""
    root = tmp_path_factory.mktemp("probe")
    run, _ = tiny_run(root / "run", NAMES, seed=2)
    config = json.loads((run / "config.json").read_text())
    config.update(kind="finetune", args={"precision": "float32"})
    (run / "config.json").write_text(json.dumps(config))
    write_class_images(root / "train", NAMES, 8, size=(40, 36), seed=1)
    write_class_images(root / "test", NAMES, 6, size=(40, 36), seed=2)
    return run, root / "train", root / "test"


@pytest.fixture
def runner():
    return CliRunner()


def _probe(runner, probe_data, *extra):
    run, train, test = probe_data
    args = ["probe", str(run), "--train", str(train), "--data", str(test), "--json", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result


def test_probe_intervals_follow_ci_level_n_boot_and_seed(runner, probe_data):
    from alexkit.evaluate import intervals_dict, load_trained
    from alexkit.probe import run_probe
    from alexkit.stats import metric_intervals

    metrics, _ = _probe(runner, probe_data, "--ci-level", "0.8", "--n-boot", "200", "--seed", "3")
    assert metrics["ci_level"] == 0.8
    assert metrics["ci_bootstrap"]["n_boot"] == 200 and metrics["ci_bootstrap"]["seed"] == 3
    # Oracle: the interval code run by hand on the arrays of the same probe.
    run, train, test = probe_data
    net, _, _ = load_trained(run)
    plain = run_probe(net, str(train), str(test), image_size=32, n_boot=0, seed=3)
    assert plain.accuracy == metrics["accuracy"]
    want = intervals_dict(
        metric_intervals(
            plain.y_true, plain.y_pred, plain.probs, NAMES, level=0.8, n_boot=200, seed=3
        )
    )
    assert metrics["ci_method"] == want["ci_method"]
    assert metrics["ci"].keys() == want["ci"].keys()
    for key, bounds in want["ci"].items():
        assert metrics["ci"][key] == pytest.approx(bounds, abs=1e-9), key


def test_evaluate_probe_gives_the_probe_commands_numbers(runner, probe_data):
    run, train, test = probe_data
    probe, _ = _probe(runner, probe_data, "--n-boot", "0", "--ci-level", "0.9")
    assert probe["ci_bootstrap"]["n_boot"] == 0 and probe["ci_level"] == 0.9
    args = ["evaluate", str(run), "--data", str(test), "--probe", "logreg", "--train", str(train)]
    same = runner.invoke(app, [*args, "--json", "--n-boot", "0", "--ci-level", "0.9"])
    assert same.exit_code == 0, same.stderr
    evaluated = json.loads(same.stdout)
    assert evaluated["ci"] == probe["ci"] and evaluated["accuracy"] == probe["accuracy"]
    assert evaluated["meta"]["trained_precision"] == "float32"


def test_probe_precision_is_said_saved_and_really_used(runner, probe_data):
    fp32, plain = _probe(runner, probe_data, "--n-boot", "0", "--precision", "float32")
    bf16, said = _probe(runner, probe_data, "--n-boot", "0", "--precision", "bf16")
    assert "precision mixed_bfloat16 (asked for)" in said.stderr
    assert "precision float32 (asked for)" in plain.stderr
    assert bf16["meta"]["precision"] == {
        "requested": "bf16",
        "policy": "mixed_bfloat16",
        "reason": "asked for",
    }
    assert fp32["meta"]["precision"]["policy"] == "float32"
    assert fp32["meta"]["trained_precision"] == bf16["meta"]["trained_precision"] == "float32"
    assert bf16["num_samples"] == fp32["num_samples"] == 12


def test_run_probe_bf16_features_follow_float32(probe_data):
    """Library level: bf16 features give probabilities close to float32's, not equal."""
    from alexkit.evaluate import load_trained
    from alexkit.probe import run_probe

    run, train, test = probe_data
    net, _, _ = load_trained(run)
    kw = dict(image_size=32, n_boot=0, kind="logreg")
    a = run_probe(net, str(train), str(test), precision="float32", **kw)
    b = run_probe(net, str(train), str(test), precision="mixed_bfloat16", **kw)
    assert b.meta["precision"]["policy"] == "mixed_bfloat16"
    assert a.paths == b.paths
    assert not np.array_equal(a.probs, b.probs)
    assert np.abs(a.probs - b.probs).max() < 0.2


@pytest.mark.parametrize(
    ("opts", "words"),
    [
        (["--ci-level", "95"], "--ci-level"),
        (["--n-boot", "5"], "--n-boot"),
        (["--precision", "int8"], "precision"),
    ],
)
def test_probe_refuses_bad_options_before_loading(runner, tmp_path, opts, words):
    missing = tmp_path / "no-such-run"  # would be exit 4 if anything were loaded
    args = ["probe", str(missing), "--train", str(tmp_path), "--data", str(tmp_path), *opts]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.stderr
    assert words in result.stderr
