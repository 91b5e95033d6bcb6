"""Sources → DatasetSpec, stratified/grouped splits, the tf.data pipeline, TFRecord packing."""

from __future__ import annotations

import io
import json
import os
from collections import Counter

import numpy as np
import pytest
from conftest import write_class_images
from PIL import Image

from alexkit import data
from alexkit.data import DatasetSpec, SkipLog, augment, decode, load_spec, make_dataset
from alexkit.errors import DataError, UsageError


def _junk(root):
    """What real downloads contain beside the images."""
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._a.jpg").write_bytes(b"\x00\x05")
    (root / ".DS_Store").write_bytes(b"\x00")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00")
    (root / "cat" / "._img.jpg").write_bytes(b"\x00\x05")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.png").write_bytes(b"")


def test_class_folders_ignore_junk_and_keep_upper_case_extensions(tmp_path):
    root = tmp_path / "pets"
    write_class_images(root, ["cat", "dog"], 5, fmt="JPEG")
    _junk(root)
    (root / "dog" / "dog_000.jpg").rename(root / "dog" / "DOG_000.JPEG")
    (root / "dog" / "readme.txt").write_text("hi")
    (root / "stray.jpg").write_bytes(b"")
    spec = load_spec(root, val_fraction=0)
    assert spec.class_names == ("cat", "dog") and spec.layout == "folders"
    assert spec.counts() == {"cat": 5, "dog": 5}
    assert any(i.endswith("DOG_000.JPEG") for i in spec.items)
    assert not any("__MACOSX" in i or "/._" in i or ".hidden" in i for i in spec.items)
    assert spec.ignored == (
        (str(root / "stray.jpg"), "not inside a class folder"),
        (str(root / "dog" / "readme.txt"), "not an image file extension"),
    )
    assert set(spec.splits) == {""}


def test_split_folders_with_valid_alias_and_wrapper_folder(tmp_path):
    top = tmp_path / "autism"
    inner = top / "autism"  # Kaggle zips nest the dataset in a same-named folder
    for split, n in (("train", 4), ("valid", 2), ("test", 3)):
        write_class_images(inner / split, ["Autistic", "Non_Autistic"], n, fmt="JPEG")
    (top / "__MACOSX").mkdir()
    spec = load_spec(top)
    assert spec.layout == "split-folders" and spec.class_names == ("Autistic", "Non_Autistic")
    assert spec.subset("val").counts() == {"Autistic": 2, "Non_Autistic": 2}
    assert len(spec.subset("test")) == 6 and len(spec.subset("train")) == 8
    assert len(load_spec(top, split="test")) == 6
    with pytest.raises(DataError, match="has no 'val' split"):
        load_spec(inner / "train", val_fraction=0, split="val")


def test_tiny_val_can_be_resplit(tmp_path):
    for split, n in (("train", 10), ("val", 1)):
        write_class_images(tmp_path / "xr" / split, ["NORMAL", "PNEUMONIA"], n)
    spec = load_spec(tmp_path / "xr", resplit_val=True, val_fraction=0.25, seed=1)
    assert spec.subset("val").counts() == {"NORMAL": 3, "PNEUMONIA": 3}  # round(11 * 0.25)
    assert len(spec.subset("train")) == 16


def _spec(labels, groups=None):
    n = len(labels)
    return DatasetSpec(
        tuple(f"/d/img{i:03d}.png" for i in range(n)),
        tuple(labels),
        ("a", "b", "c"),
        groups=tuple(groups) if groups else (),
        root="/d",
    )


def test_stratified_split_counts_seeded_and_every_class_present():
    labels = [0] * 50 + [1] * 30 + [2] * 7
    spec = data.split_spec(_spec(labels), 0.2, seed=3)
    val = spec.subset("val")
    assert val.counts() == {"a": 10, "b": 6, "c": 1}  # round(n * 0.2), at least 1
    assert spec.subset("train").counts() == {"a": 40, "b": 24, "c": 6}
    assert data.split_spec(_spec(labels), 0.2, seed=3) == spec  # identical on re-run
    assert data.split_spec(_spec(labels), 0.2, seed=4).splits != spec.splits


def test_group_aware_split_never_spans_splits():
    rng = np.random.default_rng(0)
    labels, groups = [], []
    for patient in range(40):
        label = patient % 2
        for _ in range(rng.integers(1, 6)):
            labels.append(label)
            groups.append(f"p{patient}")
    spec = data.split_spec(_spec(labels, groups), 0.25, seed=0)
    where = {}
    for g, s in zip(spec.groups, spec.splits, strict=True):
        assert where.setdefault(g, s) == s
    assert set(spec.subset("val").labels) == {0, 1} and set(spec.subset("train").labels) == {0, 1}


def test_class_too_small_for_a_split_is_a_clear_error():
    with pytest.raises(DataError, match="class 'c' has only 1 image"):
        data.split_spec(_spec([0, 0, 1, 1, 2]), 0.2)
    with pytest.raises(DataError, match="class 'b' has only 1 group"):
        data.split_spec(_spec([0, 0, 1, 1], ["x", "y", "z", "z"]), 0.5)


def test_csv_manifest_relative_absolute_split_group(tmp_path):
    paths = write_class_images(tmp_path / "imgs", ["benign", "malignant"], 4)
    rows = ["path,label,split,group"]
    for i, p in enumerate(paths):
        shown = p.relative_to(tmp_path) if i % 2 else p  # mix relative and absolute
        rows.append(f"{shown},{p.parent.name},{'valid' if i // 2 == 3 else 'train'},pat{i // 2}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    spec = load_spec(manifest)
    assert spec.layout == "csv" and spec.class_names == ("benign", "malignant")
    assert all(p.startswith(str(tmp_path)) for p in spec.items)
    assert spec.splits.count("val") == 2 and spec.groups[0] == "pat0"
    bad = tmp_path / "bad.csv"
    bad.write_text(f"path,label,split,group\n{paths[0]},x,train,p1\n{paths[1]},y,test,p1\n")
    with pytest.raises(DataError, match="group 'p1' is in both 'train' and 'test'"):
        load_spec(bad)
    (tmp_path / "nohead.csv").write_text(f"{paths[0]},x\n")
    with pytest.raises(DataError, match="expected a header 'path,label"):
        load_spec(tmp_path / "nohead.csv")


def _imagenet(tmp_path, labels_kind):
    root = tmp_path / "imagenet"
    wnids = ["n01530575", "n01440764", "n01443537"]  # unsorted on purpose
    write_class_images(root / "train", wnids, 2, fmt="JPEG")
    (root / "val").mkdir()
    truth = {"ILSVRC2012_val_00000001": "n01443537", "ILSVRC2012_val_00000002": "n01440764"}
    for stem in truth:
        Image.new("RGB", (30, 20)).save(root / "val" / f"{stem}.JPEG")
    if labels_kind == "kaggle":
        lines = ["ImageId,PredictionString"]
        lines += [f"{s},{w} 1 2 3 4 {w} 5 6 7 8" for s, w in truth.items()]
        (tmp_path / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    else:
        order = sorted(wnids)
        lines = [f"{s}.JPEG {order.index(w)}" for s, w in truth.items()]
        (root / "val.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("labels_kind", ["kaggle", "caffe"])
def test_imagenet_layout_sorted_wnids_and_flat_val(tmp_path, labels_kind):
    spec = load_spec(_imagenet(tmp_path, labels_kind))
    assert spec.layout == "imagenet"
    assert spec.class_names == ("n01440764", "n01443537", "n01530575")
    val = spec.subset("val")
    got = {i.rsplit("/", 1)[1]: lab for i, lab in zip(val.items, val.labels, strict=True)}
    assert got == {"ILSVRC2012_val_00000001.JPEG": 1, "ILSVRC2012_val_00000002.JPEG": 0}
    train = spec.subset("train")
    assert all(
        spec.class_names[lab] in item for item, lab in zip(train.items, train.labels, strict=True)
    )


def test_class_map_saved_reused_and_unknown_classes_refused(tmp_path):
    write_class_images(tmp_path / "a", ["cat", "dog"], 2)
    write_class_images(tmp_path / "b", ["dog", "cat", "fox"], 2)
    path = data.save_class_map(tmp_path / "run", ("dog", "cat", "bird"))
    known = data.load_class_map(path)
    assert json.loads(path.read_text()) == {"class_names": ["dog", "cat", "bird"]}
    spec = load_spec(tmp_path / "a", class_names=known, val_fraction=0)
    assert spec.class_names == known and set(spec.labels) == {0, 1}
    assert all(known[lab] in item for item, lab in zip(spec.items, spec.labels, strict=True))
    with pytest.raises(DataError, match="unknown to the model: 'fox'"):
        load_spec(tmp_path / "b", class_names=known, val_fraction=0)


def test_missing_source_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_spec(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_spec(tmp_path / "empty")


# --------------------------------------------------------------------------- pipeline


def _messy(root):
    """Readable images of several formats plus every kind of broken file."""
    rng = np.random.default_rng(1)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "a" / "rgb.jpg")
    Image.fromarray(rgb).convert("CMYK").save(root / "a" / "cmyk.jpg")
    Image.fromarray(np.full((40, 50), 4095, np.uint16)).save(root / "a" / "xray16.png")
    Image.fromarray(rgb).convert("P").save(root / "b" / "palette.png")
    Image.fromarray(rgb).save(root / "b" / "plain.bmp")
    frames = [Image.fromarray(np.full((30, 30, 3), v, np.uint8)) for v in (50, 200)]
    frames[0].save(root / "b" / "anim.gif", save_all=True, append_images=frames[1:])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "a" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    (root / "a" / "zero.jpg").write_bytes(b"")
    (root / "b" / "text.jpg").write_text("<html>not an image</html>")
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    (root / "b" / "broken.gif").write_bytes(buf.getvalue()[:60])  # fails only in Pillow


def test_pipeline_decodes_every_format_and_lists_skips(tmp_path):
    root = tmp_path / "messy"
    _messy(root)
    spec = load_spec(root, val_fraction=0)
    log = SkipLog()
    ds = make_dataset(
        spec,
        training=False,
        image_size=32,
        batch_size=4,
        skipped=log,
        with_paths=True,
        augment=data.AugmentConfig(resize=32),
    )
    batches = list(ds.as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    items = [p.decode().rsplit("/", 1)[1] for b in batches for p in b[2]]
    assert sorted(items) == [
        "anim.gif",
        "cmyk.jpg",
        "palette.png",
        "plain.bmp",
        "rgb.jpg",
        "xray16.png",
    ]
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.float32
    x16 = images[items.index("xray16.png")]
    assert abs(x16.mean() - 255) < 1  # 12-bit white stays white
    reasons = {p.rsplit("/", 1)[1]: r for p, r in log.entries}
    assert set(reasons) == {"truncated.jpg", "zero.jpg", "text.jpg", "broken.gif"}
    assert reasons["zero.jpg"] == "empty file (0 bytes)"
    assert reasons["truncated.jpg"] == "truncated JPEG (no end-of-image marker)"
    assert reasons["text.jpg"].startswith("not an image")
    assert "truncated" in reasons["broken.gif"] or "corrupt" in reasons["broken.gif"]
    report = data.scan(spec)
    assert report.classes == {"a": 3, "b": 3} and len(report.unreadable) == 4


def test_no_readable_image_is_a_data_error(tmp_path):
    (tmp_path / "x" / "c").mkdir(parents=True)
    (tmp_path / "x" / "c" / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no readable images"):
        make_dataset(load_spec(tmp_path / "x", val_fraction=0), training=True)


def test_identical_seeds_give_identical_batches(tmp_path):
    write_class_images(tmp_path / "d", ["a", "b"], 6, size=(40, 30), fmt="JPEG")
    spec = load_spec(tmp_path / "d", val_fraction=0)
    aug = data.AugmentConfig(resize=40)

    def first_epoch(seed):
        ds = make_dataset(spec, training=True, image_size=32, batch_size=4, seed=seed, augment=aug)
        return [(x, y) for x, y in ds.as_numpy_iterator()]

    a, b, c = first_epoch(1), first_epoch(1), first_epoch(2)
    assert len(a) == 3 and a[0][0].shape == (4, 32, 32, 3) and a[0][1].dtype == np.int32
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_eval_cache_grayscale_and_ten_crop(tmp_path):
    # Smooth images: the cached path resizes then crops, the streaming path crops then
    # resizes; they agree up to sub-pixel rounding, which only smooth content hides.
    rows, cols = np.mgrid[0:40, 0:48]
    for k, name in enumerate(["a", "b"]):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(3):
            img = np.stack([rows * 5 + 10 * i, cols * 4 + 30 * k, rows + cols + 20], -1)
            Image.fromarray(img.astype(np.uint8)).save(tmp_path / "d" / name / f"{i}.png")
    spec = load_spec(tmp_path / "d", val_fraction=0)
    aug = data.AugmentConfig(resize=36)
    kw = dict(training=False, image_size=32, batch_size=6, augment=aug)
    plain = next(iter(make_dataset(spec, **kw)))[0].numpy()
    cached = next(iter(make_dataset(spec, cache=True, **kw)))[0].numpy()
    np.testing.assert_allclose(plain, cached, atol=4.0)
    gray = next(iter(make_dataset(spec, grayscale=True, **kw)))[0].numpy()
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    tta = next(iter(make_dataset(spec, tta="ten-crop", **kw)))[0].numpy()
    assert tta.shape == (6, 10, 32, 32, 3)
    np.testing.assert_allclose(tta[:, 4], plain, atol=1e-3)  # crop 4 is the centre crop


def test_pack_round_trip_standard_keys_and_reading_back(tmp_path):
    import tensorflow as tf

    write_class_images(tmp_path / "src", ["cat", "dog", "emu"], 4, size=(80, 60), fmt="JPEG")
    (tmp_path / "src" / "cat" / "bad.jpg").write_bytes(b"")
    spec = load_spec(tmp_path / "src", val_fraction=0.25, seed=0)
    result = data.pack_tfrecords(spec, tmp_path / "shards", shards=2, resize=40)
    bad = str(tmp_path / "src" / "cat" / "bad.jpg")
    expected = Counter({"train": 0, "validation": 0})
    expected.update(
        "validation" if s == "val" else s
        for i, s in zip(spec.items, spec.splits, strict=True)
        if i != bad
    )
    assert result.counts == dict(expected) and sum(expected.values()) == 12
    assert [p.rsplit("/", 1)[1] for p in result.shards["train"]] == [
        "train-00000-of-00002",
        "train-00001-of-00002",
    ]
    assert result.skipped == [(str(tmp_path / "src" / "cat" / "bad.jpg"), "empty file (0 bytes)")]
    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/synset": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/format": tf.io.FixedLenFeature([], tf.string),
    }
    seen = []
    for raw in tf.data.TFRecordDataset(result.shards["train"]):
        ex = tf.io.parse_single_example(raw, features)
        img = tf.io.decode_jpeg(ex["image/encoded"]).numpy()
        assert img.shape == (40, 53, 3) == (ex["image/height"], ex["image/width"], 3)
        label = int(ex["image/class/label"])
        assert (
            1 <= label <= 3
            and ex["image/class/synset"].numpy().decode() == spec.class_names[label - 1]
        )
        seen.append(label - 1)
    train = spec.subset("train")
    assert sorted(seen) == sorted(
        lab for i, lab in zip(train.items, train.labels, strict=True) if i != bad
    )
    shards = load_spec(tmp_path / "shards")
    assert shards.layout == "tfrecord" and shards.class_names == ("cat", "dog", "emu")
    ds = make_dataset(
        shards.subset("val"),
        training=False,
        image_size=32,
        batch_size=8,
        augment=data.AugmentConfig(resize=40),
    )
    labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    val = spec.subset("val")
    assert sorted(labels) == sorted(
        lab for i, lab in zip(val.items, val.labels, strict=True) if i != bad
    )
    ds = make_dataset(
        load_spec(str(tmp_path / "shards" / "train-*")),
        training=True,
        image_size=32,
        batch_size=8,
        augment=data.AugmentConfig(resize=40),
    )
    assert sum(len(y) for _, y in ds.as_numpy_iterator()) == result.counts["train"]


def test_corrupt_tfrecord_image_is_recorded_by_filename(tmp_path):
    import tensorflow as tf

    def example(data, name, label):
        f = {
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
            "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name])),
            "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }
        return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 99, 199)).save(buf, "JPEG")
    good = buf.getvalue()
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001")) as w:
        w.write(example(good, b"ok.jpg", 2))
        buf = io.BytesIO()
        noise = np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)
        Image.fromarray(noise).save(buf, "JPEG")
        w.write(example(buf.getvalue()[:-300], b"cut.jpg", 1))
        w.write(example(b"GIF89a no", b"junk.gif", 1))
        w.write(example(b"hello world", b"text.jpg", 1))
    log = SkipLog()
    spec = load_spec(tmp_path, class_names=("x", "y"))
    ds = make_dataset(
        spec,
        training=False,
        image_size=24,
        batch_size=4,
        skipped=log,
        augment=data.AugmentConfig(resize=24),
    )
    x, y = next(iter(ds))
    assert y.numpy().tolist() == [1] and abs(float(x[0, 12, 12, 2]) - 199) < 4
    reasons = dict(log.entries)
    assert reasons["cut.jpg"] == "truncated JPEG (no end-of-image marker)"
    assert reasons["text.jpg"] == "not an image (unknown header)"
    assert "junk.gif" in reasons or len(reasons) == 2  # a GIF fails inside TF's decoder


def test_media_items_expand_group_and_decode_through_the_pipeline(tmp_path, monkeypatch):
    """The small coupling with alexkit.media: expand() at scan time, decode_member() per item."""
    from types import SimpleNamespace

    from alexkit.data import decode

    calls = []

    def expand(path, options):
        return [(f"{path}#frame={k}", f"clip:{path}") for k in range(3)]

    def decode_member(item, options):
        calls.append(item)
        return np.full((20, 24, 3), 10 * int(item.rsplit("=", 1)[1]), np.uint8)

    fake = SimpleNamespace(MEDIA_EXTENSIONS={".clip"}, expand=expand, decode_member=decode_member)
    monkeypatch.setattr(decode, "media_module", lambda: fake)
    for label in ("walk", "run"):
        (tmp_path / "v" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "v" / label / f"{i}.clip").write_bytes(b"x")
    spec = load_spec(tmp_path / "v", val_fraction=0.34, seed=0)
    assert len(spec) == 18 and spec.items[0].endswith("0.clip#frame=0")
    for g, s in zip(spec.groups, spec.splits, strict=True):  # frames of a clip share a split
        assert {s2 for g2, s2 in zip(spec.groups, spec.splits, strict=True) if g2 == g} == {s}
    assert spec.subset("val").counts() == {"run": 3, "walk": 3}
    ds = make_dataset(
        spec.subset("val"),
        training=False,
        image_size=16,
        batch_size=8,
        augment=data.AugmentConfig(resize=16),
    )
    ((images, labels),) = list(ds.as_numpy_iterator())
    assert images.shape == (6, 16, 16, 3)
    assert sorted(np.round(images[:, 8, 8, 0]).tolist()) == [0, 0, 10, 10, 20, 20]
    assert len(calls) == 6


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_in_graph_matches_pillow(orientation):
    import tensorflow as tf
    from PIL import ImageOps

    arr = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(img))
    got = data.exif_orient(tf.constant(arr), orientation).numpy()
    np.testing.assert_array_equal(got, expected)


def test_exif_rotated_jpegs_stay_on_the_native_path(tmp_path):
    (tmp_path / "d" / "x").mkdir(parents=True)
    rows, cols = np.mgrid[0:40, 0:64]
    arr = np.stack([rows * 6, cols * 4, rows + cols], -1).astype(np.uint8)
    for o in (1, 3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = o
        Image.fromarray(arr).save(
            tmp_path / "d" / "x" / f"o{o}.jpg", exif=exif.tobytes(), quality=95
        )
    spec = load_spec(tmp_path / "d", val_fraction=0)
    aug = data.AugmentConfig(resize=32, crop=False)
    ds = make_dataset(
        spec, training=False, image_size=32, batch_size=4, augment=aug, with_paths=True
    )
    images, _, items = next(iter(ds))
    for image, item in zip(images.numpy(), items.numpy(), strict=True):
        path = item.decode()
        upright = decode.decode_image(path)  # Pillow + exif_transpose
        oracle = augment.eval_transform(upright, 32, 32, crop=False).numpy()
        # TF's and Pillow's libjpeg differ by a few levels (chroma upsampling); a wrong
        # orientation would differ by ~100.
        np.testing.assert_allclose(image, oracle, atol=8.0, err_msg=path)
        assert np.abs(image - oracle).mean() < 2.5


def test_evaluation_pipelines_run_without_tf_data_autotuning(tmp_path):
    """Evaluation/extraction datasets turn tf.data autotuning off (parallelism = CPU
    count): dropping a finished autotuned iterator stalled 0.1-1.1 s while the model kept
    the cores busy. Training keeps autotuning. Same batches either way."""
    write_class_images(tmp_path, ["a", "b"], 3)
    spec = load_spec(str(tmp_path))
    evaluation = make_dataset(spec, training=False, image_size=64, batch_size=4)
    training = make_dataset(spec, training=True, image_size=64, batch_size=4)
    assert evaluation.options().autotune.enabled is False
    assert training.options().autotune.enabled is not False
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = True
    tuned = evaluation.with_options(options)
    for (x1, y1), (x2, y2) in zip(evaluation, tuned, strict=True):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())


def test_shards_of_each_global_batch_rebuild_the_unsharded_batches(tmp_path):
    """Multi-worker input: worker i decodes only slice i of every global batch, with
    the same images and augmentation as the single-process stream."""
    write_class_images(tmp_path, ["a", "b", "c"], 5)  # 15 images: 3 full batches of 4
    spec = load_spec(str(tmp_path))

    def batches(**kw):
        ds = make_dataset(spec, training=True, image_size=32, batch_size=4, seed=3, **kw)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    whole = batches(drop_remainder=True)
    parts = [batches(shard=(i, 2)) for i in range(2)]
    assert len(whole) == 3 and all(len(p) == 3 for p in parts)
    for k, (x, y) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[k][0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[k][1] for p in parts]), y)
    with pytest.raises(UsageError, match="divisible"):
        make_dataset(spec, training=True, batch_size=5, shard=(0, 2))


def test_pack_writes_the_same_bytes_in_every_process(tmp_path):
    # Protobuf serialises a feature map in an order that changes from process to process
    # (hash seed) unless asked not to: shards of the same data must be the same bytes.
    import subprocess
    import sys

    from alexkit import data

    write_class_images(tmp_path / "src", ["cat", "dog"], 3, size=(40, 30), fmt="JPEG")
    script = (
        "import sys; from alexkit import data; "
        "spec = data.load_spec(sys.argv[1], val_fraction=0.34, seed=0); "
        "data.pack_tfrecords(spec, sys.argv[2], shards=1)"
    )
    # This process packs "a"; a fresh one with another hash seed packs "b".
    spec = data.load_spec(str(tmp_path / "src"), val_fraction=0.34, seed=0)
    data.pack_tfrecords(spec, str(tmp_path / "a"), shards=1)
    ours = os.environ.get("PYTHONHASHSEED", "")
    other = str(int(ours) + 1) if ours.isdigit() else "1"  # unset here: random, not 1
    env = dict(os.environ, PYTHONHASHSEED=other)
    args = [sys.executable, "-c", script, str(tmp_path / "src"), str(tmp_path / "b")]
    subprocess.run(args, check=True, env=env, capture_output=True)
    first = sorted(p for p in (tmp_path / "a").iterdir() if "-of-" in p.name)
    assert first
    for p in first:
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes(), p.name
