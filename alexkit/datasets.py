"""Built-in datasets: scikit-learn's handwritten digits, materialised as an image folder.

The demo and the tests need real images that are always available without a download.
scikit-learn bundles 1,797 handwritten digits (8x8 pixels, 17 grey levels); this
module writes them once as grayscale PNGs in the folder-per-class layout every alexkit
loader reads::

    <root>/0/0000.png  <root>/0/0010.png ...  <root>/9/1796.png

File names are the sample's index in ``sklearn.datasets.load_digits``. Pixels are
scaled from 0..16 to 0..255 and upscaled with nearest-neighbour (32x32 by default) so
the PNGs look like digits to a person; the model resizes them anyway.

Example::

    from alexkit.datasets import materialize_digits
    root = materialize_digits(digits=range(5))   # ~/.cache/alexkit/datasets/digits-0-4
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alexkit.errors import DataError, UsageError
from alexkit.paths import alexkit_home

__all__ = [
    "BUILTIN_DATASETS",
    "DIGITS_MANIFEST",
    "digits_root",
    "materialize_digits",
    "materialize_builtin",
    "digits_info",
]

BUILTIN_DATASETS = ("digits",)
# Hidden, so folder-per-class detection sees only the class folders.
DIGITS_MANIFEST = ".alexkit-dataset.json"
DIGITS_SIZE = 32
_FORMAT_VERSION = 1
_SOURCE = "sklearn.datasets.load_digits"
_LICENCE = (
    "CC BY 4.0 (UCI Optical Recognition of Handwritten Digits); "
    "the copy bundled with scikit-learn is distributed under BSD-3-Clause"
)
_CITATION = (
    "E. Alpaydin and C. Kaynak, Optical Recognition of Handwritten Digits, "
    "UCI Machine Learning Repository, 1998, doi:10.24432/C50P49"
)


def _check_digits(digits: Iterable[int]) -> tuple[int, ...]:
    try:
        chosen = tuple(sorted({int(d) for d in digits}))
    except (TypeError, ValueError):
        raise UsageError(f"digits must be whole numbers 0..9, got {digits!r}") from None
    if not chosen or any(not 0 <= d <= 9 for d in chosen):
        raise UsageError(f"digits must be a non-empty selection of 0..9, got {list(chosen)}")
    return chosen


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 1024:
        raise UsageError(f"size must be a whole number of pixels in 8..1024, got {size!r}")
    return size


def digits_root(digits: Iterable[int] = range(10), *, size: int = DIGITS_SIZE) -> Path:
    """The default cache folder for a digit subset.

    ``datasets/digits`` for all ten, ``digits-0-4`` for a run of digits,
    ``digits-1_3_7`` for any other subset; a ``-64px`` suffix for a non-default size.
    """
    chosen = _check_digits(digits)
    _check_size(size)
    if chosen == tuple(range(10)):
        key = "digits"
    elif chosen == tuple(range(chosen[0], chosen[-1] + 1)) and len(chosen) > 1:
        key = f"digits-{chosen[0]}-{chosen[-1]}"
    else:
        key = "digits-" + "_".join(str(d) for d in chosen)
    if size != DIGITS_SIZE:
        key += f"-{size}px"
    return alexkit_home() / "datasets" / key


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / DIGITS_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, classes: list[str], size: int) -> bool:
    """True when ``root`` holds exactly what the manifest says (cheap: counts files)."""
    manifest = _read_manifest(root)
    if not manifest or manifest.get("format_version") != _FORMAT_VERSION:
        return False
    if manifest.get("classes") != classes or manifest.get("size") != size:
        return False
    per_class = manifest.get("per_class", {})
    for name in classes:
        folder = root / name
        if not folder.is_dir() or len(list(folder.glob("*.png"))) != per_class.get(name):
            return False
    return True


def _write_digits(folder: Path, chosen: tuple[int, ...], size: int) -> dict[str, Any]:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)  # (1797, 8, 8), float 0..16
    targets = np.asarray(bunch.target)
    per_class: dict[str, int] = {}
    for digit in chosen:
        (folder / str(digit)).mkdir(parents=True)
        per_class[str(digit)] = 0
    for index, (image, target) in enumerate(zip(images, targets, strict=True)):
        if int(target) not in chosen:
            continue
        pixels = np.clip(np.rint(image * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        picture = Image.fromarray(pixels)  # 2-D uint8 -> mode "L"
        picture = picture.resize((size, size), Image.Resampling.NEAREST)
        picture.save(folder / str(int(target)) / f"{index:04d}.png", format="PNG")
        per_class[str(int(target))] += 1
    manifest = {
        "dataset": "digits",
        "source": _SOURCE,
        "format_version": _FORMAT_VERSION,
        "classes": [str(d) for d in chosen],
        "per_class": per_class,
        "count": sum(per_class.values()),
        "size": size,
        "licence": _LICENCE,
    }
    # Written last: a folder with a manifest is a complete folder.
    (folder / DIGITS_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def materialize_digits(
    root: str | os.PathLike | None = None,
    *,
    digits: Iterable[int] = range(10),
    force: bool = False,
    size: int = DIGITS_SIZE,
) -> Path:
    """Write scikit-learn's digits as ``<root>/<digit>/<index>.png``, once.

    The folder is built in a temporary sibling and renamed into place, so a crash never
    leaves a half-written dataset; a complete folder (checked against its manifest) is
    reused unless ``force`` is set.

    Args:
        root: destination; default :func:`digits_root` (under ``alexkit_home()``).
        digits: which digits (classes) to include.
        force: rebuild even if a complete copy exists.
        size: side of the written PNGs in pixels (nearest-neighbour upscaling of 8x8).

    Returns:
        The dataset folder.

    Raises:
        UsageError: bad ``digits`` or ``size``.
        DataError: ``root`` exists, is not empty and was not written by alexkit (it is
            never deleted), or it cannot be written.
    """
    chosen = _check_digits(digits)
    size = _check_size(size)
    target = Path(root).expanduser() if root is not None else digits_root(chosen, size=size)
    classes = [str(d) for d in chosen]
    if not force and _is_complete(target, classes, size):
        return target
    if target.exists():
        ours = target.is_dir() and (_read_manifest(target) is not None or not any(target.iterdir()))
        if not ours:
            raise DataError(
                f"'{target}' exists and is not an alexkit digits folder; "
                f"remove it or pass another root"
            )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        staging.chmod(0o755)  # mkdtemp makes it private; the dataset is ordinary files
    except OSError as exc:
        raise DataError(f"cannot write the digits dataset under '{target.parent}': {exc}") from None
    try:
        _write_digits(staging, chosen, size)
        if target.exists():
            # Move the old copy aside first so the swap is two renames, not a long delete.
            trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            # Another process finished first; its complete copy is as good as ours.
            if not _is_complete(target, classes, size):
                raise
    except OSError as exc:
        raise DataError(f"cannot write the digits dataset to '{target}': {exc}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def materialize_builtin(name: str, **kwargs: Any) -> Path:
    """Materialise a built-in dataset by name (``"digits"``) and return its folder.

    Raises:
        UsageError: an unknown name (the message lists the built-in datasets).
    """
    if name == "digits":
        return materialize_digits(**kwargs)
    raise UsageError(f"unknown built-in dataset '{name}'; available: {', '.join(BUILTIN_DATASETS)}")


def digits_info(
    root: str | os.PathLike | None = None,
    *,
    digits: Iterable[int] = range(10),
    size: int = DIGITS_SIZE,
) -> dict[str, Any]:
    """Describe the digits dataset and whether it is materialised (writes nothing).

    Returns:
        A JSON-able dict: name, source, licence, citation, classes, original and
        written image size, root, materialized, and count/per_class once written.
    """
    chosen = _check_digits(digits)
    target = Path(root).expanduser() if root is not None else digits_root(chosen, size=size)
    classes = [str(d) for d in chosen]
    info: dict[str, Any] = {
        "name": "digits",
        "source": _SOURCE,
        "url": "https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        "licence": _LICENCE,
        "citation": _CITATION,
        "classes": classes,
        "original_size": [8, 8],
        "size": [size, size],
        "root": str(target),
        "materialized": _is_complete(target, classes, size),
    }
    manifest = _read_manifest(target) if info["materialized"] else None
    if manifest:
        info["count"] = manifest["count"]
        info["per_class"] = manifest["per_class"]
    return info
