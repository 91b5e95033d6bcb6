"""``alexkit data pack``: write a spec as ImageNet-style TFRecord shards.

Shards are named ``train-00000-of-00016`` and carry the standard keys
(``image/encoded``, ``image/class/label`` 1-based, ``image/filename``...), so they read
back through :func:`alexkit.data.load_spec` and TensorFlow's own ImageNet readers.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.data import decode as _decode
from alexkit.data.spec import CLASS_MAP_FILE, DatasetSpec, save_class_map
from alexkit.errors import DataError, UsageError


@dataclass(frozen=True)
class PackResult:
    """What :func:`pack_tfrecords` wrote."""

    out_dir: str
    shards: dict[str, list[str]]
    counts: dict[str, int]
    skipped: list[tuple[str, str]]


_SHARD_PREFIX = {"train": "train", "val": "validation", "test": "test", "": "train"}


def _encode_for_pack(item: str, resize: int | None, quality: int) -> tuple[bytes, int, int]:
    """JPEG bytes of one image, shorter side ≤ ``resize``; plain RGB JPEGs pass through."""
    import io

    from PIL import Image

    info = _decode.sniff(item)
    if not info.ok:
        raise _decode.UnreadableImage(info.reason, item)
    small_enough = resize is None or min(info.width, info.height) <= resize
    if info.route == _decode.ROUTE_JPEG and small_enough:
        data = Path(item).read_bytes()
        # Pass through only plain 3-channel JPEGs (not gray/CMYK): other readers expect RGB.
        with Image.open(io.BytesIO(data)) as img:
            if img.mode == "RGB":
                img.load()  # catches corrupt entropy data before it lands in a shard
                return data, img.height, img.width
    arr = _decode.decode_image(item)
    img = Image.fromarray(arr)
    if resize is not None and min(img.size) > resize:
        w, h = img.size
        scale = resize / min(w, h)
        img = img.resize(
            (max(resize, round(w * scale)), max(resize, round(h * scale))), Image.BICUBIC
        )
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), img.height, img.width


def _example(data: bytes, height: int, width: int, label: int, spec: DatasetSpec, item: str):
    import tensorflow as tf

    def b(v: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    name = spec.class_names[label].encode() if label >= 0 else b""
    feature = {
        "image/encoded": b(data),
        "image/format": b(b"JPEG"),
        "image/filename": b(os.path.basename(item).encode()),
        "image/height": i(height),
        "image/width": i(width),
        "image/colorspace": b(b"RGB"),
        "image/channels": i(3),
        "image/class/label": i(label + 1),  # 1-based, like TensorFlow's ImageNet builder
        "image/class/synset": b(name),
        "image/class/text": b(name),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True
    )


def pack_tfrecords(
    spec: DatasetSpec,
    out_dir: str | os.PathLike,
    *,
    shards: int = 16,
    resize: int | None = 256,
    quality: int = 90,
    seed: int = 0,
    workers: int | None = None,
    progress: Any = None,
) -> PackResult:
    """Write ImageNet-style TFRecord shards (``train-00000-of-00016``...) with the standard keys.

    Images are re-encoded as RGB JPEG with the shorter side at most ``resize`` (plain
    RGB JPEGs already small enough are copied byte for byte); items are shuffled with
    ``seed`` so each shard mixes classes. Labels are stored 1-based (``image/class/label``);
    ``class_names.json`` and ``pack.json`` are written beside the shards.

    Args:
        progress: optional callable ``progress(done, total)``.

    Raises:
        DataError: nothing readable to pack.
    """
    from alexkit.paths import atomic_write_text

    if shards < 1:
        raise UsageError(f"--shards must be >= 1. Received: {shards}")
    if resize is not None and resize < 1:
        raise UsageError(f"--resize must be a positive size. Received: {resize}")
    if spec.is_tfrecord:
        raise UsageError("the source is already TFRecord shards.")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from alexkit.paths import write_failure

        raise write_failure(out, exc.errno or 0, what="create") from exc
    rng = np.random.default_rng(seed)
    by_split: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(spec.splits):
        by_split[_SHARD_PREFIX[s]].append(i)
    n_train = max(1, len(by_split.get("train", [])))
    skipped: list[tuple[str, str]] = []
    written: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    total = len(spec)
    done = 0
    workers = workers or max(2, 2 * (os.cpu_count() or 1))

    def encode(i: int):
        try:
            return _encode_for_pack(spec.items[i], resize, quality), ""
        except _decode.UnreadableImage as exc:
            return None, exc.reason

    def advance() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    with ThreadPoolExecutor(workers) as pool:
        for prefix, index in by_split.items():
            order = [index[j] for j in rng.permutation(len(index))]
            n_shards = _shard_count(prefix, len(order), shards, n_train)
            bounds = np.linspace(0, len(order), n_shards + 1).astype(int)
            written[prefix] = []
            counts[prefix] = 0
            for s in range(n_shards):
                chunk = order[bounds[s] : bounds[s + 1]]
                target = out / f"{prefix}-{s:05d}-of-{n_shards:05d}"
                encoded = pool.map(encode, chunk)
                counts[prefix] += _write_shard(target, spec, chunk, encoded, skipped, advance)
                written[prefix].append(str(target))
    save_class_map(out / CLASS_MAP_FILE, spec.class_names)
    meta = {
        "source": spec.root,
        "resize": resize,
        "quality": quality,
        "counts": counts,
        "shards": {k: [Path(p).name for p in v] for k, v in written.items()},
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
    }
    atomic_write_text(out / "pack.json", json.dumps(meta, indent=2) + "\n")
    if sum(counts.values()) == 0:
        raise DataError(f"no readable images to pack in {spec.root}; {len(skipped)} skipped.")
    return PackResult(str(out), written, counts, skipped)


def _shard_count(prefix: str, n_items: int, shards: int, n_train: int) -> int:
    """``shards`` for train; other splits get shards in proportion to their size."""
    if prefix == "train":
        n_shards = shards
    else:
        n_shards = max(1, min(shards, -(-shards * n_items // n_train)))
    return min(n_shards, max(1, n_items))


def _write_shard(
    target: Path,
    spec: DatasetSpec,
    chunk: list[int],
    encoded: Iterable[tuple[tuple[bytes, int, int] | None, str]],
    skipped: list[tuple[str, str]],
    advance: Callable[[], None],
) -> int:
    """Write the encoded items ``chunk`` of ``spec`` to one shard (atomically); records written.

    ``encoded`` holds ``((jpeg bytes, height, width), "")`` or ``(None, reason)`` per item;
    unreadable items go to ``skipped``. ``advance()`` is called after each item.
    """
    import tensorflow as tf

    from alexkit.paths import atomic_path

    written = 0
    with atomic_path(target, suffix=".tmp") as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for i, (result, reason) in zip(chunk, encoded, strict=True):
                if result is None:
                    skipped.append((spec.items[i], reason))
                else:
                    data, h, w = result
                    writer.write(_example(data, h, w, spec.labels[i], spec, spec.items[i]))
                    written += 1
                advance()
    return written
