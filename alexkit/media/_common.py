"""Shared pieces of the media readers: errors, a thread-safe cache, windowing."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from alexkit.errors import DataError, UnreadableImage

# Default byte budget of the decoded-media cache; ALEXKIT_MEDIA_CACHE_MB overrides it.
_DEFAULT_CACHE_MB = 512


def unreadable(reason: str, path: str = "") -> DataError:
    """Return the error a broken clip/DICOM/volume raises (callers ``raise`` it).

    ``reason`` is a short phrase without the path; ``str(err)`` is "path: reason". It is
    :class:`alexkit.errors.UnreadableImage`, so the data pipeline skips and counts broken
    media exactly like broken images.
    """
    return UnreadableImage(reason, path)


def file_key(path: str) -> tuple[str, int, int]:
    """A cache key that changes when the file (or folder) changes."""
    st = os.stat(path)
    return (os.path.abspath(path), st.st_mtime_ns, st.st_size)


class ByteLRU:
    """A least-recently-used cache bounded in bytes, safe to share between threads.

    tf.data calls the decoder from several threads at once; each key is loaded by
    one thread while the others asking for it wait, so a clip or volume is never
    decoded twice concurrently.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._loading: dict[Hashable, threading.Lock] = {}
        self._bytes = 0

    def get(self, key: Hashable, loader: Callable[[], tuple[Any, int]]) -> Any:
        """Return the cached value for ``key``, calling ``loader() -> (value, nbytes)`` once."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key][0]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    return self._data[key][0]
            try:
                value, nbytes = loader()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                if key not in self._data:
                    self._data[key] = (value, nbytes)
                    self._bytes += nbytes
                self._evict()
            return value

    def peek(self, key: Hashable) -> Any | None:
        """The cached value for ``key`` (marked recently used), or None."""
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key][0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        """Store ``value`` (replacing any previous one) and evict down to the budget."""
        with self._lock:
            if key in self._data:
                self._bytes -= self._data.pop(key)[1]
            self._data[key] = (value, nbytes)
            self._bytes += nbytes
            self._evict()

    def _evict(self) -> None:
        # Keep at least the newest entry even when it alone exceeds the budget.
        while self._bytes > self.max_bytes and len(self._data) > 1:
            _, (_, old) = self._data.popitem(last=False)
            self._bytes -= old

    def clear(self) -> None:
        """Forget everything (tests; after files change in place)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0


def _cache_bytes() -> int:
    try:
        mb = float(os.environ.get("ALEXKIT_MEDIA_CACHE_MB", _DEFAULT_CACHE_MB))
    except ValueError:
        mb = _DEFAULT_CACHE_MB
    return int(max(mb, 1) * 2**20)


CACHE = ByteLRU(_cache_bytes())


def window_to_uint8(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map values to 0..255 with the DICOM linear VOI window (PS3.3 C.11.2.1.2.1).

    ``y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255``, clipped to [0, 255] and rounded;
    a width of 1 or less is a threshold at ``c - 0.5``.
    """
    x = np.asarray(values, dtype=np.float64)
    if width <= 1:
        y = np.where(x > center - 0.5, 255.0, 0.0)
    else:
        y = ((x - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


# Percentiles of the automatic window when the file names none: robust to a few
# extreme voxels (metal, padding) where min/max would wash the image out.
AUTO_PERCENTILES = (0.5, 99.5)


def auto_range_to_uint8(values: np.ndarray, sample: np.ndarray | None = None) -> np.ndarray:
    """Map values linearly so the 0.5th..99.5th percentiles span 0..255 (clipped).

    Args:
        values: the array to map.
        sample: where to take the percentiles from (default ``values``); a
            subsample keeps this cheap on large volumes.
    """
    x = np.asarray(values, dtype=np.float64)
    ref = x if sample is None else np.asarray(sample, dtype=np.float64)
    lo, hi = np.percentile(ref, AUTO_PERCENTILES)
    if hi <= lo:
        # A constant image: every value sits at the low end.
        return np.zeros(x.shape, dtype=np.uint8)
    y = (x - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 → (H, W, 3) uint8, contiguous."""
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def window_member(options: Any) -> str:
    """``"wc=40,ww=400"`` when ``options`` fix a window, else ""."""
    if options is None or options.window_center is None or options.window_width is None:
        return ""
    return f"wc={float(options.window_center):.10g},ww={float(options.window_width):.10g}"


def join_member(*parts: str) -> str:
    """Join non-empty member parts with commas."""
    return ",".join(p for p in parts if p)
