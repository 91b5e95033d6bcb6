"""What a dataset is, as plain data: :class:`DatasetSpec`, :class:`SkipLog`, class maps.

Everything else in :mod:`alexkit.data` produces or consumes a spec: the layouts build
one from disk, the pipeline streams it, ``data check`` scans it, ``data pack`` writes it
out as TFRecord shards. This module imports neither TensorFlow nor Pillow.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from alexkit.errors import DataError, UsageError

# The package's logger, as before the split: log lines keep their `alexkit.data` name.
log = logging.getLogger("alexkit.data")

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


_CLASS_KEY_IGNORED = str.maketrans("", "", "_- ")


def class_key(name: str) -> str:
    """The form class names are matched in: case folded, ``_``, ``-`` and spaces removed.

    ``NORMAL`` = ``normal``, ``no_tumor`` = ``notumor`` = ``No Tumor``: the spellings one
    dataset ships under in different copies. Nothing looser (no plurals or synonyms).
    """
    return str(name).casefold().translate(_CLASS_KEY_IGNORED)


def _name_map(present: Sequence[str], known: Sequence[str]) -> dict[str, str]:
    """present name → known name: equal names first, then equal :func:`class_key` when
    exactly one known name has it (two known names with one key match only exactly)."""
    known_set = set(known)
    by_key: dict[str, list[str]] = {}
    for name in known:
        by_key.setdefault(class_key(name), []).append(name)
    out = {}
    for name in present:
        if name in known_set:
            out[name] = name
        elif len(candidates := by_key.get(class_key(name), [])) == 1:
            out[name] = candidates[0]
    return out


def check_classes(
    spec: DatasetSpec, known_class_names: Sequence[str], known_as: str = "the model"
) -> None:
    """Raise DataError if ``spec`` has classes that ``known_class_names`` lack (names are
    matched by :func:`class_key`: case and ``_``/``-``/space differences are allowed).

    Args:
        spec: the data.
        known_class_names: the classes of a model or recipe.
        known_as: who knows them, for the message ("the model", "recipe 'xray'").

    Raises:
        DataError: naming the unknown classes and the known ones.
    """
    present = sorted({spec.class_names[lab] for lab in spec.labels if lab >= 0})
    mapping = _name_map(present, known_class_names)
    unknown = [name for name in present if name not in mapping]
    if unknown:
        raise DataError(
            f"{len(unknown)} class(es) in {spec.root or 'the data'} unknown to {known_as}: "
            f"{quote_names(unknown)}; known: {quote_names(sorted(known_class_names))}. "
            "Rename the folders or retrain."
        )
    targets = [mapping[name] for name in present]
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        sources = [n for n in present if mapping[n] in twice]
        raise DataError(
            f"classes {quote_names(sources)} in {spec.root or 'the data'} differ only in "
            f"case, '_', '-' or spaces and would both be {known_as}'s {twice[0]!r}; "
            "merge or rename the folders."
        )


def relabel(
    spec: DatasetSpec, class_names: Sequence[str], known_as: str = "the model"
) -> DatasetSpec:
    """Map ``spec`` onto a fixed class list (e.g. a trained model's or a recipe's).

    Names match by :func:`class_key` (``normal`` takes the label of ``NORMAL``); unknown
    names fail with a message naming ``known_as``.
    """
    class_names = tuple(class_names)
    if spec.is_tfrecord:
        return replace(spec, class_names=class_names)
    check_classes(spec, class_names, known_as)
    index = {name: k for k, name in enumerate(class_names)}
    mapping = _name_map(spec.class_names, class_names)
    labels = tuple(index[mapping[spec.class_names[lab]]] if lab >= 0 else -1 for lab in spec.labels)
    return replace(spec, labels=labels, class_names=class_names)


def quote_names(names: Sequence[str], limit: int = 8) -> str:
    """``'a', 'b', ... (12 in all)``: names for a one-line message, at most ``limit`` shown."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
