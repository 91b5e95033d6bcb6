"""The output folder of ``alexkit explain``: its preparation, overlay names, ``maps.npz``."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from alexkit.errors import CheckpointError


def prepare_out(out: str | os.PathLike, force: bool) -> Path:
    """Create ``out``; refuse one that holds files unless ``force`` (then clear our files).

    Raises:
        CheckpointError: ``out`` is a file, or a non-empty folder without ``force``.
    """
    import shutil

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} is a file: --out must be a folder.")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise CheckpointError(
                f"{out} already holds files: choose another --out or add --force to replace it."
            )
        for name in ("overlays",):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("explain.csv", "maps.npz", "sanity.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def relative_key(item: str, root: str | os.PathLike | None) -> str:
    """The item's path relative to ``root`` (``/``-separated), its media member kept."""
    from alexkit.media import parse_item

    path, fields = parse_item(item)
    member = item[len(path) + 1 :] if fields else ""
    rel = path
    if root:
        try:
            rel = os.path.relpath(path, root)
        except ValueError:  # another drive (Windows)
            rel = path
        if rel.startswith(".."):
            rel = path
    rel = rel.replace(os.sep, "/").lstrip("/")
    return f"{rel}#{member}" if member else rel


def overlay_name(key: str, used: set[str]) -> str:
    """``overlays/`` relative PNG name for an item key; frame/slice index in the name."""
    from alexkit.media import parse_item

    path, fields = parse_item(key)
    stem, ext = os.path.splitext(path)
    if path.lower().endswith(".nii.gz"):
        stem, ext = path[: -len(".nii.gz")], ".nii.gz"
    suffix = ""
    if "frame" in fields:
        suffix = f"_frame{int(fields['frame']):04d}"
    elif "slice" in fields:
        axis = f"_axis{int(fields['axis'])}" if "axis" in fields else ""
        suffix = f"_slice{int(fields['slice']):04d}{axis}"
    name = f"{stem}{suffix}.png"
    if name in used:  # a.jpg and a.png side by side
        name = f"{stem}{suffix}{ext.replace('.', '_')}.png"
    n = 2
    base = name
    while name in used:
        name = base.replace(".png", f"_{n}.png")
        n += 1
    used.add(name)
    return name


class _NpzWriter:
    """``maps.npz`` written one array at a time (bounded memory); ``np.load`` reads it."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(path.name + ".part")
        self.zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)

    def add(self, key: str, array: np.ndarray) -> None:
        with self.zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)

    def close(self, ok: bool) -> None:
        self.zip.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
