"""The engine on a tiny network: interrupted anywhere, resumed, it ends as if never stopped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from small_engine import prepared_engine

from alexkit.errors import Interrupted

# The keys of a checkpoint's state.json, in order: run dirs written before must resume.
STATE_KEYS = [
    "version", "global_step", "epoch", "stage", "stage_epoch", "stage_done", "step_in_epoch",
    "accum", "history", "best", "stage_best", "stage_wait", "schedule", "optimizer_paths",
]  # fmt: skip


def _engine(tmp_path, out, *, resume=False, progress=None):
    import keras
    import tensorflow as tf

    from alexkit.train.plan import DataPlan, StagePlan

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5).astype("int64")

    def make_train(epoch, steps):
        ds = tf.data.Dataset.from_tensor_slices((x[:30], y[:30]))
        return ds.shuffle(30, seed=1000 + epoch).batch(8).take(steps)

    def make_val():
        return tf.data.Dataset.from_tensor_slices((x[30:], y[30:])).batch(8)

    def build_model():
        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(16, activation="relu", name="fc7")(inputs)
        return keras.Model(inputs, keras.layers.Dense(3, "softmax", name="predictions")(hidden))

    # Head-only Adam, then fc7 and up with SGD: the stages' optimizers hold other variables.
    stages = [
        StagePlan("head", 2, trainable_from=None, optimizer="adam", lr=0.01),
        StagePlan("top", 2, trainable_from="fc7", optimizer="sgd", lr=0.01),
    ]
    plan = DataPlan(None, None, ["a", "b", "c"], 0, 8, None, num_train=30)
    return prepared_engine(
        tmp_path, out, resume=resume, progress=progress, build_model=build_model,
        stages=stages, data=plan, make_train=make_train, make_val=make_val,
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, made once for both interruption points (every run reseeds)."""
    return _engine(tmp_path_factory.mktemp("reference"), "ref").run_all()


def _rows(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in history]


@pytest.mark.parametrize(
    "event, where",
    [("batch", 6), ("epoch_end", 2)],  # in epoch 2; at the end of stage 1
    ids=["mid-epoch", "end-of-stage"],
)
def test_interrupted_run_resumes_to_the_uninterrupted_history(tmp_path, reference, event, where):
    assert [r["images"] for r in reference["history"]] == [30, 30, 30, 30]

    def interrupt(ev):
        if ev["event"] != event:
            return
        # 4 steps an epoch: a batch event counts global steps, an epoch_end event epochs.
        count = (ev["epoch"] - 1) * 4 + ev["step"] if event == "batch" else ev["epoch"]
        if count == where:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="continue with --resume"):
        _engine(tmp_path, "run", progress=interrupt).run_all()
    newest = sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*"))[-1]
    saved = json.loads((newest / "state.json").read_text())
    assert list(saved) == STATE_KEYS
    assert saved["global_step"] == (6 if event == "batch" else 8)

    resumed = _engine(tmp_path, "run", resume=True).run_all()
    assert _rows(resumed["history"]) == _rows(reference["history"])
    assert resumed["best"] == reference["best"] and resumed["global_step"] == 16
