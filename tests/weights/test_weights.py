"""The weights store, the safe readers and the bvlc/torchvision importers (alexkit.weights)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from alexkit import weights as W
from alexkit.errors import MissingExtraError, WeightsError
from alexkit.paths import alexkit_home
from alexkit.weights import download

BVLC_SHAPES = {
    "conv1": (11, 11, 3, 96),
    "conv2": (5, 5, 48, 256),
    "conv3": (3, 3, 256, 384),
    "conv4": (3, 3, 192, 384),
    "conv5": (3, 3, 192, 256),
    "fc6": (9216, 4096),
    "fc7": (4096, 4096),
    "fc8": (4096, 1000),
}


class _Evil:
    """Unpickling this runs ``touch <marker>``: a stand-in for any code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _store_listing() -> list[str]:
    root = W.weights_dir()
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _small_pairs(rng) -> dict[str, list[np.ndarray]]:
    return {
        "conv1": [rng.standard_normal((2, 2, 3, 4)).astype(np.float32), np.zeros(4, np.float32)],
        "fc8": [rng.standard_normal((4, 5)).astype(np.float32), np.ones(5, np.float32)],
    }


# --------------------------------------------------------------------------- safe unpickling


def test_malicious_npy_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "bvlc_alexnet.npy"
    np.save(evil, {"conv1": [_Evil(marker), np.zeros(96, np.float32)]}, allow_pickle=True)

    with pytest.raises(WeightsError) as info:
        W.load_bvlc_npy(evil)
    message = str(info.value)
    assert str(evil) in message and "system" in message and "\n" not in message
    assert not marker.exists()

    with pytest.raises(WeightsError):
        W.import_weights(evil, "bvlc-npy")
    assert not marker.exists()
    assert _store_listing() == []

    # Control: the payload is live, so the refusal above is what kept it from running.
    np.load(evil, allow_pickle=True)
    assert marker.exists()


def _python2_style_pickle(obj) -> bytes:
    """A pickle shaped like Python 2's np.save output (bvlc_alexnet.npy is one).

    Python 2 wrote array data and names as 8-bit ``str`` (BINSTRING) and named numpy.core;
    rebuild that from a protocol 2 pickle whose arrays carry their data as text.
    """
    import io
    import struct

    reconstruct = np._core.multiarray._reconstruct

    class Py2Pickler(pickle.Pickler):
        def reducer_override(self, o):
            if type(o) is not np.ndarray:
                return NotImplemented
            # Object arrays carry a list of items, others their raw bytes as 8-bit text.
            data = list(o.ravel()) if o.dtype.hasobject else o.tobytes().decode("latin1")
            return (reconstruct, (np.ndarray, (0,), "b"), (1, o.shape, o.dtype, False, data))

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    data = buf.getvalue()
    ops = list(pickletools.genops(data))
    out = bytearray()
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name == "BINUNICODE":  # -> BINSTRING: raw 8-bit bytes, as Python 2 wrote them
            raw = arg.encode("latin1")
            out += b"T" + struct.pack("<I", len(raw)) + raw
        elif op.name == "GLOBAL":
            module, name = arg.split(" ")
            out += f"c{module.replace('numpy._core', 'numpy.core')}\n{name}\n".encode()
        else:
            out += data[pos:end]
    return bytes(out)


@pytest.mark.parametrize("protocol", ["python2", 2, 3, 5])
def test_safe_reader_reads_numpy_pickles(tmp_path, protocol):
    rng = np.random.default_rng(len(str(protocol)))
    pairs = _small_pairs(rng)
    if protocol == "python2":
        data = _python2_style_pickle(np.array(pairs, dtype=object))
        names = {op.name for op, _, _ in pickletools.genops(data)}
        assert "BINSTRING" in names and "BINUNICODE" not in names
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in data and b"_codecs" not in data
    else:
        data = pickle.dumps(np.array(pairs, dtype=object), protocol=protocol)
    path = tmp_path / "pairs.pkl"
    path.write_bytes(data)

    loaded = W.load_pickled_arrays(path)

    assert sorted(loaded) == ["conv1", "fc8"]
    for key, (w, b) in pairs.items():
        np.testing.assert_array_equal(loaded[key][0], w)
        np.testing.assert_array_equal(loaded[key][1], b)


def test_load_bvlc_npy_reads_np_save_output(tmp_path):
    pairs = _small_pairs(np.random.default_rng(1))
    path = tmp_path / "small.npy"
    np.save(path, pairs, allow_pickle=True)

    loaded = W.load_bvlc_npy(path)

    np.testing.assert_array_equal(loaded["conv1"][0], pairs["conv1"][0])
    np.testing.assert_array_equal(loaded["fc8"][1], pairs["fc8"][1])


@pytest.mark.parametrize(
    "payload, expected",
    [
        (np.zeros((3, 4), np.float32), "plain float32 array"),
        ({"conv1": [np.zeros(3)]}, "'conv1' is not a pair"),
        (np.array([1, "x"], dtype=object), "holds a ndarray"),
    ],
)
def test_bvlc_reader_rejects_other_contents(tmp_path, payload, expected):
    path = tmp_path / "odd.npy"
    np.save(path, payload, allow_pickle=True)
    with pytest.raises(WeightsError, match=expected) as info:
        W.load_bvlc_npy(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- bad files


def _write_bvlc(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    net = {k: [np.zeros(s, np.float32), np.zeros(s[-1], np.float32)] for k, s in shapes.items()}
    np.save(path, net, allow_pickle=True)
    return path


def test_bvlc_wrong_shape_names_file_and_first_layer(tmp_path):
    # Layers are checked in network order; the big fc layers are left out to keep this fast.
    shapes = {"conv1": BVLC_SHAPES["conv1"], "conv2": (5, 5, 96, 256), "fc7": (4096, 10)}
    path = _write_bvlc(tmp_path / "bad.npy", shapes)

    with pytest.raises(WeightsError) as info:
        W.import_weights(path, "bvlc-npy")

    message = str(info.value)
    assert message.startswith(str(path))
    assert "conv2" in message and "(5, 5, 96, 256)" in message and "(5, 5, 48, 256)" in message
    assert "fc7" not in message
    assert _store_listing() == []


def test_bvlc_missing_and_extra_entries(tmp_path):
    shapes = {k: BVLC_SHAPES[k] for k in ("conv1", "conv2", "conv4")}
    with pytest.raises(WeightsError, match="missing entry 'conv3'"):
        W.import_weights(_write_bvlc(tmp_path / "missing.npy", shapes), "bvlc-npy")
    extra = {"conv1": BVLC_SHAPES["conv1"], "fc9": (4, 4)}
    with pytest.raises(WeightsError, match="unexpected entry 'fc9'"):
        W.import_weights(_write_bvlc(tmp_path / "extra.npy", extra), "bvlc-npy")
    assert _store_listing() == []


def test_truncated_npy_is_a_weights_error(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, _small_pairs(np.random.default_rng(2)), allow_pickle=True)
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    with pytest.raises(WeightsError, match="truncated") as info:
        W.import_weights(truncated, "bvlc-npy")
    assert str(truncated) in str(info.value)
    assert _store_listing() == []


def test_wrong_format_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    pth = tmp_path / "alexnet.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, pth)
    npy = _write_bvlc(tmp_path / "bvlc.npy", {"conv1": BVLC_SHAPES["conv1"]})

    legacy = tmp_path / "legacy.pth"  # torch.save's pre-1.6 format, like alexnet-owt-7be5be79.pth
    torch.save({"features.0.weight": torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False)
    for path in (pth, legacy):
        with pytest.raises(WeightsError, match="--format torchvision"):
            W.import_weights(path, "bvlc-npy")
    assert list(W.load_torchvision_state_dict(legacy)) == ["features.0.weight"]
    with pytest.raises(WeightsError, match="--format bvlc-npy"):
        W.import_weights(npy, "torchvision")
    with pytest.raises(WeightsError, match=r"missing tensor 'features.0.bias' \(layer conv1\)"):
        W.import_weights(pth, "torchvision")
    with pytest.raises(WeightsError, match="unknown weights format"):
        W.import_weights(pth, "caffe")
    assert _store_listing() == []


def test_torchvision_wrong_shape_and_malicious_pth(tmp_path):
    torch = pytest.importorskip("torch")
    state = {
        "features.0.weight": torch.zeros(64, 3, 11, 11),
        "features.0.bias": torch.zeros(64),
        "features.3.weight": torch.zeros(192, 64, 3, 3),
        "features.3.bias": torch.zeros(192),
    }
    pth = tmp_path / "wrong.pth"
    torch.save(state, pth)
    with pytest.raises(WeightsError) as info:
        W.import_weights(pth, "torchvision")
    message = str(info.value)
    assert message.startswith(str(pth)) and "conv2" in message and "(192, 64, 3, 3)" in message

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Evil(marker)}, evil)
    with pytest.raises(WeightsError, match="weights_only") as info:
        W.import_weights(evil, "torchvision")
    assert "\n" not in str(info.value)
    assert not marker.exists()

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(pth.read_bytes()[:300])
    with pytest.raises(WeightsError, match="truncated"):
        W.import_weights(truncated, "torchvision")
    assert _store_listing() == []


def test_torchvision_import_without_torch_names_the_extra(tmp_path, monkeypatch):
    import builtins

    pth = tmp_path / "alexnet.pth"
    pth.write_bytes(b"PK\x03\x04 not really")
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(MissingExtraError, match=r"pip install 'alexkit\[torch\]'"):
        W.import_weights(pth, "torchvision")


# --------------------------------------------------------------------------- store


def _tiny_model():
    import keras

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, name="predictions")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


def test_register_list_resolve(tmp_path):
    model = _tiny_model()
    path = W.register_weights(
        model, "mine", variant="original", source="runs/x", sha256="ab" * 32, kind="pretrain"
    )
    assert path == W.weights_dir() / "mine" / "model.keras" and path.is_file()

    meta = json.loads((path.parent / "meta.json").read_text())
    assert meta["variant"] == "original" and meta["kind"] == "pretrain"
    assert meta["source"] == "runs/x" and meta["sha256"] == "ab" * 32
    assert meta["preprocessing"]["image_size"] == 227
    assert meta["preprocessing"]["mean"] == pytest.approx([123.68, 116.779, 103.939])
    assert meta["created"].startswith("20")

    entries = W.list_weights()
    assert [e.name for e in entries] == ["mine"] and entries[0].problem is None

    assert W.resolve_weights("mine", "original") == path
    with pytest.raises(WeightsError, match="variant 'original', not 'torchvision'"):
        W.resolve_weights("mine", "torchvision")
    # kind "pretrain" does not answer --weights imagenet
    with pytest.raises(WeightsError) as info:
        W.resolve_weights("imagenet", "original")
    message = str(info.value)
    assert "alexkit weights download torchvision" in message
    assert "alexkit weights import FILE --format" in message and "alexkit pretrain" in message

    keras_file = tmp_path / "other.keras"
    model.save(keras_file)
    assert W.resolve_weights(str(keras_file), "torchvision") == keras_file
    pth = tmp_path / "x.pth"
    pth.write_bytes(b"")
    with pytest.raises(WeightsError, match="--format torchvision"):
        W.resolve_weights(str(pth), "torchvision")
    with pytest.raises(WeightsError, match="alexkit weights download torchvision"):
        W.resolve_weights("no-such-weights", "original")


def test_resolve_imagenet_prefers_default_name_then_newest():
    model = _tiny_model()
    W.register_weights(model, "a-old", variant="torchvision", source="s")
    newest = W.register_weights(model, "b-new", variant="torchvision", source="s")
    meta_path = W.weights_dir() / "a-old" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["created"] = "2000-01-01T00:00:00+00:00"
    meta_path.write_text(json.dumps(meta))
    assert W.resolve_weights("imagenet", "torchvision") == newest

    preferred = W.register_weights(model, "torchvision-imagenet", variant="torchvision", source="s")
    assert W.resolve_weights("imagenet", "torchvision") == preferred
    with pytest.raises(WeightsError, match="for variant 'torchvision': use that variant"):
        W.resolve_weights("imagenet", "original")


def test_register_is_atomic_and_respects_overwrite(monkeypatch):
    model = _tiny_model()
    first = W.register_weights(model, "entry", variant="original", source="first")
    with pytest.raises(WeightsError, match="--force"):
        W.register_weights(model, "entry", variant="original", source="second")

    def broken_save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(type(model), "save", broken_save)
        with pytest.raises(OSError, match="disk full"):
            W.register_weights(model, "entry", variant="original", source="3rd", overwrite=True)
        with pytest.raises(OSError):
            W.register_weights(model, "fresh", variant="original", source="3rd")
    # The old entry is intact, no new entry and no temporary folder remains.
    assert _store_listing() == ["entry"]
    assert json.loads((first.parent / "meta.json").read_text())["source"] == "first"

    W.register_weights(model, "entry", variant="original", source="fourth", overwrite=True)
    assert json.loads((first.parent / "meta.json").read_text())["source"] == "fourth"
    assert _store_listing() == ["entry"]


def test_bad_names_and_broken_entries_are_reported():
    with pytest.raises(WeightsError, match="invalid weights name"):
        W.register_weights(_tiny_model(), "../escape", variant="original", source="s")
    broken = W.weights_dir() / "broken"
    broken.mkdir(parents=True)
    (broken / "meta.json").write_text("{not json")
    (W.weights_dir() / ".tmp-half-1234").mkdir()  # an abandoned temporary write is not listed

    entries = W.list_weights()
    assert [e.name for e in entries] == ["broken"] and "unreadable" in entries[0].problem
    with pytest.raises(WeightsError, match="unusable"):
        W.resolve_weights("broken", "original")

    W.remove_weights("broken")
    assert W.list_weights() == []


def test_importer_tables_name_every_weight_layer():
    # Both converters fill exactly the variant table's weight layers, in order.
    from alexkit.variants import WEIGHT_LAYERS
    from alexkit.weights import caffe, torchvision

    assert tuple(torchvision._TORCHVISION_LAYERS) == WEIGHT_LAYERS
    assert tuple(layer for layer, _ in caffe._BVLC_LAYERS.values()) == WEIGHT_LAYERS


def test_tiny_variant_has_no_published_weights(tmp_path):
    # `tiny` is a smoke-test network: asking for ImageNet weights or importing published
    # weights as it is one clear line, and its own entries resolve and load like any other.
    from alexkit.model import build_alexnet, variant_of
    from alexkit.weights.importer import FORMAT_VARIANTS, build_imported_model

    assert FORMAT_VARIANTS == {"bvlc-npy": "original", "torchvision": "torchvision"}
    with pytest.raises(WeightsError) as info:
        W.resolve_weights("imagenet", "tiny")
    assert "variant 'tiny'" in str(info.value) and "no published weights" in str(info.value)
    assert "alexkit pretrain --variant tiny" in str(info.value) and "\n" not in str(info.value)
    layers = {"predictions": [np.zeros((128, 2), "float32"), np.zeros(2, "float32")]}
    with pytest.raises(WeightsError, match="variant 'tiny' has no published weights"):
        build_imported_model("tiny", layers, "x.npy")
    W.register_weights(_tiny_model(), "bvlc-imagenet", variant="original", source="s")
    with pytest.raises(WeightsError, match="no published weights"):  # nor a full-size entry
        W.resolve_weights("imagenet", "tiny")

    model = build_alexnet("tiny", num_classes=1000, seed=0)
    path = W.register_weights(model, "tiny-smoke", variant="tiny", source="test")
    assert W.resolve_weights("imagenet", "tiny") == path  # what `pretrain --variant tiny` gives
    meta = json.loads((path.parent / "meta.json").read_text())
    assert meta["preprocessing"]["image_size"] == 99 and meta["preprocessing"]["resize"] == 112
    assert W.resolve_weights("tiny-smoke", "tiny") == path
    with pytest.raises(WeightsError, match="variant 'tiny', not 'original'"):
        W.resolve_weights("tiny-smoke", "original")
    loaded = W.load_weights_model("tiny-smoke", "tiny")
    assert variant_of(loaded) == "tiny" and loaded.count_params() == 202_456
    # A tiny .keras file passed as the weights of a full-size variant is refused by size.
    with pytest.raises(WeightsError, match="takes 99x99 images, but variant 'original'"):
        W.load_weights_model(str(path), "original")
    weights_h5 = tmp_path / "tiny.weights.h5"
    model.save_weights(weights_h5)
    again = W.load_weights_model(str(weights_h5), "tiny")
    np.testing.assert_array_equal(again.get_layer("fc6").kernel, model.get_layer("fc6").kernel)


# --------------------------------------------------------------------------- download


def test_download_offline_is_one_clear_line():
    with pytest.raises(WeightsError) as info:
        W.download_weights("torchvision", url="http://127.0.0.1:9/alexnet-owt-7be5be79.pth")
    message = str(info.value)
    assert message.startswith("cannot download http://127.0.0.1:9/")
    assert "offline" in message and "alexkit weights import" in message and "\n" not in message
    assert _store_listing() == []


def test_download_checks_sha256_then_imports(tmp_path, monkeypatch):
    payload = tmp_path / "alexnet-owt-7be5be79.pth"
    payload.write_bytes(b"not the real weights " * 1000)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no reuse of a real cache

    with pytest.raises(WeightsError, match="expected it to start with 7be5be79"):
        W.download_weights("torchvision", url=payload.as_uri())
    downloads = alexkit_home() / "downloads"
    assert list(downloads.iterdir()) == [] and _store_listing() == []

    calls = []

    def fake_import(path, format, **kwargs):
        calls.append((Path(path), format, kwargs))
        return "entry"

    monkeypatch.setattr(download, "import_weights", fake_import)
    progress = []
    result = W.download_weights(
        "torchvision",
        url=payload.as_uri(),
        sha256_prefix=digest[:8],
        progress=lambda done, total: progress.append(done),
    )
    assert result == "entry"
    kept = downloads / "alexnet-owt-7be5be79.pth"
    expected_kwargs = {
        "name": "torchvision-imagenet",
        "overwrite": False,
        "source": payload.as_uri(),
    }
    assert calls == [(kept, "torchvision", expected_kwargs)]
    assert kept.read_bytes() == payload.read_bytes() and progress[-1] == payload.stat().st_size

    # A verified file already downloaded is reused: no network needed the second time.
    W.download_weights(
        "torchvision", url="http://127.0.0.1:9/unreachable.pth", sha256_prefix=digest[:8]
    )
    assert calls[-1][0] == kept


def test_download_of_bvlc_explains_the_import_route():
    with pytest.raises(WeightsError, match="--format bvlc-npy"):
        W.download_weights("bvlc")


# --------------------------------------------------------------------------- bvlc import


def _synthetic_bvlc(rng) -> dict[str, list[np.ndarray]]:
    """bvlc_alexnet.npy's shapes with weights scaled so activations stay O(1..100).

    conv1 outputs ~45 make the Caffe LRN term (alpha=2e-5) matter; fc8 is scaled down so the
    logits are O(1..10) and a 1e-4 tolerance is tight.
    """
    gains = {"conv1": 1.0, "fc8": 0.05}
    net = {}
    for key, shape in BVLC_SHAPES.items():
        fan_in = int(np.prod(shape[:-1]))
        scale = gains.get(key, 1.5) / np.sqrt(fan_in)
        net[key] = [
            (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32),
            (rng.standard_normal(shape[-1], dtype=np.float32) * 0.1).astype(np.float32),
        ]
    return net


def _caffe_reference_logits(net, images_rgb, mean_rgb):
    """bvlc_alexnet's forward pass in tf.nn ops, as Caffe ran it: BGR input, (C, H, W) flatten."""
    import tensorflow as tf

    def conv(x, key, stride, pad, groups=1):
        kernel, bias = net[key]
        if pad:
            x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        parts = [
            tf.nn.conv2d(xg, kg, stride, "VALID")
            for xg, kg in zip(tf.split(x, groups, 3), tf.split(kernel, groups, 3), strict=True)
        ]
        return tf.nn.relu(tf.concat(parts, 3) + bias)

    def lrn(x):  # Caffe: local_size 5, alpha 1e-4 (divided by 5), k 1, beta 0.75
        return tf.nn.local_response_normalization(
            x, depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75
        )

    def pool(x):
        return tf.nn.max_pool2d(x, 3, 2, "VALID")

    x = images_rgb[..., ::-1] - np.asarray(mean_rgb, np.float32)[::-1]
    x = pool(lrn(conv(x, "conv1", 4, 0)))
    x = pool(lrn(conv(x, "conv2", 1, 2, groups=2)))
    x = conv(x, "conv3", 1, 1)
    x = conv(x, "conv4", 1, 1, groups=2)
    x = pool(conv(x, "conv5", 1, 1, groups=2))
    x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [x.shape[0], -1])
    x = tf.nn.relu(x @ net["fc6"][0] + net["fc6"][1])
    x = tf.nn.relu(x @ net["fc7"][0] + net["fc7"][1])
    return (x @ net["fc8"][0] + net["fc8"][1]).numpy()


def keras_logits(model, images):
    """Logits of an alexkit classifier: the input of ``predictions`` times its kernel."""
    import keras

    penultimate = keras.Model(model.input, model.get_layer("predictions").input)
    features = np.asarray(penultimate(images, training=False), np.float64)
    kernel, bias = model.get_layer("predictions").get_weights()
    return features @ kernel.astype(np.float64) + bias


@pytest.mark.slow
def test_bvlc_import_matches_caffe_reference(tmp_path):
    from alexkit.variants import VARIANTS

    rng = np.random.default_rng(0)
    net = _synthetic_bvlc(rng)
    path = tmp_path / "bvlc_alexnet.npy"
    np.save(path, net, allow_pickle=True)

    entry = W.import_weights(path, "bvlc-npy")

    assert entry.name == "bvlc-imagenet" and entry.variant == "original"
    assert entry.meta["sha256"] == W.file_sha256(path) and entry.meta["format"] == "bvlc-npy"
    model = W.load_weights_model("imagenet", "original")
    # The imported arrays sit in the right layers (grouped kernels kept as they are).
    np.testing.assert_array_equal(
        model.get_layer("conv1").get_weights()[0], net["conv1"][0][:, :, ::-1]
    )
    for key in ("conv2", "conv4", "conv5", "fc7"):
        np.testing.assert_array_equal(model.get_layer(key).get_weights()[0], net[key][0])
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[1], net["fc8"][1])
    lrn = model.get_layer("lrn1")
    assert (lrn.bias, lrn.alpha, lrn.beta, lrn.depth_radius) == (1.0, pytest.approx(2e-5), 0.75, 2)

    images = rng.uniform(0, 255, (2, 227, 227, 3)).astype(np.float32)
    expected = _caffe_reference_logits(net, images, VARIANTS["original"]["mean"])
    got = keras_logits(model, images)
    assert expected.std() > 1.0  # logits big enough for the tolerance to mean something
    assert np.abs(got - expected).max() <= 1e-4
    # The saved classifier ends in softmax over those logits.
    probs = np.asarray(model(images, training=False))
    e = np.exp(expected - expected.max(axis=1, keepdims=True))
    # |d softmax| <= p * 2 * max|d logit|, so logits within 1e-4 give probs within rtol 2e-4.
    np.testing.assert_allclose(probs, e / e.sum(axis=1, keepdims=True), rtol=2e-4, atol=1e-7)

    # A bare .weights.h5 file loads into a freshly built model of the asked variant.
    h5 = tmp_path / "bvlc.weights.h5"
    model.save_weights(h5)
    reloaded = W.load_weights_model(str(h5), "original")
    np.testing.assert_array_equal(reloaded.get_layer("fc6").get_weights()[0], fc6_kernel(model))


def fc6_kernel(model):
    return model.get_layer("fc6").get_weights()[0]
