"""What the torchvision and Caffe importers share: file sniffing, hashing, fc6's reorder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from alexkit.variants import POOL5_SHAPE


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sniff(path: Path) -> str:
    """A guess at what a file is, from its first bytes, for error messages."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "zip"  # torch.save's format since PyTorch 1.6 (and .keras files)
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def fc6_chw_to_hwc(kernel_in_out: np.ndarray) -> np.ndarray:
    """Reorder fc6's input rows from a (C, H, W) flatten of pool5 to Keras' (H, W, C)."""
    h, w, c = POOL5_SHAPE
    out_dim = kernel_in_out.shape[1]
    return kernel_in_out.reshape(c, h, w, out_dim).transpose(1, 2, 0, 3).reshape(h * w * c, out_dim)


def shape_matches(actual: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """Whether ``actual`` fits ``expected`` (None in ``expected`` matches any size)."""
    if len(actual) != len(expected):
        return False
    return all(e is None or a == e for a, e in zip(actual, expected, strict=True))


def fmt_shape(shape: tuple[int | None, ...]) -> str:
    """A shape for messages, ``N`` standing for a free size."""
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
