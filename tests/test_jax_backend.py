"""The model code is backend-agnostic: the same weights give the same numbers under JAX.

Keras picks its backend at import, so the JAX side runs in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from alexkit.model import build_alexnet

# One JAX process for both tests below: starting JAX, Keras and alexkit costs seconds.
JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import jax.numpy as jnp
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from alexkit.layers import LocalResponseNormalization
    from alexkit.model import build_alexnet
    folder, variants = sys.argv[1], sys.argv[2].split(",")
    data = np.load(folder + "/in.npz")
    results = {"lrn": np.asarray(LocalResponseNormalization()(data["lrn_x"]))}
    for variant in variants:
        model = build_alexnet(variant, num_classes=7)
        model.load_weights(folder + f"/{variant}.weights.h5")
        results[variant] = np.asarray(model(data[variant + "_x"], training=False))
        del model
    loaded = keras.saving.load_model(folder + "/tiny.keras")
    results["tiny_loaded"] = np.asarray(loaded(data["tiny_x"], training=False))
    # The hand-written LRN gradient (keras.ops.custom_gradient), fp32 and bf16.
    for name in ("c13", "c256"):
        x, w = jnp.asarray(data[name + "_x"]), jnp.asarray(data[name + "_w"])
        for policy in ("float32", "mixed_bfloat16"):
            layer = LocalResponseNormalization(dtype=policy)
            xin = x.astype(layer.compute_dtype)
            def loss(t):
                return jnp.sum(layer(t).astype("float32") * w)
            value, grad = jax.value_and_grad(loss)(xin)
            results[f"{name}_{policy}_y"] = np.asarray(layer(xin).astype("float32"))
            results[f"{name}_{policy}_g"] = np.asarray(grad.astype("float32"))
    np.savez(folder + "/out.npz", **results)
    """
)


def _he_weights(model, rng):
    """Make activations non-trivial: the paper's N(0, 0.01) init fades to ~0 by fc8."""
    for layer in model.layers:
        if layer.weights:
            kernel = layer.weights[0]
            fan_in = int(np.prod(kernel.shape[:-1]))
            w = rng.standard_normal(kernel.shape).astype("float32") * np.sqrt(2.0 / fan_in)
            layer.weights[0].assign(w)


def _tf_and_jax(folder, variants):
    """(TensorFlow's results, the JAX process's results) for the full-size ``variants``,
    the tiny variant's saved file, and LRN's value and gradient."""
    pytest.importorskip("jax", reason="jax is in the dev extra; CI installs it")
    rng = np.random.default_rng(0)
    inputs = {"lrn_x": (rng.standard_normal((2, 3, 3, 13)) * 80).astype("float32")}
    expected = {
        "lrn": tf.nn.local_response_normalization(
            inputs["lrn_x"], depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75
        ).numpy()
    }
    # AlexNet itself: built under JAX, given the same weights, same numbers.
    for variant in variants:
        size = {"original": 227, "torchvision": 224}[variant]
        model = build_alexnet(variant, num_classes=7, seed=1)
        _he_weights(model, rng)
        model.save_weights(folder / f"{variant}.weights.h5")
        x = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
        inputs[f"{variant}_x"] = x
        expected[variant] = model(x, training=False).numpy()
        del model
    # A saved .keras loads under JAX: every custom layer's config (Preprocess, LRN, grouped
    # convs) round-trips. The tiny variant holds each of them (the original layout at 1/8
    # width), so the full-size files (~230 MB each, once more per variant) are not needed.
    model = build_alexnet("tiny", num_classes=7, seed=1)
    _he_weights(model, rng)
    model.save(folder / "tiny.keras")
    inputs["tiny_x"] = rng.uniform(0, 255, (2, 99, 99, 3)).astype("float32")
    expected["tiny"] = model(inputs["tiny_x"], training=False).numpy()
    # LRN value and gradient, TensorFlow's own op as the oracle.
    rng = np.random.default_rng(7)
    for name, channels in (("c13", 13), ("c256", 256)):  # dense band; blocked band
        x = (rng.uniform(0, 1, (2, 3, 3, channels)) ** 2 * 300).astype("float32")
        w = rng.standard_normal(x.shape).astype("float32")
        inputs[name + "_x"], inputs[name + "_w"] = x, w
        for policy, dtype in (("float32", tf.float32), ("mixed_bfloat16", tf.bfloat16)):
            # The oracle sees what the layer sees: the input rounded to the compute dtype.
            xt = tf.cast(tf.cast(tf.constant(x), dtype), tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                y = tf.nn.local_response_normalization(xt, 2, 2.0, 1e-4, 0.75)
                loss = tf.reduce_sum(y * w)
            expected[f"{name}_{policy}_y"] = y.numpy()
            expected[f"{name}_{policy}_g"] = tape.gradient(loss, xt).numpy()
    np.savez(folder / "in.npz", **inputs)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(folder), ",".join(variants)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return expected, dict(np.load(folder / "out.npz"))


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """The 2012 network (LRN, grouped convolutions) at full size, in every run."""
    return _tf_and_jax(tmp_path_factory.mktemp("jax"), ["original"])


def _assert_models_equal(expected, got, variants):
    np.testing.assert_allclose(got["lrn"], expected["lrn"], rtol=1e-5, atol=1e-6)
    for variant in variants:
        assert expected[variant].std() > 1e-3  # a real, non-uniform softmax
        np.testing.assert_allclose(got[variant], expected[variant], rtol=1e-4, atol=1e-5)
    assert expected["tiny"].std() > 1e-3
    np.testing.assert_allclose(got["tiny_loaded"], expected["tiny"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_model_and_lrn_identical_under_jax(jax_run):
    _assert_models_equal(*jax_run, ["original"])


# The torchvision layout is plain Keras layers (no LRN, no groups) plus Preprocess, which
# the tiny model above already round-trips: its full-size JAX check (~10 CPU-s of random
# init and compilation) is opt-in, `pytest -m heavy`.
@pytest.mark.heavy
def test_torchvision_layout_identical_under_jax(tmp_path):
    _assert_models_equal(*_tf_and_jax(tmp_path, ["torchvision"]), ["torchvision"])


@pytest.mark.slow
def test_lrn_value_and_gradient_under_jax_equal_tf(jax_run):
    """The hand-written gradient (keras.ops.custom_gradient) under JAX, fp32 and bf16."""
    expected, got = jax_run
    keys = [k for k in expected if k.startswith(("c13_", "c256_"))]
    assert len(keys) == 8
    for key in keys:
        ref = expected[key]
        # fp32: 1e-5; bf16 (computed in bfloat16, see tests/test_layers.py): 2e-2.
        tol = 1e-5 if "_float32_" in key else 2e-2
        np.testing.assert_allclose(
            got[key], ref, rtol=tol, atol=tol * np.abs(ref).max(), err_msg=key
        )
