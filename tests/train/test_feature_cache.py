"""The training-view feature cache on a small network through the real engine.

A frozen body (two Dense layers) under dropout and a trainable head: a head-only stage
caches body2's output (dropout is the first stochastic layer) for K augmented views.
The "augmentation" is per-image noise drawn from (epoch, image), and every epoch is
shuffled with its own seed, like the real pipeline.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest
import typer
from small_engine import prepared_engine
from typer.testing import CliRunner

from alexkit.errors import Interrupted, UsageError

N, DIM, BATCH = 32, 64, 8  # 4 steps an epoch
CACHE_LOG = "alexkit.train.feature_cache"


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N + 8, DIM)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5).astype("int64")
    return x, y


def _engine(
    tmp_path, out, stages, *, views, resume=False, progress=None, calls=None, dropout=0.5,
    memory=None,
):  # fmt: skip
    import keras
    import tensorflow as tf

    from alexkit.train.plan import DataPlan

    x, y = _data()

    def make_train(epoch, steps):
        if calls is not None:
            calls.append((epoch, steps))
        # View `epoch` of every image: noise drawn from the epoch (augmentation).
        noise = np.random.default_rng(100 + epoch).normal(size=(N, DIM)).astype("float32")
        ds = tf.data.Dataset.from_tensor_slices((x[:N] + 0.3 * noise, y[:N]))
        return ds.shuffle(N, seed=1000 + epoch).batch(BATCH).take(steps)

    def make_val():
        return tf.data.Dataset.from_tensor_slices((x[N:], y[N:])).batch(BATCH)

    def build_model():
        init = keras.initializers.GlorotUniform(seed=7)
        inputs = keras.Input((DIM,))
        h = keras.layers.Dense(64, "relu", name="body1", kernel_initializer=init)(inputs)
        h = keras.layers.Dense(64, "relu", name="body2", kernel_initializer=init)(h)
        h = keras.layers.Dropout(dropout, seed=3, name="drop")(h)
        h = keras.layers.Dense(16, "relu", name="fc7", kernel_initializer=init)(h)
        outputs = keras.layers.Dense(3, "softmax", name="predictions", kernel_initializer=init)(h)
        return keras.Model(inputs, outputs)

    plan = DataPlan(None, None, ["a", "b", "c"], 0, BATCH, None, num_train=N)
    return prepared_engine(
        tmp_path, out, resume=resume, progress=progress, build_model=build_model,
        stages=stages, data=plan, make_train=make_train, make_val=make_val,
        feature_cache_views=views, feature_cache_memory=memory,
    )  # fmt: skip


def _stages(*specs):
    from alexkit.train.plan import StagePlan

    return [StagePlan(name, epochs, trainable_from=tf, optimizer="adam", lr=lr)
            for name, epochs, tf, lr in specs]  # fmt: skip


def _head(epochs, lr=0.01):
    return _stages(("head", epochs, None, lr))


def _rows(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in history]


def _models_trained(engine):
    """Record, per step, whether the whole model or the cached top trained."""
    seen = []
    step = engine._train_step

    def recording(x, y, epoch_index, model=None):
        seen.append((epoch_index, "cached" if model is not engine.model else "whole"))
        return step(x, y, epoch_index, model)

    engine._train_step = recording
    return seen


def _cache_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == CACHE_LOG]


@contextlib.contextmanager
def _cache_log():
    """The feature cache's INFO messages while the block runs (a module fixture has no
    caplog)."""
    logger = logging.getLogger(CACHE_LOG)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# Tests of one head-only stage compare with the same few uninterrupted runs: each is made
# once for the module (every run reseeds, so order is moot) over the longest stage any
# test needs, 5 epochs. A shorter uncached run is the first epochs of it (constant LR).


@pytest.fixture(scope="module")
def uncached(tmp_path_factory):
    """The uncached run (K=0) of a 5-epoch head stage: its ``history``, the pipeline's
    ``calls``, the model each step ``trained`` and the cache's log ``lines``."""
    calls = []
    engine = _engine(tmp_path_factory.mktemp("uncached"), "run", _head(5), views=0, calls=calls)
    trained = _models_trained(engine)
    with _cache_log() as lines:
        history = engine.run_all()["history"]
    return {"history": history, "calls": calls, "trained": trained, "lines": lines}


@pytest.fixture(scope="module")
def two_views(tmp_path_factory):
    """``two_views(memory)``: the run of a 5-epoch head stage with K=2 under a memory
    budget (None: the default, in memory), as ``{"state", "lines", "files", "dir"}``;
    ``files``: the ``.npy`` views on disk at each epoch's end; ``dir``: the run's."""
    root = tmp_path_factory.mktemp("two_views")
    done = {}

    def get(memory):
        if memory not in done:
            out = f"memory-{memory}"
            engine = _engine(root, out, _head(5), views=2, memory=memory)
            files = []

            def look(event):
                if event["event"] == "epoch_end":
                    folder = root / out / "feature-cache"
                    files.append(sorted(p.name for p in folder.glob("*.npy")))

            engine.progress = look
            with _cache_log() as lines:
                state = engine.run_all()
            done[memory] = {"state": state, "lines": lines, "files": files, "dir": root / out}
        return done[memory]

    return get


def test_k_equal_to_epochs_reproduces_the_uncached_trajectory(tmp_path, caplog, uncached):
    caplog.set_level(logging.INFO, logger=CACHE_LOG)
    plain = uncached["history"][:4]
    assert not uncached["lines"]
    calls = []
    cached = _engine(tmp_path, "cached", _head(4), views=4, calls=calls)
    seen = _models_trained(cached)
    history = cached.run_all()["history"]
    # Every step trained the top from the prefix's output, and each epoch drew its own
    # view from the pipeline, as the uncached run does.
    assert {kind for _, kind in seen} == {"cached"} and len(seen) == 16
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert len(_cache_lines(caplog)) == 1 and "in memory" in _cache_lines(caplog)[0]
    losses = [r["loss"] for r in history]
    assert len(set(losses)) == 4  # the head learns: a trajectory, not a constant
    for ours, theirs in zip(history, plain, strict=True):
        assert ours["images"] == theirs["images"] == N
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5, abs=1e-7)
        assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-9)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5, abs=1e-7)
    # The model trained through the cache saves and loads as the whole network.
    import keras

    saved = keras.saving.load_model(tmp_path / "cached" / "model.keras", compile=False)
    assert [la.name for la in saved.layers] == [la.name for la in cached.model.layers]
    for ours, theirs in zip(saved.get_weights(), cached.best_weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_later_epochs_read_the_kept_views(tmp_path, caplog, uncached):
    """K=2 over 5 epochs: the pipeline runs for epochs 0 and 1 only (each a whole view);
    epochs 2-4 read views 0, 1, 0 in fresh orders; the first two epochs equal the
    uncached run's."""
    caplog.set_level(logging.INFO, logger=CACHE_LOG)
    plain = uncached["history"]
    calls = []
    engine = _engine(tmp_path, "cached", _head(5), views=2, calls=calls)
    kept = {}

    def keep_views(event):
        if event["event"] == "epoch_end" and event["epoch"] == 2:
            kept.update({v: s.labels.copy() for v, s in engine.train_cache._stored.items()})

    engine.progress = keep_views
    history = engine.run_all()["history"]
    assert calls == [(0, 4), (1, 4)]
    assert sorted(kept) == [0, 1] and all(len(labels) == N for labels in kept.values())
    # Each view holds every image once (its labels are the data's, reordered).
    _, y = _data()
    for labels in kept.values():
        assert sorted(labels.tolist()) == sorted(y[:N].tolist())
    assert "2 view(s) of 32 images at 'body2'" in _cache_lines(caplog)[0]
    for ours, theirs in zip(history[:2], plain[:2], strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5, abs=1e-7)
    assert [r["images"] for r in history] == [N] * 5
    # Reused views still train the head: the loss keeps moving.
    assert len({round(r["loss"], 9) for r in history[2:]}) == 3


@pytest.mark.parametrize("dropout, differ", [(0.5, True), (0.0, False)])
def test_dropout_above_the_cache_draws_new_masks(tmp_path, dropout, differ):
    """With lr 1e-12 the weights do not move, and epochs 1 and 2 both read view 0 (K=1):
    with dropout their losses differ (new masks); with rate 0 (the control) they are the
    same to rounding."""
    engine = _engine(tmp_path, "run", _head(3, lr=1e-12), views=1, dropout=dropout)
    cut = []

    def on_stage(event):
        if event["event"] == "stage":
            cut.append(engine.train_cache.cut_name)

    engine.progress = on_stage
    history = engine.run_all()["history"]
    assert cut == ["body2"]  # cached below the dropout, not after it
    a, b = history[1]["loss"], history[2]["loss"]
    if differ:
        assert abs(a - b) > 1e-3
    else:
        assert a == pytest.approx(b, rel=1e-6)


def test_k_zero_takes_the_uncached_path(uncached):
    assert {kind for _, kind in uncached["trained"]} == {"whole"}
    assert uncached["calls"] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert not uncached["lines"]


def test_never_cached_while_the_prefix_trains(tmp_path):
    """Everything trains, then only the head: the first stage runs uncached, the second
    from the cache; then a stage from body2 caches only body1's output."""
    stages = _stages(("all", 2, "all", 0.01), ("head", 3, None, 0.01), ("top", 2, "body2", 0.01))
    engine = _engine(tmp_path, "run", stages, views=2)
    seen = _models_trained(engine)
    cuts = []

    def on_stage(event):
        if event["event"] == "stage":
            cuts.append(None if engine.train_cache is None else engine.train_cache.cut_name)

    engine.progress = on_stage
    engine.run_all()
    kinds = [sorted({k for e, k in seen if e == epoch}) for epoch in range(7)]
    assert kinds == [["whole"]] * 2 + [["cached"]] * 5
    assert cuts == [None, "body2", "body1"]


def test_over_the_memory_budget_streams_from_disk(two_views):
    memory, disk = two_views(None), two_views(1000)
    lines = disk["lines"]
    assert len(lines) == 1 and "streamed from" in lines[0] and "over the memory budget" in lines[0]
    # 2 views x 32 images x 64 floats x 4 bytes
    assert "(16.0 KB)" in lines[0]
    assert disk["files"][1:] == [["view-0.npy", "view-1.npy"]] * 4
    assert not (disk["dir"] / "feature-cache").exists()  # deleted when the stage ended
    assert len(memory["lines"]) == 1 and "in memory" in memory["lines"][0]
    assert not any(memory["files"])
    assert _rows(disk["state"]["history"]) == _rows(memory["state"]["history"])


def test_over_budget_without_disk_room_falls_back_to_uncached(
    tmp_path, caplog, monkeypatch, uncached
):
    from alexkit.train import feature_cache

    caplog.set_level(logging.INFO, logger=CACHE_LOG)
    plain = uncached["history"][:3]
    monkeypatch.setattr(feature_cache, "free_disk_bytes", lambda _: 10_000)
    engine = _engine(tmp_path, "run", _head(3), views=2, memory=1000)
    seen = _models_trained(engine)
    history = engine.run_all()["history"]
    lines = _cache_lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("training: uncached")
    assert {kind for _, kind in seen} == {"whole"}
    assert _rows(history) == _rows(plain)


def _interrupt_at(global_step):
    def progress(event):
        if event["event"] == "batch" and (event["epoch"] - 1) * 4 + event["step"] == global_step:
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize(
    "step, memory",
    [(6, None), (15, None), (15, 1000)],  # in view 1's epoch; in epoch 4 (reads view 1)
    ids=["filling-a-view", "reading-a-view", "reading-from-disk"],
)
def test_resume_mid_stage_gives_the_uninterrupted_history(tmp_path, two_views, step, memory):
    reference = two_views(memory)["state"]
    with pytest.raises(Interrupted):
        _engine(
            tmp_path, "run", _head(5), views=2, memory=memory, progress=_interrupt_at(step)
        ).run_all()
    assert not (tmp_path / "run" / "feature-cache").exists()
    calls = []
    resumed = _engine(tmp_path, "run", _head(5), views=2, memory=memory, resume=True, calls=calls)
    state = resumed.run_all()
    # The views the rest of the stage reads are computed again from the seeded pipeline.
    # Resumed in epoch 2 (stage epoch 1, filling view 1) or epoch 4 (reading view 1): the
    # epoch's view comes from the pipeline again, then view 0 when epoch 3 or 5 needs it.
    assert calls == [(1, 4), (0, 4)]
    assert _rows(state["history"]) == _rows(reference["history"])
    assert state["best"] == reference["best"]


def test_views_and_budget_settings():
    from alexkit.train.feature_cache import DEFAULT_VIEWS, kept_views, memory_budget, resolve_views

    assert resolve_views(None) == DEFAULT_VIEWS > 0 and resolve_views(0) == 0
    with pytest.raises(UsageError, match="-1"):
        resolve_views(-1)
    assert memory_budget("") == 1 << 30
    assert memory_budget("512M") == 512 << 20 and memory_budget("2GiB") == 2 << 30
    assert memory_budget("1000") == 1000 and memory_budget("1.5k") == 1536
    with pytest.raises(UsageError, match="ALEXKIT_FEATURE_CACHE_MEMORY"):
        memory_budget("lots")
    # K=4 over 30 epochs keeps 4; over 5 epochs only view 0 is read again; K >= epochs: none.
    assert [kept_views(4, e) for e in (30, 5, 4, 3)] == [4, 1, 0, 0]


def test_cli_flag_reaches_finetune(monkeypatch):
    import alexkit.train as train
    from alexkit.cli import app
    from alexkit.train.feature_cache import DEFAULT_VIEWS

    got = {}

    def fake(*args, **kwargs):
        got.update(kwargs)
        raise typer.Exit(0)

    monkeypatch.setattr(train, "finetune", fake)
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", "--feature-cache-views", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert got["feature_cache_views"] == 3
    got.clear()
    runner.invoke(app, ["finetune", "-q"])
    assert got["feature_cache_views"] is None
    helped = runner.invoke(app, ["finetune", "--help"], terminal_width=200)
    assert "--feature-cache-views" in helped.output
    assert f"(default {DEFAULT_VIEWS})" in " ".join(helped.output.replace("│", " ").split())


def test_finetune_on_images_with_k_equal_to_epochs_sees_the_uncached_views(
    tmp_path, class_folder, tiny_weights, caplog
):
    """The real pipeline (random rotation and brightness of digits-fewshot) on the tiny
    AlexNet: K=3 over 3 head-only epochs trains as the uncached run, the cache cut at fc6
    (drop6 above it stays live)."""
    import json

    from conftest import tiny_recipe

    from alexkit.train import finetune

    caplog.set_level(logging.INFO, logger=CACHE_LOG)
    recipe = tiny_recipe("digits-fewshot", batch_size=8)
    runs = {
        views: finetune(
            recipe,
            class_folder,
            weights=tiny_weights,
            out=tmp_path / f"k{views}",
            epochs=3,
            seed=0,
            feature_cache_views=views,
        )  # fmt: skip
        for views in (0, 3)
    }
    lines = _cache_lines(caplog)
    assert len(lines) == 1 and "'fc6'" in lines[0] and "K=3 over 3 epochs" in lines[0]
    plain, cached = runs[0].history, runs[3].history
    assert len(plain) == len(cached) == 3 and len({r["loss"] for r in plain}) == 3
    for ours, theirs in zip(cached, plain, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
    config = json.loads((tmp_path / "k3" / "config.json").read_text())
    assert config["resolved"]["feature_cache_views"] == 3
    assert not (tmp_path / "k3" / "feature-cache").exists()
