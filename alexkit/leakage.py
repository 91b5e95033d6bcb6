"""Leakage guard: were any evaluation images (byte for byte) or groups seen in training?

A run records ``data-hashes.json`` (:func:`record_hashes` + :func:`save_hashes`): the
SHA-256 of every training and validation item's file bytes and the groups (patient,
clip, series) of each split. ``evaluate`` hashes the evaluated items the same way and
:func:`check_leakage` counts the overlaps.

Groups are never stored in clear: a group id can be a path (``clip:/data/...``) or a
patient's keyed hash (``patient:<hmac>``), and a file that lists them would link a run to
other outputs. Each document holds a random ``group_key`` (a per-run nonce) and stores
``HMAC-SHA256(group_key, group)``; the check keys the evaluated groups with the same
nonce, so shared groups are still found, while the stored values differ from run to run
and say nothing to a reader who does not already hold the group ids. (Documents of
format ``alexkit-data-hashes/1`` stored groups in clear; they are still read.)

An item's hash is the SHA-256 of its file's bytes; a frame/slice item ``path#member`` of
a clip, DICOM file or volume hashes ``<file digest>#<member>``, so the same frame of the
same file matches wherever the file lies; a DICOM series folder's digest covers its
files' names and bytes. Renamed or moved copies are caught; re-encoded or resized
copies are not (that needs perceptual hashing, which this does not claim).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from alexkit.errors import CheckpointError

#: The file a run keeps its training/validation hashes in.
HASHES_FILE = "data-hashes.json"
FORMAT = "alexkit-data-hashes/2"
_FORMAT_CLEAR_GROUPS = "alexkit-data-hashes/1"  # groups in clear (read, never written)
_CHUNK = 1 << 20


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _source_digest(source: str) -> str:
    if os.path.isdir(source):  # a DICOM series: names and bytes of its files
        h = hashlib.sha256()
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, source)
                h.update(f"{rel}\0{_file_digest(full)}\n".encode())
        return h.hexdigest()
    return _file_digest(source)


def hash_items(items: Sequence[str], *, workers: int = 4) -> list[str | None]:
    """SHA-256 per item (see the module docstring); None for files that cannot be read.

    Each source file is read once however many frames/slices it gives.
    """
    from alexkit.media import parse_item

    split = [_split_item(str(item), parse_item) for item in items]
    sources = sorted({s for s, _ in split})

    def digest(source: str) -> str | None:
        try:
            return _source_digest(source)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = dict(zip(sources, pool.map(digest, sources), strict=True))
    out: list[str | None] = []
    for source, member in split:
        d = digests[source]
        if d is None or not member:
            out.append(d)
        else:
            out.append(hashlib.sha256(f"{d}#{member}".encode()).hexdigest())
    return out


def _split_item(item: str, parse_item: Any) -> tuple[str, str]:
    source, fields = parse_item(item)
    return (source, item[len(source) + 1 :]) if fields else (item, "")


def key_groups(groups: Iterable[str], group_key: str) -> list[str]:
    """``HMAC-SHA256(group_key, group)`` (hex) per group; "" stays "" (no group)."""
    key = bytes.fromhex(group_key)
    return [hmac.new(key, g.encode(), hashlib.sha256).hexdigest() if g else "" for g in groups]


def record_hashes(
    spec: Any, splits: Iterable[str] = ("train", "val"), *, group_key: str | None = None
) -> dict[str, Any]:
    """Content hashes and keyed groups of a run's training (and validation) items.

    Args:
        spec: the ``DatasetSpec`` the run trained on, already split; items of unsplit
            specs (split ``""``) count as ``train``.
        splits: the splits to record.
        group_key: hex key for the groups' HMAC; default a fresh random nonce (pass one
            only to compare documents).

    Returns:
        The ``data-hashes.json`` document: ``{"format", "algorithm", "group_key",
        "splits": {split: {"items", "unreadable", "hashes": [sorted unique], "groups":
        [sorted unique HMACs]}}}``; for TFRecord data (items are shards) ``"splits"`` is
        empty and ``"skipped"`` says why.
    """
    doc: dict[str, Any] = {
        "format": FORMAT,
        "algorithm": "sha256 of file bytes; frame/slice items: sha256('<file sha256>#<member>');"
        " groups: hmac-sha256(group_key, group)",
        "group_key": group_key or secrets.token_hex(16),
        "root": str(getattr(spec, "root", "")),
        "splits": {},
    }
    if getattr(spec, "is_tfrecord", False):
        doc["skipped"] = "TFRecord shards hold many images each; items were not hashed"
        return doc
    wanted = list(splits)
    for split in wanted:
        index = [
            i
            for i, s in enumerate(spec.splits)
            if s == split or (split == "train" and s == "" and "train" in wanted)
        ]
        if index:
            items = [spec.items[i] for i in index]
            groups = [spec.groups[i] for i in index]
            doc["splits"][split] = _split_entry(items, groups, doc["group_key"])
    return doc


def record_run_hashes(
    train_spec: Any, val_spec: Any = None, *, group_key: str | None = None
) -> dict[str, Any]:
    """:func:`record_hashes` for a run that holds its splits as two specs.

    Every item of ``train_spec`` is recorded as ``train`` and every item of ``val_spec``
    as ``val``, whatever split labels they carry (a ``--val`` folder has none).
    """
    doc = record_hashes(train_spec, splits=(), group_key=group_key)
    if getattr(train_spec, "is_tfrecord", False):
        return doc
    for split, spec in (("train", train_spec), ("val", val_spec)):
        if spec is not None and len(spec.items):
            if getattr(spec, "is_tfrecord", False):
                doc["skipped"] = f"{split}: TFRecord shards hold many images each; not hashed"
                continue
            entry = _split_entry(list(spec.items), list(spec.groups), doc["group_key"])
            doc["splits"][split] = entry
    return doc


def _split_entry(items: list[str], groups: list[str], group_key: str) -> dict[str, Any]:
    hashes = hash_items(items)
    return {
        "items": len(items),
        "unreadable": sum(h is None for h in hashes),
        "hashes": sorted({h for h in hashes if h}),
        "groups": sorted({g for g in key_groups(groups, group_key) if g}),
    }


def save_hashes(run_dir: str | Path, doc: dict[str, Any]) -> Path:
    """Write ``run_dir/data-hashes.json`` atomically."""
    from alexkit.paths import atomic_write_text

    path = Path(run_dir) / HASHES_FILE
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def load_hashes(run_dir: str | Path) -> dict[str, Any] | None:
    """``run_dir/data-hashes.json``, or None when the run has none.

    Raises:
        CheckpointError: the file is not a hashes document.
    """
    path = Path(run_dir) / HASHES_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(doc, dict) or doc.get("format") not in (FORMAT, _FORMAT_CLEAR_GROUPS):
        raise CheckpointError(f"{path} is not an alexkit data-hashes file (format {FORMAT}).")
    if doc["format"] == FORMAT:
        try:
            bytes.fromhex(doc["group_key"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path} has no valid 'group_key'.") from None
    return doc


def check_leakage(
    items: Sequence[str],
    groups: Sequence[str] | None,
    recorded: dict[str, Any],
    *,
    hashes: Sequence[str | None] | None = None,
    max_examples: int = 10,
) -> dict[str, Any]:
    """Count evaluation items and groups that the run saw in training or validation.

    Args:
        items: evaluated item strings.
        groups: their group ids ("" for none), or None; keyed with the document's
            ``group_key`` before they are compared.
        recorded: a :func:`record_hashes` document.
        hashes: the items' hashes when already computed (else :func:`hash_items`).
        max_examples: how many leaked item paths to list.

    Returns:
        ``metrics.json``'s ``"leakage"``: ``checked``, ``unreadable``, ``duplicates``
        ``{split: n}``, ``duplicate_items`` (evaluated items found in any split),
        ``shared_groups`` ``{split: n}``, ``shared_group_items`` (evaluated items whose
        group was in any split), ``examples`` and ``leaked`` (True when any count > 0).
    """
    hashes = list(hashes) if hashes is not None else hash_items(items)
    seen = {s: set(v.get("hashes", ())) for s, v in recorded.get("splits", {}).items()}
    seen_groups = {s: set(v.get("groups", ())) for s, v in recorded.get("splits", {}).items()}
    groups = list(groups) if groups is not None else [""] * len(items)
    if recorded.get("group_key"):  # format 1 documents hold their groups in clear
        groups = key_groups(groups, recorded["group_key"])
    dup_by_split = {s: 0 for s in seen}
    group_by_split = {s: set() for s in seen}
    dup_items = 0
    group_items = 0
    examples: list[str] = []
    for item, h, g in zip(items, hashes, groups, strict=True):
        hit = False
        for s, pool in seen.items():
            if h is not None and h in pool:
                dup_by_split[s] += 1
                hit = True
        if hit:
            dup_items += 1
            if len(examples) < max_examples:
                examples.append(str(item))
        shared = False
        for s, pool in seen_groups.items():
            if g and g in pool:
                group_by_split[s].add(g)
                shared = True
        group_items += shared
    out: dict[str, Any] = {
        "file": HASHES_FILE,
        "checked": len(items),
        "unreadable": sum(h is None for h in hashes),
        "duplicates": dup_by_split,
        "duplicate_items": dup_items,
        "shared_groups": {s: len(v) for s, v in group_by_split.items()},
        "shared_group_items": group_items,
        "examples": examples,
    }
    if "skipped" in recorded:
        out["skipped"] = recorded["skipped"]
    out["leaked"] = bool(dup_items or group_items)
    return out


def leakage_message(leak: dict[str, Any]) -> str:
    """One line for the terminal: what leaked, from which split."""
    parts = []
    if leak.get("duplicate_items"):
        where = ", ".join(f"{n} in {s}" for s, n in leak["duplicates"].items() if n)
        parts.append(
            f"{leak['duplicate_items']} of {leak['checked']} evaluation items are "
            f"byte-identical to training/validation items ({where})"
        )
    if leak.get("shared_group_items"):
        where = ", ".join(f"{n} in {s}" for s, n in leak["shared_groups"].items() if n)
        parts.append(
            f"{leak['shared_group_items']} evaluation items belong to groups the run "
            f"trained or validated on (groups: {where})"
        )
    return "; ".join(parts)
