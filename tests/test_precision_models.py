"""model_with_precision: a loaded model rebuilt to compute in bfloat16 (or back in float32).

Oracles: the same network built by ``build_alexnet`` under Keras' global
``mixed_bfloat16`` policy (what pretrain does) gives the per-layer policies and the
outputs the rebuild must give; float32 must reproduce the original bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from alexkit.errors import UsageError
from alexkit.loading import apply_precision, layer_policies, load_trained, model_with_precision
from alexkit.precision import PrecisionChoice

SIZE = 67  # the smallest input the original layout's conv1..pool5 accept with room to spare


def small_alexnet(*, seed: int = 0, activation: str | None = "softmax", classes: int = 5):
    """AlexNet's real layers (Preprocess, LRN, GroupedConv2D, pools) on a 67×67 input, with a
    narrow fc7 and a float32 ``predictions`` head as ``build_alexnet`` makes it. Built under
    whatever dtype policy is global, like ``build_alexnet`` itself."""
    import keras

    from alexkit.model import build_alexnet

    base = build_alexnet(
        "original", include_top=False, input_shape=(SIZE, SIZE, 3), seed=seed, kernel_init="he"
    )
    x = keras.layers.Flatten(name="flatten")(base.output)
    x = keras.layers.Dense(
        64, activation="relu", name="fc7", kernel_initializer=keras.initializers.HeNormal(seed)
    )(x)
    out = keras.layers.Dense(
        classes,
        activation=activation,
        name="predictions",
        dtype="float32",
        kernel_initializer=keras.initializers.GlorotNormal(seed + 1),
    )(x)
    return keras.Model(base.input, out, name="small_alexnet")


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).uniform(0, 255, (8, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def logits_model():
    return small_alexnet(activation=None)


def under_global_policy(policy, build):
    import keras

    before = keras.mixed_precision.dtype_policy().name
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        return build()
    finally:
        keras.mixed_precision.set_dtype_policy(before)


def test_bf16_rebuild_equals_a_model_built_under_the_global_policy(logits_model, pixels):
    rebuilt = model_with_precision(logits_model, "mixed_bfloat16")
    reference = under_global_policy("mixed_bfloat16", lambda: small_alexnet(activation=None))
    reference.set_weights(logits_model.get_weights())
    policies = layer_policies(rebuilt)
    assert policies == layer_policies(reference)
    # bfloat16 compute everywhere but the head: Preprocess (float32 inside, bf16 out),
    # LRN, the grouped convolutions, the pools and fc7.
    assert policies.pop("predictions") == "float32"
    assert set(policies) >= {"preprocess", "conv1", "lrn1", "conv2", "lrn2", "conv5", "fc7"}
    assert set(policies.values()) == {"mixed_bfloat16"}
    assert rebuilt.get_layer("conv2").compute_dtype == "bfloat16"
    assert rebuilt.get_layer("conv2").variable_dtype == "float32"
    # Same graph, same weights, same policies: the same numbers.
    np.testing.assert_array_equal(
        rebuilt.predict_on_batch(pixels), reference.predict_on_batch(pixels)
    )
    # The weights were copied, not re-initialised, and are still float32.
    for a, b in zip(rebuilt.get_weights(), logits_model.get_weights(), strict=True):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_bf16_output_is_close_to_float32_and_not_equal(logits_model, pixels):
    fp32 = logits_model.predict_on_batch(pixels)
    bf16 = model_with_precision(logits_model, "bf16").predict_on_batch(pixels)
    assert bf16.dtype == np.float32  # the head computes in float32
    rel = np.linalg.norm(bf16 - fp32, axis=1) / np.linalg.norm(fp32, axis=1)
    # bfloat16 keeps 8 significant bits: each rounding of a layer's output is off by at
    # most 2**-8 (0.39 %) relative. Eight layers round their output in bfloat16 on the way
    # to the logits (preprocess, conv1, lrn1, conv2, lrn2, conv3-5 pooled, fc7): errors
    # adding up in the worst case give 8 × 0.39 % ≈ 3 %; seen here 0.5-0.8 %.
    assert rel.max() < 3e-2
    assert rel.max() > 1e-4  # it really computed in bfloat16


def test_float32_is_bit_exact_after_a_round_trip_through_bf16(logits_model, pixels):
    fp32 = logits_model.predict_on_batch(pixels)
    assert model_with_precision(logits_model, "float32") is logits_model  # nothing to do
    there = model_with_precision(logits_model, "mixed_bfloat16")
    assert model_with_precision(there, "mixed_bfloat16") is there
    back = model_with_precision(there, "float32")
    assert back is not logits_model
    assert set(layer_policies(back).values()) == {"float32"}
    np.testing.assert_array_equal(back.predict_on_batch(pixels), fp32)
    assert [w.name for w in back.weights] == [w.name for w in logits_model.weights]


def test_a_loaded_keras_file_is_rebuilt_both_ways(tmp_path, pixels):
    model = small_alexnet(seed=3)
    model.save(tmp_path / "model.keras")
    loaded, names, _ = load_trained(tmp_path / "model.keras")
    assert names == ["0", "1", "2", "3", "4"]
    assert set(layer_policies(loaded).values()) == {"float32"}  # why a rebuild is needed
    bf16 = model_with_precision(loaded, "mixed_bfloat16")
    assert layer_policies(bf16)["lrn2"] == "mixed_bfloat16"
    p32, pbf = model.predict_on_batch(pixels), bf16.predict_on_batch(pixels)
    np.testing.assert_allclose(pbf.sum(axis=1), 1.0, atol=1e-5)  # a float32 softmax
    # |Δp| <= max|Δlogit| / 2 (softmax's Jacobian has infinity-norm <= 1/2) and the logits
    # are a few units here: 3 % of them is well under 0.1.
    assert np.abs(pbf - p32).max() < 0.1
    # A model saved in bfloat16 loads in bfloat16; float32 brings the original back exactly.
    bf16.save(tmp_path / "bf16.keras")
    again, _, _ = load_trained(tmp_path / "bf16.keras")
    assert layer_policies(again) == layer_policies(bf16)
    np.testing.assert_array_equal(again.predict_on_batch(pixels), pbf)
    np.testing.assert_array_equal(
        model_with_precision(again, "float32").predict_on_batch(pixels), p32
    )


def test_sequential_and_nested_models_are_rebuilt(pixels):
    import keras

    from alexkit.layers import LocalResponseNormalization, Preprocess

    inner = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            Preprocess([120.0, 115.0, 100.0], [58.0, 57.0, 57.0], name="preprocess"),
            keras.layers.Conv2D(8, 5, strides=4, activation="relu", name="conv1"),
            LocalResponseNormalization(name="lrn1"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
        ],
        name="trunk",
    )
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(3, name="predictions", dtype="float32")(inner(inputs))
    nested = keras.Model(inputs, outputs)
    rebuilt = model_with_precision(nested, "mixed_bfloat16")
    assert layer_policies(rebuilt) == {
        "trunk/preprocess": "mixed_bfloat16",
        "trunk/conv1": "mixed_bfloat16",
        "trunk/lrn1": "mixed_bfloat16",
        "trunk/gap": "mixed_bfloat16",
        "predictions": "float32",
    }
    fp32, bf16 = nested.predict_on_batch(pixels), rebuilt.predict_on_batch(pixels)
    assert np.abs(bf16 - fp32).max() <= 3e-2 * np.abs(fp32).max()
    np.testing.assert_array_equal(
        model_with_precision(rebuilt, "float32").predict_on_batch(pixels), fp32
    )


def test_exported_models_run_as_exported():
    class Exported:  # what load_trained returns for .onnx/.tflite: a card, no Keras config
        card = {"format": "onnx"}

    exported = Exported()
    assert model_with_precision(exported, "float32") is exported
    with pytest.raises(UsageError, match="exported model runs in the precision"):
        model_with_precision(exported, "mixed_bfloat16")
    # auto never fails there: the file runs as exported, and the recorded choice says so.
    auto = PrecisionChoice("auto", "mixed_bfloat16", "auto: CPU X has avx512_bf16")
    same, choice = apply_precision(exported, auto)
    assert same is exported
    assert choice.as_dict() == {
        "requested": "auto",
        "policy": "float32",
        "reason": "auto: an exported model runs as it was exported",
    }
    with pytest.raises(UsageError, match="exported model runs in the precision"):
        apply_precision(exported, "bf16")  # asked for by name: refused, not ignored


def test_unknown_precision_is_a_usage_error(logits_model):
    with pytest.raises(UsageError, match="unknown precision 'int8'"):
        model_with_precision(logits_model, "int8")
