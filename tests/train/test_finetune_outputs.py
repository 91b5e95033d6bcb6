"""What a finetune run leaves for evaluation: calibration.json, data-hashes.json, a run lock,
and recipes applied to the user's own class names.

A head-only stage on He-initialised ``tiny`` AlexNet features (the 2012 layout at 1/8
width; a ``.keras`` file) learns the generated colour classes in a few steps, so the
validation probabilities are informative. What is under test is what the run writes,
which is the same for every variant.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from alexkit.errors import CheckpointError

# On conftest's tiny features_file: head lr 0.01 and three epochs (measured: validation
# accuracy 0.5 after two, 1.0 after three).
BINARY_HEAD = """
name = "binary-head"
variant = "tiny"
batch_size = 8
seed = 0
metrics = ["accuracy", "auc"]
monitor = "accuracy"
[augment]
crop = false
hflip = false
pca_lighting = 0.0
[[stages]]
name = "head"
epochs = 3
trainable_from = "head"
optimizer = "adam"
lr = 0.01
"""


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory, features_file):
    """A finished two-class run on lower-case Kermany-style folders."""
    from conftest import write_class_images

    from alexkit.train import finetune

    base = tmp_path_factory.mktemp("binary")
    write_class_images(base / "images", ["normal", "pneumonia"], 20)
    recipe = base / "recipe.toml"
    recipe.write_text(BINARY_HEAD)
    result = finetune(
        recipe, base / "images", weights=str(features_file), out=base / "run",
        target_sensitivity=0.9,
    )  # fmt: skip
    return base, result


@pytest.mark.slow
def test_finetune_fits_the_temperature_on_validation(binary_run):
    from scipy.optimize import minimize_scalar

    from alexkit.calibration import apply_temperature
    from alexkit.evaluate import evaluate_model

    base, result = binary_run
    run = base / "run"
    saved = json.loads((run / "calibration.json").read_text())
    assert saved["fitted_on"] == "val" and saved["num_samples"] == result.metrics["num_samples"]
    assert result.metrics["accuracy"] >= 0.75  # the head learned: informative probabilities
    # The best model's raw validation probabilities, evaluated independently.
    report = evaluate_model(run, _val_spec(run), calibrate=False, ci_level=None, check_leaks=False)
    y, p = report.y_true, report.probs

    def nll(t: float) -> float:
        z = np.log(np.clip(p, 1e-12, 1)) / t
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    best = minimize_scalar(nll, bounds=(0.01, 100), method="bounded", options={"xatol": 1e-6})
    assert saved["temperature"] == pytest.approx(best.x, rel=1e-3, abs=1e-3)
    assert saved["nll_after"] <= saved["nll_before"] + 1e-9
    calibrated = apply_temperature(p, saved["temperature"], from_probs=True)
    np.testing.assert_array_equal(calibrated.argmax(1), p.argmax(1))  # accuracy unchanged
    # Two classes: operating thresholds chosen on validation, the target one reaches it.
    thresholds = saved["thresholds"]
    assert set(thresholds) == {"youden", "target_sensitivity"}
    assert thresholds["target_sensitivity"]["sensitivity"] >= 0.9
    assert result.metrics["meta"]["temperature"] == saved["temperature"]


def _val_spec(run):
    """The run's validation items, rebuilt from its config the way finetune built them."""
    from alexkit.train.plan import load_specs

    config = json.loads((run / "config.json").read_text())
    _, val = load_specs(
        config["data"]["train"], None, seed=config["resolved"]["seed"],
        class_names=config["class_names"], val_fraction=config["recipe"]["val_fraction"],
    )  # fmt: skip
    return val


@pytest.mark.slow
def test_finetune_records_hashes_and_evaluate_flags_training_images(binary_run):
    from alexkit.cli import app

    base, _ = binary_run
    run = base / "run"
    hashes = json.loads((run / "data-hashes.json").read_text())
    assert set(hashes["splits"]) == {"train", "val"}
    assert sum(len(v["hashes"]) for v in hashes["splits"].values()) == 40
    # Evaluating on the training folder itself is leakage: loud, and exit 3 with --strict.
    args = ["evaluate", str(run), "--data", str(base / "images"), "--strict", "--json"]
    args += ["--n-boot", "100"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 3, out.stderr
    assert "leak" in out.stderr.lower()


@pytest.mark.slow
def test_recipe_class_names_match_the_users_folders_ignoring_case(binary_run):
    base, _ = binary_run
    config = json.loads((base / "run" / "config.json").read_text())
    assert config["class_names"] == ["normal", "pneumonia"]
    assert config["args"]["target_sensitivity"] == 0.9


def test_a_second_finetune_on_a_locked_run_dir_is_refused(tmp_path, class_folder):
    from alexkit.runlock import RunLock
    from alexkit.train import finetune

    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(CheckpointError, match="run.lock|in use|another"):
            finetune("digits", class_folder, weights="none", out=out, epochs=1)
    assert not (out / "config.json").exists()


def test_binary_recipe_on_other_class_names_asks_for_the_positive_class(tmp_path):
    from conftest import write_class_images

    from alexkit.cli import app

    write_class_images(tmp_path / "scans", ["bleed", "no_bleed"], 3)
    args = ["finetune", "--recipe", "ct", "--data", str(tmp_path / "scans"), "--weights"]
    args += ["none", "--out", str(tmp_path / "run"), "--quiet"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2, out.stderr
    assert "--positive-class" in out.stderr and "recipe 'ct'" in out.stderr
    assert "Traceback" not in out.stderr
