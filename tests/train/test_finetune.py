"""Fine-tuning end to end on generated images: learning, frozen layers, precedence, determinism.

A randomly initialised ``tiny`` AlexNet (the 2012 layout at 1/8 width on 99x99; He init)
saved as a ``.keras`` file stands in for pretrained weights: its fc7 features separate the
generated colour classes, so a head-only stage learns quickly, and its weights are known
exactly for the frozen check. What is under test is the fine-tuning pipeline (stages,
freezing, flags over recipe, Ctrl-C and resume), which runs the same code for every
variant; AlexNet's own shapes and weights are tested in test_model.py and tests/weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from alexkit.errors import CheckpointError, Interrupted

# Adam's step moves a logit by about lr x the sum of |fc7|: tiny's 128-unit fc7 needs
# lr 0.01 (and three epochs) where AlexNet's 4096 units learned with 0.001 in two.
HEAD_ONLY = """
name = "head-only"
variant = "tiny"
batch_size = 8
seed = 0
metrics = ["accuracy", "f1"]
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

TWO_STAGES = """
name = "two-stages"
variant = "tiny"
batch_size = 16
seed = 0
monitor = "loss"
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
epochs = 2
trainable_from = "fc7"
optimizer = "sgd"
lr = 0.0001
"""


@pytest.fixture(scope="module")
def bigger_folder(tmp_path_factory):
    """3 classes x 30 images: a held-out split of 18 images, so accuracy is not too coarse."""
    from conftest import write_class_images

    root = tmp_path_factory.mktemp("bigger") / "images"
    write_class_images(root, ["alpha", "beta", "gamma"], 30)
    return root


def _recipe(tmp_path, text, name="recipe.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.slow
def test_finetune_learns_and_keeps_frozen_layers_bit_identical(
    tmp_path, bigger_folder, features_file
):
    import keras

    import alexkit.layers  # noqa: F401
    from alexkit.train import finetune

    recipe = _recipe(tmp_path, HEAD_ONLY)
    result = finetune(recipe, bigger_folder, weights=str(features_file), out=tmp_path / "run")
    # 3 classes: chance is 1/3; the held-out accuracy must be well above it.
    assert result.metrics["num_samples"] == 18
    assert result.metrics["accuracy"] >= 0.8, result.history
    assert result.best_value == max(r["val_accuracy"] for r in result.history)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]

    source = keras.saving.load_model(features_file, compile=False)
    trained = keras.saving.load_model(result.model_path, compile=False)
    assert trained.get_layer("predictions").units == 3
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
        for before, after in zip(
            source.get_layer(name).get_weights(), trained.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(before, after, err_msg=name)

    # Random init instead of the file: the very first batch (same data, same seed) has
    # another loss, so training did start from the file's weights.
    scratch = finetune(
        recipe, bigger_folder, weights="none", out=tmp_path / "none", epochs=1, steps_per_epoch=1
    )
    assert scratch.first_batch_loss is not None and result.first_batch_loss is not None
    assert abs(scratch.first_batch_loss - result.first_batch_loss) > 1e-3


@pytest.mark.slow
def test_cli_finetune_end_to_end_flags_beat_the_recipe(tmp_path, class_folder, features_file):
    from alexkit.cli import app

    recipe = _recipe(tmp_path, TWO_STAGES)
    out = tmp_path / "run"
    args = ["finetune", "--recipe", str(recipe), "--data", str(class_folder)]
    args += ["--weights", str(features_file), "--out", str(out), "--quiet", "--json"]
    args += ["--epochs", "1", "--batch-size", "4", "--lr", "0.002", "--seed", "3"]
    args += ["--steps-per-epoch", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)  # --json: only JSON on stdout
    assert summary["run_dir"] == str(out)

    for name in ("config.json", "history.csv", "model.keras", "metrics.json"):
        assert (out / name).is_file(), name
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
    assert len(list((out / "checkpoints").glob("ckpt-*"))) >= 1

    config = json.loads((out / "config.json").read_text())
    for key in ("class_names", "variant", "image_size", "grayscale", "recipe", "args", "versions"):
        assert key in config
    assert config["class_names"] == ["alpha", "beta", "gamma"]
    assert config["image_size"] == 99 and config["variant"] == "tiny"
    # Flags beat the recipe: batch 16 -> 4, epochs 2/2 -> 1/1, seed 0 -> 3, lr 0.001 -> 0.002
    # (the second stage keeps its ratio to the first: 0.0001 * 2 = 0.0002).
    assert config["recipe"]["batch_size"] == 4 and config["recipe"]["seed"] == 3
    assert [s["epochs"] for s in config["recipe"]["stages"]] == [1, 1]
    history = summary["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert [r["stage_name"] for r in history] == ["head", "top"]
    assert history[0]["lr"] == pytest.approx(0.002)
    assert history[1]["lr"] == pytest.approx(0.0002)
    assert all(r["images"] == 8 for r in history)  # 2 steps x batch 4
    # ... and the recipe beats the defaults: monitor "loss" from the recipe.
    assert summary["monitor"] == "val_loss"

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == config["data"]["num_val"] == 6
    assert 0.0 <= metrics["accuracy"] <= 1.0

    # The same --out again without --force or --resume is refused (exit 4).
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 4


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_refuses_another_recipe_or_other_data(
    tmp_path, class_folder, features_file
):
    from alexkit.runs import CheckpointManager
    from alexkit.train import finetune

    recipe = _recipe(tmp_path, TWO_STAGES)
    out = tmp_path / "run"

    # Ctrl-C after the second step of the first epoch: a checkpoint of that very step,
    # then Interrupted (exit code 130) naming --resume.
    def press_ctrl_c(event):
        if event["event"] == "batch" and event["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        finetune(
            recipe,
            class_folder,
            weights=str(features_file),
            out=out,
            batch_size=4,
            progress=press_ctrl_c,
        )
    assert info.value.exit_code == 130 and "--resume" in str(info.value)
    state, _, _, _ = CheckpointManager(out / "checkpoints").load_latest()
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 2, 2)
    assert state["accum"]["count"] == 8  # the running epoch average survives too

    # Resuming with another recipe or other data is refused.
    other = _recipe(tmp_path, TWO_STAGES.replace("lr = 0.0001", "lr = 0.0005"), "other.toml")
    with pytest.raises(CheckpointError, match="recipe"):
        finetune(other, class_folder, out=out, resume=True)
    extra = class_folder / "alpha" / "alpha_extra.png"
    extra.write_bytes((class_folder / "alpha" / "alpha_000.png").read_bytes())
    with pytest.raises(CheckpointError, match="data"):
        finetune(recipe, class_folder, out=out, resume=True)
