"""Reading one image file into RGB uint8, and sniffing a file's header to decide how.

Detection happens in two places, both before any pixel is decoded in a training step:

1. :func:`sniff` reads a file's *header and its last few KiB* (one ``open``, two small
   reads; ~50 µs a file with a warm page cache, run on a thread pool by
   :func:`alexkit.data.make_dataset`). It catches zero-byte files, text or other
   non-images named ``.jpg``, truncated JPEG/PNG/BMP files (no end marker), images above
   the pixel limit (decompression bombs, read from the header), and decides the *route*:
   TensorFlow's native decoders for JPEG (baseline, progressive, gray, CMYK) and PNG
   (8- and 16-bit), or Pillow for everything else (GIF, BMP, WebP, TIFF, lossless or
   12-bit JPEG, media items).
2. :func:`decode_image` (the Pillow route, also used by ``alexkit data check``) raises
   :class:`UnreadableImage` with a one-line reason instead of crashing.

EXIF orientation: applied, so the model sees a photo the way a viewer shows it. The
sniff reads the Orientation tag; the tf.data pipeline rotates/flips natively decoded
JPEGs in the graph (``ROUTE_JPEG_EXIF``), and the Pillow path uses
``ImageOps.exif_transpose`` — the two agree exactly. (TensorFlow's own decoders ignore
EXIF, so a plain ``tf.io.decode_jpeg`` pipeline shows phone portraits sideways.)

16-bit PNGs are scaled by their *actual* bit range: ``bits = max(8, bit_length(max))``
and ``pixel * 255 / (2**bits - 1)``, so a 12-bit X-ray (max ≤ 4095) fills 0..255
instead of being near-black after a blind ``>> 8``.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass

import numpy as np

from alexkit.errors import DataError, MissingExtraError, UnreadableImage, one_line
from alexkit.quiet import quiet_read

# Pillow's own default: 89.5 Mpx (~ a 1024 MiB RGBA image). Override with $ALEXKIT_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 89_478_485

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

# Routes: how the tf.data pipeline decodes an item (ints, used in a tf.switch_case).
ROUTE_SKIP = -1
ROUTE_JPEG = 0  # tf.io.decode_jpeg (baseline, progressive, gray, CMYK/YCCK)
ROUTE_PNG = 1  # tf.io.decode_png, 8-bit
ROUTE_PNG16 = 2  # tf.io.decode_png uint16, scaled by the actual bit range
ROUTE_PILLOW = 3  # decode_image() in a py_function (Pillow or alexkit.media)
ROUTE_JPEG_EXIF = 4  # tf.io.decode_jpeg, then the EXIF orientation (2..8) in the graph

_TAIL_BYTES = 4096


@dataclass(frozen=True)
class Sniff:
    """What a file's header says: format, size, and how to decode it.

    Attributes:
        route: one of the ``ROUTE_*`` constants; ``ROUTE_SKIP`` when unreadable.
        format: "JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "MEDIA" or "".
        width: pixels (0 when unknown from the header).
        height: pixels (0 when unknown).
        reason: why the file is skipped ("" when readable).
        orientation: EXIF orientation (1 = upright; 2..8 as in the EXIF spec).
    """

    route: int
    format: str = ""
    width: int = 0
    height: int = 0
    reason: str = ""
    orientation: int = 1

    @property
    def ok(self) -> bool:
        return self.route != ROUTE_SKIP


def max_pixels() -> int:
    """The decompression-bomb limit in pixels ($ALEXKIT_MAX_PIXELS or 89,478,485)."""
    env = os.environ.get("ALEXKIT_MAX_PIXELS")
    return int(env) if env else DEFAULT_MAX_PIXELS


def split_item(item: str) -> tuple[str, str]:
    """Split ``path#member`` into (path, member); member is "" for plain files.

    A file whose own name contains '#' (and exists) is a plain file, not a media item.
    """
    if "#" in item and not os.path.isfile(item):
        path, member = item.rsplit("#", 1)
        return path, member
    return item, ""


def media_module():
    """alexkit.media if it is importable, else None (it is optional)."""
    try:
        from alexkit import media
    except ImportError:
        return None
    return media


def is_media(item: str) -> bool:
    """True for video frames / volume slices, which alexkit.media decodes."""
    path, member = split_item(item)
    if member:
        return True
    media = media_module()
    if media is None:
        return False
    name = path.lower()
    return any(name.endswith(ext) for ext in getattr(media, "MEDIA_EXTENSIONS", ()))


def sniff(item: str, limit: int | None = None) -> Sniff:
    """Classify a file from its header and tail, without decoding pixels.

    Args:
        item: a file path, or ``path#member`` for a media item.
        limit: pixel limit (default :func:`max_pixels`).

    Returns:
        A :class:`Sniff`; never raises for bad files (``route == ROUTE_SKIP``).
    """
    limit = max_pixels() if limit is None else limit
    if is_media(item):
        path, _ = split_item(item)
        if not os.path.exists(path):
            return Sniff(ROUTE_SKIP, reason="file not found")
        return Sniff(ROUTE_PILLOW, "MEDIA")
    try:
        with open(item, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return Sniff(ROUTE_SKIP, reason="empty file (0 bytes)")
            head = fh.read(32)
            result = _sniff_open(fh, head, size)
    except FileNotFoundError:
        return Sniff(ROUTE_SKIP, reason="file not found")
    except IsADirectoryError:
        return Sniff(ROUTE_SKIP, reason="is a directory")
    except PermissionError:
        return Sniff(ROUTE_SKIP, reason="permission denied")
    except OSError as exc:
        return Sniff(ROUTE_SKIP, reason=f"cannot read file ({exc.strerror or exc})")
    if result.ok and result.width * result.height > limit:
        return Sniff(
            ROUTE_SKIP,
            result.format,
            result.width,
            result.height,
            f"too large: {result.width}x{result.height} pixels exceeds the limit of "
            f"{limit:,} (decompression-bomb guard; raise $ALEXKIT_MAX_PIXELS)",
        )
    return result


def _tail(fh, size: int, start: int) -> bytes:
    """The last few KiB of the file, but never bytes before ``start``."""
    offset = max(start, size - _TAIL_BYTES)
    fh.seek(offset)
    return fh.read(size - offset)


def _sniff_open(fh, head: bytes, size: int) -> Sniff:
    if head.startswith(b"\xff\xd8\xff"):
        return _sniff_jpeg(fh, size)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(head) < 29 or head[12:16] != b"IHDR":
            return Sniff(ROUTE_SKIP, "PNG", reason="truncated PNG (no IHDR header)")
        width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
        if b"IEND" not in _tail(fh, size, 33):
            return Sniff(ROUTE_SKIP, "PNG", width, height, "truncated PNG (no IEND chunk)")
        route = ROUTE_PNG16 if depth == 16 else ROUTE_PNG
        return Sniff(route, "PNG", width, height)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", head[6:10]) if len(head) >= 10 else (0, 0)
        return Sniff(ROUTE_PILLOW, "GIF", width, height)
    if head.startswith(b"BM") and len(head) >= 26:
        declared = struct.unpack("<I", head[2:6])[0]
        width, height = struct.unpack("<ii", head[18:26])
        if declared and declared > size:
            return Sniff(ROUTE_SKIP, "BMP", abs(width), abs(height), "truncated BMP")
        return Sniff(ROUTE_PILLOW, "BMP", abs(width), abs(height))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _sniff_pillow(fh, "WEBP")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _sniff_pillow(fh, "TIFF")
    if _looks_like_text(head):
        return Sniff(ROUTE_SKIP, reason="not an image (looks like text)")
    return Sniff(ROUTE_SKIP, reason=f"not an image (unknown header {head[:4].hex()})")


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _sniff_pillow(fh, fmt: str) -> Sniff:
    """WebP/TIFF: Pillow reads the size lazily from the header."""
    from PIL import Image

    fh.seek(0)
    try:
        with quiet_read(str(getattr(fh, "name", ""))):
            try:
                with Image.open(fh) as img:
                    width, height = img.size
            except Exception as exc:  # Pillow raises many kinds for bad headers
                text = one_line(exc, limit=120)
                raise UnreadableImage(f"corrupt {fmt} header ({text})") from None
    except UnreadableImage as exc:  # the reason now carries Pillow's first warning too
        return Sniff(ROUTE_SKIP, fmt, reason=exc.reason)
    return Sniff(ROUTE_PILLOW, fmt, width, height)


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NATIVE_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended, progressive Huffman: libjpeg in TF


def _sniff_jpeg(fh, size: int) -> Sniff:
    """Walk the JPEG markers up to SOS: size, components, EXIF orientation, truncation."""
    fh.seek(2)
    width = height = components = 0
    sof = None
    orientation = 1
    while True:
        marker = fh.read(2)
        if len(marker) < 2:
            return Sniff(ROUTE_SKIP, "JPEG", width, height, "truncated JPEG (header)")
        if marker[0] != 0xFF:
            return Sniff(ROUTE_SKIP, "JPEG", width, height, "corrupt JPEG (bad marker)")
        code = marker[1]
        if code == 0xFF:  # fill byte
            fh.seek(-1, 1)
            continue
        if code in (0x01,) or 0xD0 <= code <= 0xD7:
            continue
        if code == 0xD9:
            return Sniff(ROUTE_SKIP, "JPEG", width, height, "corrupt JPEG (no image data)")
        raw = fh.read(2)
        if len(raw) < 2:
            return Sniff(ROUTE_SKIP, "JPEG", width, height, "truncated JPEG (header)")
        length = struct.unpack(">H", raw)[0]
        if code == 0xDA:  # start of scan: entropy-coded data follows
            sos_end = fh.tell() + length - 2
            break
        payload_len = length - 2
        if code in _SOF_MARKERS:
            seg = fh.read(min(payload_len, 6))
            if len(seg) < 6:
                return Sniff(ROUTE_SKIP, "JPEG", reason="truncated JPEG (header)")
            height, width = struct.unpack(">HH", seg[1:5])
            components = seg[5]
            sof = code
            fh.seek(payload_len - 6, 1)
        elif code == 0xE1:
            seg = fh.read(payload_len)
            if seg.startswith(b"Exif\x00\x00"):
                orientation = _exif_orientation(seg[6:])
        else:
            fh.seek(payload_len, 1)
    if sof is None or width == 0 or height == 0:
        return Sniff(ROUTE_SKIP, "JPEG", width, height, "corrupt JPEG (no frame header)")
    # Entropy-coded data cannot contain FFD9 (0xFF is always stuffed), so an EOI marker
    # in the tail means the scan data is complete.
    if b"\xff\xd9" not in _tail(fh, size, sos_end):
        return Sniff(ROUTE_SKIP, "JPEG", width, height, "truncated JPEG (no end-of-image marker)")
    if not (sof in _NATIVE_SOF and components in (1, 3, 4)):
        return Sniff(ROUTE_PILLOW, "JPEG", width, height)
    if 2 <= orientation <= 8:
        return Sniff(ROUTE_JPEG_EXIF, "JPEG", width, height, orientation=orientation)
    return Sniff(ROUTE_JPEG, "JPEG", width, height)


def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block; 1 if absent."""
    try:
        endian = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(endian + "I", tiff[4:8])
        (count,) = struct.unpack(endian + "H", tiff[ifd : ifd + 2])
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
            tag, _typ, _n = struct.unpack(endian + "HHI", entry[:8])
            if tag == 0x0112:
                return struct.unpack(endian + "H", entry[8:10])[0]
    except (KeyError, struct.error, IndexError):
        return 1
    return 1


def scale_16bit(pixels: np.ndarray) -> np.ndarray:
    """Scale 16-bit samples to uint8 by the image's actual bit range (see module doc)."""
    top = int(pixels.max()) if pixels.size else 0
    bits = max(8, top.bit_length())
    return np.round(pixels.astype(np.float32) * (255.0 / (2**bits - 1))).astype(np.uint8)


def to_rgb(img) -> np.ndarray:
    """A Pillow image (any mode) as RGB uint8 (H, W, 3); gray is replicated, alpha dropped."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if mode == "I" and arr.size and int(arr.max()) > 65535:
            arr = arr >> (int(arr.max()).bit_length() - 16)
        gray = scale_16bit(np.clip(arr, 0, None).astype(np.uint32))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        gray = np.zeros(arr.shape, np.uint8) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        gray = np.round(gray).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("L", "1"):
        gray = np.asarray(img.convert("L"))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def decode_image(
    path_or_item: str | os.PathLike, *, limit: int | None = None, media_options: object = None
) -> np.ndarray:
    """Decode one image (or media item) to RGB uint8 (H, W, 3).

    Args:
        path_or_item: a file path, or ``path#member`` for a video frame / volume slice.
        limit: pixel limit for the decompression-bomb guard (default :func:`max_pixels`).
        media_options: ``alexkit.media.MediaOptions`` for media items (windows set at
            expand time travel in the item, so None decodes them the same).

    Returns:
        The pixels; grayscale is replicated to 3 channels, EXIF orientation applied,
        16-bit samples scaled by their actual bit range.

    Raises:
        UnreadableImage: with a short reason (empty, truncated, not an image, too large...).
        MissingExtraError: a media item whose reader (PyAV, pydicom, nibabel) is not installed.
    """
    item = os.fspath(path_or_item)
    info = sniff(item, limit)
    if not info.ok:
        raise UnreadableImage(info.reason, item)
    if info.format == "MEDIA":
        return _decode_media(item, media_options)
    if info.route == ROUTE_PNG16:
        return _decode_png16(item)
    from PIL import Image, ImageOps

    # Pillow's warnings (e.g. DecompressionBombWarning, EXIF trouble) become the file's
    # reason or a counted line in a report, not stderr noise.
    with quiet_read(item):
        try:
            with Image.open(item) as img:
                img.load()  # first frame only for GIF/APNG/multi-page TIFF
                if info.format in ("JPEG", "WEBP", "TIFF"):
                    img = ImageOps.exif_transpose(img)
                return to_rgb(img)
        except Image.DecompressionBombError as exc:
            raise UnreadableImage(f"too large ({one_line(exc, limit=120)})", item) from None
        except (OSError, ValueError, SyntaxError, struct.error, IndexError) as exc:
            text = one_line(exc, limit=120)
            reason = "truncated image" if "truncated" in text.lower() else f"corrupt {info.format}"
            raise UnreadableImage(f"{reason} ({text})", item) from None


def _decode_png16(path: str) -> np.ndarray:
    """16-bit PNG: Pillow keeps only gray at 16 bits, so read the samples with zlib here."""
    from PIL import Image

    with quiet_read(path), Image.open(path) as img:
        mode = img.mode
        if mode.startswith("I"):  # 16-bit gray: Pillow gives the full samples
            img.load()
            return to_rgb(img)
    # 16-bit RGB/RGBA/LA: Pillow would keep the high byte only; TensorFlow keeps all 16 bits.
    import tensorflow as tf

    try:
        data = tf.io.decode_png(tf.io.read_file(path), channels=3, dtype=tf.uint16).numpy()
    except Exception as exc:  # tf.errors.InvalidArgumentError
        raise UnreadableImage(f"corrupt PNG ({one_line(exc, limit=120)})", path) from None
    return scale_16bit(data)


def _decode_media(item: str, options: object = None) -> np.ndarray:
    media = media_module()
    if media is None:
        raise UnreadableImage("media item but alexkit.media is not available", item)
    try:
        arr = media.decode_member(item, options)
    except MissingExtraError:
        raise  # not this file's fault: the one-line message names the pip command
    except DataError as exc:
        # The reader's own reason, whole: it may name a missing decoder's pip command.
        raise UnreadableImage(
            getattr(exc, "reason", None) or one_line(exc, limit=120), item
        ) from None
    except Exception as exc:  # media decoders (av, pydicom, nibabel) raise many kinds
        raise UnreadableImage(f"cannot decode media ({one_line(exc, limit=120)})", item) from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr.astype(np.uint8, copy=False)


def decode_bytes(data: bytes, name: str = "<image bytes>") -> np.ndarray:
    """Decode in-memory image bytes with Pillow (used for TFRecord checks); RGB uint8.

    Args:
        data: the encoded image.
        name: what to call it in captured library warnings (e.g. ``shard:filename``).
    """
    from PIL import Image

    if not data:
        raise UnreadableImage("empty image bytes")
    with quiet_read(name):
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return to_rgb(img)
        except (OSError, ValueError, SyntaxError, struct.error, IndexError) as exc:
            raise UnreadableImage(f"corrupt image bytes ({one_line(exc, limit=120)})") from None
