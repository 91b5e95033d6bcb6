"""Lean checkpoints: frozen layers are left out, and resume is still exact.

A small network through the real engine: a wide frozen body under a small head, with
dropout (its RNG state must travel) and stages whose frozen sets differ.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from small_engine import prepared_engine

from alexkit.errors import CheckpointError, Interrupted

WIDTH = 256  # body1 has 64*256 + 256 weights, body2 256*256 + 256: the bulk of the net


def _engine(tmp_path, out, stages, *, resume=False, progress=None, keep=2, build=None, start=True):
    import keras
    import tensorflow as tf

    from alexkit.train.plan import DataPlan

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 64)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5).astype("int64")

    def make_train(epoch, steps):
        ds = tf.data.Dataset.from_tensor_slices((x[:32], y[:32]))
        return ds.shuffle(32, seed=1000 + epoch).batch(8).take(steps)

    def make_val():
        return tf.data.Dataset.from_tensor_slices((x[32:], y[32:])).batch(8)

    def build_model():
        seed = 7 if build is None else build
        init = keras.initializers.GlorotUniform(seed=seed)
        inputs = keras.Input((64,))
        h = keras.layers.Dense(WIDTH, "relu", name="body1", kernel_initializer=init)(inputs)
        h = keras.layers.Dense(WIDTH, "relu", name="body2", kernel_initializer=init)(h)
        h = keras.layers.Dropout(0.5, seed=3, name="drop")(h)
        h = keras.layers.Dense(8, "relu", name="fc7", kernel_initializer=init)(h)
        outputs = keras.layers.Dense(3, "softmax", name="predictions", kernel_initializer=init)(h)
        return keras.Model(inputs, outputs)

    plan = DataPlan(None, None, ["a", "b", "c"], 0, 8, None, num_train=32)
    return prepared_engine(
        tmp_path, out, resume=resume, progress=progress, build_model=build_model,
        stages=stages, data=plan, make_train=make_train, make_val=make_val,
        keep_checkpoints=keep, start_weights_on_resume=start,
    )  # fmt: skip


def _stages(*specs):
    from alexkit.train.plan import StagePlan

    return [StagePlan(name, epochs, trainable_from=tf, optimizer=opt, lr=0.01)
            for name, epochs, tf, opt in specs]  # fmt: skip


HEAD_ONLY = [("head", 3, None, "adam")]
# Everything trains, then only fc7 and up: the second stage's frozen body is no longer
# the starting weights, so it goes to a frozen-<digest>.npz file once.
ALL_THEN_TOP = [("all", 1, "all", "sgd"), ("top", 2, "fc7", "adam")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """``uninterrupted(name, keep=2)``: the uninterrupted run of HEAD_ONLY ("head") or
    ALL_THEN_TOP ("all-then-top") and its run directory; made once for the module, since
    several tests compare against the same one (every run reseeds, so order is moot)."""
    root = tmp_path_factory.mktemp("reference")
    done = {}

    def get(name, keep=2):
        if (name, keep) not in done:
            specs = {"head": HEAD_ONLY, "all-then-top": ALL_THEN_TOP}[name]
            out = f"{name}-keep{keep}"
            done[name, keep] = (
                _engine(root, out, _stages(*specs), keep=keep).run_all(),
                root / out,
            )
        return done[name, keep]

    return get


def _rows(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in history]


def _interrupt_at(global_step):
    def progress(event):
        if event["event"] == "batch" and (event["epoch"] - 1) * 4 + event["step"] == global_step:
            raise KeyboardInterrupt

    return progress


def _same_model_file(a, b):
    import keras

    ours = keras.saving.load_model(a / "model.keras", compile=False)
    theirs = keras.saving.load_model(b / "model.keras", compile=False)
    for x, y in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


def _newest(out):
    return sorted((out / "checkpoints").glob("ckpt-*"))[-1]


def test_head_only_checkpoint_holds_the_head_and_resumes_to_the_same_history(
    tmp_path, uninterrupted
):
    stages = _stages(*HEAD_ONLY)
    reference, reference_dir = uninterrupted("head")

    with pytest.raises(Interrupted):
        _engine(tmp_path, "run", stages, progress=_interrupt_at(6)).run_all()
    newest = _newest(tmp_path / "run")
    layout = json.loads((newest / "layout.json").read_text())
    assert layout["source"] == "initial"  # the frozen body is the starting weights
    with np.load(newest / "model.npz") as saved:
        stored = sum(saved[k].nbytes for k in saved.files)
    # Stored: the head (kernel + bias) and the dropout RNG state, nothing else.
    head = (8 * 3 + 3) * 4
    assert head < stored <= head + 16
    body = (64 * WIDTH + WIDTH + WIDTH * WIDTH + WIDTH) * 4
    on_disk = sum(p.stat().st_size for p in newest.iterdir())
    # npz headers aside: the head, Adam's two slots per head variable, the state.
    assert on_disk < 3 * head + 8192 < body / 10
    assert not list((tmp_path / "run" / "checkpoints").glob("frozen-*"))

    # The best model while training: its changed variables, not a model.keras.
    best = sorted((tmp_path / "run" / "checkpoints").glob("best-*"))
    assert best  # (model.keras too: Ctrl-C writes it from the best weights)
    assert all(sum(f.stat().st_size for f in b.iterdir()) < head + 4096 for b in best)
    saved_best = json.loads((newest / "state.json").read_text())["best"]["epoch"]
    assert best[-1].name == f"best-{saved_best:06d}"
    # As after a kill -9: no model.keras; --resume rebuilds it from best-<epoch>.
    (tmp_path / "run" / "model.keras").unlink()
    probe = _engine(tmp_path, "run", stages, resume=True)
    probe.model = probe.build_model()
    probe.checkpoints.note_initial(probe.model)
    weights = probe.checkpoints.load_best(probe.model, saved_best)
    assert weights is not None and len(weights) == len(probe.model.weights)

    resumed = _engine(tmp_path, "run", stages, resume=True).run_all()
    assert _rows(resumed["history"]) == _rows(reference["history"])
    assert resumed["best"] == reference["best"] and resumed["global_step"] == 12
    _same_model_file(tmp_path / "run", reference_dir)  # written at the end, the same


@pytest.mark.parametrize("where", [3, 6, 8], ids=["stage1", "stage2-mid", "stage2-end"])
def test_frozen_set_changing_between_stages_resumes_exactly(tmp_path, uninterrupted, where):
    stages = _stages(*ALL_THEN_TOP)
    reference, reference_dir = uninterrupted("all-then-top")

    with pytest.raises(Interrupted):
        _engine(tmp_path, "run", stages, progress=_interrupt_at(where)).run_all()
    checkpoints = tmp_path / "run" / "checkpoints"
    newest = _newest(tmp_path / "run")
    if where <= 4:  # stage 1 trains everything: complete checkpoints
        assert not (newest / "layout.json").exists()
    else:
        layout = json.loads((newest / "layout.json").read_text())
        assert layout["source"].startswith("frozen-")
        assert [p.name for p in checkpoints.glob("frozen-*")] == [layout["source"]]

    resumed = _engine(tmp_path, "run", stages, resume=True).run_all()
    assert _rows(resumed["history"]) == _rows(reference["history"])
    assert resumed["best"] == reference["best"] and resumed["global_step"] == 12
    _same_model_file(tmp_path / "run", reference_dir)


def test_checkpoints_written_before_lean_ones_still_resume(tmp_path, monkeypatch, uninterrupted):
    from alexkit.train.policies import Checkpoints

    stages = _stages(*HEAD_ONLY)
    reference, _ = uninterrupted("head")
    with monkeypatch.context() as patch:  # the old writer: every variable, no layout
        patch.setattr(Checkpoints, "start_stage", lambda self, model: None)
        with pytest.raises(Interrupted):
            _engine(tmp_path, "run", stages, progress=_interrupt_at(5)).run_all()
    assert not (_newest(tmp_path / "run") / "layout.json").exists()
    resumed = _engine(tmp_path, "run", stages, resume=True).run_all()
    assert _rows(resumed["history"]) == _rows(reference["history"])


def test_resume_refuses_other_starting_weights_under_a_lean_checkpoint(tmp_path):
    stages = _stages(*HEAD_ONLY)
    with pytest.raises(Interrupted):
        _engine(tmp_path, "run", stages, progress=_interrupt_at(2)).run_all()
    with pytest.raises(CheckpointError, match="starting weights"):
        _engine(tmp_path, "run", stages, resume=True, build=8).run_all()


def test_keep_zero_writes_no_checkpoint_but_ctrl_c_still_saves_one(tmp_path, uninterrupted):
    stages = _stages(*ALL_THEN_TOP)
    reference_zero = _engine(tmp_path, "ref", stages, keep=0).run_all()
    assert not (tmp_path / "ref" / "checkpoints").exists()
    # model.keras, written once at the end, is the best epoch's model: the very one a
    # run with checkpoints (which rewrites it at every improvement) leaves.
    with_checkpoints, with_checkpoints_dir = uninterrupted("all-then-top")
    assert list((with_checkpoints_dir / "checkpoints").glob("ckpt-*"))
    assert with_checkpoints["best"] == reference_zero["best"]
    assert _rows(with_checkpoints["history"]) == _rows(reference_zero["history"])
    _same_model_file(tmp_path / "ref", with_checkpoints_dir)

    with pytest.raises(Interrupted):
        _engine(tmp_path, "run", stages, progress=_interrupt_at(6), keep=0).run_all()
    newest = _newest(tmp_path / "run")
    assert newest.name == "ckpt-000000006"
    source = json.loads((newest / "layout.json").read_text())["source"]
    assert (tmp_path / "run" / "checkpoints" / source).is_file()  # written when needed
    resumed = _engine(tmp_path, "run", stages, resume=True, keep=0).run_all()
    assert _rows(resumed["history"]) == _rows(reference_zero["history"])
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("keep", [1, 2])
def test_keep_checkpoints(uninterrupted, keep):
    _, run = uninterrupted("all-then-top", keep=keep)  # keep 2: the reference run
    checkpoints = run / "checkpoints"
    kept = sorted(p.name for p in checkpoints.glob("ckpt-*"))
    assert kept == [f"ckpt-{s:09d}" for s in range(13 - keep, 13)]
    # The frozen file of stage 2 stays while a kept checkpoint refers to it.
    assert len(list(checkpoints.glob("frozen-*"))) == 1


def test_without_start_weights_on_resume_frozen_layers_are_written_once(tmp_path, uninterrupted):
    """A model built without its starting weights on resume: the frozen body goes to disk.

    The reference is the module's uninterrupted run (built with them): how the frozen
    layers are checkpointed changes nothing in the training."""
    stages = _stages(*HEAD_ONLY)
    reference, _ = uninterrupted("head")
    with pytest.raises(Interrupted):
        _engine(tmp_path, "run", stages, progress=_interrupt_at(6), start=False).run_all()
    checkpoints = tmp_path / "run" / "checkpoints"
    frozen = list(checkpoints.glob("frozen-*"))
    assert len(frozen) == 1
    assert json.loads((_newest(tmp_path / "run") / "layout.json").read_text())["source"] == (
        frozen[0].name
    )
    # The body once, not in every checkpoint.
    for ckpt in checkpoints.glob("ckpt-*"):
        assert (ckpt / "model.npz").stat().st_size < frozen[0].stat().st_size / 100
    # Resumed from a model built with other weights: the frozen file puts the body back.
    resumed = _engine(tmp_path, "run", stages, resume=True, build=8, start=False).run_all()
    assert _rows(resumed["history"]) == _rows(reference["history"])
