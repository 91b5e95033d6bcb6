"""The local weights store: list, get, register, remove and resolve entries.

The store lives under ``$ALEXKIT_HOME/weights`` (default ``~/.cache/alexkit/weights``).
Each entry is a folder holding a complete Keras model and a small metadata file::

    weights/torchvision-imagenet/model.keras   # takes raw RGB pixels in [0, 255]
    weights/torchvision-imagenet/meta.json     # variant, source, sha256, preprocessing, ...

Entries are written to a hidden temporary folder and renamed into place, so a failed
import or download never leaves a half-written entry behind.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexkit import __version__
from alexkit.errors import WeightsError, one_line
from alexkit.paths import alexkit_home
from alexkit.variants import VARIANTS

logger = logging.getLogger(__name__)

#: The store entry ``resolve_weights("imagenet", variant)`` prefers for each variant.
PREFERRED_IMAGENET = {"torchvision": "torchvision-imagenet", "original": "bvlc-imagenet"}

MODEL_FILE = "model.keras"
META_FILE = "meta.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

HOW_TO_GET_WEIGHTS = (
    "get weights with `alexkit weights download torchvision`, "
    "`alexkit weights import FILE --format torchvision|bvlc-npy`, "
    "or train your own with `alexkit pretrain ...`"
)


@dataclass(frozen=True)
class WeightsEntry:
    """One entry of the weights store.

    Attributes:
        name: the entry's name (its folder name).
        path: the entry's folder.
        meta: the parsed ``meta.json`` (empty when it could not be read).
        problem: why the entry is unusable (unreadable meta, missing model), else None.
    """

    name: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def model_path(self) -> Path:
        """The entry's ``model.keras``."""
        return self.path / MODEL_FILE

    @property
    def variant(self) -> str | None:
        """The AlexNet variant the model was built as."""
        return self.meta.get("variant")

    @property
    def kind(self) -> str | None:
        """What the weights were trained on (``imagenet``, ``pretrain``, ...)."""
        return self.meta.get("kind")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: name, paths, problem and every metadata field."""
        return {
            "name": self.name,
            "path": str(self.path),
            "model": str(self.model_path),
            "problem": self.problem,
            **self.meta,
        }


def weights_dir() -> Path:
    """The store's folder, ``$ALEXKIT_HOME/weights`` (it may not exist yet)."""
    return alexkit_home() / "weights"


def check_name(name: str) -> str:
    """``name`` if it is a valid entry name (a safe folder name).

    Raises:
        WeightsError: it is not.
    """
    if not _NAME_RE.match(name):
        raise WeightsError(
            f"invalid weights name {name!r}: use letters, digits, '.', '_' or '-' "
            "(up to 100 characters, not starting with '.' or '-')"
        )
    return name


def check_free(name: str, overwrite: bool) -> str:
    """``name`` if it is valid and no entry has it yet (or ``overwrite`` allows replacing it).

    Raises:
        WeightsError: a bad name, or the entry exists and ``overwrite`` is False.
    """
    check_name(name)
    if (weights_dir() / name).exists() and not overwrite:
        raise WeightsError(
            f"weights {name!r} already exist in {weights_dir()}; pass --force to replace them "
            "or --name to choose another name"
        )
    return name


def _read_entry(folder: Path) -> WeightsEntry:
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return WeightsEntry(folder.name, folder, {}, f"unreadable {meta_path}: {exc}")
    if not (folder / MODEL_FILE).is_file():
        return WeightsEntry(folder.name, folder, meta, f"missing {folder / MODEL_FILE}")
    return WeightsEntry(folder.name, folder, meta, None)


def list_weights() -> list[WeightsEntry]:
    """Every entry of the store, sorted by name (unusable entries carry ``problem``)."""
    root = weights_dir()
    if not root.is_dir():
        return []
    # Hidden folders are in-flight or abandoned temporary writes.
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [_read_entry(p) for p in folders]


def get_weights(name: str) -> WeightsEntry:
    """The store entry called ``name``.

    Raises:
        WeightsError: no such entry, or the entry is unusable.
    """
    folder = weights_dir() / check_name(name)
    if not folder.is_dir():
        raise WeightsError(f"no weights named {name!r} in {weights_dir()}; {HOW_TO_GET_WEIGHTS}")
    entry = _read_entry(folder)
    if entry.problem:
        raise WeightsError(
            f"weights {name!r} are unusable ({entry.problem}); remove them with "
            f"`alexkit weights remove {name}` and import again"
        )
    return entry


def _make_hidden_dir(root: Path, purpose: str, name: str) -> Path:
    """A new hidden folder in ``root`` (permissions from the umask, unlike mkdtemp's 0700)."""
    while True:
        path = root / f".{purpose}-{name}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def remove_weights(name: str) -> Path:
    """Delete the store entry called ``name`` and return the removed folder.

    Raises:
        WeightsError: no such entry.
    """
    folder = weights_dir() / check_name(name)
    if not folder.is_dir():
        raise WeightsError(f"no weights named {name!r} in {weights_dir()}")
    # Rename first so a reader never sees a half-deleted entry.
    trash = _make_hidden_dir(weights_dir(), "rm", name)
    os.replace(folder, trash / name)
    shutil.rmtree(trash, ignore_errors=True)
    return folder


def preprocessing_of(variant: str) -> dict[str, Any]:
    """What an entry's model expects as input, for ``meta.json`` (from ``alexkit.variants``)."""
    v = VARIANTS[variant]
    return {
        "input": "RGB pixels, float in [0, 255], NHWC; scaling happens inside the model",
        "image_size": v["image_size"],
        "resize": v["resize"],
        "crop": "center",
        "mean": [float(m) for m in v["mean"]],
        "std": [float(s) for s in v["std"]] if v.get("std") is not None else None,
    }


def register_weights(
    model: Any,
    name: str,
    *,
    variant: str,
    source: str,
    sha256: str | None = None,
    kind: str = "imagenet",
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` into the store as entry ``name``, atomically.

    Args:
        model: a Keras AlexNet taking raw RGB pixels (as built by ``build_alexnet``).
        name: the entry's name.
        variant: a key of ``alexkit.variants.VARIANTS`` (``"original"``, ``"torchvision"``,
            ``"tiny"``).
        source: where the weights came from (a file, a URL, a run directory).
        sha256: the source file's sha256, when there is one.
        kind: what the weights were trained on (``"imagenet"`` makes them the answer
            to ``--weights imagenet``).
        overwrite: replace an existing entry of that name.
        extra: more metadata fields (e.g. the import format, conversion notes).

    Returns:
        The entry's ``model.keras``.

    Raises:
        WeightsError: bad name, or the entry exists and ``overwrite`` is False.
    """
    check_free(name, overwrite)
    root = weights_dir()
    final = root / name
    meta = {
        "name": name,
        "variant": variant,
        "kind": kind,
        "source": source,
        "sha256": sha256,
        "preprocessing": preprocessing_of(variant),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "alexkit_version": __version__,
        **(extra or {}),
    }
    root.mkdir(parents=True, exist_ok=True)
    tmp = _make_hidden_dir(root, "tmp", name)
    try:
        model.save(tmp / MODEL_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            # Move the old entry aside first: a folder cannot be renamed onto a non-empty one.
            old = _make_hidden_dir(root, "old", name)
            os.replace(final, old / name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("saved weights %r to %s", name, final)
    return final / MODEL_FILE


def resolve_weights(spec: str, variant: str) -> Path:
    """Turn a ``--weights`` value into a model file.

    Args:
        spec: ``"imagenet"`` (an ImageNet entry of the store for ``variant``), the name of a
            store entry, or the path of a ``.keras`` / ``.weights.h5`` file.
        variant: the variant the caller builds (a key of ``alexkit.variants.VARIANTS``).

    Returns:
        The path of a ``.keras`` or ``.weights.h5`` file.

    Raises:
        WeightsError: nothing matches; the message lists the three ways to get weights.
    """
    if spec == "imagenet":
        candidates = [
            e
            for e in list_weights()
            if not e.problem and e.kind == "imagenet" and e.variant == variant
        ]
        if not candidates and variant in VARIANTS and not VARIANTS[variant]["import_formats"]:
            # Only `alexkit pretrain --variant tiny` makes such an entry: nothing to download.
            raise WeightsError(
                f"no ImageNet weights for variant {variant!r} in {weights_dir()}: it has no "
                f"published weights; train some with `alexkit pretrain --variant {variant}`, "
                "or use --weights none, a store entry or a .keras file of that variant"
            )
        if not candidates:
            others = [
                e for e in list_weights() if not e.problem and e.kind == "imagenet" and e.variant
            ]
            hint = (
                f"(there are ImageNet weights {others[0].name!r} for variant "
                f"{others[0].variant!r}: use that variant) "
                if others
                else ""
            )
            raise WeightsError(
                f"no ImageNet weights for variant {variant!r} in {weights_dir()} {hint}- "
                + HOW_TO_GET_WEIGHTS
            )
        preferred = [e for e in candidates if e.name == PREFERRED_IMAGENET.get(variant)]
        if preferred:
            return preferred[0].model_path
        # Otherwise the newest entry wins (ISO dates sort as strings).
        newest = max(candidates, key=lambda e: str(e.meta.get("created", "")))
        return newest.model_path

    path = Path(spec).expanduser()
    if path.is_file():
        if path.name.endswith((".keras", ".weights.h5")):
            return path
        hint = {
            ".pth": "--format torchvision",
            ".pt": "--format torchvision",
            ".npy": "--format bvlc-npy",
        }.get(path.suffix.lower())
        if hint:
            raise WeightsError(
                f"{path} must be imported first: run `alexkit weights import {path} {hint}` "
                "and pass the entry's name (or 'imagenet')"
            )
        raise WeightsError(
            f"{path} is not a .keras or .weights.h5 file; pass 'imagenet', a name from "
            f"`alexkit weights list`, or a .keras file; {HOW_TO_GET_WEIGHTS}"
        )

    if _NAME_RE.match(spec) and (weights_dir() / spec).is_dir():
        entry = get_weights(spec)
        if entry.variant != variant:
            raise WeightsError(
                f"weights {spec!r} are for variant {entry.variant!r}, not {variant!r}; "
                f"pass --variant {entry.variant} or choose other weights"
            )
        return entry.model_path

    raise WeightsError(
        f"--weights {spec!r} is neither 'imagenet', a name in `alexkit weights list`, nor an "
        f"existing .keras/.weights.h5 file; {HOW_TO_GET_WEIGHTS}"
    )


def load_weights_model(spec: str, variant: str) -> Any:
    """Load the model ``resolve_weights(spec, variant)`` names (Keras safe mode).

    A ``.weights.h5`` file is loaded into a fresh 1000-class ``build_alexnet(variant)``.

    Returns:
        A ``keras.Model`` taking raw RGB pixels in [0, 255].

    Raises:
        WeightsError: nothing matches, or the file cannot be loaded as that variant.
    """
    path = resolve_weights(spec, variant)
    import keras

    import alexkit.layers  # noqa: F401  (registers the custom layers for deserialisation)
    from alexkit.model import build_alexnet

    try:
        if path.name.endswith(".weights.h5"):
            model = build_alexnet(variant=variant)
            model.load_weights(path)
        else:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many kinds; all mean "not loadable".
        raise WeightsError(
            f"{path}: cannot load as an alexkit model: {one_line(exc, typed=True)}"
        ) from exc
    size = VARIANTS[variant]["image_size"]
    shape = tuple(model.input_shape[1:3])
    if shape != (size, size) and shape != (None, None):
        raise WeightsError(
            f"{path}: the model takes {shape[0]}x{shape[1]} images, "
            f"but variant {variant!r} takes {size}x{size}"
        )
    return model
