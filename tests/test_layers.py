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
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-4, atol=1e-6)


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
    # Low-precision input and output rounding only (squares of 600 would overflow fp16).
    tol = 1e-2 if policy == "mixed_bfloat16" else 2e-3
    ref = _tf_lrn(
        keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(x, policy[6:]), "float32"))
    )
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


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
