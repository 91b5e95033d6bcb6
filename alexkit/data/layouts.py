"""From what users have on disk to a :class:`~alexkit.data.spec.DatasetSpec`.

:func:`load_spec` auto-detects the layout: class folders, split folders
(``train``/``val``/``test``), ImageNet (``train/<wnid>`` + a flat ``val/`` with a labels
file), a CSV manifest, or TFRecord shards. Folders are walked here (hidden files and
``__MACOSX`` skipped; clips, DICOM and NIfTI expanded into frame/slice items by
:mod:`alexkit.media`), and :func:`split_spec` carves a stratified, group-aware, seeded
validation split when the source has none. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.data import decode as _decode
from alexkit.data.spec import (
    CLASS_MAP_FILE,
    SPLIT_ALIASES,
    SPLITS,
    DatasetSpec,
    load_class_map,
    relabel,
)
from alexkit.errors import DataError, MissingExtraError, UsageError, one_line

# The package's logger, as before the split: log lines keep their `alexkit.data` name.
log = logging.getLogger("alexkit.data")

_IGNORED_NAMES = {
    "__MACOSX",
    "Thumbs.db",
    "desktop.ini",
    "$RECYCLE.BIN",
    "System Volume Information",
}
_WNID = re.compile(r"^n\d{8}$")
_SHARD = re.compile(r"^(?P<split>[A-Za-z]+)[-_].*-of-\d+$|\.tfrecords?(-\d+-of-\d+)?$|\.tfrec$")


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
        reason = getattr(exc, "reason", None) or one_line(exc, limit=120)
        ignored.append((str(path), f"{UNREADABLE_MEDIA} ({reason})"))
        return []
    except Exception as exc:  # media readers raise many kinds; the file is reported, not fatal
        ignored.append((str(path), f"{UNREADABLE_MEDIA} ({one_line(exc, limit=120)})"))
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
    class_names_from: str = "the model",
) -> DatasetSpec:
    """Build a :class:`DatasetSpec` from a folder, a CSV manifest or TFRecord shards.

    Layouts (auto-detected): ``root/<class>/*``; ``root/{train,val,valid,test}/<class>/*``;
    ImageNet ``train/<wnid>/*`` + flat ``val/`` with ``LOC_val_solution.csv`` or Caffe
    ``val.txt``; a CSV ``path,label[,split][,group]``; TFRecord shards (folder or glob).
    A single wrapper folder (``chest_xray/chest_xray/...``) is looked through.

    Args:
        source: folder, ``.csv`` file, or shard glob.
        class_names: fixed label order (e.g. a trained model's); data with other classes
            is refused. Names match ignoring case, '_', '-' and spaces
            (:func:`~alexkit.data.spec.class_key`). Default: sorted class names found.
        split: keep only this split. An unsplit source asked for "test" gives all items.
        val_fraction: when no validation split exists, carve one per class (stratified,
            group-aware, seeded); 0 keeps the data unsplit.
        seed: seed of that split (same seed → same split).
        resplit_val: merge an existing (tiny) val split into train and re-split.
        labels_file: ImageNet validation labels, if not found next to the data.
        media_options: passed to ``alexkit.media.expand`` for video/DICOM/NIfTI files.
        class_names_from: whose ``class_names`` they are, for the unknown-class message
            ("the model", "recipe 'xray'").

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
        spec = relabel(spec, class_names, class_names_from)
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
