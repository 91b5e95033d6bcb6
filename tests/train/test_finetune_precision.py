"""``finetune --precision``: chosen once, kept in config.json, the model trained in it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from alexkit.errors import UsageError


@pytest.fixture
def tiny_setup(class_folder):
    from alexkit.model import build_alexnet
    from alexkit.train.plan import load_recipe
    from alexkit.weights import register_weights

    register_weights(build_alexnet("tiny", seed=0), "tiny-base", variant="tiny", source="test")
    rec, _, _ = load_recipe("digits", {})
    return dataclasses.replace(rec, variant="tiny", image_size=99), class_folder


@pytest.mark.parametrize("asked,policy", [("bf16", "mixed_bfloat16"), (None, None)])
def test_finetune_trains_and_saves_in_the_chosen_precision(tmp_path, tiny_setup, asked, policy):
    import keras

    from alexkit.loading import layer_policies, load_trained
    from alexkit.train import finetune

    rec, data = tiny_setup
    events = []
    finetune(
        rec, data, weights="tiny-base", out=tmp_path / "run", epochs=1, batch_size=8,
        precision=asked, progress=events.append, feature_cache_views=0,
    )  # fmt: skip
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["args"]["precision"] == policy  # the concrete policy, not "bf16"/"auto"
    said = [e for e in events if e.get("event") == "precision"]
    assert [e["policy"] for e in said] == ([policy] if policy else [])
    model, _, _ = load_trained(tmp_path / "run")
    policies = layer_policies(model)
    assert policies.pop("predictions") == "float32"
    assert set(policies.values()) == {policy or "float32"}
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


def test_finetune_refuses_an_unknown_precision_before_writing(tmp_path, tiny_setup):
    from alexkit.train import finetune

    rec, data = tiny_setup
    with pytest.raises(UsageError, match="unknown precision 'int8'"):
        finetune(rec, data, weights="tiny-base", out=tmp_path / "run", precision="int8")
    assert not (tmp_path / "run").exists()


def test_the_commands_default_is_auto_for_a_new_run_and_the_saved_one_on_resume(monkeypatch):
    from alexkit.commands.train import _run_precision

    monkeypatch.delenv("ALEXKIT_PRECISION")  # conftest pins float32 for the suite
    assert _run_precision(None, resume=False) == "auto"
    assert _run_precision(None, resume=True) is None  # the run's config.json decides
    assert _run_precision("fp32", resume=True) == "fp32"
    monkeypatch.setenv("ALEXKIT_PRECISION", "float32")
    assert _run_precision(None, resume=False) == "float32"
