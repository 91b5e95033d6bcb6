"""DICOM files (.dcm) and DICOM series folders, read with pydicom.

Pipeline for a grayscale image: stored values → modality LUT (RescaleSlope /
RescaleIntercept, or a Modality LUT Sequence) → VOI window → 8-bit → MONOCHROME1
inverted → 3 identical channels. The window is the recipe's centre/width when
given; otherwise ("auto") the file's own WindowCenter/WindowWidth (first value),
and failing that the 0.5th..99.5th percentiles of the rescaled values. Colour
DICOM (RGB / YBR, converted to RGB by pydicom) is passed through, scaled to 8 bits.

Privacy: only the tags listed in ``_PIXEL_TAGS`` are parsed, so PatientName,
birth date and the like are never even decoded; PatientID is read as raw bytes
only to be turned into a split group by a keyed hash (HMAC) with a per-installation
secret (see ``patient_group``). Items are file paths, groups are hashes,
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
from alexkit.paths import installation_secret
from alexkit.quiet import quiet_read

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
    *[
        f"{prefix}{colour}PaletteColorLookupTable{part}"
        for colour in ("Red", "Green", "Blue")
        for prefix, part in (("", "Descriptor"), ("", "Data"), ("Segmented", "Data"))
    ],
    "PixelData",
]

# The first element of a DICOM stream without the 128-byte preamble and "DICM" (old
# ACR-NEMA files, or a preamble stripped by a tool) is in one of these groups.
_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})

# Patient IDs become split groups through an HMAC: a short numeric ID is recovered from a
# bare sha256 by hashing every candidate, but not without the secret key. The key is this
# installation's secret ($ALEXKIT_HOME/secret.key), or this variable when set: the same
# value on every machine of a multi-machine study gives the same groups everywhere.
_SALT_ENV = "ALEXKIT_PATIENT_SALT"


def import_pydicom() -> Any:
    """Import pydicom or raise MissingExtraError naming ``alexkit[medical]``."""
    try:
        import pydicom
    except ImportError as exc:
        raise MissingExtraError("reading DICOM files", "medical", "pydicom") from exc
    return pydicom


def read_dataset(path: str, *, pixels: bool) -> Any:
    """Parse the tags alexkit needs (never PatientName & co). Raises UnreadableImage.

    A file without the preamble and ``DICM`` marker is read anyway (``force=True``)
    when it starts with a DICOM data element; its transfer syntax is then the encoding
    pydicom found.
    """
    pydicom = import_pydicom()
    from pydicom.errors import InvalidDicomError

    tags = _PIXEL_TAGS if pixels else _HEADER_TAGS
    try:
        return pydicom.dcmread(path, specific_tags=tags, stop_before_pixels=not pixels)
    except InvalidDicomError as exc:
        if not _starts_with_element(path):
            raise unreadable(
                "not a DICOM file (no DICM header, and no DICOM data element at the start)", path
            ) from exc
    except Exception as exc:
        # The parser's own text may echo element bytes; name the exception only.
        raise unreadable(f"cannot parse DICOM ({type(exc).__name__})", path) from exc
    try:
        ds = pydicom.dcmread(path, specific_tags=tags, stop_before_pixels=not pixels, force=True)
    except Exception as exc:
        raise unreadable(f"cannot parse DICOM without header ({type(exc).__name__})", path) from exc
    _set_found_transfer_syntax(ds)
    return ds


def _starts_with_element(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    if len(head) < 8:
        return False
    return any(int.from_bytes(head[:2], order) in _FIRST_GROUPS for order in ("little", "big"))


def _set_found_transfer_syntax(ds: Any) -> None:
    """A file without meta information: decode it as pydicom parsed it."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def patient_group(ds: Any, path: str) -> str:
    """``"patient:" + HMAC-SHA256(key, PatientID)[:16]``; the ID itself never leaves here.

    The key is ``$ALEXKIT_PATIENT_SALT`` when set, else the installation's secret
    (:func:`alexkit.paths.installation_secret`). Without a PatientID the file or series is
    its own group (``"file:" + path``).
    """
    raw = ds.get_item(0x00100020) if hasattr(ds, "get_item") else None
    value = getattr(raw, "value", None) if raw is not None else None
    if isinstance(value, bytes):
        text = value.decode("latin-1").strip(" \x00")
    else:
        text = str(value or "").strip()
    if not text:
        return f"file:{path}"
    return f"patient:{patient_digest(text)}"


def patient_digest(patient_id: str) -> str:
    """The 16 hex digits of a patient's split group (see :func:`patient_group`)."""
    salt = os.environ.get(_SALT_ENV)
    key = salt.encode() if salt else installation_secret()
    return hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()[:16]


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
        raise unreadable(_decode_failure(ds, exc), path) from exc


def _decode_failure(ds: Any, exc: Exception) -> str:
    """Why pixels did not decode; for compressed data, the syntax and a decoder to add.

    E.g. 12-bit lossy JPEG (JPEG Extended): Pillow is available but cannot decode it.
    """
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None or not uid.is_compressed:
        return f"cannot decode DICOM pixels ({type(exc).__name__})"
    from pydicom.pixels import get_decoder

    # pydicom lists each tried plugin as "  name: why" under its first line.
    tried = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    detail = f" ({'; '.join(tried)[:200]})" if tried else f" ({type(exc).__name__})"
    text = f"DICOM transfer syntax '{uid.name}' ({uid}): the installed decoders failed{detail}"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return text
    if getattr(decoder, "missing_dependencies", None):
        text += f"; run `{_pip_for(decoder)}` for a decoder that handles it"
    return text


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
    with quiet_read(path, redact_quotes=True):
        ds = read_dataset(path, pixels=True)
        arr = _stored_pixels(ds, path)
        frames = num_frames(ds)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        if frames == 1:
            arr = arr[None]
        if samples == 3:
            return _colour_to_uint8(arr, ds)
        if samples != 1:
            raise unreadable(f"DICOM with {samples} samples per pixel is not supported", path)
        if photometric == "PALETTE COLOR":
            return _palette_to_rgb(arr, ds, path)
        if photometric not in {"MONOCHROME1", "MONOCHROME2", ""}:
            raise unreadable(f"DICOM photometric interpretation {photometric} not supported", path)
        values = modality_values(ds, arr)
        window = options_window(options) or file_window(ds)
        gray = to_uint8(values, window)
    if _is_monochrome1(ds):
        # MONOCHROME1: the lowest value is white; flip so bright always means dense.
        gray = 255 - gray
    return gray


def _palette_to_rgb(arr: np.ndarray, ds: Any, path: str) -> np.ndarray:
    """PALETTE COLOR indices → RGB uint8 through the file's lookup tables (PS3.3 C.7.9)."""
    from pydicom.pixels import apply_color_lut

    try:
        rgb = np.asarray(apply_color_lut(arr, ds))
    except Exception as exc:
        reason = f"bad DICOM palette colour lookup table ({type(exc).__name__})"
        raise unreadable(reason, path) from exc
    if rgb.dtype == np.uint8:
        return rgb
    # Entries are 16 bits wide (descriptor[2] == 16) unless stored in 8.
    bits = 8 * rgb.dtype.itemsize
    return (rgb.astype(np.uint32) >> (bits - 8)).astype(np.uint8)


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
    with quiet_read(path, redact_quotes=True):
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
    return head[128:132] == b"DICM" or _starts_with_element(str(path))


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
            with quiet_read(str(f), redact_quotes=True):
                ds = read_dataset(str(f), pixels=False)
                if "ImagePositionPatient" not in ds or num_frames(ds) != 1:
                    return False
                uids.add(str(ds.get("SeriesInstanceUID", "")))
        except DataError:
            return False
    return len(uids) == 1 and "" not in uids


def _slice_position(ds: Any) -> float | None:
    try:
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    normal = np.cross(iop[:3], iop[3:6])
    return float(ipp @ normal)


def _instance_number(ds: Any) -> float:
    try:
        return float(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


def series_group(folder: str) -> str:
    """The patient group of a series (from its first file)."""
    files = series_files(folder)
    if not files:
        raise unreadable("no DICOM files in the series folder", folder)
    with quiet_read(str(files[0]), redact_quotes=True):
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
        with quiet_read(str(f), redact_quotes=True):
            ds = read_dataset(str(f), pixels=True)
            if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or num_frames(ds) != 1:
                raise unreadable("a series must hold single-frame grayscale images", str(f))
            values = modality_values(ds, _stored_pixels(ds, str(f)))
            pos = _slice_position(ds)
            order = pos if pos is not None else _instance_number(ds)
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
