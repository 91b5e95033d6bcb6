"""``alexkit export``: SavedModel, ONNX and LiteRT artefacts give Keras' answers.

Most tests export a narrow AlexNet built here from alexkit's own layers with the public
layer names (Preprocess, 11x11/4 conv1, LRN, grouped convs, 3x3/2 pools, flatten, fc6,
fc7, dropout, softmax ``predictions``) at each variant's input size: every op the real
network has, ~100x fewer parameters, so converters run in seconds. The opt-in heavy
tests (``pytest -m heavy``) export the real 57M-parameter networks. Oracles: the Keras
model's own predictions on images the export never saw, onnx.checker, LiteRT's op list,
and numpy's softmax for the temperature.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

import keras  # noqa: E402
from conftest import write_class_images  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from alexkit.errors import MissingExtraError, UsageError  # noqa: E402
from alexkit.export import (  # noqa: E402
    PARITY_ATOL,
    ExportError,
    export_model,
    generated_images,
    load_exported,
)
from alexkit.layers import GroupedConv2D, LocalResponseNormalization, Preprocess  # noqa: E402
from alexkit.variants import VARIANTS  # noqa: E402

CLASSES = ["alpha", "beta", "gamma"]
FORMATS = ["savedmodel", "onnx", "tflite"]


def mini_alexnet(variant: str, num_classes: int = 3, seed: int = 0) -> keras.Model:
    """AlexNet's layers and names at the variant's input size, 1/8 of its widths."""
    spec = VARIANTS[variant]
    size = spec["image_size"]
    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = Preprocess(spec["mean"], spec["std"], name="preprocess")(inputs)

    def conv(filters, k, name, strides=1, padding="same", groups=1):
        if groups > 1:
            return GroupedConv2D(
                filters, k, groups=groups, padding=padding, activation="relu", name=name
            )
        return keras.layers.Conv2D(
            filters,
            k,
            strides=strides,
            padding=padding,
            activation="relu",
            kernel_initializer=init,
            name=name,
        )

    def pool(name):
        return keras.layers.MaxPooling2D(3, 2, name=name)

    if variant == "original":
        x = conv(12, 11, "conv1", strides=4, padding="valid")(x)
        x = LocalResponseNormalization(name="lrn1")(x)
        x = pool("pool1")(x)
        x = conv(32, 5, "conv2", groups=2)(x)
        x = LocalResponseNormalization(name="lrn2")(x)
        x = pool("pool2")(x)
        x = conv(48, 3, "conv3")(x)
        x = conv(48, 3, "conv4", groups=2)(x)
        x = conv(32, 3, "conv5", groups=2)(x)
    else:
        x = keras.layers.ZeroPadding2D(2, name="conv1_pad")(x)
        x = conv(8, 11, "conv1", strides=4, padding="valid")(x)
        x = pool("pool1")(x)
        x = conv(24, 5, "conv2")(x)
        x = pool("pool2")(x)
        x = conv(48, 3, "conv3")(x)
        x = conv(32, 3, "conv4")(x)
        x = conv(32, 3, "conv5")(x)
    x = pool("pool5")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", kernel_initializer=init, name="fc6")(x)
    x = keras.layers.Dropout(0.5, name="drop6")(x)
    x = keras.layers.Dense(64, activation="relu", kernel_initializer=init, name="fc7")(x)
    x = keras.layers.Dropout(0.5, name="drop7")(x)
    x = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name=f"alexnet_{variant}")
    _spread_head(model, seed)
    return model


def _spread_head(model, seed):
    """Head weights giving logits of spread ~2 on images: varied, confident, no ties."""
    head = model.get_layer("predictions")
    size = model.input_shape[1]
    features = keras.Model(model.inputs, head.input).predict_on_batch(
        np.random.default_rng(seed).uniform(0, 255, (16, size, size, 3)).astype("float32")
    )
    features = np.asarray(features, np.float64)
    centred = features - features.mean(0)
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 1, head.kernel.shape)
    kernel *= 2.0 / max(np.sqrt((centred @ kernel).var()), 1e-12)
    bias = -(features.mean(0) @ kernel)
    head.set_weights([kernel.astype("float32"), bias.astype("float32")])


def write_run(root, model, variant, temperature=None):
    """A run directory as finetune writes it: model.keras, config.json, metrics.json."""
    root.mkdir(parents=True)
    model.save(root / "model.keras")
    size = VARIANTS[variant]["image_size"]
    config = {"class_names": CLASSES, "variant": variant, "image_size": size}
    (root / "config.json").write_text(json.dumps(config))
    (root / "metrics.json").write_text(json.dumps({"accuracy": 0.75, "num_samples": 12}))
    if temperature is not None:
        (root / "calibration.json").write_text(json.dumps({"temperature": temperature}))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for variant in ("original", "torchvision"):
        model = mini_alexnet(variant, seed=1 if variant == "original" else 2)
        out[variant] = (write_run(root / variant, model, variant), model)
    return out


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """One float32 export per (variant, format), made once for the module."""
    root = tmp_path_factory.mktemp("exports")
    cache = {}

    def get(variant, fmt):
        if (variant, fmt) not in cache:
            run, _ = runs[variant]
            out = root / f"{variant}-{fmt}"
            cache[variant, fmt] = export_model(str(run), fmt, out)
        return cache[variant, fmt]

    return get


def fresh_images(size, n=5, seed=123):
    """Images the export's own parity check never saw."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", ["original", "torchvision"])
def test_float32_export_matches_keras(exported, runs, variant, fmt):
    result = exported(variant, fmt)
    _, model = runs[variant]
    size = VARIANTS[variant]["image_size"]

    assert result.parity["claimed"] is True
    assert result.parity["max_abs_diff"] <= PARITY_ATOL
    assert result.parity["top1_disagreements"] == 0
    assert result.parity["num_images"] == len(generated_images(size))

    # Independent check on other images, through the public loader.
    loaded = load_exported(result.path)
    x = fresh_images(size)
    want = np.asarray(model.predict_on_batch(x))
    got = loaded.predict_on_batch(x)
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, want, atol=PARITY_ATOL, rtol=0)
    assert (got.argmax(1) == want.argmax(1)).all()
    assert np.ptp(want.max(1)) > 0.05  # the model is not trivially uniform
    assert loaded.class_names == CLASSES
    assert loaded.input_size == size
    assert loaded.input_shape == (None, size, size, 3)

    card = json.loads(result.card_path.read_text())
    assert card["classes"] == CLASSES
    assert card["variant"] == variant
    assert card["input"]["shape"] == [None, size, size, 3]
    assert card["input"]["range"] == [0, 255]
    assert card["input"]["mean"] == pytest.approx(list(VARIANTS[variant]["mean"]))
    assert card["validation_metrics"]["accuracy"] == 0.75
    assert card["output"] == {
        "kind": "probabilities",
        "calibrated": False,
        "temperature": None,
        "thresholds": None,
    }
    assert card["versions"]["keras"] == keras.__version__
    assert card["parity"]["max_abs_diff"] == result.parity["max_abs_diff"]
    assert card["artefact"]["size_bytes"] == result.size_bytes > 0


@pytest.mark.parametrize("variant", ["original", "torchvision"])
def test_onnx_passes_the_full_checker_and_lrn_becomes_plain_ops(exported, variant):
    import onnx

    result = exported(variant, "onnx")
    onnx.checker.check_model(str(result.path), full_check=True)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert set(result.ops) == ops
    assert "LRN" not in ops  # LRN is a matmul with a band matrix, not ONNX's LRN op
    if variant == "original":
        assert {"MatMul", "Sqrt", "Mul", "Add"} <= set(result.lrn_ops)
    else:
        assert result.lrn_ops == []


@pytest.mark.parametrize("variant", ["original", "torchvision"])
def test_tflite_has_builtin_ops_only(exported, variant):
    result = exported(variant, "tflite")
    assert result.ops and all(op.isupper() for op in result.ops)  # builtins are UPPER_CASE
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in result.ops)
    assert "LOCAL_RESPONSE_NORMALIZATION" not in result.ops
    if variant == "original":
        assert {"SQUARE", "FULLY_CONNECTED", "RSQRT", "SQRT", "MUL"} <= set(result.lrn_ops)
    else:
        assert result.lrn_ops == []


def test_savedmodel_has_a_serving_default_signature(exported, runs):
    import tensorflow as tf

    result = exported("original", "savedmodel")
    loaded = tf.saved_model.load(str(result.path))
    fn = loaded.signatures["serving_default"]
    spec = fn.structured_input_signature[1]
    assert list(spec) == ["image"]
    assert spec["image"].shape.as_list() == [None, 227, 227, 3]
    x = fresh_images(227, n=2)
    (out,) = fn(image=tf.constant(x)).values()
    want = runs["original"][1].predict_on_batch(x)
    np.testing.assert_allclose(out.numpy(), want, atol=PARITY_ATOL, rtol=0)
    assert (result.path / "model-card.json").is_file()
    # Each weight stored once (Keras 3.15's own export stores them twice).
    data = sum(f.stat().st_size for f in (result.path / "variables").glob("variables.data*"))
    weight_bytes = 4 * runs["original"][1].count_params()
    assert weight_bytes <= data < 1.1 * weight_bytes + 4096


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_temperature_is_applied_inside_the_export(runs, tmp_path, fmt):
    _, model = runs["torchvision"]
    run = write_run(tmp_path / "run", model, "torchvision", temperature=2.5)
    result = export_model(str(run), fmt, tmp_path / "out")
    x = fresh_images(224, n=4)
    p = np.asarray(model.predict_on_batch(x), np.float64)
    z = np.log(p) / 2.5  # softmax(log p / T) == softmax(logits / T)
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    got = load_exported(result.path).predict_on_batch(x)
    np.testing.assert_allclose(got, want, atol=PARITY_ATOL, rtol=0)
    assert not np.allclose(got, p, atol=1e-3)  # it did change the probabilities
    assert result.card["output"]["calibrated"] is True
    assert result.card["output"]["temperature"] == 2.5


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_class_images(root, CLASSES, 4, size=(64, 56))
    return root


@pytest.mark.parametrize(
    "fmt,quantize,max_ratio",
    [("tflite", "float16", 0.55), ("tflite", "dynamic-int8", 0.35), ("onnx", "dynamic-int8", 0.6)],
)
def test_quantized_exports_report_accuracy_and_claim_no_parity(
    runs, labelled, exported, tmp_path, fmt, quantize, max_ratio
):
    run, model = runs["original"]
    result = export_model(str(run), fmt, tmp_path / "q", quantize=quantize, data=labelled)
    p = result.parity
    assert p["claimed"] is False
    assert p["num_images"] == 12
    assert 0.0 <= p["accuracy_keras"] <= 1.0 and 0.0 <= p["accuracy_exported"] <= 1.0
    assert p["accuracy_change"] == pytest.approx(p["accuracy_exported"] - p["accuracy_keras"])
    assert result.card["parity"]["claimed"] is False
    assert result.size_bytes < max_ratio * exported("original", fmt).size_bytes
    assert "labelled" in p["note"]
    if fmt == "onnx":  # int8 fully connected layers, float convolutions
        assert "MatMulInteger" in result.ops and "ConvInteger" not in result.ops


def test_quantized_without_data_says_accuracy_was_not_measured(runs, tmp_path):
    run, _ = runs["torchvision"]
    result = export_model(str(run), "tflite", tmp_path / "q", quantize="dynamic-int8")
    assert result.parity["claimed"] is False
    assert "accuracy_change" not in result.parity
    assert "not measured" in result.parity["note"]


def test_data_parity_uses_the_labelled_images(runs, labelled, tmp_path):
    run, _ = runs["torchvision"]
    result = export_model(str(run), "onnx", tmp_path / "m.onnx", data=labelled)
    assert result.path == tmp_path / "m.onnx"
    assert result.parity["num_images"] == 12
    assert result.parity["accuracy_change"] == 0.0
    assert result.parity["claimed"] is True


def test_fixed_batch_runs_any_number_of_images(runs, tmp_path):
    run, model = runs["torchvision"]
    result = export_model(str(run), "tflite", tmp_path / "b", batch=4)
    loaded = load_exported(result.path)
    assert loaded.input_shape == (4, 224, 224, 3)
    x = fresh_images(224, n=6)  # one full batch and one padded one
    np.testing.assert_allclose(
        loaded.predict_on_batch(x), model.predict_on_batch(x), atol=PARITY_ATOL, rtol=0
    )


@pytest.mark.parametrize(("image_size", "expected"), [(None, 99), (131, 131)])
def test_a_classifier_of_any_input_size_exports_at_its_trained_size(tmp_path, image_size, expected):
    """A tiny body with input (None, None, 3) under a pooled head: the artefact takes the
    size its run trained at (config.json), or without one its variant's (99), never a
    227 default."""
    from alexkit.model import build_alexnet

    body = build_alexnet("tiny", include_top=False, input_shape=(None, None, 3), seed=3)
    pooled = keras.layers.GlobalAveragePooling2D()(body.output)
    model = keras.Model(body.inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    assert model.input_shape == (None, None, None, 3)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    config = {"class_names": CLASSES, "variant": "tiny"}
    if image_size is not None:
        config["image_size"] = image_size
    (run / "config.json").write_text(json.dumps(config))

    result = export_model(str(run), "savedmodel", tmp_path / "out")
    assert result.parity["claimed"] is True
    assert result.card["input"]["shape"] == [None, expected, expected, 3]
    loaded = load_exported(result.path)
    assert loaded.input_shape == (None, expected, expected, 3)
    x = fresh_images(expected, n=3)
    want = np.asarray(model.predict_on_batch(x))
    np.testing.assert_allclose(loaded.predict_on_batch(x), want, atol=PARITY_ATOL, rtol=0)


def test_a_mismatching_export_fails_and_writes_no_card(runs, tmp_path, monkeypatch):
    import alexkit.export as ex

    class Off(ex._LiteRTRunner):
        def __call__(self, x):
            return super().__call__(x) + 2e-4

    monkeypatch.setitem(ex._RUNNERS, "tflite", Off)
    run, _ = runs["torchvision"]
    with pytest.raises(ExportError, match="does not match the Keras model"):
        export_model(str(run), "tflite", tmp_path / "bad")
    assert (tmp_path / "bad" / "model.tflite").is_file()
    assert not (tmp_path / "bad" / "model-card.json").exists()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"format": "coreml"}, "--format must be one of"),
        ({"format": "onnx", "quantize": "float16"}, "not offered for onnx"),
        ({"format": "savedmodel", "quantize": "dynamic-int8"}, "not offered for savedmodel"),
        ({"format": "tflite", "batch": "0"}, "--batch must be"),
        ({"format": "tflite", "out_name": "m.onnx"}, "writes a .tflite file"),
    ],
)
def test_bad_options_are_usage_errors(runs, tmp_path, kwargs, match):
    run, _ = runs["torchvision"]
    out = tmp_path / kwargs.pop("out_name", "x")
    with pytest.raises(UsageError, match=match):
        export_model(str(run), out=out, **kwargs)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_predict_and_evaluate_run_on_the_exported_file(exported, runs, labelled, fmt):
    """The loader is what predict_images/evaluate_model take: same answers as Keras."""
    from alexkit.evaluate import evaluate_model
    from alexkit.predict import predict_images

    loaded = load_exported(exported("original", fmt).path)
    _, model = runs["original"]
    got = predict_images(loaded, loaded.class_names, [str(labelled)], batch_size=5)
    want = predict_images(model, CLASSES, [str(labelled)], batch_size=5)
    assert got.items == want.items and len(got.items) == 12
    np.testing.assert_allclose(got.probs, want.probs, atol=PARITY_ATOL, rtol=0)

    kwargs = {"class_names": CLASSES, "ci_level": None, "check_leaks": False}
    on_file = evaluate_model(loaded, str(labelled), config=loaded.config, **kwargs)
    on_keras = evaluate_model(model, str(labelled), config={}, **kwargs)
    assert on_file.num_samples == on_keras.num_samples == 12
    assert on_file.accuracy == on_keras.accuracy
    np.testing.assert_array_equal(on_file.confusion, on_keras.confusion)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_cli_predict_and_evaluate_take_the_exported_file(runs, labelled, tmp_path, fmt):
    """By path, as a user would: the temperature inside the file is not applied twice."""
    from typer.testing import CliRunner

    from alexkit.cli import app

    _, model = runs["original"]
    run = write_run(tmp_path / "run", model, "original", temperature=2.0)
    artefact = export_model(str(run), fmt, run / f"model.{fmt}").path  # beside calibration.json
    runner = CliRunner()
    on_file = runner.invoke(app, ["predict", str(artefact), str(labelled), "--json"])
    on_run = runner.invoke(app, ["predict", str(run), str(labelled), "--json"])
    assert on_file.exit_code == 0 and on_run.exit_code == 0, on_file.stderr + on_run.stderr
    file_rows = json.loads(on_file.stdout)["predictions"]
    run_rows = json.loads(on_run.stdout)["predictions"]
    assert len(file_rows) == len(run_rows) == 12
    for a, b in zip(file_rows, run_rows, strict=True):
        assert a["predicted"] == b["predicted"]
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
    out = tmp_path / "eval"
    result = runner.invoke(
        app, ["evaluate", str(artefact), "--data", str(labelled), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 12


def test_two_exports_never_share_one_card(exported, runs):
    first = exported("torchvision", "onnx")
    run, _ = runs["torchvision"]
    with pytest.raises(UsageError, match="its own folder"):
        export_model(str(run), "onnx", first.path.parent / "other.onnx")


def test_cli_exports_and_prints_parity(runs, tmp_path):
    from alexkit.cli import app

    run, _ = runs["original"]
    result = CliRunner().invoke(
        app, ["export", str(run), "--format", "tflite", "--out", str(tmp_path / "t"), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["path"] == str(tmp_path / "t" / "model.tflite")
    assert doc["parity"]["claimed"] is True
    assert doc["parity"]["max_abs_diff"] <= PARITY_ATOL

    plain = CliRunner().invoke(
        app, ["export", str(run), "--format", "onnx", "--out", str(tmp_path / "o")]
    )
    assert plain.exit_code == 0, plain.output
    assert "top-1 agreement 16/16" in plain.stdout
    assert "LRN became:" in plain.stdout


def test_cli_exports_stored_weights(runs, tmp_path):
    from alexkit.cli import app

    run, model = runs["torchvision"]
    result = CliRunner().invoke(
        app,
        ["export", "--weights", str(run / "model.keras"), "--variant", "torchvision"]
        + ["--format", "savedmodel", "--out", str(tmp_path / "sm"), "--json"],
    )
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "sm" / "model-card.json").read_text())
    assert card["source"]["kind"] == "weights"
    assert card["classes"] == ["0", "1", "2"]  # stored weights carry no class names
    assert card["validation_metrics"] is None
    x = fresh_images(224, n=2)
    np.testing.assert_allclose(
        load_exported(tmp_path / "sm").predict_on_batch(x),
        model.predict_on_batch(x),
        atol=PARITY_ATOL,
        rtol=0,
    )


def test_cli_without_the_extra_names_the_install_command(runs, tmp_path, monkeypatch):
    from alexkit.cli import app

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import fails
    run, _ = runs["original"]
    result = CliRunner().invoke(
        app, ["export", str(run), "--format", "tflite", "--out", str(tmp_path / "t")]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "pip install 'alexkit[export]'" in lines[0]
    assert "ai-edge-litert" in lines[0]
    with pytest.raises(MissingExtraError):
        export_model(str(run), "tflite", tmp_path / "t")


def test_cli_bad_format_is_exit_2(runs, tmp_path):
    from alexkit.cli import app

    run, _ = runs["original"]
    result = CliRunner().invoke(
        app, ["export", str(run), "--format", "onnx", "-q", "float16", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "not offered for onnx" in result.output


# --------------------------------------------------------------------------- real AlexNet


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    from alexkit.model import build_alexnet, replace_head

    root = tmp_path_factory.mktemp("real")
    out = {}
    for variant in ("original", "torchvision"):
        model = replace_head(build_alexnet(variant, seed=3, kernel_init="he"), 3, seed=3)
        _spread_head(model, 3)  # varied, confident predictions: top-1 is meaningful
        out[variant] = write_run(root / variant, model, variant)
    return out


# The full 57M-parameter network, each export in its own process: TensorFlow keeps every
# conversion's frozen graph for the life of a process (one process doing all six grew past
# 20 GB and was killed), so in-process exports would starve the rest of the suite.
# Each conversion of the full network takes 10-60 s of a 2-core machine (ONNX the most:
# tf2onnx copies the 230 MB of constants between passes), ~2 minutes in all: opt-in with
# `pytest -m heavy` (README, "Tests"). The narrow AlexNet above has every op of both
# variants and checks parity in every format in every run; these add the full size.
@pytest.mark.heavy
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", ["original", "torchvision"])
def test_real_alexnet_exports_match_keras(real_runs, tmp_path, variant, fmt):
    import subprocess
    import sys

    args = [sys.executable, "-m", "alexkit", "export", str(real_runs[variant])]
    args += ["--format", fmt, "--out", str(tmp_path / "real"), "--json"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    parity = result["parity"]
    assert parity["claimed"] is True
    assert parity["max_abs_diff"] <= PARITY_ATOL
    assert parity["top1_disagreements"] == 0
    assert result["size_bytes"] > 200e6  # the 57M float32 parameters are all there
