"""``alexkit data check``: read every image once and report what would go wrong.

:func:`scan` decodes each file (or TFRecord record) and returns a :class:`ScanReport`:
counts per split and class, unreadable and ignored files, image sizes, formats,
byte-identical duplicates (across splits: leakage), class imbalance and warnings.
Importing this module does not import TensorFlow (only TFRecord scans need it).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexkit import quiet
from alexkit.data import decode as _decode
from alexkit.data.layouts import UNREADABLE_MEDIA
from alexkit.data.sources import record_features
from alexkit.data.spec import MIN_VAL_PER_CLASS, DatasetSpec, quote_names
from alexkit.errors import UnreadableImage, one_line
from alexkit.quiet import quiet_read


@dataclass
class ScanReport:
    """What ``alexkit data check`` found; :meth:`to_json` is the stable JSON schema."""

    source: str
    layout: str
    class_names: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    unreadable: list[tuple[str, str]]
    ignored: list[tuple[str, str]]
    sizes: dict[str, Any]
    formats: dict[str, int]
    duplicates_across_splits: list[list[tuple[str, str]]]
    duplicates_within_splits: int
    warnings: list[str] = field(default_factory=list)
    imbalance: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    library_warnings: dict[str, int] = field(default_factory=lambda: {"files": 0, "messages": 0})

    @property
    def classes(self) -> dict[str, int]:
        """Readable images per class, all splits together."""
        total = {name: 0 for name in self.class_names}
        for per_class in self.counts.values():
            for name, n in per_class.items():
                total[name] += n
        return total

    @property
    def readable(self) -> int:
        return sum(self.classes.values())

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``alexkit data check --json`` (schema ``alexkit.data-check/1``).

        Keys (stable; new keys may be added, none removed or renamed within version 1):
        ``schema``; ``source``; ``layout`` ("folders", "split-folders", "csv", "imagenet",
        "tfrecord"); ``classes`` {class name: readable images, all splits}; ``splits``
        {split: readable images} with split "train"/"val"/"test", or "all" for unsplit
        data; ``counts`` {split: {class: n}}; ``total`` {readable, unreadable, ignored};
        ``unreadable`` [{path, reason}] (TFRecord: path is "shard:filename");
        ``ignored`` [{path, reason}] (non-image files, files outside class folders);
        ``sizes`` {width/height: {min, median, mean, max}, shorter_side_below_256};
        ``formats`` {JPEG/PNG/...: n}; ``duplicates_across_splits`` [[{path, split}]]
        (byte-identical files in more than one split: leakage);
        ``duplicates_within_splits`` n; ``imbalance`` {ratio, largest, smallest,
        warning} on the train (or unsplit) counts; ``warnings`` [one-line strings];
        ``groups`` {kind: {counts: {split: {class: n}}, splits: {split: n}, classes:
        {class: n}, total: n}} with kind "clips" (video files), "volumes" (NIfTI files,
        DICOM series folders), "patients" (DICOM PatientID groups) or "groups" (a
        manifest's group column): distinct groups among readable items, present only for
        kinds the data has (counts only: group ids never appear; a group with items of
        two classes counts once in each class, once in the totals); ``library_warnings``
        {files, messages}: files read despite third-party warnings (``--verbose`` logs them).
        """
        return {
            "schema": "alexkit.data-check/1",
            "source": self.source,
            "layout": self.layout,
            "classes": self.classes,
            "splits": {s: sum(c.values()) for s, c in self.counts.items()},
            "counts": self.counts,
            "total": {
                "readable": self.readable,
                "unreadable": len(self.unreadable),
                "ignored": len(self.ignored),
            },
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
            "ignored": [{"path": p, "reason": r} for p, r in self.ignored],
            "sizes": self.sizes,
            "formats": self.formats,
            "duplicates_across_splits": [
                [{"path": p, "split": s} for p, s in group]
                for group in self.duplicates_across_splits
            ],
            "duplicates_within_splits": self.duplicates_within_splits,
            "imbalance": self.imbalance,
            "warnings": self.warnings,
            "groups": self.groups,
            "library_warnings": self.library_warnings,
        }


def _verify(item: str, limit: int) -> tuple[str, int, int, str, str]:
    """(format, width, height, sha1 of the bytes, reason) — reads and decodes the file once."""
    info = _decode.sniff(item, limit)
    if not info.ok:
        return info.format, info.width, info.height, "", info.reason
    if info.format == "MEDIA" or info.route == _decode.ROUTE_PNG16:
        try:
            arr = _decode.decode_image(item, limit=limit)
        except _decode.UnreadableImage as exc:
            return info.format, 0, 0, "", exc.reason
        return info.format, arr.shape[1], arr.shape[0], "", ""
    import io

    from PIL import Image

    try:
        data = Path(item).read_bytes()
    except OSError as exc:
        return info.format, 0, 0, "", f"cannot read file ({exc.strerror})"
    digest = hashlib.sha1(data).hexdigest()
    try:
        # Pillow's warnings become the failure's reason, or a counted report line.
        with quiet_read(item):
            try:
                with Image.open(io.BytesIO(data)) as img:
                    if info.format == "JPEG":
                        # 1/8-scale decode still parses every entropy-coded byte: truncation
                        # and corrupt data are found at a fraction of the cost.
                        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                    img.load()
            except Exception as exc:  # Pillow raises OSError/ValueError/SyntaxError/...
                text = one_line(exc, limit=120)
                truncated = "truncated" in text.lower()
                kind = "truncated image" if truncated else f"corrupt {info.format}"
                raise UnreadableImage(f"{kind} ({text})", item) from None
    except UnreadableImage as exc:
        return info.format, info.width, info.height, digest, exc.reason
    return info.format, info.width, info.height, digest, ""


def scan(
    spec: DatasetSpec, *, workers: int | None = None, imbalance_ratio: float = 3.0
) -> ScanReport:
    """Read every image once: counts, sizes, unreadable files, duplicates, imbalance.

    Third-party warnings raised while reading (pydicom, Pillow, PyAV, nibabel) are not
    printed: a failed read carries the first in its reason, and files read despite them
    are counted (``library_warnings`` and one warning line). The count covers every
    read since the last ``alexkit.quiet.tally(reset=True)`` — call it before
    :func:`load_spec` to include the header reads of DICOM files; the scan resets it.

    Args:
        spec: from :func:`load_spec` (files or TFRecord shards).
        workers: decoding threads (Pillow releases the GIL); default 2 × CPUs.
        imbalance_ratio: warn when the largest class is this many times the smallest.
    """
    if spec.is_tfrecord:
        report = _scan_tfrecords(spec, imbalance_ratio)
        _add_library_warnings(report)
        return report
    limit = _decode.max_pixels()
    workers = workers or max(2, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda i: _verify(i, limit), spec.items, chunksize=16))
    counts: dict[str, dict[str, int]] = {}
    for s in spec.split_names():
        counts[s or "all"] = {name: 0 for name in spec.class_names}
    # Broken clips/volumes never became items: they were set aside by load_spec.
    broken_media = [(p, r) for p, r in spec.ignored if r.startswith(UNREADABLE_MEDIA)]
    unreadable, widths, heights, formats = list(broken_media), [], [], Counter()
    by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
    members: dict[tuple[str, str, str], set[str]] = defaultdict(set)  # (kind, split, class)
    for item, label, split, group, (fmt, w, h, digest, reason) in zip(
        spec.items, spec.labels, spec.splits, spec.groups, results, strict=True
    ):
        if reason:
            unreadable.append((item, reason))
            continue
        if label >= 0:
            name = spec.class_names[label]
            counts[split or "all"][name] += 1
            for kind, key in _group_keys(item, group):
                members[kind, split or "all", name].add(key)
        widths.append(w)
        heights.append(h)
        formats[fmt] += 1
        if digest:
            by_hash[digest].append((item, split or "all"))
    across, within = [], 0
    for group in by_hash.values():
        if len(group) < 2:
            continue
        if len({s for _, s in group}) > 1:
            across.append(group)
        else:
            within += len(group) - 1
    report = ScanReport(
        source=spec.root,
        layout=spec.layout,
        class_names=spec.class_names,
        counts=counts,
        unreadable=unreadable,
        ignored=[(p, r) for p, r in spec.ignored if not r.startswith(UNREADABLE_MEDIA)],
        sizes=_size_stats(widths, heights),
        formats=dict(formats),
        duplicates_across_splits=across,
        duplicates_within_splits=within,
        groups=_group_counts(members, counts),
    )
    _add_warnings(report, imbalance_ratio)
    _add_library_warnings(report)
    return report


GROUP_KINDS = ("clips", "volumes", "patients", "groups")


def _group_keys(item: str, group: str) -> list[tuple[str, str]]:
    """(kind, key) pairs an item belongs to; keys stay in memory, only counts are reported."""
    source, member = _decode.split_item(item)
    fields = {part.split("=", 1)[0] for part in member.split(",")} if member else set()
    keys = []
    if "t" in fields:  # a video frame: frame=i,t=s
        keys.append(("clips", source))
    elif "slice" in fields:  # a NIfTI volume or a DICOM series folder
        keys.append(("volumes", source))
    if group.startswith("patient:"):
        keys.append(("patients", group))
    elif group and not group.startswith(("clip:", "volume:", "file:")):
        keys.append(("groups", group))  # a manifest's own group column
    return keys


def _group_counts(
    members: dict[tuple[str, str, str], set[str]], counts: dict[str, dict[str, int]]
) -> dict[str, dict[str, Any]]:
    """Distinct groups of each kind present: per split and class, per split, per class, all.

    A group with items of two classes counts once in each class but once in the totals.
    """
    out: dict[str, dict[str, Any]] = {}
    for kind in GROUP_KINDS:
        cells = {(s, c): keys for (k, s, c), keys in members.items() if k == kind}
        if not cells:
            continue
        empty: set[str] = set()
        names = [c for per_class in counts.values() for c in per_class]
        names = list(dict.fromkeys(names))
        out[kind] = {
            "counts": {
                split: {c: len(cells.get((split, c), empty)) for c in per_class}
                for split, per_class in counts.items()
            },
            "splits": {
                split: len(set().union(*(cells.get((split, c), empty) for c in per_class)))
                for split, per_class in counts.items()
            },
            "classes": {
                c: len(set().union(*(cells.get((s, c), empty) for s in counts))) for c in names
            },
            "total": len(set().union(*cells.values())),
        }
    return out


def _add_library_warnings(report: ScanReport) -> None:
    """Count files read despite library warnings; unreadable ones are listed already (their
    reason carries the first warning), even when their header read succeeded earlier."""
    files, extra = quiet.tally(reset=True)
    failed = {_decode.split_item(p)[0] for p, _ in report.unreadable}
    files = {p: n for p, n in files.items() if p not in failed}
    count, messages = len(files) + extra, sum(files.values())
    report.library_warnings = {"files": count, "messages": messages}
    if count:
        report.warnings.append(
            f"{count} file(s) were read despite library warnings ({messages} message(s)"
            f"{' in the first 10,000 files' if extra else ''}); --verbose shows them."
        )


def _size_stats(widths: list[int], heights: list[int]) -> dict[str, Any]:
    if not widths:
        return {}

    def stats(values: list[int]) -> dict[str, float]:
        arr = np.asarray(values)
        return {
            "min": int(arr.min()),
            "median": float(np.median(arr)),
            "mean": round(float(arr.mean()), 1),
            "max": int(arr.max()),
        }

    short = [min(w, h) for w, h in zip(widths, heights, strict=True)]
    return {
        "width": stats(widths),
        "height": stats(heights),
        "shorter_side_below_256": int(sum(s < 256 for s in short)),
    }


def _add_warnings(report: ScanReport, ratio_limit: float) -> None:
    train = report.counts.get("train") or report.counts.get("all") or {}
    nonzero = {k: v for k, v in train.items() if v > 0}
    if len(nonzero) >= 2:
        largest = max(nonzero, key=nonzero.get)
        smallest = min(nonzero, key=nonzero.get)
        ratio = nonzero[largest] / nonzero[smallest]
        warn = ratio >= ratio_limit
        report.imbalance = {
            "ratio": round(ratio, 2),
            "largest": largest,
            "smallest": smallest,
            "warning": warn,
        }
        if warn:
            report.warnings.append(
                f"class imbalance {ratio:.1f}:1 ({largest!r} {nonzero[largest]} vs "
                f"{smallest!r} {nonzero[smallest]}): consider class weights or balanced sampling."
            )
    for split, per_class in report.counts.items():
        missing = [c for c, n in per_class.items() if n == 0]
        if missing and split != "all":
            report.warnings.append(f"split {split!r} has no images of {quote_names(missing)}.")
    val = report.counts.get("val")
    if val and 0 < min(val.values()) < 10:  # noisy, though finetune only re-splits below 5
        report.warnings.append(
            f"val split has only {min(val.values())} image(s) in a class: metrics will be "
            "noisy; `alexkit finetune` re-splits a stratified val from train when a class "
            f"has fewer than {MIN_VAL_PER_CLASS} (Python: load_spec(..., resplit_val=True))."
        )
    if report.unreadable:
        report.warnings.append(f"{len(report.unreadable)} unreadable file(s) will be skipped.")
    if report.duplicates_across_splits:
        report.warnings.append(
            f"{len(report.duplicates_across_splits)} image(s) appear in more than one split "
            "(exact duplicates): evaluation leaks training data."
        )
    if report.sizes.get("shorter_side_below_256"):
        report.warnings.append(
            f"{report.sizes['shorter_side_below_256']} image(s) have a shorter side below 256 "
            "and will be upscaled."
        )


def _scan_tfrecords(spec: DatasetSpec, ratio_limit: float) -> ScanReport:
    import tensorflow as tf

    counts: dict[str, dict[str, int]] = {}
    unreadable: list[tuple[str, str]] = []
    widths, heights, formats = [], [], Counter()
    by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for shard, split in zip(spec.items, spec.splits, strict=True):
        per_class = counts.setdefault(split or "all", {n: 0 for n in spec.class_names})
        try:
            for raw in tf.data.TFRecordDataset(shard).as_numpy_iterator():
                ex = tf.io.parse_single_example(raw, record_features())
                name = ex["image/filename"].numpy().decode("utf-8", "replace") or shard
                data = ex["image/encoded"].numpy()
                label = int(ex["image/class/label"].numpy()) - 1
                try:
                    arr = _decode.decode_bytes(data, name=f"{shard}:{name}")
                except _decode.UnreadableImage as exc:
                    unreadable.append((f"{shard}:{name}", exc.reason))
                    continue
                if not 0 <= label < len(spec.class_names):
                    unreadable.append((f"{shard}:{name}", f"label {label + 1} out of range"))
                    continue
                per_class[spec.class_names[label]] += 1
                heights.append(arr.shape[0])
                widths.append(arr.shape[1])
                formats["JPEG" if data[:2] == b"\xff\xd8" else "other"] += 1
                by_hash[hashlib.sha1(data).hexdigest()].append((name, split or "all"))
        except tf.errors.DataLossError as exc:
            unreadable.append((shard, f"corrupt TFRecord shard ({one_line(exc, limit=120)})"))
    across = [g for g in by_hash.values() if len({s for _, s in g}) > 1]
    within = sum(len(g) - 1 for g in by_hash.values() if len({s for _, s in g}) == 1)
    report = ScanReport(
        spec.root,
        spec.layout,
        spec.class_names,
        counts,
        unreadable,
        [],
        _size_stats(widths, heights),
        dict(formats),
        across,
        within,
    )
    _add_warnings(report, ratio_limit)
    return report
