"""AlexNet's structure checked against REFERENCE.md: shapes, parameter counts, init, heads."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from alexkit.model import (
    VARIANTS,
    build_alexnet,
    feature_extractor,
    freeze,
    replace_head,
    variant_of,
)

# REFERENCE.md: per-stage output shapes and parameters of the 2012 network.
ORIGINAL_STAGES = {
    "conv1": ((55, 55, 96), 34_944),
    "pool1": ((27, 27, 96), 0),
    "conv2": ((27, 27, 256), 307_456),
    "pool2": ((13, 13, 256), 0),
    "conv3": ((13, 13, 384), 885_120),
    "conv4": ((13, 13, 384), 663_936),
    "conv5": ((13, 13, 256), 442_624),
    "pool5": ((6, 6, 256), 0),
    "flatten": ((9216,), 0),
    "fc6": ((4096,), 37_752_832),
    "fc7": ((4096,), 16_781_312),
    "predictions": ((1000,), 4_097_000),
}


@pytest.fixture(scope="module")
def original():
    return build_alexnet("original", seed=0)


@pytest.fixture(scope="module")
def torchvision_model():
    return build_alexnet("torchvision", seed=0)


@pytest.fixture(scope="module")
def tiny():
    return build_alexnet("tiny", seed=0)


# The tiny variant: the 2012 layout at 1/8 of the widths on a 99x99 input, computed by hand
# (valid 11x11/4 conv1: (99 - 11) / 4 + 1 = 23; each 3/2 pool: (n - 3) // 2 + 1).
TINY_STAGES = {
    "conv1": ((23, 23, 12), 11 * 11 * 3 * 12 + 12),
    "lrn1": ((23, 23, 12), 0),
    "pool1": ((11, 11, 12), 0),
    "conv2": ((11, 11, 32), 5 * 5 * 6 * 32 + 32),  # 2 groups: 6 input channels each
    "lrn2": ((11, 11, 32), 0),
    "pool2": ((5, 5, 32), 0),
    "conv3": ((5, 5, 48), 3 * 3 * 32 * 48 + 48),
    "conv4": ((5, 5, 48), 3 * 3 * 24 * 48 + 48),  # grouped
    "conv5": ((5, 5, 32), 3 * 3 * 24 * 32 + 32),  # grouped
    "pool5": ((2, 2, 32), 0),
    "flatten": ((128,), 0),
    "fc6": ((128,), 128 * 128 + 128),
    "fc7": ((128,), 128 * 128 + 128),
    "predictions": ((1000,), 128 * 1000 + 1000),
}


def test_original_stage_shapes_and_params(original):
    for name, (shape, params) in ORIGINAL_STAGES.items():
        layer = original.get_layer(name)
        assert tuple(layer.output.shape[1:]) == shape, name
        assert layer.count_params() == params, name
    assert original.count_params() == 60_965_224
    assert tuple(original.input_shape[1:]) == (227, 227, 3)


def test_original_grouped_kernels_have_bvlc_shapes(original):
    assert tuple(original.get_layer("conv2").kernel.shape) == (5, 5, 48, 256)
    assert tuple(original.get_layer("conv4").kernel.shape) == (3, 3, 192, 384)
    assert tuple(original.get_layer("conv5").kernel.shape) == (3, 3, 192, 256)


def test_original_without_groups_would_have_more_params():
    # REFERENCE.md: 62,378,344 without groups; recompute from ungrouped kernels.
    ungrouped = 60_965_224 + (5 * 5 * 48 * 256) + (3 * 3 * 192 * 384) + (3 * 3 * 192 * 256)
    assert ungrouped == 62_378_344


def test_lrn_constants_paper_and_caffe(original):
    lrn = original.get_layer("lrn1")
    assert (lrn.depth_radius, lrn.bias, lrn.alpha, lrn.beta) == (2, 2.0, 1e-4, 0.75)
    caffe = build_alexnet("original", lrn="caffe", include_top=False)
    assert caffe.get_layer("lrn2").alpha == pytest.approx(2e-5)
    assert caffe.get_layer("lrn2").bias == 1.0


def test_torchvision_params_and_shapes(torchvision_model):
    assert torchvision_model.count_params() == 61_100_840
    assert tuple(torchvision_model.input_shape[1:]) == (224, 224, 3)
    assert tuple(torchvision_model.get_layer("conv1").output.shape[1:]) == (55, 55, 64)
    assert tuple(torchvision_model.get_layer("pool5").output.shape[1:]) == (6, 6, 256)
    names = [layer.name for layer in torchvision_model.layers]
    assert "lrn1" not in names and names.index("drop6") < names.index("fc6")
    assert variant_of(torchvision_model) == "torchvision"


@pytest.mark.parametrize(
    "classes,total", [(2, 56_876_418), (38, 57_023_910), (10, 56_868_224 + 4097 * 10)]
)
def test_new_head_param_count(original, classes, total):
    assert build_alexnet("original", num_classes=classes).count_params() == total
    assert replace_head(original, classes).count_params() == total


def test_paper_init(original):
    for name in ("conv1", "conv3", "predictions"):
        assert not np.any(original.get_layer(name).bias.numpy())
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        np.testing.assert_array_equal(original.get_layer(name).bias.numpy(), 1.0)
    w = original.get_layer("fc6").kernel.numpy()
    assert abs(float(w.mean())) < 1e-4
    assert float(w.std()) == pytest.approx(0.01, rel=0.01)
    caffe = build_alexnet("original", bias_init="caffe", num_classes=3)
    np.testing.assert_allclose(caffe.get_layer("fc7").bias.numpy(), 0.1)


def test_preprocess_uses_variant_mean_std(original, torchvision_model):
    assert original.get_layer("preprocess").mean == pytest.approx(
        list(VARIANTS["original"]["mean"])
    )
    std = torchvision_model.get_layer("preprocess").std
    assert std == pytest.approx([0.229 * 255, 0.224 * 255, 0.225 * 255])


def test_every_variant_is_tested():
    assert sorted(VARIANTS) == ["original", "tiny", "torchvision"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_table_describes_the_built_model(variant, original, torchvision_model, tiny):
    # alexkit.variants is what recipes and weights read without Keras: it must match the model.
    from alexkit.variants import IMAGE_SIZES, WEIGHT_LAYERS

    model = {"original": original, "torchvision": torchvision_model, "tiny": tiny}[variant]
    spec = VARIANTS[variant]
    public = [layer.name for layer in model.layers if layer.name in VARIANTS["original"]["layers"]]
    assert tuple(public) == spec["layers"]
    assert [n for n in public if model.get_layer(n).weights] == list(WEIGHT_LAYERS)
    assert model.count_params() == spec["params"]
    size = IMAGE_SIZES[variant]
    assert size == spec["image_size"] and tuple(model.input_shape[1:]) == (size, size, 3)
    assert tuple(model.get_layer("pool5").output.shape[1:]) == spec["pool5"]
    widths = [model.get_layer(f"conv{i}").filters for i in range(1, 6)]
    assert tuple(widths) == spec["widths"]
    assert model.get_layer("fc6").units == model.get_layer("fc7").units == spec["fc_units"]
    assert variant_of(model) == variant
    assert ("lrn1" in public) == (spec["layout"] == "original")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_of_a_saved_config_without_keras(variant, original, torchvision_model, tiny):
    # finetune reads a .keras file's variant from its config.json before building anything.
    import json

    from alexkit.variants import variant_of_config

    model = {"original": original, "torchvision": torchvision_model, "tiny": tiny}[variant]
    config = json.dumps(keras.saving.serialize_keras_object(model))
    assert variant_of_config(config) == variant
    assert variant_of_config(json.loads(config)) == variant
    headless = replace_head(model, 3)
    assert variant_of_config(json.dumps(keras.saving.serialize_keras_object(headless))) == variant


def test_variants_module_imports_no_keras_or_numpy():
    import subprocess
    import sys

    code = (
        "import sys, alexkit.variants\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_replace_head_keeps_lower_weights_bit_identical(original):
    before = {w.path: w.numpy().copy() for w in original.weights if "predictions" not in w.path}
    new = replace_head(original, 5, dropout=0.3, hidden_units=64, seed=1)
    assert new.output_shape == (None, 5)
    after = {w.path: w.numpy() for w in new.weights}
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value)
    assert new.get_layer("head_hidden").units == 64


def test_freeze_by_layer_name(original):
    model = replace_head(original, 3)
    freeze(model, trainable_from="conv4")
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable == {"conv4", "conv5", "fc6", "fc7", "predictions"}
    freeze(model)
    assert {layer.name for layer in model.layers if layer.trainable and layer.weights} == {
        "predictions"
    }
    with pytest.raises(ValueError, match="trainable_from"):
        freeze(model, trainable_from="conv9")
    for layer in model.layers:
        layer.trainable = True


def test_feature_extractor_matches_layer_output(original):
    x = np.random.default_rng(0).uniform(0, 255, (2, 227, 227, 3)).astype("float32")
    fc7 = feature_extractor(original, "fc7")(x)
    pool5 = feature_extractor(original, "pool5")(x)
    pooled = feature_extractor(original, "conv5", pool="avg")(x)
    assert fc7.shape == (2, 4096) and pool5.shape == (2, 9216) and pooled.shape == (2, 256)
    conv5 = keras.Model(original.inputs, original.get_layer("conv5").output)(x)
    np.testing.assert_allclose(pooled, keras.ops.mean(conv5, axis=(1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", ["conv1", "lrn1", "fc7", "predictions"])
def test_folding_preprocess_into_conv1_keeps_the_function(original, layer):
    """Inference extractors fold mean/std into conv1 (valid padding): same outputs as
    the unfolded sub-model (the oracle), one layer fewer, conv1's own weights intact."""
    x = np.random.default_rng(1).uniform(0, 255, (2, 227, 227, 3)).astype("float32")
    want = np.asarray(feature_extractor(original, layer)(x))
    kernel = original.get_layer("conv1").get_weights()[0].copy()
    for _ in range(2):  # layers reused by an earlier extractor still fold
        folded = feature_extractor(original, layer, fold_preprocess=True)
        names = [lyr.name for lyr in folded.layers]
        assert "preprocess" not in names and names[1] == "conv1_folded"
        got = np.asarray(folded(x))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    np.testing.assert_array_equal(original.get_layer("conv1").get_weights()[0], kernel)


def test_folding_is_skipped_where_it_would_not_be_exact():
    """torchvision pads conv1 (normalised zeros are not raw zeros): nothing folds; nor
    does a request for the preprocess layer itself."""
    tv = build_alexnet("torchvision", num_classes=3)
    names = [lyr.name for lyr in feature_extractor(tv, "fc7", fold_preprocess=True).layers]
    assert names[:3] == ["image", "preprocess", "conv1_pad"]
    model = build_alexnet("original", num_classes=3)
    names = [
        lyr.name for lyr in feature_extractor(model, "preprocess", fold_preprocess=True).layers
    ]
    assert names == ["image", "preprocess", "preprocess_flat"]


def test_keras_round_trip_identical_outputs(tmp_path):
    model = build_alexnet("original", num_classes=4, seed=3)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(1).uniform(0, 255, (2, 227, 227, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"variant": "alexnet2"}, "variant"),
        ({"bias_init": "ones"}, "bias_init"),
        ({"input_shape": (128, 128, 3)}, "include_top"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments_repeat_what_was_received(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        build_alexnet(**kwargs)
    assert "Received" in str(info.value)


def test_headless_model_accepts_other_sizes():
    model = build_alexnet("original", include_top=False, input_shape=(259, 259, 3))
    assert model.output_shape == (None, 7, 7, 256)


def test_he_init_starts_near_uniform_softmax():
    model = build_alexnet("original", num_classes=5, kernel_init="he", seed=0)
    assert not np.any(model.get_layer("fc6").bias.numpy())  # zero biases with He init
    # Pixels with a natural-image spread (std ≈ 58 around the ImageNet mean).
    x = np.random.default_rng(0).normal(120, 58, (4, 227, 227, 3)).clip(0, 255)
    probs = model.predict(x.astype("float32"), verbose=0)
    loss = -np.log(probs[:, 0]).mean()
    assert loss == pytest.approx(np.log(5), abs=1e-5)  # zero classifier: loss = ln(C)


def test_load_model_and_keras_load_after_import(tmp_path):
    """A saved model loads in a fresh process after ``import alexkit`` alone: every custom
    layer registered. The tiny variant has each of them (Preprocess, LRN, grouped convs)
    in the 2012 layout, without writing and reading 230 MB."""
    import subprocess
    import sys

    model = build_alexnet("tiny", num_classes=3, seed=0, include_top=True)
    path = tmp_path / "m.keras"
    model.save(path)
    code = (
        "import keras, alexkit, sys\n"
        "m = keras.saving.load_model(sys.argv[1])\n"  # layers registered by `import alexkit`
        "m2 = alexkit.load_model(sys.argv[1])\n"
        "print(m.count_params(), m2.count_params())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(model.count_params())] * 2


def test_replace_head_dropout_replaces_drop7_instead_of_stacking(original, torchvision_model):
    new = replace_head(original, 3, dropout=0.3)
    names = [layer.name for layer in new.layers]
    assert "drop7" not in names and names[-2:] == ["head_dropout", "predictions"]
    assert new.get_layer("head_dropout").rate == 0.3
    assert new.get_layer("head_dropout").input is original.get_layer("fc7").output
    kept = replace_head(original, 3)  # no head dropout asked: the model's drop7 stays
    assert "drop7" in [layer.name for layer in kept.layers]
    tv = replace_head(torchvision_model, 3, dropout=0.3)  # fc7 feeds the head directly
    assert [layer.name for layer in tv.layers][-3:] == ["fc7", "head_dropout", "predictions"]


def test_tiny_stage_shapes_and_params(tiny):
    for name, (shape, params) in TINY_STAGES.items():
        layer = tiny.get_layer(name)
        assert tuple(layer.output.shape[1:]) == shape, name
        assert layer.count_params() == params, name
    assert tiny.count_params() == sum(p for _, p in TINY_STAGES.values()) == 202_456
    assert tuple(tiny.input_shape[1:]) == (99, 99, 3)
    assert build_alexnet("tiny", num_classes=2).count_params() == 202_456 - 129_000 + 258


def test_tiny_has_the_original_layout(original, tiny):
    from alexkit.layers import GroupedConv2D, LocalResponseNormalization

    def layout(model):
        return [
            (layer.name, type(layer).__name__)
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
        ]

    assert layout(tiny) == layout(original)  # same names, same kinds, same order
    for name in ("conv2", "conv4", "conv5"):
        assert isinstance(tiny.get_layer(name), GroupedConv2D) and tiny.get_layer(name).groups == 2
    assert tuple(tiny.get_layer("conv2").kernel.shape) == (5, 5, 6, 32)
    for name in ("lrn1", "lrn2"):
        lrn = tiny.get_layer(name)
        assert isinstance(lrn, LocalResponseNormalization)
        assert (lrn.depth_radius, lrn.bias, lrn.alpha, lrn.beta) == (2, 2.0, 1e-4, 0.75)
    conv1 = tiny.get_layer("conv1")
    assert (conv1.kernel_size, conv1.strides, conv1.padding) == ((11, 11), (4, 4), "valid")
    for name in ("pool1", "pool2", "pool5"):
        pool = tiny.get_layer(name)
        assert (pool.pool_size, pool.strides, pool.padding) == ((3, 3), (2, 2), "valid")
    assert tiny.get_layer("drop6").rate == tiny.get_layer("drop7").rate == 0.5
    assert tiny.get_layer("preprocess").mean == pytest.approx(list(VARIANTS["original"]["mean"]))
    assert tiny.get_layer("preprocess").std == pytest.approx(list(VARIANTS["original"]["std"]))
    np.testing.assert_array_equal(tiny.get_layer("conv2").bias.numpy(), 1.0)  # paper init
    assert tiny.name == "alexnet_tiny" and variant_of(tiny) == "tiny"


def test_tiny_lrn_matches_tensorflow_inside_the_model(tiny):
    import tensorflow as tf

    x = np.random.default_rng(0).uniform(0, 255, (2, 99, 99, 3)).astype("float32")
    conv1 = keras.Model(tiny.input, tiny.get_layer("conv1").output)(x)
    lrn1 = keras.Model(tiny.input, tiny.get_layer("lrn1").output)(x)
    expected = tf.nn.local_response_normalization(
        conv1, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75
    )
    np.testing.assert_allclose(np.asarray(lrn1), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_tiny_trains_one_step_and_round_trips(tmp_path):
    import tensorflow as tf

    model = build_alexnet("tiny", num_classes=3, seed=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 99, 99, 3)).astype("float32")
    y = rng.integers(0, 3, 8)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(grads) == 16  # every kernel and bias, conv1 to predictions, gets a gradient
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)

    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss) and loss == pytest.approx(np.log(3), abs=0.1)  # N(0, 0.01) init
    after = model.get_weights()
    assert not np.array_equal(before[0], after[0])  # conv1's kernel moved
    assert not np.array_equal(before[-2], after[-2])  # and the classifier's
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert variant_of(loaded) == "tiny"


def test_tiny_refuses_other_input_sizes_with_top():
    with pytest.raises(ValueError, match=r"input_shape=\(99, 99, 3\).*'tiny'"):
        build_alexnet("tiny", input_shape=(227, 227, 3))
