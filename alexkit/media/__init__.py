"""Video clips, DICOM files/series and NIfTI volumes as image sources.

One source file becomes many *items* (one per sampled frame or slice), each an
image through the ordinary pipeline::

    from alexkit.media import MediaOptions, expand, decode_member
    opts = MediaOptions(frames_per_clip=8)
    for item, group in expand("clips/run/a.mp4", opts):   # "a.mp4#frame=12,t=0.480"
        image = decode_member(item, opts)                # (H, W, 3) uint8 RGB

Item grammar: ``f"{path}#{member}"`` with member ``frame=12,t=0.480`` (video),
``frame=3`` (multi-frame DICOM) or ``slice=40,axis=2`` (NIfTI / DICOM series
folder); a single-frame ``.dcm`` is its own item (no member). When the options
fix a window, DICOM/volume members also carry it (``wc=40,ww=400``; a single
``.dcm`` becomes ``x.dcm#wc=40,ww=400``), so an item decodes the same wherever
it goes, options or not. Groups keep
related items in one split: ``"clip:" + path``, ``"volume:" + path``,
``"patient:" + HMAC-SHA256(secret, PatientID)[:16]`` (DICOM; never the ID itself;
the secret is made once per installation, or ``$ALEXKIT_PATIENT_SALT``).

Reading needs the extras ``alexkit[video]`` (PyAV) and ``alexkit[medical]``
(pydicom, nibabel, pylibjpeg decoders); without them a MissingExtraError names
the install command. Broken inputs raise ``alexkit.errors.UnreadableImage``
(a DataError) so callers skip and count them like broken images.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alexkit.errors import DataError, RecipeError, UsageError
from alexkit.media._common import CACHE, unreadable
from alexkit.media.dicom import DICOM_EXTENSIONS, is_dicom_series
from alexkit.media.video import VIDEO_EXTENSIONS
from alexkit.media.volume import NIFTI_EXTENSIONS

__all__ = [
    "MEDIA_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DICOM_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "MediaOptions",
    "media_kind",
    "is_dicom_series",
    "expand",
    "decode_member",
    "parse_item",
    "aggregate",
    "aggregate_labels",
    "pool_frames",
    "clear_cache",
]

MEDIA_EXTENSIONS = frozenset(VIDEO_EXTENSIONS | DICOM_EXTENSIONS | NIFTI_EXTENSIONS)

_INT_FIELDS = ("frame", "slice", "axis")
_FLOAT_FIELDS = ("t", "wc", "ww")


@dataclass(frozen=True)
class MediaOptions:
    """How media files become images.

    Attributes:
        frames_per_clip: frames sampled uniformly per clip (the centre of N equal
            segments); a shorter clip gives all its frames.
        every_seconds: sample the frame shown at 0, k, 2k, ... seconds instead
            (overrides ``frames_per_clip`` when set).
        window_center: VOI window centre in modality units (e.g. HU); with
            ``window_width``. Both None = automatic: the DICOM file's own window,
            else the 0.5th..99.5th percentiles of the image / volume.
        window_width: VOI window width (> 0).
        axis: slicing axis of volumes, 0/1/2 = sagittal/coronal/axial (NIfTI in
            RAS+; for a DICOM series 2 = the acquired slices).
        slice_start: first slice index (Python slice semantics; negatives count
            from the end); None = 0.
        slice_stop: slice index to stop before; None = the end.
        slice_step: use every k-th slice.
        skip_empty: drop empty slices of volumes (False keeps every slice).
        empty_fraction: a slice is empty when the fraction of its voxels above the
            volume minimum is at most this (0.0 = only all-background slices).
    """

    frames_per_clip: int = 8
    every_seconds: float | None = None
    window_center: float | None = None
    window_width: float | None = None
    axis: int = 2
    slice_start: int | None = None
    slice_stop: int | None = None
    slice_step: int = 1
    skip_empty: bool = True
    empty_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.frames_per_clip, int) or self.frames_per_clip < 1:
            raise UsageError(
                f"frames_per_clip must be an integer >= 1. Received: {self.frames_per_clip!r}"
            )
        if self.every_seconds is not None and not self.every_seconds > 0:
            raise UsageError(f"every_seconds must be > 0. Received: {self.every_seconds!r}")
        if (self.window_center is None) != (self.window_width is None):
            raise UsageError(
                "window_center and window_width go together: give both, or neither for the "
                f"automatic window. Received: center={self.window_center!r}, "
                f"width={self.window_width!r}"
            )
        if self.window_width is not None and not self.window_width > 0:
            raise UsageError(f"window_width must be > 0. Received: {self.window_width!r}")
        if self.axis not in (0, 1, 2):
            raise UsageError(f"axis must be 0, 1 or 2. Received: {self.axis!r}")
        if not isinstance(self.slice_step, int) or self.slice_step < 1:
            raise UsageError(f"slice_step must be an integer >= 1. Received: {self.slice_step!r}")
        if not 0.0 <= self.empty_fraction < 1.0:
            raise UsageError(f"empty_fraction must be in [0, 1). Received: {self.empty_fraction!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "media options") -> MediaOptions:
        """Build from a recipe table (e.g. ``[media]``); unknown keys are a RecipeError.

        ``window = "auto"`` is accepted as the explicit spelling of no window; keys
        left out keep their defaults (TOML has no null).
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        data = dict(values)
        if str(data.pop("window", "auto")).lower() != "auto":
            raise RecipeError(f'{source}: window must be "auto" (or give window_center/width)')
        unknown = sorted(set(data) - fields)
        if unknown:
            valid = sorted(fields | {"window"})
            raise RecipeError(f"{source}: unknown media key(s) {unknown}; valid keys: {valid}")
        for key, value in data.items():
            kind = _FIELD_KINDS[key]
            ok = (
                isinstance(value, bool)
                if kind is bool
                else isinstance(value, kind) and not isinstance(value, bool)
            )
            if not ok:
                want = {bool: "true or false", int: "an integer"}.get(kind, "a number")
                raise RecipeError(f"{source}: key 'media.{key}' must be {want}, got {value!r}")
        try:
            return cls(**data)
        except UsageError as exc:
            raise RecipeError(f"{source}: {exc}") from None


# What each option accepts in a recipe table (TOML types; None = leave the key out).
_FIELD_KINDS: dict[str, Any] = {
    "frames_per_clip": int,
    "every_seconds": (int, float),
    "window_center": (int, float),
    "window_width": (int, float),
    "axis": int,
    "slice_start": int,
    "slice_stop": int,
    "slice_step": int,
    "skip_empty": bool,
    "empty_fraction": (int, float),
}


def _suffix(path: str) -> str:
    name = os.path.basename(path).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(name)[1]


def media_kind(path: str) -> str | None:
    """ "video", "dicom", "nifti", "dicom-series" (a folder) or None for anything else.

    ``path`` may be an item; its member is ignored. Folders are checked with
    :func:`is_dicom_series` (reads headers), files by suffix only.
    """
    path, _ = parse_item(path)
    suffix = _suffix(path)
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in DICOM_EXTENSIONS:
        return "dicom"
    if suffix in NIFTI_EXTENSIONS:
        return "nifti"
    if os.path.isdir(path) and is_dicom_series(path):
        return "dicom-series"
    return None


def parse_item(item: str) -> tuple[str, dict[str, int | float]]:
    """Split ``"a.mp4#frame=12,t=0.480"`` into ``("a.mp4", {"frame": 12, "t": 0.48})``.

    A ``#`` not followed by a valid member (``frame``, ``t``, ``slice``, ``axis``,
    ``wc``, ``ww`` fields) belongs to the file name: ``("my#file.png", {})``.
    """
    path, sep, member = item.rpartition("#")
    if not sep or not member:
        return item, {}
    fields: dict[str, int | float] = {}
    for part in member.split(","):
        key, eq, value = part.partition("=")
        try:
            if key in _INT_FIELDS:
                fields[key] = int(value)
            elif key in _FLOAT_FIELDS:
                fields[key] = float(value)
            else:
                return item, {}
        except ValueError:
            return item, {}
        if not eq:
            return item, {}
    return path, fields


def expand(path: str | os.PathLike, options: MediaOptions | None = None) -> list[tuple[str, str]]:
    """One media source → ``[(item, group), ...]``, one per sampled frame or slice.

    Args:
        path: a clip, a ``.dcm`` file, a ``.nii``/``.nii.gz`` volume, or a DICOM
            series folder.
        options: sampling / windowing / slicing (default ``MediaOptions()``).

    Returns:
        Items in frame/slice order with their split group; a single-frame DICOM
        gives ``[(path, "patient:<keyed hash>")]``.

    Raises:
        UnreadableImage: broken/truncated/unsupported source (skip and count it).
        MissingExtraError: the extra for this kind is not installed.
        UsageError: ``path`` is not a media source.
    """
    from alexkit.media import dicom, video, volume

    options = options or MediaOptions()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise unreadable("no such file", path)
    kind = media_kind(path)
    if kind == "video":
        return video.expand_clip(path, options)
    if kind == "dicom":
        return dicom.expand_file(path, options)
    if kind in ("nifti", "dicom-series"):
        return volume.expand_volume(path, options)
    raise UsageError(
        f"{path} is not a media source (suffixes {sorted(MEDIA_EXTENSIONS)} or a DICOM series "
        "folder)"
    )


def decode_member(item: str, options: MediaOptions | None = None) -> np.ndarray:
    """Decode one item from :func:`expand` to an (H, W, 3) uint8 RGB image.

    Thread-safe; clips and volumes are decoded once and kept in a byte-bounded
    cache (``ALEXKIT_MEDIA_CACHE_MB``, default 512), so calling this per item
    from tf.data is cheap when items of one source arrive close together.
    An item without a member means its first frame / middle slice. A window in
    the item (``wc``/``ww``) wins over ``options``; for video, ``options`` (else
    those the clip was expanded with) only decide which frames are decoded together.

    Raises:
        UnreadableImage: unreadable source, or a frame/slice out of range.
        MissingExtraError: the extra for this kind is not installed.
    """
    from alexkit.media import dicom, video, volume

    path, fields = parse_item(item)
    given = options
    options = options or MediaOptions()
    if "wc" in fields and "ww" in fields:
        # The item's own window (set at expand time) wins: items decode alike everywhere.
        options = dataclasses.replace(
            options, window_center=fields["wc"], window_width=fields["ww"]
        )
    if not os.path.exists(path):
        raise unreadable("no such file", path)
    # A folder item came from expand(): no need to re-read every header per slice.
    kind = "dicom-series" if os.path.isdir(path) else media_kind(path)
    if kind == "video":
        return video.decode_frame(path, int(fields.get("frame", 0)), given)
    if kind == "dicom":
        return dicom.decode_file(path, int(fields.get("frame", 0)), options)
    if kind in ("nifti", "dicom-series"):
        axis = int(fields.get("axis", options.axis))
        if "slice" in fields:
            index = int(fields["slice"])
        else:
            index = volume.load_volume(path, options).shape[axis] // 2
        return volume.decode_slice(path, index, axis, options)
    raise unreadable("not a media file (video, DICOM, NIfTI or DICOM series)", path)


def _source_keys(items: Sequence[str], by: str, groups: Sequence[str] | None) -> list[str]:
    if by == "group":
        if groups is None or len(groups) != len(items):
            raise UsageError("aggregate(by='group') needs one group per item")
        return [str(g) for g in groups]
    if by not in ("clip", "volume", "source"):
        raise UsageError(f"by must be 'clip', 'volume', 'source' or 'group'. Received: {by!r}")
    return [parse_item(str(item))[0] for item in items]


def _group_rows(keys: list[str]) -> tuple[list[str], np.ndarray]:
    order: dict[str, int] = {}
    index = np.array([order.setdefault(k, len(order)) for k in keys], dtype=np.int64)
    return list(order), index


def aggregate(
    items: Sequence[str],
    probs: np.ndarray,
    by: str = "clip",
    groups: Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Average per-item probabilities per clip / volume (or per group).

    Args:
        items: item strings, one per row of ``probs``.
        probs: (N, C) probabilities.
        by: "clip", "volume" or "source" (all: the item's file path; plain images
            are their own key) or "group" (use ``groups``).
        groups: per-item group strings when ``by="group"``.

    Returns:
        (keys in first-appearance order, (K, C) float64 mean probabilities).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(items):
        raise UsageError(f"probs must be (len(items), C). Received: {probs.shape}")
    keys, index = _group_rows(_source_keys(items, by, groups))
    sums = np.zeros((len(keys), probs.shape[1]), dtype=np.float64)
    np.add.at(sums, index, probs)
    counts = np.bincount(index, minlength=len(keys)).astype(np.float64)
    return keys, sums / counts[:, None]


def aggregate_labels(
    items: Sequence[str],
    labels: Sequence[int],
    by: str = "clip",
    groups: Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """One label per clip / volume, in :func:`aggregate`'s key order.

    Raises:
        DataError: items of one clip/volume carry different labels.
    """
    keys = _source_keys(items, by, groups)
    out: dict[str, int] = {}
    for key, label in zip(keys, labels, strict=True):
        if out.setdefault(key, int(label)) != int(label):
            raise DataError(f"{key}: its frames/slices carry different labels; fix the manifest")
    return list(out), np.array(list(out.values()), dtype=np.int64)


def pool_frames(
    features: np.ndarray, keys: Sequence[str], how: str = "mean"
) -> tuple[list[str], np.ndarray]:
    """Pool per-frame (or per-slice) feature rows into one row per source.

    Args:
        features: (N, D) features.
        keys: items (grouped by their file path) or source paths, one per row.
        how: "mean" or "max".

    Returns:
        (source paths in first-appearance order, (K, D) pooled features, float32).
    """
    if how not in ("mean", "max"):
        raise UsageError(f"--pool-frames must be 'mean' or 'max'. Received: {how!r}")
    features = np.asarray(features)
    if features.ndim != 2 or len(features) != len(keys):
        raise UsageError(f"features must be (len(keys), D). Received: {features.shape}")
    names, index = _group_rows([parse_item(str(k))[0] for k in keys])
    if how == "mean":
        pooled = np.zeros((len(names), features.shape[1]), dtype=np.float64)
        np.add.at(pooled, index, features)
        pooled /= np.bincount(index, minlength=len(names))[:, None]
    else:
        pooled = np.full((len(names), features.shape[1]), -np.inf, dtype=np.float64)
        np.maximum.at(pooled, index, features)
    return names, pooled.astype(np.float32)


def clear_cache() -> None:
    """Drop every decoded clip/volume kept in memory."""
    CACHE.clear()
