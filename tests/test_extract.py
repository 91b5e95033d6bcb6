"""Feature extraction: writers agree, output is atomic, features equal a Keras sub-model,
memory stays flat as the image count grows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import write_class_images

from alexkit.extract import (
    WRITERS,
    CSVWriter,
    index_path,
    read_features,
    resolve_format,
)

TESTS = Path(__file__).parent


def _write_all(tmp_path, feats, paths, labels, batch=7):
    files = {}
    for fmt, writer_cls in WRITERS.items():
        target = tmp_path / f"feats.{fmt}"
        with writer_cls(target) as writer:
            for i in range(0, len(paths), batch):
                writer.write(paths[i : i + batch], labels[i : i + batch], feats[i : i + batch])
        files[fmt] = target
    return files


def test_csv_parquet_npy_agree(tmp_path):
    rng = np.random.default_rng(0)
    feats = np.maximum(rng.normal(size=(23, 50)), 0).astype(np.float32) * 1e3
    feats[0, :3] = [1e-12, -3.25e7, 0.1]
    paths = [f'img/{i},odd "name".jpg' if i == 5 else f"img/{i}.jpg" for i in range(23)]
    labels = ["cat" if i % 2 else "" for i in range(23)]
    files = _write_all(tmp_path, feats, paths, labels)
    assert index_path(files["npy"]).name == "feats.index.csv"
    np.testing.assert_array_equal(np.load(files["npy"]), feats)  # a valid .npy
    for fmt, path in files.items():
        got_paths, got_labels, x = read_features(path)
        assert got_paths == paths and got_labels == labels, fmt
        # CSV keeps 7 significant digits; binary formats are exact.
        np.testing.assert_allclose(x, feats, rtol=0 if fmt != "csv" else 1e-6, err_msg=fmt)
    header = files["csv"].read_text().splitlines()[0].split(",")
    assert header[:3] == ["path", "label", "f0"] and header[-1] == "f49"


def test_writer_is_atomic_on_error(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("previous\n")
    with pytest.raises(RuntimeError):
        with CSVWriter(target) as writer:
            writer.write(["a"], [""], np.ones((1, 4)))
            raise RuntimeError("boom")
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_empty_npy_is_valid(tmp_path):
    with WRITERS["npy"](tmp_path / "e.npy"):
        pass
    assert np.load(tmp_path / "e.npy").shape == (0, 0)


def test_resolve_format():
    assert resolve_format("a.parquet", None) == "parquet"
    assert resolve_format("a.txt", "npy") == "npy"
    from alexkit.errors import UsageError

    with pytest.raises(UsageError, match="--format"):
        resolve_format("a.txt", None)


# --------------------------------------------------------------------------- with a model


def _spec(folder):
    from alexkit.data import load_spec

    return load_spec(str(folder), val_fraction=0)


def test_features_equal_keras_submodel_in_every_format(tmp_path):
    import keras
    from test_evaluate_cli import SIZE, pipeline_images, tiny_model

    from alexkit.extract import extract_features

    data = tmp_path / "data"
    write_class_images(data, ["a", "b"], 5, size=(40, 36))
    model = tiny_model(2)
    x, y, items = pipeline_images(data)
    for layer, pool in (("fc7", "none"), ("conv5", "avg"), ("pool5", "none")):
        sub = keras.Model(model.inputs, model.get_layer(layer).output)
        want = sub.predict(x, verbose=0)
        want = want.mean(axis=(1, 2)) if pool == "avg" else want.reshape(len(x), -1)
        got = {}
        formats = ("csv", "parquet", "npy") if layer == "fc7" else ("npy",)
        for fmt in formats:
            out = tmp_path / f"{layer}.{fmt}"
            result = extract_features(model, _spec(data), out, layer=layer, pool=pool, batch_size=4)
            assert result.rows == 10 and result.dim == want.shape[1]
            paths, labels, feats = read_features(out)
            assert paths == items and labels == [["a", "b"][i] for i in y]
            got[fmt] = feats
            np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6, err_msg=f"{layer} {fmt}")
        if layer == "fc7":
            np.testing.assert_array_equal(got["parquet"], got["npy"])
    assert SIZE == model.input_shape[1]


def test_unreadable_images_are_listed_not_fatal(tmp_path):
    from test_evaluate_cli import tiny_model

    from alexkit.extract import extract_features

    data = tmp_path / "data"
    write_class_images(data, ["a", "b"], 3, size=(40, 36))
    (data / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    result = extract_features(tiny_model(2), _spec(data), tmp_path / "f.csv")
    assert result.rows == 6
    assert [Path(p).name for p, _ in result.skipped] == ["broken.png"]
    assert len((tmp_path / "f.csv").read_text().splitlines()) == 7


@pytest.mark.slow
def test_real_alexnet_fc7_equals_submodel(tmp_path):
    import keras

    from alexkit.extract import extract_features
    from alexkit.model import build_alexnet

    data = tmp_path / "data"
    write_class_images(data, ["a", "b"], 1, size=(64, 48))
    model = build_alexnet("original", num_classes=3, seed=0)
    result = extract_features(model, _spec(data), tmp_path / "f.npy", batch_size=2)
    assert result.dim == 4096
    from alexkit.data import load_spec, make_dataset

    ds = make_dataset(
        load_spec(str(data), val_fraction=0), training=False, image_size=227, batch_size=2
    )
    x = np.concatenate([b[0].numpy() for b in ds])
    sub = keras.Model(model.inputs, model.get_layer("fc7").output)
    np.testing.assert_allclose(
        np.load(tmp_path / "f.npy"), sub.predict(x, verbose=0), rtol=1e-4, atol=1e-4
    )


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, tracemalloc
    from pathlib import Path
    import keras
    from alexkit.data import load_spec
    from alexkit.extract import extract_features

    # A stand-in feature model whose rows are big (64 KiB) but whose compute is tiny.
    inp = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    model = keras.Model(inp, keras.layers.Dense(16384, name="fc7")(x))
    out = Path(sys.argv[1])
    results = []
    tracemalloc.start()
    for folder in sys.argv[2:]:  # warm-up, N, 10N: peak RSS only ever grows
        tracemalloc.reset_peak()
        spec = load_spec(folder, val_fraction=0)
        result = extract_features(model, spec, out / "f.npy", batch_size=8)
        results.append(dict(
            rows=result.rows,
            rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            traced=tracemalloc.get_traced_memory()[1],
        ))
    print(json.dumps(results))
    """
)


@pytest.mark.slow
def test_peak_memory_is_flat_when_images_grow_tenfold(tmp_path):
    folders = []
    for name, per_class in (("warm", 4), ("n", 10), ("n10", 100)):
        write_class_images(tmp_path / name, ["a", "b"], per_class, size=(32, 32))
        folders.append(str(tmp_path / name))
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), *folders],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, small, big = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (small["rows"], big["rows"]) == (20, 200)
    held_all = 200 * 16384 * 4  # keeping every feature row of the 10N run: 12.5 MiB
    # Python-side allocations (numpy arrays included) stay at a few batches.
    assert big["traced"] - small["traced"] < held_all / 8, (small, big)
    # Peak RSS after the 10N run exceeds the N run's by far less than the features.
    assert (big["rss_kib"] - small["rss_kib"]) * 1024 < held_all / 2, (small, big)


# ``tiny`` is the original layout (valid conv1, so Preprocess folds into it) at 1/8 width:
# the folding and caching under test are the same; the full-size original is extracted in
# test_real_alexnet_fc7_equals_submodel above. torchvision has no small twin.
@pytest.mark.parametrize("variant", ["tiny", "torchvision"])
def test_extractors_are_reused_until_the_model_changes(variant):
    """Repeated extractions reuse one traced extractor; changing the model's weights
    (conv1, whose folded copy the original layout keeps, or any shared layer) is seen:
    the output always equals the unfolded Keras sub-model's (the oracle)."""
    import keras

    from alexkit.extract import build_extractor
    from alexkit.model import build_alexnet

    model = build_alexnet(variant, num_classes=3, seed=1)
    size = model.input.shape[1]
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    oracle = keras.Model(model.input, model.get_layer("fc7").output)

    def check(extractor):
        want = np.asarray(oracle(x))
        np.testing.assert_allclose(
            extractor.predict_on_batch(x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max()
        )

    first = build_extractor(model, "fc7")
    assert build_extractor(model, "fc7") is first
    assert build_extractor(model, "fc6") is not first
    check(first)
    conv1 = model.get_layer("conv1")
    kernel, bias = conv1.get_weights()
    conv1.set_weights([kernel * 1.5, bias + 0.1])
    again = build_extractor(model, "fc7")
    assert (again is first) == (variant == "torchvision")  # only a folded copy goes stale
    check(again)
    fc6 = model.get_layer("fc6")
    fc6.set_weights([w * 0.5 for w in fc6.get_weights()])
    assert build_extractor(model, "fc7") is again  # shared weights: nothing to rebuild
    check(again)


def _crops(folder, size):
    """The evaluation pipeline's centre crops of ``folder`` at ``size``."""
    from alexkit.data import make_dataset

    dataset = make_dataset(_spec(folder), training=False, image_size=size, batch_size=64)
    return np.concatenate([x.numpy() for x, _ in dataset])


def test_a_tiny_body_of_any_input_size_is_fed_its_own_99_pixels(tmp_path):
    """A body built for any input size reads at its variant's size (tiny: 99, pool5
    2×2×32), not at a fixed 227 (pool5 6×6×32)."""
    from alexkit.extract import extract_arrays, extract_features
    from alexkit.model import build_alexnet

    data = tmp_path / "data"
    write_class_images(data, ["a", "b"], 2, size=(120, 110))
    body = build_alexnet("tiny", include_top=False, input_shape=(None, None, 3), seed=0)
    assert body.input_shape[1] is None
    want = body.predict(_crops(data, 99), verbose=0).reshape(4, -1)
    assert want.shape == (4, 2 * 2 * 32)
    _, _, feats = extract_arrays(body, _spec(data), layer="pool5")
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-5)
    result = extract_features(body, _spec(data), tmp_path / "f.npy", layer="pool5")
    assert result.dim == 128 and result.rows == 4
