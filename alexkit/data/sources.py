"""Where the pipeline's images come from: files or TFRecord shards, checked before decoding.

:func:`file_source` sniffs every file's header once (:func:`sniff_all`) and routes it
to TensorFlow's native JPEG/PNG decoders, an in-graph EXIF rotation, a 16-bit PNG path
or Pillow (in a ``py_function`` that records failures in the :class:`SkipLog`).
:func:`tfrecord_source` reads shards interleaved and checks each record's bytes in the
graph (:func:`_record_check`). Both return ``(dataset, decode)`` for
:func:`alexkit.data.make_dataset`. TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from alexkit.data import decode as _decode
from alexkit.data.spec import DatasetSpec, SkipLog
from alexkit.errors import DataError, MissingExtraError, one_line


def sniff_all(items: Sequence[str], workers: int | None = None) -> list[_decode.Sniff]:
    """:func:`alexkit.data.decode.sniff` over many files on a thread pool (I/O bound)."""
    limit = _decode.max_pixels()
    if len(items) < 64:
        return [_decode.sniff(i, limit) for i in items]
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: _decode.sniff(i, limit), items, chunksize=64))


def file_source(spec: DatasetSpec, shuffle: bool, seed: int, skipped: SkipLog):
    """(dataset of (item, label, route), decode function) after the header sniff."""
    import tensorflow as tf

    infos = sniff_all(spec.items)
    keep = []
    for i, info in enumerate(infos):
        if info.ok:
            keep.append(i)
        else:
            skipped.add(spec.items[i], info.reason)
    if not keep:
        first = f" (first: {spec.items[0]}: {infos[0].reason})" if infos else ""
        raise DataError(
            f"no readable images in {spec.root or 'the data'}: {len(spec)} file(s) skipped"
            f"{first}; run `alexkit data check {spec.root}` for the list."
        )
    items = tf.constant([spec.items[i] for i in keep])
    labels = tf.constant([spec.labels[i] for i in keep], tf.int32)
    routes = tf.constant([infos[i].route for i in keep], tf.int32)
    orientations = tf.constant([infos[i].orientation for i in keep], tf.int32)
    used = sorted({infos[i].route for i in keep})
    ds = tf.data.Dataset.from_tensor_slices((items, labels, routes, orientations))
    if shuffle:
        ds = ds.shuffle(len(keep), seed=seed, reshuffle_each_iteration=True)
    py_decode = _py_decoder(skipped)

    def decode(element, jpeg_fn, transform):
        """Route-dependent decode; with transforms, the transformed image."""
        item, label, route, orientation = element
        same = transform or (lambda im: im)

        def native(decoder):
            return lambda: (same(decoder(tf.io.read_file(item))), tf.constant(True))

        def jpeg():
            if jpeg_fn is None:
                return native(lambda b: tf.io.decode_jpeg(b, channels=3))()
            return jpeg_fn(tf.io.read_file(item)), tf.constant(True)

        def pillow():
            image, ok = py_decode(item)
            return same(image), ok

        branches = [
            jpeg,
            native(lambda b: tf.io.decode_png(b, channels=3)),
            native(_decode_png16),
            pillow,
            native(lambda b: exif_orient(tf.io.decode_jpeg(b, channels=3), orientation)),
        ]
        if len(used) == 1:
            # One route (the usual case): no Case op, which costs ~30% of the throughput.
            image, ok = branches[used[0]]()
        else:
            image, ok = tf.switch_case(route, branches)
        return image, label, item, ok

    return ds, decode


def exif_orient(image, orientation):
    """Apply an EXIF orientation (1..8) in the graph, like Pillow's ``exif_transpose``."""
    import tensorflow as tf

    o = tf.cast(orientation, tf.int32)
    image = tf.cond(o >= 5, lambda: tf.transpose(image, (1, 0, 2)), lambda: image)
    lr = tf.reduce_any(tf.equal(o, [2, 3, 6, 7]))
    ud = tf.reduce_any(tf.equal(o, [3, 4, 7, 8]))
    image = tf.cond(lr, lambda: tf.reverse(image, [1]), lambda: image)
    return tf.cond(ud, lambda: tf.reverse(image, [0]), lambda: image)


def _decode_png16(data):
    """16-bit PNG → uint8 scaled by the actual bit range (same as decode.scale_16bit)."""
    import tensorflow as tf

    pixels = tf.io.decode_png(data, channels=3, dtype=tf.uint16)
    top = tf.cast(tf.reduce_max(pixels), tf.int32)
    bits = tf.reduce_sum(tf.cast(top >= tf.bitwise.left_shift(1, tf.range(17)), tf.int32))
    bits = tf.maximum(bits, 8)
    scale = 255.0 / (tf.cast(tf.bitwise.left_shift(1, bits), tf.float32) - 1.0)
    return tf.cast(tf.round(tf.cast(pixels, tf.float32) * scale), tf.uint8)


def _py_decoder(skipped: SkipLog):
    """A graph function decoding one item with Pillow/media, recording failures."""
    import tensorflow as tf

    def run(item_tensor):
        item = item_tensor.numpy().decode("utf-8", "surrogateescape")
        try:
            return _decode.decode_image(item), True
        except _decode.UnreadableImage as exc:
            skipped.add(item, exc.reason)
        except MissingExtraError as exc:  # raising inside tf.data would bury the pip command
            skipped.add(item, str(exc))
        except Exception as exc:  # never let one odd file kill an epoch; report it instead
            skipped.add(item, f"unexpected decode error ({one_line(exc, limit=120)})")
        return np.zeros((1, 1, 3), np.uint8), False

    def decode(item):
        image, ok = tf.py_function(run, [item], (tf.uint8, tf.bool))
        image.set_shape((None, None, 3))
        ok.set_shape(())
        return image, ok

    return decode


_REASONS = (
    "",
    "empty image bytes",
    "not an image (unknown header)",
    "truncated JPEG (no end-of-image marker)",
    "truncated PNG (no IEND chunk)",
    "too large (decompression-bomb guard)",
)


def _record_check(data):
    """In-graph check of encoded bytes → reason code (0 = fine)."""
    import tensorflow as tf

    n = tf.strings.length(data)
    head = tf.strings.substr(data, 0, 8)
    is_jpeg = tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff"
    is_png = head == b"\x89PNG\r\n\x1a\n"
    is_other = tf.logical_or(
        tf.strings.substr(head, 0, 3) == b"GIF", tf.strings.substr(head, 0, 2) == b"BM"
    )
    tail_len = tf.minimum(n, 4096)
    tail = tf.io.decode_raw(tf.strings.substr(data, n - tail_len, tail_len), tf.uint8)

    def has_pair(a, b):
        return tf.reduce_any(tf.logical_and(tf.equal(tail[:-1], a), tf.equal(tail[1:], b)))

    def has_iend():
        return tf.reduce_any(
            tf.logical_and(
                tf.logical_and(tf.equal(tail[:-3], 73), tf.equal(tail[1:-2], 69)),
                tf.logical_and(tf.equal(tail[2:-1], 78), tf.equal(tail[3:], 68)),
            )
        )

    def jpeg_size_code():
        shape = tf.io.extract_jpeg_shape(data)
        too_big = tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64) > _decode.max_pixels()
        return tf.where(too_big, 5, 0)

    def jpeg_code():
        # Size only when the end marker is there: a cut header would fail extract_jpeg_shape.
        return tf.cond(has_pair(255, 217), jpeg_size_code, lambda: tf.constant(3))

    return tf.case(
        [
            (n < 8, lambda: tf.constant(1)),
            (is_jpeg, jpeg_code),
            (is_png, lambda: tf.where(has_iend(), 0, 4)),
            (is_other, lambda: tf.constant(0)),
        ],
        default=lambda: tf.constant(2),
    )


def record_features():
    """The ImageNet TFRecord keys alexkit reads (others may be present)."""
    import tensorflow as tf

    return {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }


def tfrecord_source(spec: DatasetSpec, shuffle: bool, seed: int, skipped: SkipLog, buffer: int):
    """(dataset of serialized records, decode function) with interleaved shard reading."""
    import tensorflow as tf

    files = list(spec.items)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DataError(f"TFRecord shard {missing[0]} does not exist.")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20),
        cycle_length=min(len(files), 16),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if shuffle:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    reasons = tf.constant(_REASONS)

    def record_skip(name, code):
        skipped.add(name.numpy().decode("utf-8", "replace"), reasons[int(code)].numpy().decode())
        return np.zeros((1, 1, 3), np.uint8)

    def decode(element, jpeg_fn, transform):
        (record,) = element if isinstance(element, tuple) else (element,)
        ex = tf.io.parse_single_example(record, record_features())
        data = ex["image/encoded"]
        label = tf.cast(ex["image/class/label"], tf.int32) - 1  # stored 1-based
        name = ex["image/filename"]
        code = _record_check(data)
        same = transform or (lambda im: im)

        def bad():
            img = tf.py_function(record_skip, [name, code], tf.uint8)
            return same(tf.ensure_shape(img, (None, None, 3)))

        def generic():
            img = tf.io.decode_image(data, channels=3, expand_animations=False)
            return same(tf.ensure_shape(img, (None, None, 3)))

        def good():
            if jpeg_fn is None:
                return generic()
            is_jpeg = tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff"
            return tf.cond(is_jpeg, lambda: jpeg_fn(data), generic)

        image = tf.cond(code == 0, good, bad)
        return image, label, name, code == 0

    return ds, decode
