"""LocalResponseNormalization, GroupedConv2D and Preprocess against TensorFlow's own ops."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexkit.layers import GroupedConv2D, LocalResponseNormalization, Preprocess


def _tf_lrn(x, radius=2, bias=2.0, alpha=1e-4, beta=0.75):
    return tf.nn.local_response_normalization(
        x, depth_radius=radius, bias=bias, alpha=alpha, beta=beta
    ).numpy()


def _rel_err(a, b):
    return float(np.max(np.abs(a - b) / (np.abs(b) + 1e-6)))


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6, 7, 96, 256])
def test_lrn_equals_tf_oracle(channels):
    rng = np.random.default_rng(channels)
    # Scale so that alpha * sum(a^2) is comparable to k: the normalisation really acts.
    x = (rng.standard_normal((2, 5, 4, channels)) * 60).astype("float32")
    ours = keras.ops.convert_to_numpy(LocalResponseNormalization()(x))
    assert _rel_err(ours, _tf_lrn(x)) <= 1e-5
    # The normalisation is not the identity on this data (the test can fail).
    assert np.max(np.abs(ours - x / 2**0.75)) > 1e-3


@pytest.mark.parametrize("radius,bias,alpha,beta", [(1, 1.0, 1e-3, 0.5), (3, 2.0, 1e-4, 0.75)])
def test_lrn_other_constants(radius, bias, alpha, beta):
    x = (np.random.default_rng(0).standard_normal((1, 3, 3, 11)) * 30).astype("float32")
    layer = LocalResponseNormalization(radius, bias, alpha, beta)
    ours = keras.ops.convert_to_numpy(layer(x))
    assert _rel_err(ours, _tf_lrn(x, radius, bias, alpha, beta)) <= 1e-5


def test_lrn_caffe_convention_divides_alpha_by_n():
    caffe = LocalResponseNormalization.caffe()
    assert (caffe.depth_radius, caffe.bias, caffe.beta) == (2, 1.0, 0.75)
    assert caffe.alpha == pytest.approx(2e-5)
    x = (np.random.default_rng(1).standard_normal((1, 2, 2, 9)) * 100).astype("float32")
    ours = keras.ops.convert_to_numpy(caffe(x))
    assert _rel_err(ours, _tf_lrn(x, 2, 1.0, 2e-5, 0.75)) <= 1e-5


def _value_and_grad(fn, x, weights):
    """fn(x) and d sum(fn(x) * weights) / dx, in float32 numpy."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(tf.cast(y, "float32") * weights)
    return (
        tf.cast(y, "float32").numpy(),
        tf.cast(tape.gradient(loss, x), "float32").numpy(),
    )


# 7: fewer channels than a window; 96 and 256: lrn1 and lrn2 (256 runs blocked, with halos);
# 160: blocked with 5 blocks; 130: >= 128 channels but no block size divides it.
@pytest.mark.parametrize("channels", [7, 96, 130, 160, 256])
@pytest.mark.parametrize(
    "radius,bias,alpha,beta",
    # The paper's; then each other exponent path (pow, rsqrt, reciprocal).
    [(2, 2.0, 1e-4, 0.75), (3, 1.0, 1e-3, 0.6), (1, 1.0, 1e-3, 0.5), (2, 1.5, 2e-4, 1.0)],
)
def test_lrn_value_and_gradient_equal_tf_in_float32(channels, radius, bias, alpha, beta):
    rng = np.random.default_rng(channels)
    x = (rng.standard_normal((2, 3, 3, channels)) * 60).astype("float32")
    weights = rng.standard_normal(x.shape).astype("float32")
    layer = LocalResponseNormalization(radius, bias, alpha, beta)

    def oracle(t):
        return tf.nn.local_response_normalization(t, radius, bias, alpha, beta)

    y, g = _value_and_grad(layer, x, weights)
    y_ref, g_ref = _value_and_grad(oracle, x, weights)
    assert _rel_err(y, y_ref) <= 1e-5
    # Gradients: relative 1e-5, with an absolute floor of 1e-5 of the largest entry where
    # the two terms of d/dx cancel to near zero.
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5 * np.abs(g_ref).max())
    # The cross-channel term matters here (else the test could not see a wrong backward).
    assert np.abs(g - weights * (y / x)).max() > 1e-3 * np.abs(g_ref).max()


def test_lrn_gradient_equals_tf():
    x = tf.constant(np.random.default_rng(2).standard_normal((2, 3, 3, 7)).astype("float32") * 50)
    weights = tf.constant(np.random.default_rng(3).standard_normal((2, 3, 3, 7)).astype("float32"))
    layer = LocalResponseNormalization()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(layer(x) * weights)
        ref = tf.reduce_sum(_tf_lrn_tensor(x) * weights)
    g_ours = tape.gradient(ours, x).numpy()
    g_ref = tape.gradient(ref, x).numpy()
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels", [96, 256])
def test_lrn_in_bfloat16_matches_tf_on_the_same_inputs(channels):
    """Under mixed_bfloat16 the layer computes in bfloat16: within 2 % of float32 math.

    The oracle is TensorFlow's LRN in float32 on the bfloat16-rounded input (and, for the
    gradient, the bfloat16-rounded upstream gradient). Tolerance: 2e-2 relative to each
    value plus 1e-2 of the largest, and a median relative error <= 0.5 %; bfloat16 keeps 8
    bits of mantissa (<= 0.2 % per rounding) and about five roundings reach the result.
    """
    rng = np.random.default_rng(channels)
    x = (rng.uniform(0, 1, (2, 4, 4, channels)) ** 2 * 300).astype("float32")  # ReLU-like
    x16 = tf.cast(tf.cast(x, "bfloat16"), "float32").numpy()
    weights = tf.cast(tf.cast(rng.standard_normal(x.shape), "bfloat16"), "float32")
    layer = LocalResponseNormalization(dtype="mixed_bfloat16")
    y, g = _value_and_grad(layer, tf.cast(x, "bfloat16"), weights)
    y_ref, g_ref = _value_and_grad(_tf_lrn_tensor, x16, weights)
    assert layer.compute_dtype == "bfloat16"
    np.testing.assert_allclose(y, y_ref, rtol=2e-2, atol=1e-2 * np.abs(y_ref).max())
    np.testing.assert_allclose(g, g_ref, rtol=2e-2, atol=1e-2 * np.abs(g_ref).max())
    assert np.median(np.abs(y - y_ref) / np.abs(y_ref)) <= 5e-3
    big = np.abs(g_ref) > 0.1 * np.abs(g_ref).max()
    assert np.median(np.abs(g - g_ref)[big] / np.abs(g_ref)[big]) <= 5e-3
    # The normalisation acts on this data (the comparison can fail).
    assert np.abs(y_ref - x16 / 2**0.75).max() > 0.05 * np.abs(y_ref).max()


def test_lrn_backward_ops_are_named_after_the_layer():
    """benchmarks/profile_step.py attributes the hand-written gradient by this name."""
    layer = LocalResponseNormalization(name="lrn7")
    x = tf.constant(np.ones((1, 2, 2, 8), "float32"))

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return tape.gradient(y, x)

    names = [op.name for op in grad.get_concrete_function(x).graph.get_operations()]
    assert any(name.startswith("lrn7_grad/") and "MatMul" in name for name in names)


def test_lrn_blocked_window_sum_equals_dense_band():
    """The blocked window sum (C >= 128) equals a plain numpy sum over the window."""
    layer = LocalResponseNormalization(depth_radius=2, alpha=1.0)
    layer.build((None, 256))
    assert layer._block < 256  # really the blocked path
    values = np.random.default_rng(9).uniform(0, 1, (3, 256)).astype("float32")
    padded = np.pad(values, [(0, 0), (2, 2)])
    expected = sum(padded[:, d : d + 256] for d in range(5))
    got = keras.ops.convert_to_numpy(layer._window_sum(values, layer._band_forward))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def _tf_lrn_tensor(x):
    return tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_lrn_under_mixed_precision(policy):
    x = (np.random.default_rng(4).standard_normal((1, 4, 4, 16)) * 200).astype("float32")
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = LocalResponseNormalization()
        out = layer(keras.ops.cast(x, layer.compute_dtype))
        assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
        got = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # float16: computed in float32 (squares of 600 would overflow), so input and output
    # rounding only. bfloat16: computed in bfloat16, ~5 roundings of <= 0.2 % each reach
    # the result: within 2 % everywhere, and typically (median) within 0.5 %.
    tol = 2e-2 if policy == "mixed_bfloat16" else 2e-3
    ref = _tf_lrn(
        keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(x, policy[6:]), "float32"))
    )
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    assert np.median(np.abs(got - ref) / np.abs(ref)) <= 5e-3


def test_lrn_config_round_trip():
    layer = LocalResponseNormalization(depth_radius=3, bias=1.5, alpha=2e-4, beta=0.5, name="n")
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.depth_radius, clone.bias, clone.alpha, clone.beta) == (3, 1.5, 2e-4, 0.5)


def test_lrn_survives_keras_save_load(tmp_path):
    inputs = keras.Input((4, 4, 6))
    model = keras.Model(inputs, LocalResponseNormalization(alpha=1e-2, name="lrn")(inputs))
    path = tmp_path / "lrn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(5).standard_normal((2, 4, 4, 6)).astype("float32") * 10
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert loaded.get_layer("lrn").alpha == 1e-2


@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, "valid")])
def test_grouped_conv_equals_keras_grouped_conv(stride, padding):
    x = np.random.default_rng(6).standard_normal((2, 9, 9, 8)).astype("float32")
    ref = keras.layers.Conv2D(6, 3, strides=stride, padding=padding, groups=2)
    expected = keras.ops.convert_to_numpy(ref(x))
    for implementation in ("split", "native"):
        ours = GroupedConv2D(
            6, 3, groups=2, strides=stride, padding=padding, implementation=implementation
        )
        ours.build(x.shape)
        assert tuple(ours.kernel.shape) == tuple(ref.kernel.shape) == (3, 3, 4, 6)
        ours.set_weights(ref.get_weights())
        got = keras.ops.convert_to_numpy(ours(x))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert got.shape == tuple(ours.compute_output_shape(x.shape))


def test_grouped_conv_groups_are_independent():
    # Output channels of group 0 must not depend on input channels of group 1.
    layer = GroupedConv2D(4, 1, groups=2, implementation="split")
    x = np.zeros((1, 2, 2, 4), "float32")
    layer.build(x.shape)
    x2 = x.copy()
    x2[..., 2:] = 5.0
    a = keras.ops.convert_to_numpy(layer(x))
    b = keras.ops.convert_to_numpy(layer(x2))
    np.testing.assert_array_equal(a[..., :2], b[..., :2])
    assert not np.allclose(a[..., 2:], b[..., 2:])


def test_grouped_conv_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible by groups"):
        GroupedConv2D(5, 3, groups=2)
    with pytest.raises(ValueError, match="implementation"):
        GroupedConv2D(4, 3, implementation="fast")


def test_preprocess_is_mean_std_and_has_no_params():
    layer = Preprocess((10.0, 20.0, 30.0), (2.0, 4.0, 5.0))
    x = np.full((1, 2, 2, 3), 50.0, "float32")
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got[0, 0, 0], [20.0, 7.5, 4.0])
    assert layer.count_params() == 0
