"""Image datasets: sources (folders, CSV, ImageNet, TFRecord) → a spec → tf.data.

A :class:`DatasetSpec` is plain data (paths, integer labels, class names, split, group);
:func:`load_spec` builds it from what users have on disk, :func:`make_dataset` streams it
through decoding and augmentation, :func:`scan` checks it (``alexkit data check``) and
:func:`pack_tfrecords` writes ImageNet-style shards (``alexkit data pack``).

Where unreadable files are caught (and what it costs):

* ``make_dataset`` sniffs every file's header and last 4 KiB once, on a thread pool,
  before the first batch (~50 µs a file measured with a warm page cache: ~3 s for
  50,000 files, ~1 min for ImageNet's 1.28 M — pack those into TFRecords once).
  Zero-byte, non-image, truncated and over-large files are skipped there and recorded in
  the :class:`SkipLog` with their path and reason; the rest are routed to TensorFlow's
  native JPEG/PNG decoders or to Pillow.
* Files on the Pillow route that still fail are recorded from inside the pipeline
  (a ``py_function`` returns an ``ok`` flag; failed elements are filtered out).
* TFRecord images are checked in the graph (magic bytes, end marker, JPEG size) and
  failures recorded by ``image/filename``.
* Last resort: an image that passes these checks but still fails inside TensorFlow's
  C++ decoder is dropped with a TensorFlow warning on stderr (``ignore_errors``), which
  does not name the file; ``alexkit data check`` decodes every file and names it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.data import decode as _decode
from alexkit.data.augment import AugmentConfig
from alexkit.errors import DataError, MissingExtraError, UsageError

log = logging.getLogger(__name__)

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
# Fewer validation images than this in a class and finetune re-splits (Kermany's 8 + 8).
MIN_VAL_PER_CLASS = 5
SPLITS = ("train", "val", "test")
CLASS_MAP_FILE = "class_names.json"
_IGNORED_NAMES = {
    "__MACOSX",
    "Thumbs.db",
    "desktop.ini",
    "$RECYCLE.BIN",
    "System Volume Information",
}
_WNID = re.compile(r"^n\d{8}$")
_SHARD = re.compile(r"^(?P<split>[A-Za-z]+)[-_].*-of-\d+$|\.tfrecords?(-\d+-of-\d+)?$|\.tfrec$")


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class DatasetSpec:
    """A labelled set of images, as plain data.

    Attributes:
        items: file paths (or ``path#member`` media items; TFRecord shard paths when
            ``layout == "tfrecord"``).
        labels: integer label per item (-1 unknown; all -1 for TFRecord shards).
        class_names: label → name.
        splits: "train", "val", "test" or "" per item.
        groups: group per item (e.g. patient id, video); "" for none. A group never
            spans two splits.
        root: where the data came from.
        layout: "folders", "split-folders", "csv", "imagenet", "tfrecord" or "list".
        ignored: (path, reason) for files in class folders that are not images.
    """

    items: tuple[str, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...]
    splits: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    root: str = ""
    layout: str = "list"
    ignored: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        n = len(self.items)
        object.__setattr__(self, "items", tuple(str(i) for i in self.items))
        object.__setattr__(self, "labels", tuple(int(v) for v in self.labels))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if not self.splits:
            object.__setattr__(self, "splits", ("",) * n)
        if not self.groups:
            object.__setattr__(self, "groups", ("",) * n)
        for name in ("labels", "splits", "groups"):
            if len(getattr(self, name)) != n:
                raise UsageError(
                    f"DatasetSpec.{name} has {len(getattr(self, name))} entries for {n} items."
                )
        bad = [v for v in self.labels if v < -1 or v >= len(self.class_names)]
        if bad:
            raise DataError(
                f"label {bad[0]} is outside 0..{len(self.class_names) - 1} for "
                f"{len(self.class_names)} class names in {self.root or 'the spec'}."
            )

    def __len__(self) -> int:
        return len(self.items)

    @property
    def is_tfrecord(self) -> bool:
        return self.layout == "tfrecord"

    def subset(self, split: str) -> DatasetSpec:
        """The items of one split ("train", "val", "test", or "" for unsplit items)."""
        keep = [i for i, s in enumerate(self.splits) if s == split]
        return self._take(keep)

    def _take(self, index: Sequence[int]) -> DatasetSpec:
        return replace(
            self,
            items=tuple(self.items[i] for i in index),
            labels=tuple(self.labels[i] for i in index),
            splits=tuple(self.splits[i] for i in index),
            groups=tuple(self.groups[i] for i in index),
        )

    def counts(self, split: str | None = None) -> dict[str, int]:
        """Items per class name (all splits, or one)."""
        counter = Counter(
            lab
            for lab, s in zip(self.labels, self.splits, strict=True)
            if split is None or s == split
        )
        return {name: counter.get(k, 0) for k, name in enumerate(self.class_names)}

    def split_names(self) -> list[str]:
        """The splits present, in train/val/test order."""
        present = set(self.splits)
        return [s for s in (*SPLITS, "") if s in present]


class SkipLog:
    """Files that could not be read, with the reason; thread-safe, one entry per path."""

    def __init__(self) -> None:
        self._entries: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            if path not in self._entries:
                self._entries[path] = reason
                log.warning("skipped %s: %s", path, reason)

    @property
    def entries(self) -> list[tuple[str, str]]:
        """(path, reason) pairs, in the order they were found."""
        with self._lock:
            return list(self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    def by_reason(self) -> dict[str, int]:
        """How many files per reason kind (text before any parenthesis)."""
        return dict(Counter(r.split(" (")[0] for r in self._entries.values()))


# --------------------------------------------------------------------------- class maps


def save_class_map(path: str | os.PathLike, class_names: Sequence[str]) -> Path:
    """Write ``{"class_names": [...]}`` (label k is ``class_names[k]``) atomically."""
    from alexkit.paths import atomic_write_text

    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / CLASS_MAP_FILE
    atomic_write_text(path, json.dumps({"class_names": list(class_names)}, indent=2) + "\n")
    return path


def load_class_map(path: str | os.PathLike) -> tuple[str, ...]:
    """Read class names from a class map, a run's ``config.json`` or a text file (one a line)."""
    path = Path(path)
    if path.is_dir():
        for name in (CLASS_MAP_FILE, "config.json"):
            if (path / name).is_file():
                return load_class_map(path / name)
        raise DataError(f"no {CLASS_MAP_FILE} or config.json in {path}.")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read class map {path}: {exc.strerror}.") from None
    if path.suffix == ".json":
        try:
            names = json.loads(text)["class_names"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{path} has no 'class_names' list.") from None
        return tuple(str(n) for n in names)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def check_classes(spec: DatasetSpec, known_class_names: Sequence[str]) -> None:
    """Raise DataError if ``spec`` has classes the model does not know.

    Raises:
        DataError: naming the unknown classes and the known ones.
    """
    known = set(known_class_names)
    present = {spec.class_names[lab] for lab in spec.labels if lab >= 0}
    unknown = sorted(present - known)
    if unknown:
        raise DataError(
            f"{len(unknown)} class(es) in {spec.root or 'the data'} unknown to the model: "
            f"{_list(unknown)}; known: {_list(sorted(known))}. Rename the folders or retrain."
        )


def relabel(spec: DatasetSpec, class_names: Sequence[str]) -> DatasetSpec:
    """Map ``spec`` onto a fixed class list (e.g. a trained model's); unknown names fail."""
    class_names = tuple(class_names)
    if spec.is_tfrecord:
        return replace(spec, class_names=class_names)
    check_classes(spec, class_names)
    index = {name: k for k, name in enumerate(class_names)}
    labels = tuple(index[spec.class_names[lab]] if lab >= 0 else -1 for lab in spec.labels)
    return replace(spec, labels=labels, class_names=class_names)


def _list(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# --------------------------------------------------------------------------- sources


def _visible(name: str) -> bool:
    return not (name.startswith(".") or name in _IGNORED_NAMES)


def _media_extensions() -> tuple[str, ...]:
    media = _decode.media_module()
    return tuple(getattr(media, "MEDIA_EXTENSIONS", ())) if media else ()


def _kind(name: str, media_exts: tuple[str, ...]) -> str:
    lower = name.lower()
    if os.path.splitext(lower)[1] in _decode.IMAGE_EXTENSIONS:
        return "image"
    if media_exts and any(lower.endswith(ext) for ext in media_exts):
        return "media"
    return "other"


def _walk(folder: Path, media_exts: tuple[str, ...] = ()) -> Iterable[Path]:
    """Files under ``folder``, sorted, skipping hidden files/dirs, __MACOSX and ._* files.

    A sub-folder holding one DICOM series is yielded itself (a volume), not walked.
    """
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        kept = []
        for d in sorted(d for d in dirnames if _visible(d)):
            sub = Path(dirpath) / d
            if media_exts and is_series_folder(sub):
                yield sub
            else:
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            if _visible(name):
                yield Path(dirpath) / name


def is_series_folder(folder: Path) -> bool:
    """``alexkit.media.is_dicom_series``, asked only of folders that may hold DICOM.

    Folders of ordinary images are never opened (the check reads file headers); a
    folder of extension-less files without pydicom installed is simply not a series.
    """
    try:
        names = [n for n in os.listdir(folder) if _visible(n)]
    except OSError:
        return False
    dicom_named = [n for n in names if os.path.splitext(n.lower())[1] in (".dcm", ".dicom")]
    candidates = dicom_named or [n for n in names if not os.path.splitext(n)[1]]
    if len(candidates) < 2 or not all(os.path.isfile(folder / n) for n in candidates[:2]):
        return False
    media = _decode.media_module()
    if media is None:
        return False
    try:
        return bool(media.is_dicom_series(str(folder)))
    except MissingExtraError:
        if dicom_named:
            raise
        return False


def collect_items(folder: Path, media_options: Any, ignored: list) -> list[tuple[str, str]]:
    """(item, group) for every image or media item under ``folder``, recursively.

    Clips, DICOM files and NIfTI volumes give one item per frame/slice, a DICOM series
    sub-folder one volume. ``ignored`` receives ``(path, reason)`` for other files and
    for media that cannot be read (reason starting with :data:`UNREADABLE_MEDIA`).

    Raises:
        MissingExtraError: media files whose reader is not installed.
    """
    media_exts = _media_extensions()
    out: list[tuple[str, str]] = []
    for path in _walk(folder, media_exts):
        if path.is_dir():  # a DICOM series: one volume
            out.extend(expand_media(path, media_options, ignored))
            continue
        kind = _kind(path.name, media_exts)
        if kind == "image":
            out.append((str(path), ""))
        elif kind == "media":
            out.extend(expand_media(path, media_options, ignored))
        else:
            ignored.append((str(path), "not an image file extension"))
    return out


# The reason prefix of a clip/DICOM/volume that failed to expand: `data check` lists
# these as unreadable (like broken images), not as ignored files.
UNREADABLE_MEDIA = "unreadable media"


def expand_media(path: Path, options: Any, ignored: list) -> list[tuple[str, str]]:
    """Frames/slices of one clip, DICOM file, volume or series; broken ones are listed.

    Raises:
        MissingExtraError: the reader for this kind is not installed (not a per-file
            problem: every such file would fail, so say how to install it once).
    """
    media = _decode.media_module()
    try:
        pairs = media.expand(str(path), options)
    except MissingExtraError:
        raise
    except DataError as exc:
        # UnreadableImage keeps the reader's reason whole (it may name a pip command).
        reason = getattr(exc, "reason", None) or _decode._short(exc)
        ignored.append((str(path), f"{UNREADABLE_MEDIA} ({reason})"))
        return []
    except Exception as exc:  # media readers raise many kinds; the file is reported, not fatal
        ignored.append((str(path), f"{UNREADABLE_MEDIA} ({_decode._short(exc)})"))
        return []
    return [(str(item), str(group)) for item, group in pairs]


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p.name))
    except OSError:
        return []


def _split_dirs(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for sub in _subdirs(folder):
        split = SPLIT_ALIASES.get(sub.name.lower())
        if split and split not in found:
            found[split] = sub
    return found


def _has_files(folder: Path) -> bool:
    try:
        return any(p.is_file() and _visible(p.name) for p in folder.iterdir())
    except OSError:
        return False


def load_spec(
    source: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    split: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    resplit_val: bool = False,
    labels_file: str | os.PathLike | None = None,
    media_options: Any = None,
) -> DatasetSpec:
    """Build a :class:`DatasetSpec` from a folder, a CSV manifest or TFRecord shards.

    Layouts (auto-detected): ``root/<class>/*``; ``root/{train,val,valid,test}/<class>/*``;
    ImageNet ``train/<wnid>/*`` + flat ``val/`` with ``LOC_val_solution.csv`` or Caffe
    ``val.txt``; a CSV ``path,label[,split][,group]``; TFRecord shards (folder or glob).
    A single wrapper folder (``chest_xray/chest_xray/...``) is looked through.

    Args:
        source: folder, ``.csv`` file, or shard glob.
        class_names: fixed label order (e.g. a trained model's); data with other classes
            is refused. Default: sorted class names found.
        split: keep only this split. An unsplit source asked for "test" gives all items.
        val_fraction: when no validation split exists, carve one per class (stratified,
            group-aware, seeded); 0 keeps the data unsplit.
        seed: seed of that split (same seed → same split).
        resplit_val: merge an existing (tiny) val split into train and re-split.
        labels_file: ImageNet validation labels, if not found next to the data.
        media_options: passed to ``alexkit.media.expand`` for video/DICOM/NIfTI files.

    Raises:
        DataError: missing source, no images, unknown classes, bad manifest, a class too
            small to appear in every split, a group spanning two splits.
    """
    if split is not None and split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}. Received: {split!r}")
    if not 0 <= val_fraction < 1:
        raise UsageError(f"val_fraction must be in [0, 1). Received: {val_fraction}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if any(ch in text for ch in "*?[") and not path.exists():
        spec = _tfrecord_spec(sorted(Path(p) for p in _glob(text)), text, class_names)
    elif not path.exists():
        raise DataError(f"{text} does not exist: give a folder of class folders or a CSV.")
    elif path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
        spec = _manifest_spec(path, media_options)
    elif path.is_file() and _SHARD.search(path.name):
        spec = _tfrecord_spec([path], text, class_names)
    elif path.is_file():
        raise DataError(f"{text} is a file: give a folder, a .csv manifest or TFRecord shards.")
    else:
        spec = _folder_spec(path, media_options, labels_file, class_names)
    if class_names is not None:
        spec = relabel(spec, class_names)
    if not spec.is_tfrecord:
        spec = _finish_splits(spec, split, val_fraction, seed, resplit_val)
    if split is not None:
        if split not in spec.splits and not spec.is_tfrecord:
            raise DataError(
                f"{spec.root} has no {split!r} split (found: "
                f"{', '.join(s or 'unsplit' for s in spec.split_names())})."
            )
        spec = spec.subset(split)
    if len(spec) == 0:
        raise DataError(f"no images found in {spec.root or text}.")
    return spec


def _glob(pattern: str) -> list[str]:
    import glob

    return glob.glob(os.path.expanduser(pattern))


def _folder_spec(
    root: Path, media_options: Any, labels_file: Any, class_names: Sequence[str] | None
) -> DatasetSpec:
    # Look through a single wrapper folder (Kaggle zips: chest_xray/chest_xray/...).
    subs = _subdirs(root)
    if len(subs) == 1 and not _has_files(root) and _split_dirs(subs[0]):
        root = subs[0]
    shards = [
        p
        for p in sorted(root.iterdir())
        if p.is_file() and _visible(p.name) and _SHARD.search(p.name)
    ]
    if shards and not _subdirs(root):
        return _tfrecord_spec(shards, str(root), class_names)
    splits = _split_dirs(root)
    if splits:
        if "train" in splits and "val" in splits and _imagenet_flat_val(splits):
            return _imagenet_spec(root, splits, labels_file)
        return _split_folder_spec(root, splits, media_options)
    return _class_folder_spec(root, media_options)


def _loose_files(folder: Path) -> list[tuple[str, str]]:
    """Visible files lying next to the class folders: reported, never silently dropped."""
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and _visible(p.name))
    except OSError:
        return []
    return [(str(p), "not inside a class folder") for p in files]


def _class_folder_spec(root: Path, media_options: Any) -> DatasetSpec:
    classes = _subdirs(root)
    if not classes:
        raise DataError(
            f"no class folders in {root}: expected {root}/<class>/<image> "
            "(or split folders train/val/test, or a CSV manifest path,label)."
        )
    ignored: list[tuple[str, str]] = _loose_files(root)
    items, labels = [], []
    groups: list[str] = []
    for k, folder in enumerate(classes):
        for item, group in collect_items(folder, media_options, ignored):
            items.append(item)
            labels.append(k)
            groups.append(group)
    return DatasetSpec(
        tuple(items),
        tuple(labels),
        tuple(c.name for c in classes),
        groups=tuple(groups),
        root=str(root),
        layout="folders",
        ignored=tuple(ignored),
    )


def _split_folder_spec(root: Path, splits: dict[str, Path], media_options: Any) -> DatasetSpec:
    names = sorted({c.name for folder in splits.values() for c in _subdirs(folder)})
    if not names:
        raise DataError(f"no class folders inside the split folders of {root}.")
    index = {n: k for k, n in enumerate(names)}
    ignored: list[tuple[str, str]] = []
    items, labels, split_of, groups = [], [], [], []
    for split in SPLITS:
        if split not in splits:
            continue
        ignored.extend(_loose_files(splits[split]))
        for folder in _subdirs(splits[split]):
            for item, group in collect_items(folder, media_options, ignored):
                items.append(item)
                labels.append(index[folder.name])
                split_of.append(split)
                groups.append(group)
    return DatasetSpec(
        tuple(items),
        tuple(labels),
        tuple(names),
        tuple(split_of),
        tuple(groups),
        str(root),
        "split-folders",
        tuple(ignored),
    )


def _imagenet_flat_val(splits: dict[str, Path]) -> bool:
    train_classes = _subdirs(splits["train"])
    return (
        bool(train_classes)
        and all(_WNID.match(c.name) for c in train_classes[:50])
        and not _subdirs(splits["val"])
        and _has_files(splits["val"])
    )


def _find_labels_file(root: Path, val_dir: Path) -> Path | None:
    for folder in (val_dir, root, *list(root.parents)[:3]):
        for name in ("LOC_val_solution.csv", "val.txt"):
            if (folder / name).is_file():
                return folder / name
    return None


def _imagenet_spec(root: Path, splits: dict[str, Path], labels_file: Any) -> DatasetSpec:
    """ImageNet: train/<wnid>/*, labels = index in sorted wnids; flat val + labels file."""
    wnids = [c.name for c in _subdirs(splits["train"])]
    index = {w: k for k, w in enumerate(wnids)}
    ignored: list[tuple[str, str]] = []
    items, labels, split_of = [], [], []
    for folder in _subdirs(splits["train"]):
        for item, _ in collect_items(folder, None, ignored):
            items.append(item)
            labels.append(index[folder.name])
            split_of.append("train")
    lf = Path(labels_file) if labels_file else _find_labels_file(root, splits["val"])
    if lf is None or not lf.is_file():
        raise DataError(
            f"ImageNet validation folder {splits['val']} is flat but no labels file was "
            "found: put LOC_val_solution.csv (Kaggle) or Caffe's val.txt next to it, "
            "or pass --labels-file."
        )
    val_labels = _read_imagenet_val_labels(lf, index)
    for path in _walk(splits["val"]):
        if _kind(path.name, ()) != "image":
            ignored.append((str(path), "not an image file extension"))
            continue
        key = path.stem
        if key not in val_labels and path.name not in val_labels:
            ignored.append((str(path), f"not listed in {lf.name}"))
            continue
        items.append(str(path))
        labels.append(val_labels.get(key, val_labels.get(path.name, -1)))
        split_of.append("val")
    return DatasetSpec(
        tuple(items),
        tuple(labels),
        tuple(wnids),
        tuple(split_of),
        root=str(root),
        layout="imagenet",
        ignored=tuple(ignored),
    )


def _read_imagenet_val_labels(path: Path, index: dict[str, int]) -> dict[str, int]:
    """Map val image stem (and file name) → label from LOC_val_solution.csv or val.txt."""
    out: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        if path.suffix == ".csv":
            for row in csv.DictReader(fh):
                wnid = (row.get("PredictionString") or "").split()[:1]
                if not wnid or wnid[0] not in index:
                    raise DataError(f"{path}: row {row} names a wnid not in train/.")
                out[row["ImageId"]] = index[wnid[0]]
        else:  # Caffe val.txt: "<file> <label>", labels already in sorted-wnid order
            for n, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= len(index):
                    raise DataError(f"{path}:{n}: expected '<file> <label 0..999>'.")
                out[parts[0]] = int(parts[1])
                out[Path(parts[0]).stem] = int(parts[1])
    return out


def _manifest_spec(path: Path, media_options: Any) -> DatasetSpec:
    """CSV manifest: path,label[,split][,group]; paths relative to the CSV's folder."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = {(h or "").strip().lower(): h for h in reader.fieldnames or []}
        path_col = next(
            (header[c] for c in ("path", "filepath", "filename", "file", "image") if c in header),
            None,
        )
        label_col = next((header[c] for c in ("label", "class", "class_name") if c in header), None)
        if path_col is None or label_col is None:
            raise DataError(
                f"{path}: expected a header 'path,label[,split][,group]'; "
                f"found {list(reader.fieldnames or [])}."
            )
        split_col = header.get("split")
        group_col = header.get("group")
        rows = list(reader)
    raw_labels = [(r.get(label_col) or "").strip() for r in rows]
    if any(not lab for lab in raw_labels):
        n = raw_labels.index("") + 2
        raise DataError(f"{path}:{n}: empty label.")
    unique = set(raw_labels)
    if all(re.fullmatch(r"-?\d+", lab) for lab in unique):
        names = sorted(unique, key=int)
    else:
        names = sorted(unique)
    index = {n: k for k, n in enumerate(names)}
    base = path.parent
    ignored: list[tuple[str, str]] = []
    items, labels, split_of, groups = [], [], [], []
    for n, row in enumerate(rows, 2):
        rel = (row.get(path_col) or "").strip()
        if not rel:
            raise DataError(f"{path}:{n}: empty path.")
        full = Path(rel).expanduser()
        full = full if full.is_absolute() else base / full
        split_raw = (row.get(split_col) or "").strip().lower() if split_col else ""
        split = SPLIT_ALIASES.get(split_raw, "" if not split_raw else None)
        if split is None:
            raise DataError(f"{path}:{n}: unknown split {split_raw!r} (use train, val or test).")
        group = (row.get(group_col) or "").strip() if group_col else ""
        pairs = [(str(full), group)]
        if _kind(full.name, _media_extensions()) == "media":
            pairs = [(i, group or g) for i, g in expand_media(full, media_options, ignored)]
        for item, g in pairs:
            items.append(item)
            labels.append(index[raw_labels[n - 2]])
            split_of.append(split)
            groups.append(g)
    _check_groups(groups, split_of, str(path))
    return DatasetSpec(
        tuple(items),
        tuple(labels),
        tuple(names),
        tuple(split_of),
        tuple(groups),
        str(path),
        "csv",
        tuple(ignored),
    )


def _check_groups(groups: Sequence[str], splits: Sequence[str], where: str) -> None:
    seen: dict[str, str] = {}
    for g, s in zip(groups, splits, strict=True):
        if not g:
            continue
        if g in seen and seen[g] != s:
            raise DataError(
                f"{where}: group {g!r} is in both {seen[g] or 'unsplit'!r} and "
                f"{s or 'unsplit'!r}; a group (e.g. patient) must stay in one split."
            )
        seen.setdefault(g, s)


def _tfrecord_spec(
    shards: Sequence[Path], where: str, class_names: Sequence[str] | None
) -> DatasetSpec:
    if not shards:
        raise DataError(f"no TFRecord shards match {where}.")
    splits = []
    for shard in shards:
        m = re.match(r"^([A-Za-z]+)", shard.name)
        splits.append(SPLIT_ALIASES.get(m.group(1).lower(), "") if m else "")
    names: tuple[str, ...] | None = tuple(class_names) if class_names else None
    folder = shards[0].parent
    if names is None and (folder / CLASS_MAP_FILE).is_file():
        names = load_class_map(folder / CLASS_MAP_FILE)
    if names is None:
        for synsets in ("synsets.txt", "imagenet_lsvrc_2015_synsets.txt"):
            if (folder / synsets).is_file():
                names = load_class_map(folder / synsets)
                break
    if names is None:
        log.info("no %s next to the shards: assuming 1000 ImageNet classes", CLASS_MAP_FILE)
        names = tuple(str(i) for i in range(1000))
    return DatasetSpec(
        tuple(str(s) for s in shards),
        (-1,) * len(shards),
        names,
        tuple(splits),
        root=str(where),
        layout="tfrecord",
    )


# --------------------------------------------------------------------------- splitting


def _finish_splits(
    spec: DatasetSpec, split: str | None, val_fraction: float, seed: int, resplit_val: bool
) -> DatasetSpec:
    splits = list(spec.splits)
    if resplit_val:
        splits = ["train" if s == "val" else s for s in splits]
    has_val = "val" in splits
    pool_exists = any(s in ("", "train") for s in splits)
    if split == "test" and set(splits) == {""}:
        return replace(spec, splits=("test",) * len(spec))
    spec = replace(spec, splits=tuple(splits))
    if not has_val and val_fraction > 0 and pool_exists:
        return split_spec(spec, val_fraction, seed)
    if has_val:  # unsplit leftovers next to a val split are training data
        spec = replace(spec, splits=tuple("train" if s == "" else s for s in spec.splits))
    return spec


def split_spec(spec: DatasetSpec, val_fraction: float = 0.2, seed: int = 0) -> DatasetSpec:
    """Carve a stratified, group-aware, seeded val split out of the train/unsplit items.

    Per class, whole groups (singletons when there are none) are shuffled with ``seed`` and
    moved to val until ``round(n * val_fraction)`` items (at least 1) are there; each class
    keeps at least one group in train. Same spec + seed → same split.

    Raises:
        DataError: a class with too few images (or groups) to appear in both splits.
    """
    pool = [i for i, s in enumerate(spec.splits) if s in ("", "train")]
    group_items: dict[str, list[int]] = defaultdict(list)
    for i in pool:
        group_items[spec.groups[i] or f"\x00item:{spec.items[i]}"].append(i)
    by_class: dict[int, list[str]] = defaultdict(list)
    for key, members in group_items.items():
        label = Counter(spec.labels[i] for i in members).most_common(1)[0][0]
        by_class[label].append(key)
    rng = np.random.default_rng(seed)
    new_splits = list(spec.splits)
    for i in pool:
        new_splits[i] = "train"
    for label in sorted(by_class):
        keys = sorted(by_class[label])
        name = spec.class_names[label] if label >= 0 else "(unlabelled)"
        if len(keys) < 2:
            what = "group" if spec.groups[group_items[keys[0]][0]] else "image"
            raise DataError(
                f"class {name!r} has only 1 {what} in {spec.root or 'the data'}: it cannot be "
                "in both train and val; add images, give a val folder, or use val_fraction=0."
            )
        n_items = sum(len(group_items[k]) for k in keys)
        target = max(1, round(n_items * val_fraction))
        moved = 0
        order = rng.permutation(len(keys))
        for rank, j in enumerate(order):
            if moved >= target or rank == len(keys) - 1:
                break
            for i in group_items[keys[j]]:
                new_splits[i] = "val"
            moved += len(group_items[keys[j]])
    result = replace(spec, splits=tuple(new_splits))
    _check_groups(result.groups, result.splits, spec.root)
    return result


# --------------------------------------------------------------------------- tf.data


def sniff_all(items: Sequence[str], workers: int | None = None) -> list[_decode.Sniff]:
    """:func:`alexkit.data.decode.sniff` over many files on a thread pool (I/O bound)."""
    limit = _decode.max_pixels()
    if len(items) < 64:
        return [_decode.sniff(i, limit) for i in items]
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: _decode.sniff(i, limit), items, chunksize=64))


def make_dataset(
    spec: DatasetSpec,
    *,
    training: bool,
    image_size: int = 227,
    batch_size: int = 32,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    shuffle: bool | None = None,
    tta: str = "center",
    grayscale: bool = False,
    cache: bool = False,
    drop_remainder: bool = False,
    with_paths: bool = False,
    skipped: SkipLog | None = None,
    shuffle_buffer: int = 10_000,
    shard: tuple[int, int] | None = None,
):
    """Stream a spec as batches of float32 [0, 255] images and int32 labels.

    Decoding and augmentation run in one parallel map. JPEGs are decoded *cropped*
    (``decode_and_crop_jpeg`` on the window the augmentation picked), so pixels that a
    crop throws away are never inverse-DCT'd nor resized.

    Args:
        spec: what to read (files or TFRecord shards).
        training: random augmentation (``augment``, default the paper's) vs. centre crop.
        image_size: 227 (original) or 224 (torchvision).
        batch_size: images per batch.
        augment: augmentation config; its ``resize``/``crop`` also shape evaluation.
        seed: shuffling and augmentation seed (same seed → same batches).
        shuffle: default ``training``.
        tta: "center", or "ten-crop" for (B, 10, S, S, 3) evaluation batches.
        grayscale: convert to gray (replicated to 3 channels).
        cache: keep decoded images (shorter side = resize, uint8) in memory after epoch 1.
        drop_remainder: drop the last partial batch.
        with_paths: also yield the item strings (``image/filename`` for TFRecords).
        skipped: receives (path, reason) for every unreadable file.
        shuffle_buffer: records held for shuffling TFRecord data.
        shard: ``(index, count)``: keep only slice ``index`` of ``count`` equal slices
            of every ``batch_size`` batch (multi-worker training: each worker decodes
            only its share of each global batch; images and augmentation seeds are
            those of the unsharded stream). Yields batches of ``batch_size // count``,
            full batches only. Not with ``cache``.

    Returns:
        A ``tf.data.Dataset`` of ``(images, labels[, items])``.

    Raises:
        DataError: no readable image at all.
    """
    import tensorflow as tf

    if tta not in ("center", "ten-crop"):
        raise UsageError(f"tta must be 'center' or 'ten-crop'. Received: {tta!r}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1. Received: {batch_size}")
    if shard is not None:
        index, count = (int(v) for v in shard)
        if count < 1 or not 0 <= index < count or batch_size % count or cache:
            raise UsageError(
                f"shard {shard!r} needs 0 <= index < count, batch_size ({batch_size}) "
                "divisible by count, and no cache."
            )
    augment = augment or AugmentConfig()
    shuffle = training if shuffle is None else shuffle
    skipped = skipped if skipped is not None else SkipLog()
    # The map functions use tf.cond / Python-level choices only: skipping autograph's
    # source conversion saves ~0.5 s on the first pipeline of a process (0.94 -> 0.45 s).
    plain = tf.autograph.experimental.do_not_convert
    pipe = _Pipeline(augment, int(image_size), training, tta, grayscale)
    if spec.is_tfrecord:
        ds, decode = _tfrecord_source(spec, shuffle and not cache, seed, skipped, shuffle_buffer)
    else:
        ds, decode = _file_source(spec, shuffle and not cache, seed, skipped)
    # decode(element, jpeg_fn, transform) -> (image, label, item, ok); with the transforms
    # the image is (float image, lighting shift) for _Pipeline.finish.
    if cache:
        ds = ds.map(plain(lambda *el: decode(el, None, None)), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.filter(plain(lambda img, lab, item, ok: ok))
        shorter = max(augment.resize, pipe.size)
        ds = ds.map(
            plain(lambda img, lab, item, ok: (_cache_resize(img, shorter), lab, item)),
            num_parallel_calls=tf.data.AUTOTUNE,
        ).cache()
        if shuffle:
            ds = ds.shuffle(len(spec) if not spec.is_tfrecord else shuffle_buffer, seed=seed)
        ds = _with_seeds(ds, seed)
        ds = ds.map(
            plain(lambda el, s: (pipe.finish(pipe.transform(el[0], s)), el[1], el[2], True)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        ds = _with_seeds(ds, seed)
        if shard is not None:
            # Group the undecoded stream (paths/records + seeds) into full global
            # batches, keep this worker's slice of each, decode only that.
            per, index = batch_size // shard[1], int(shard[0])
            ds = ds.batch(batch_size, drop_remainder=True)
            ds = ds.map(
                plain(
                    lambda el, s: tf.nest.map_structure(
                        lambda t: t[index * per : (index + 1) * per], (el, s)
                    )
                )
            ).unbatch()
            batch_size, drop_remainder = per, True

        def fused(el, s):
            out, label, item, ok = decode(
                el, lambda data: pipe.jpeg(data, s), lambda im: pipe.transform(im, s)
            )
            return pipe.finish(out), label, item, ok

        ds = ds.map(
            plain(fused),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        # Last resort (see module doc): a file TF's C++ decoder rejects despite the checks.
        ds = ds.ignore_errors(log_warning=True)
        ds = ds.filter(plain(lambda out, lab, item, ok: ok))
    if with_paths:
        ds = ds.map(plain(lambda out, lab, item, ok: (out, lab, item)))
    else:
        ds = ds.map(plain(lambda out, lab, item, ok: (out, lab)))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if not training:
        # Evaluation pipelines run once, fixed work per image: parallelism = the CPU
        # count (what AUTOTUNE means with autotuning off) is what autotuning settles on.
        # With autotuning on, dropping the finished iterator waited ~0.1–1.1 s for the
        # tuning thread when the model kept both cores busy (measured: extract of 256
        # images 1.47 s or 2.63 s at random; 1.46 s every time without autotuning).
        options = tf.data.Options()
        options.autotune.enabled = False
        ds = ds.with_options(options)
    return ds


def _with_seeds(ds, seed: int):
    """Zip a per-element [2] seed stream (new each epoch, same for the same seed)."""
    import tensorflow as tf

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, seeds))


class _Pipeline:
    """The image transform of one make_dataset call (train / eval / ten-crop)."""

    def __init__(self, augment: AugmentConfig, size: int, training: bool, tta: str, gray: bool):
        self.augment, self.size, self.training, self.tta, self.gray = (
            augment,
            size,
            training,
            tta,
            gray,
        )

    def transform(self, image, seed):
        """Decoded uint8 image → (float32 output, per-image lighting shift for finish)."""
        import tensorflow as tf

        from alexkit.data import augment as aug

        a = self.augment
        if self.training:
            seeds = aug.split_seed(seed)
            window = aug.train_window(tf.shape(image), seeds, a, self.size)
            return aug.finish_train(aug.take_window(image, window), seeds, a, self.size, False)
        if self.tta == "ten-crop":
            out = aug.ten_crop_transform(image, self.size, a.resize)
        else:
            out = aug.eval_transform(image, self.size, a.resize, a.crop)
        return out, tf.zeros((3,), tf.float32)

    def jpeg(self, data, seed):
        """JPEG bytes → like :meth:`transform`, decoding only the crop window."""
        import tensorflow as tf

        from alexkit.data import augment as aug

        a = self.augment
        if not self.training and self.tta == "ten-crop":
            return self.transform(tf.io.decode_jpeg(data, channels=3), seed)
        shape = tf.io.extract_jpeg_shape(data)
        if self.training:
            seeds = aug.split_seed(seed)
            window = aug.train_window(shape, seeds, a, self.size)
            crop = tf.io.decode_and_crop_jpeg(data, window, channels=3)
            return aug.finish_train(crop, seeds, a, self.size, False)
        window = aug.eval_window(shape, self.size, a.resize, a.crop)
        crop = tf.io.decode_and_crop_jpeg(data, window, channels=3)
        return aug._resize_exact(crop, self.size, True), tf.zeros((3,), tf.float32)

    def finish(self, out):
        """Add the image's lighting shift, clip to [0, 255], optionally gray."""
        import tensorflow as tf

        image, shift = out
        if self.training:
            image = tf.clip_by_value(image + shift, 0.0, 255.0)
        if self.gray:
            image = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
        return image


def _cache_resize(image, shorter: int):
    import tensorflow as tf

    from alexkit.data.augment import resize_shorter

    shape = tf.shape(image)
    small = tf.minimum(shape[0], shape[1]) <= shorter
    return tf.cond(
        small,
        lambda: image,
        lambda: tf.cast(
            tf.clip_by_value(tf.round(resize_shorter(image, shorter)), 0, 255), tf.uint8
        ),
    )


def _file_source(spec: DatasetSpec, shuffle: bool, seed: int, skipped: SkipLog):
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
            skipped.add(item, f"unexpected decode error ({_decode._short(exc)})")
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


def _tfrecord_source(spec: DatasetSpec, shuffle: bool, seed: int, skipped: SkipLog, buffer: int):
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


# --------------------------------------------------------------------------- data check


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
        warning} on the train (or unsplit) counts; ``warnings`` [one-line strings].
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
        with Image.open(io.BytesIO(data)) as img:
            if info.format == "JPEG":
                # 1/8-scale decode still parses every entropy-coded byte: truncation and
                # corrupt data are found at a fraction of the cost.
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except Exception as exc:  # Pillow raises OSError/ValueError/SyntaxError/...
        text = _decode._short(exc)
        kind = "truncated image" if "truncated" in text.lower() else f"corrupt {info.format}"
        return info.format, info.width, info.height, digest, f"{kind} ({text})"
    return info.format, info.width, info.height, digest, ""


def scan(
    spec: DatasetSpec, *, workers: int | None = None, imbalance_ratio: float = 3.0
) -> ScanReport:
    """Read every image once: counts, sizes, unreadable files, duplicates, imbalance.

    Args:
        spec: from :func:`load_spec` (files or TFRecord shards).
        workers: decoding threads (Pillow releases the GIL); default 2 × CPUs.
        imbalance_ratio: warn when the largest class is this many times the smallest.
    """
    if spec.is_tfrecord:
        return _scan_tfrecords(spec, imbalance_ratio)
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
    for item, label, split, (fmt, w, h, digest, reason) in zip(
        spec.items, spec.labels, spec.splits, results, strict=True
    ):
        if reason:
            unreadable.append((item, reason))
            continue
        if label >= 0:
            counts[split or "all"][spec.class_names[label]] += 1
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
    )
    _add_warnings(report, imbalance_ratio)
    return report


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
            report.warnings.append(f"split {split!r} has no images of {_list(missing)}.")
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
                    arr = _decode.decode_bytes(data)
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
            unreadable.append((shard, f"corrupt TFRecord shard ({_decode._short(exc)})"))
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


# --------------------------------------------------------------------------- data pack


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
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


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
    import tensorflow as tf

    from alexkit.paths import atomic_path, atomic_write_text

    if shards < 1:
        raise UsageError(f"--shards must be >= 1. Received: {shards}")
    if resize is not None and resize < 1:
        raise UsageError(f"--resize must be a positive size. Received: {resize}")
    if spec.is_tfrecord:
        raise UsageError("the source is already TFRecord shards.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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

    with ThreadPoolExecutor(workers) as pool:
        for prefix, index in by_split.items():
            order = [index[j] for j in rng.permutation(len(index))]
            n_shards = (
                shards
                if prefix == "train"
                else max(1, min(shards, -(-shards * len(index) // n_train)))
            )
            n_shards = min(n_shards, max(1, len(order)))
            bounds = np.linspace(0, len(order), n_shards + 1).astype(int)
            written[prefix] = []
            counts[prefix] = 0
            for s in range(n_shards):
                chunk = order[bounds[s] : bounds[s + 1]]
                target = out / f"{prefix}-{s:05d}-of-{n_shards:05d}"
                with atomic_path(target, suffix=".tmp") as tmp:
                    with tf.io.TFRecordWriter(str(tmp)) as writer:
                        for i, (encoded, reason) in zip(
                            chunk, pool.map(encode, chunk), strict=True
                        ):
                            done += 1
                            if encoded is None:
                                skipped.append((spec.items[i], reason))
                            else:
                                data, h, w = encoded
                                writer.write(
                                    _example(data, h, w, spec.labels[i], spec, spec.items[i])
                                )
                                counts[prefix] += 1
                            if progress is not None:
                                progress(done, total)
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
