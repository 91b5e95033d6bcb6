"""PaperSGD against a hand computation of the paper's rule; schedules; serialisation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from alexkit.errors import CheckpointError, UsageError  # noqa: E402
from alexkit.optim import (  # noqa: E402
    LRScheduleCallback,
    PaperSGD,
    PlateauSchedule,
    StepSchedule,
    build_lr_schedule,
    schedule_from_state,
    step_lr,
)

LR, MU, WD = 0.1, 0.9, 0.05  # large decay so that a wrong formula is far off


def _tiny_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    w0 = rng.normal(size=(3, 2)).astype("float32")
    b0 = rng.normal(size=(2,)).astype("float32")
    return x, y, w0, b0


def _grads(x, y, w, b):
    """Gradient of mean((xW + b - y)^2) over all elements, by hand."""
    r = x @ w + b - y
    scale = 2.0 / r.size
    return scale * x.T @ r, scale * r.sum(axis=0)


def _paper_steps(x, y, w, b, steps, decay_biases=True):
    """v ← μv − λεw − εg; w ← w + v, in float64 numpy."""
    w, b = w.astype("float64"), b.astype("float64")
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(steps):
        gw, gb = _grads(x, y, w, b)
        vw = MU * vw - WD * LR * w - LR * gw
        vb = MU * vb - (WD * LR * b if decay_biases else 0.0) - LR * gb
        w, b = w + vw, b + vb
    return w, b


def _keras_steps(optimizer, x, y, w0, b0, steps):
    import tensorflow as tf

    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    layer.set_weights([w0, b0])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.ops.square(layer(x) - y))
        grads = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply(grads, layer.trainable_variables)
    return [np.asarray(v) for v in layer.get_weights()]


@pytest.mark.parametrize("decay_biases", [True, False])
def test_paper_sgd_matches_two_hand_computed_steps(decay_biases):
    x, y, w0, b0 = _tiny_problem()
    opt = PaperSGD(learning_rate=LR, momentum=MU, weight_decay=WD, decay_biases=decay_biases)
    w, b = _keras_steps(opt, x, y, w0, b0, steps=2)
    w_ref, b_ref = _paper_steps(x, y, w0, b0, steps=2, decay_biases=decay_biases)
    np.testing.assert_allclose(w, w_ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(b, b_ref, atol=1e-6, rtol=0)
    # The decay actually matters at this size (guards against a no-op decay term).
    assert np.abs(w_ref - _sgd_no_decay(x, y, w0, b0, 2)[0]).max() > 1e-3


def _sgd_no_decay(x, y, w, b, steps):
    w, b = w.astype("float64"), b.astype("float64")
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(steps):
        gw, gb = _grads(x, y, w, b)
        vw, vb = MU * vw - LR * gw, MU * vb - LR * gb
        w, b = w + vw, b + vb
    return w, b


def test_keras_decoupled_weight_decay_is_not_the_paper_rule():
    """Keras' SGD(weight_decay=λ) shrinks w by ελw outside the velocity.

    From zero velocity the first step coincides with the paper's; from the second on
    the paper's velocity carries μ·(−λεw) and Keras' does not, so they diverge.
    """
    x, y, w0, b0 = _tiny_problem()
    kw1, _ = _keras_steps(
        keras.optimizers.SGD(learning_rate=LR, momentum=MU, weight_decay=WD), x, y, w0, b0, 1
    )
    np.testing.assert_allclose(kw1, _paper_steps(x, y, w0, b0, 1)[0], atol=1e-6)
    kw2, _ = _keras_steps(
        keras.optimizers.SGD(learning_rate=LR, momentum=MU, weight_decay=WD), x, y, w0, b0, 2
    )
    w_ref, _ = _paper_steps(x, y, w0, b0, 2)
    # The gap is the missing momentum of the first step's decay: μ·λ·ε·w0 (to first order).
    gap = np.abs(kw2 - w_ref).max()
    assert gap > 50 * 1e-6
    np.testing.assert_allclose(kw2 - w_ref, MU * WD * LR * w0, rtol=0.05, atol=2e-4)


def test_paper_sgd_config_round_trip_and_validation():
    opt = PaperSGD(learning_rate=0.02, momentum=0.8, weight_decay=1e-3, decay_biases=False)
    config = opt.get_config()
    assert config["weight_decay"] == 1e-3 and config["momentum"] == 0.8
    again = PaperSGD.from_config(json.loads(json.dumps(config)))
    assert again.get_config() == config
    assert again.weight_decay is None  # Keras' decoupled decay is never switched on
    with pytest.raises(UsageError, match="momentum"):
        PaperSGD(momentum=1.0)
    with pytest.raises(UsageError, match="weight_decay"):
        PaperSGD(weight_decay=-1.0)


def test_saved_compiled_model_with_paper_sgd_reloads(tmp_path):
    x, y, w0, b0 = _tiny_problem()
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=PaperSGD(learning_rate=LR, weight_decay=WD), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, PaperSGD)
    assert loaded.optimizer.coupled_weight_decay == WD
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Training continues identically from the reloaded optimizer state (velocity kept).
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_paper_sgd_is_backend_agnostic_under_jax(tmp_path):
    pytest.importorskip("jax")
    x, y, w0, b0 = _tiny_problem()
    np.savez(tmp_path / "p.npz", x=x, y=y, w0=w0, b0=b0)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras
        from alexkit.optim import PaperSGD
        d = np.load({str(tmp_path / "p.npz")!r})
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        model.layers[-1].set_weights([d["w0"], d["b0"]])
        model.compile(optimizer=PaperSGD(learning_rate={LR}, momentum={MU},
                      weight_decay={WD}), loss="mse")
        model.fit(d["x"], d["y"], batch_size=8, epochs=2, shuffle=False, verbose=0)
        np.savez({str(tmp_path / "out.npz")!r}, *model.layers[-1].get_weights())
        """
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    out = np.load(tmp_path / "out.npz")
    w_ref, b_ref = _paper_steps(x, y, w0, b0, steps=2)
    np.testing.assert_allclose(out["arr_0"], w_ref, atol=1e-6)
    np.testing.assert_allclose(out["arr_1"], b_ref, atol=1e-6)


def test_step_schedule_divides_by_ten_every_30_epochs():
    # Exact decimal values (no 1.0000000000000003e-05 drift).
    assert [step_lr(e) for e in (0, 29, 30, 59, 60, 90)] == [0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-5]
    sched = build_lr_schedule("step", 0.1, step_epochs=2, factor=0.5)
    assert [sched.lr_for_epoch(e) for e in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert schedule_from_state(sched.state_dict()) == sched
    with pytest.raises(UsageError, match="patience"):
        build_lr_schedule("step", 0.1, patience=3)
    with pytest.raises(UsageError, match="cosine"):
        build_lr_schedule("cosine")


def test_plateau_schedule_reduces_after_patience_and_resumes_from_state():
    errors = [0.9, 0.8, 0.8, 0.81, 0.7, 0.75, 0.7, 0.72, 0.71, 0.7, 0.7, 0.7]
    full = PlateauSchedule(base_lr=0.01, patience=2, min_lr=1e-4)
    lrs = [full.end_epoch(e, err) for e, err in enumerate(errors)]
    # Improvements at epochs 0, 1, 4; plateaus end at epochs 3 (2 bad) and 6 (2 bad);
    # at epoch 8 the next reduction would go below min_lr: it stays at the floor 1e-4.
    expected = [0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4]
    assert lrs == expected  # exact: the floor is reached without float drift
    assert full.reductions == 2

    # Stop after 5 epochs, serialise through JSON, resume: same trajectory.
    first = PlateauSchedule(base_lr=0.01, patience=2, min_lr=1e-4)
    for e, err in enumerate(errors[:5]):
        first.end_epoch(e, err)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = schedule_from_state(state)
    rest = [resumed.end_epoch(e, err) for e, err in enumerate(errors[5:], start=5)]
    assert rest == pytest.approx(expected[5:])
    assert resumed.state_dict() == full.state_dict()
    # No validation this epoch: state unchanged.
    assert resumed.end_epoch(12, None) == pytest.approx(1e-4)
    with pytest.raises(CheckpointError, match="plateau"):
        PlateauSchedule().load_state_dict(StepSchedule().state_dict())


def test_lr_schedule_callback_sets_optimizer_rate_during_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer=PaperSGD(learning_rate=0.5), loss="sparse_categorical_crossentropy")
    cb = LRScheduleCallback(StepSchedule(base_lr=0.5, step_epochs=1, factor=0.1), monitor="loss")
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[cb])
    assert history.history["lr"] == pytest.approx([0.5, 0.05, 0.005])
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005)
