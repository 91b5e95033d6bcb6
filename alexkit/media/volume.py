"""Volumes as stacks of 2-D slices: NIfTI files (nibabel) and DICOM series folders.

NIfTI volumes are reoriented to the closest canonical (RAS+) orientation, so
``axis`` 0/1/2 means sagittal/coronal/axial whatever the storage order; 4-D
volumes use their first 3-D volume. A slice is displayed with the first
remaining axis left→right and the second bottom→top (``flipud(slice.T)``);
voxel spacing is not resampled, so reformatted slices of anisotropic volumes
look squashed. The window is the recipe's centre/width, else for DICOM series
the first file's WindowCenter/Width, else the volume's 0.5th..99.5th percentiles.

A slice is "empty" when the fraction of its voxels above the volume minimum is
at most ``empty_fraction`` (0.0: all background); ``skip_empty=False`` keeps all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from alexkit.errors import DataError, MissingExtraError, one_line
from alexkit.media._common import (
    CACHE,
    file_key,
    gray_to_rgb,
    join_member,
    unreadable,
    window_member,
)
from alexkit.media.dicom import load_series, options_window, series_group, to_uint8
from alexkit.quiet import quiet_read

NIFTI_EXTENSIONS = frozenset({".nii", ".nii.gz"})


def import_nibabel() -> Any:
    """Import nibabel or raise MissingExtraError naming ``alexkit[medical]``."""
    try:
        import nibabel
    except ImportError as exc:
        raise MissingExtraError("reading NIfTI volumes", "medical", "nibabel") from exc
    return nibabel


@dataclass(frozen=True)
class Volume:
    """A windowed volume ready to slice.

    Attributes:
        gray: uint8 (X, Y, Z), windowed (and inverted for MONOCHROME1 series).
        occupancy: per axis, the fraction of each slice's voxels above the volume minimum.
    """

    gray: np.ndarray
    occupancy: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.gray.shape


def _occupancy(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    above = values > values.min()
    return (
        above.mean(axis=(1, 2)),
        above.mean(axis=(0, 2)),
        above.mean(axis=(0, 1)),
    )


def _read_nifti(path: str) -> np.ndarray:
    with quiet_read(path):
        return _read_nifti_quietly(path)


def _read_nifti_quietly(path: str) -> np.ndarray:
    nib = import_nibabel()
    try:
        img = nib.load(path)
        img = nib.as_closest_canonical(img)
        # dataobj applies scl_slope/scl_inter; keeps ints as ints when unscaled.
        values = np.asanyarray(img.dataobj)
    except (MissingExtraError, DataError):
        raise
    except Exception as exc:
        detail = one_line(exc, typed=True)
        raise unreadable(f"cannot read NIfTI volume ({detail}; truncated?)", path) from exc
    if values.ndim == 4:
        values = values[..., 0]
    elif values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3 or values.size == 0:
        raise unreadable(f"NIfTI data of shape {values.shape} is not a 2-D..4-D volume", path)
    if np.issubdtype(values.dtype, np.floating):
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return values


def _load(path: str, options: Any) -> Volume:
    if os.path.isdir(path):
        values, gray, _ = load_series(path, options)
    else:
        values = _read_nifti(path)
        gray = to_uint8(values, options_window(options))
    return Volume(gray=np.ascontiguousarray(gray), occupancy=_occupancy(values))


def load_volume(path: str, options: Any) -> Volume:
    """The windowed volume of a NIfTI file or DICOM series folder (cached, thread-safe)."""
    key = ("volume", *file_key(path), options.window_center, options.window_width)
    if os.path.isdir(path):
        # A folder's mtime misses edits inside files; add the newest file mtime.
        newest = max((e.stat().st_mtime_ns for e in os.scandir(path) if e.is_file()), default=0)
        key = (*key, newest)

    def load() -> tuple[Volume, int]:
        vol = _load(path, options)
        return vol, vol.gray.nbytes

    return CACHE.get(key, load)


def slice_indices(volume: Volume, options: Any) -> list[int]:
    """Slice indices along ``options.axis``: the range/step, then empty slices dropped."""
    axis = options.axis
    n = volume.shape[axis]
    chosen = range(n)[slice(options.slice_start, options.slice_stop, options.slice_step)]
    if not options.skip_empty:
        return list(chosen)
    occupied = volume.occupancy[axis]
    return [i for i in chosen if occupied[i] > options.empty_fraction]


def expand_volume(path: str, options: Any) -> list[tuple[str, str]]:
    """``[(f"{path}#slice=i,axis=a", group), ...]``; group "volume:" + path for NIfTI,
    the patient hash for a DICOM series."""
    volume = load_volume(path, options)
    indices = slice_indices(volume, options)
    if not indices:
        raise unreadable(f"no non-empty slices along axis {options.axis} in the chosen range", path)
    group = series_group(path) if os.path.isdir(path) else f"volume:{path}"
    window = window_member(options)
    return [
        (f"{path}#{join_member(f'slice={i},axis={options.axis}', window)}", group) for i in indices
    ]


def decode_slice(path: str, index: int, axis: int, options: Any) -> np.ndarray:
    """Slice ``index`` along ``axis`` as (H, W, 3) uint8 (see module docstring for layout)."""
    volume = load_volume(path, options)
    if axis not in (0, 1, 2):
        raise unreadable(f"slice axis {axis} is not 0, 1 or 2", path)
    if not 0 <= index < volume.shape[axis]:
        raise unreadable(f"slice {index} out of range (axis {axis} has {volume.shape[axis]})", path)
    plane = volume.gray[(slice(None),) * axis + (index,)]  # a view; np.take copies slowly
    return gray_to_rgb(np.flipud(plane.T))
