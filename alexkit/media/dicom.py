"""DICOM files (.dcm) and DICOM series folders, read with pydicom.

Pipeline for a grayscale image: stored values → modality LUT (RescaleSlope /
RescaleIntercept, or a Modality LUT Sequence) → VOI window → 8-bit → MONOCHROME1
inverted → 3 identical channels. The window is the recipe's centre/width when
given; otherwise ("auto") the file's own WindowCenter/WindowWidth (first value),
and failing that the 0.5th..99.5th percentiles of the rescaled values. Colour
DICOM (RGB / YBR, converted to RGB by pydicom) is passed through, scaled to 8 bits.

Privacy: only the tags listed in ``_PIXEL_TAGS`` are parsed, so PatientName,
birth date and the like are never even decoded; PatientID is read as raw bytes
only to be hashed into a split group. Items are file paths, groups are hashes,
and error messages never quote header values.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import DataError, MissingExtraError
from alexkit.media._common import (
    CACHE,
    auto_range_to_uint8,
    file_key,
    gray_to_rgb,
    join_member,
    unreadable,
    window_member,
    window_to_uint8,
)

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})

_HEADER_TAGS = [
    "PatientID",
    "NumberOfFrames",
    "SeriesInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "InstanceNumber",
]
_PIXEL_TAGS = [
    *_HEADER_TAGS,
    "SpecificCharacterSet",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
]

# Optional key for patient hashes: short numeric IDs can be recovered from a bare
# sha256 by enumeration; a secret salt (HMAC) prevents that where it matters.
_SALT_ENV = "ALEXKIT_PATIENT_SALT"


def import_pydicom() -> Any:
    """Import pydicom or raise MissingExtraError naming ``alexkit[medical]``."""
    try:
        import pydicom
    except ImportError as exc:
        raise MissingExtraError("reading DICOM files", "medical", "pydicom") from exc
    return pydicom


def read_dataset(path: str, *, pixels: bool) -> Any:
    """Parse the tags alexkit needs (never PatientName & co). Raises UnreadableImage."""
    pydicom = import_pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(
            path,
            specific_tags=_PIXEL_TAGS if pixels else _HEADER_TAGS,
            stop_before_pixels=not pixels,
        )
    except InvalidDicomError as exc:
        raise unreadable("not a DICOM file (no DICM header)", path) from exc
    except Exception as exc:
        # The parser's own text may echo element bytes; name the exception only.
        raise unreadable(f"cannot parse DICOM ({type(exc).__name__})", path) from exc


def patient_group(ds: Any, path: str) -> str:
    """``"patient:" + sha256(PatientID)[:16]`` (HMAC with $ALEXKIT_PATIENT_SALT when set).

    Without a PatientID the file or series is its own group (``"file:" + path``).
    """
    raw = ds.get_item(0x00100020) if hasattr(ds, "get_item") else None
    value = getattr(raw, "value", None) if raw is not None else None
    if isinstance(value, bytes):
        text = value.decode("latin-1").strip(" \x00")
    else:
        text = str(value or "").strip()
    if not text:
        return f"file:{path}"
    salt = os.environ.get(_SALT_ENV)
    if salt:
        digest = hmac.new(salt.encode(), text.encode(), hashlib.sha256).hexdigest()
    else:
        digest = hashlib.sha256(text.encode()).hexdigest()
    return f"patient:{digest[:16]}"


def num_frames(ds: Any) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _pip_for(decoder: Any) -> str:
    # pydicom lists e.g. "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1";
    # name the pylibjpeg route (pure pip wheels) when pydicom offers it.
    deps = list(getattr(decoder, "missing_dependencies", []) or [])
    deps.sort(key=lambda d: not d.startswith("pylibjpeg"))
    if not deps:
        return "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
    packages = re.findall(r"([A-Za-z][A-Za-z0-9_.-]*)\s*[<>=]", deps[0].split(" - ", 1)[-1])
    return "pip install " + " ".join(dict.fromkeys(packages) or ["pylibjpeg"])


def _check_decoder(ds: Any, path: str) -> None:
    """A compressed transfer syntax without an installed decoder → one clear line."""
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None or not uid.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise unreadable(
            f"DICOM transfer syntax '{uid.name}' ({uid}) is not supported by pydicom", path
        ) from None
    if not decoder.is_available:
        raise unreadable(
            f"DICOM transfer syntax '{uid.name}' ({uid}) needs a decoder: "
            f"run `{_pip_for(decoder)}`",
            path,
        )


def _stored_pixels(ds: Any, path: str) -> np.ndarray:
    _check_decoder(ds, path)
    if "PixelData" not in ds:
        raise unreadable("DICOM file has no pixel data", path)
    try:
        return ds.pixel_array
    except Exception as exc:
        raise unreadable(f"cannot decode DICOM pixels ({type(exc).__name__})", path) from exc


def modality_values(ds: Any, arr: np.ndarray) -> np.ndarray:
    """Stored values → modality units (e.g. Hounsfield), as float64."""
    from pydicom.pixels import apply_modality_lut

    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)


def file_window(ds: Any) -> tuple[float, float] | None:
    """The file's first (WindowCenter, WindowWidth) pair, or None."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        c = float(center[0] if _is_multi(center) else center)
        w = float(width[0] if _is_multi(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (c, w) if w > 0 else None


def _is_multi(value: Any) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def to_uint8(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Rescaled values → uint8 via ``window`` (centre, width) or the automatic range."""
    if window is not None:
        return window_to_uint8(values, *window)
    sample = values if values.size <= 4_000_000 else values.reshape(-1)[:: values.size // 2**21]
    return auto_range_to_uint8(values, sample=sample)


def _is_monochrome1(ds: Any) -> bool:
    return str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"


def _colour_to_uint8(arr: np.ndarray, ds: Any) -> np.ndarray:
    bits = int(ds.get("BitsStored", 8) or 8)
    if arr.dtype == np.uint8:
        return arr
    shift = max(bits - 8, 0)
    return np.clip(arr.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def _decode_all_frames(path: str, options: Any) -> np.ndarray:
    """Every frame of a file as uint8: (F, H, W) gray or (F, H, W, 3) colour."""
    ds = read_dataset(path, pixels=True)
    arr = _stored_pixels(ds, path)
    frames = num_frames(ds)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1:
        arr = arr[None]
    if samples == 3:
        return _colour_to_uint8(arr, ds)
    if samples != 1:
        raise unreadable(f"DICOM with {samples} samples per pixel is not supported", path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in {"MONOCHROME1", "MONOCHROME2", ""}:
        raise unreadable(f"DICOM photometric interpretation {photometric} not supported", path)
    values = modality_values(ds, arr)
    window = options_window(options) or file_window(ds)
    gray = to_uint8(values, window)
    if _is_monochrome1(ds):
        # MONOCHROME1: the lowest value is white; flip so bright always means dense.
        gray = 255 - gray
    return gray


def options_window(options: Any) -> tuple[float, float] | None:
    if options.window_center is None or options.window_width is None:
        return None
    return (float(options.window_center), float(options.window_width))


def decode_file(path: str, frame: int, options: Any) -> np.ndarray:
    """Frame ``frame`` of a DICOM file as (H, W, 3) uint8.

    Multi-frame files are decoded once and cached; single frames are not cached.
    """

    key = _frames_key(path, options)
    stack = CACHE.peek(key)
    if stack is None:
        stack = _decode_all_frames(path, options)
        if stack.shape[0] > 1:
            CACHE.put(key, stack, stack.nbytes)
    if not 0 <= frame < stack.shape[0]:
        raise unreadable(f"frame {frame} out of range (file has {stack.shape[0]})", path)
    image = stack[frame]
    return gray_to_rgb(image) if image.ndim == 2 else np.ascontiguousarray(image)


def _frames_key(path: str, options: Any) -> tuple:
    return ("dicom", *file_key(path), options.window_center, options.window_width)


def expand_file(path: str, options: Any = None) -> list[tuple[str, str]]:
    """A single-frame file → ``[(path, group)]``; multi-frame → one item per frame.

    A window fixed by ``options`` is written into the member (``#wc=..,ww=..``).
    """
    ds = read_dataset(path, pixels=False)
    group = patient_group(ds, path)
    frames = num_frames(ds)
    window = window_member(options)
    if frames == 1:
        return [(f"{path}#{window}" if window else path, group)]
    return [(f"{path}#{join_member(f'frame={k}', window)}", group) for k in range(frames)]


# ---------------------------------------------------------------- series (folders)


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def series_files(folder: str) -> list[Path]:
    """The DICOM files directly inside ``folder`` (by suffix or DICM magic), sorted."""
    root = Path(folder)
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file() and not p.name.startswith(".") and _looks_like_dicom(p)
    )


def is_dicom_series(folder: str) -> bool:
    """True when ``folder`` holds one DICOM series: ≥2 files, one SeriesInstanceUID,
    every file with an ImagePositionPatient (so a class folder of unrelated X-rays is not
    mistaken for a volume). Reads headers only.
    """
    if not os.path.isdir(folder):
        return False
    files = series_files(folder)
    if len(files) < 2:
        return False
    uids = set()
    for f in files:
        try:
            ds = read_dataset(str(f), pixels=False)
        except DataError:
            return False
        if "ImagePositionPatient" not in ds or num_frames(ds) != 1:
            return False
        uids.add(str(ds.get("SeriesInstanceUID", "")))
    return len(uids) == 1 and "" not in uids


def _slice_position(ds: Any) -> float | None:
    try:
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    normal = np.cross(iop[:3], iop[3:6])
    return float(ipp @ normal)


def series_group(folder: str) -> str:
    """The patient group of a series (from its first file)."""
    files = series_files(folder)
    if not files:
        raise unreadable("no DICOM files in the series folder", folder)
    return patient_group(read_dataset(str(files[0]), pixels=False), folder)


def load_series(folder: str, options: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Read a series folder as a volume.

    Returns:
        (values, gray, monochrome1): ``values`` float32 (X, Y, Z) modality units with
        ``values[:, :, k] = image_k[::-1].T`` (so the common slice display gives back
        the stored image for axis 2), slices ordered along the slice normal
        (ImagePositionPatient·normal, else InstanceNumber); ``gray`` the windowed uint8.
    """
    files = series_files(folder)
    if not files:
        raise unreadable("no DICOM files in the series folder", folder)
    slices = []
    for f in files:
        ds = read_dataset(str(f), pixels=True)
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or num_frames(ds) != 1:
            raise unreadable("a series must hold single-frame grayscale images", str(f))
        values = modality_values(ds, _stored_pixels(ds, str(f)))
        pos = _slice_position(ds)
        order = pos if pos is not None else float(ds.get("InstanceNumber", 0) or 0)
        slices.append((order, f.name, values, ds))
    slices.sort(key=lambda s: (s[0], s[1]))
    shapes = {s[2].shape for s in slices}
    if len(shapes) != 1:
        raise unreadable(f"series slices have different sizes {sorted(shapes)}", folder)
    first = slices[0][3]
    volume = np.stack([s[2][::-1].T for s in slices], axis=2).astype(np.float32)
    window = options_window(options) or file_window(first)
    gray = to_uint8(volume, window)
    mono1 = _is_monochrome1(first)
    if mono1:
        gray = 255 - gray
    return volume, gray, mono1
