"""The local weights store, and importers for published AlexNet weights.

The store lives under ``$ALEXKIT_HOME/weights`` (default ``~/.cache/alexkit/weights``).
Each entry is a folder holding a complete Keras model and a small metadata file::

    weights/torchvision-imagenet/model.keras   # takes raw RGB pixels in [0, 255]
    weights/torchvision-imagenet/meta.json     # variant, source, sha256, preprocessing, ...

Entries are written to a hidden temporary folder and renamed into place, so a failed
import or download never leaves a half-written entry behind.

Two published formats are imported:

* ``torchvision``: the ``state_dict`` of torchvision's AlexNet (``alexnet-owt-7be5be79.pth``),
  read with ``torch.load(weights_only=True)``, which executes no code. It becomes variant
  ``torchvision``. PyTorch flattens pool5 channel-major (C, H, W) where Keras flattens
  (H, W, C), so the rows of fc6 are reordered.
* ``bvlc-npy``: the widely shared ``bvlc_alexnet.npy``, a pickled dict
  ``{"conv1": [W, b], ..., "fc8": [W, b]}`` converted from Caffe's ``bvlc_alexnet``. It is
  read by a restricted unpickler that admits only numpy arrays and dtypes, so a malicious
  file is refused instead of run. It becomes variant ``original`` with Caffe's LRN constants
  (``lrn="caffe"``). Caffe fed the network BGR images and flattened pool5 as (C, H, W): the
  input-channel axis of the conv1 kernel is reversed so the imported model takes RGB like
  every alexkit model, and fc6 is reordered as for torchvision. Caffe subtracted its mean
  image (channel means ~ B 104, G 117, R 123); the imported model subtracts the per-channel
  ImageNet mean of variant ``original`` instead (within 0.5 of Caffe's per channel).

Example::

    from alexkit.weights import import_weights, load_weights_model
    entry = import_weights("alexnet-owt-7be5be79.pth", "torchvision")
    model = load_weights_model("imagenet", variant="torchvision")
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import importlib
import json
import logging
import os
import pickle
import re
import secrets
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import MissingExtraError, WeightsError, one_line
from alexkit.paths import alexkit_home

logger = logging.getLogger(__name__)

FORMATS = ("torchvision", "bvlc-npy")
#: The variant each import format becomes.
FORMAT_VARIANTS = {"torchvision": "torchvision", "bvlc-npy": "original"}
#: Store names given to imports when ``--name`` is not passed.
DEFAULT_NAMES = {"torchvision": "torchvision-imagenet", "bvlc-npy": "bvlc-imagenet"}
#: The store entry ``resolve_weights("imagenet", variant)`` prefers for each variant.
PREFERRED_IMAGENET = {"torchvision": "torchvision-imagenet", "original": "bvlc-imagenet"}

TORCHVISION_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
TORCHVISION_FILENAME = "alexnet-owt-7be5be79.pth"
TORCHVISION_SHA256_PREFIX = "7be5be79"
#: Environment variable overriding the download URL (a mirror; the sha256 is still checked).
URL_ENV = "ALEXKIT_WEIGHTS_URL"

MODEL_FILE = "model.keras"
META_FILE = "meta.json"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

HOW_TO_GET_WEIGHTS = (
    "get weights with `alexkit weights download torchvision`, "
    "`alexkit weights import FILE --format torchvision|bvlc-npy`, "
    "or train your own with `alexkit pretrain ...`"
)

# Layer name -> (torchvision state_dict prefix, expected PyTorch weight shape).
# The class count of the last layer is read from the file, so fine-tuned heads import too.
_TORCHVISION_LAYERS = {
    "conv1": ("features.0", (64, 3, 11, 11)),
    "conv2": ("features.3", (192, 64, 5, 5)),
    "conv3": ("features.6", (384, 192, 3, 3)),
    "conv4": ("features.8", (256, 384, 3, 3)),
    "conv5": ("features.10", (256, 256, 3, 3)),
    "fc6": ("classifier.1", (4096, 9216)),
    "fc7": ("classifier.4", (4096, 4096)),
    "predictions": ("classifier.6", (None, 4096)),
}

# bvlc key -> (layer name, expected kernel shape). conv2/4/5 are grouped: (k, k, C_in/2, C_out).
_BVLC_LAYERS = {
    "conv1": ("conv1", (11, 11, 3, 96)),
    "conv2": ("conv2", (5, 5, 48, 256)),
    "conv3": ("conv3", (3, 3, 256, 384)),
    "conv4": ("conv4", (3, 3, 192, 384)),
    "conv5": ("conv5", (3, 3, 192, 256)),
    "fc6": ("fc6", (9216, 4096)),
    "fc7": ("fc7", (4096, 4096)),
    "fc8": ("predictions", (4096, None)),
}

# pool5 is 6 x 6 x 256 in both variants.
_POOL5_HWC = (6, 6, 256)


# --------------------------------------------------------------------------- store


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


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise WeightsError(
            f"invalid weights name {name!r}: use letters, digits, '.', '_' or '-' "
            "(up to 100 characters, not starting with '.' or '-')"
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
    folder = weights_dir() / _check_name(name)
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
    folder = weights_dir() / _check_name(name)
    if not folder.is_dir():
        raise WeightsError(f"no weights named {name!r} in {weights_dir()}")
    # Rename first so a reader never sees a half-deleted entry.
    trash = _make_hidden_dir(weights_dir(), "rm", name)
    os.replace(folder, trash / name)
    shutil.rmtree(trash, ignore_errors=True)
    return folder


def preprocessing_of(variant: str) -> dict[str, Any]:
    """What an entry's model expects as input, for ``meta.json`` (from ``model.VARIANTS``)."""
    from alexkit.model import VARIANTS

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
        variant: ``"original"`` or ``"torchvision"``.
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
    _check_name(name)
    root = weights_dir()
    final = root / name
    if final.exists() and not overwrite:
        raise WeightsError(
            f"weights {name!r} already exist in {root}; pass --force to replace them "
            "or --name to choose another name"
        )
    from alexkit import __version__

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
        variant: the variant the caller builds (``"original"`` or ``"torchvision"``).

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
    from alexkit.model import VARIANTS, build_alexnet

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


# --------------------------------------------------------------------------- reading files


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sniff(path: Path) -> str:
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


class _Refused(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` restricted to the one use pickles make of it."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only callables a weights pickle may name: numpy's array reconstructors."""
    try:
        core = importlib.import_module("numpy._core.multiarray")  # numpy >= 2
        numeric = importlib.import_module("numpy._core.numeric")
    except ImportError:  # pragma: no cover - numpy 1.x
        core = importlib.import_module("numpy.core.multiarray")
        numeric = importlib.import_module("numpy.core.numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes as _codecs.encode(text, "latin1") under protocol 2.
        ("_codecs", "encode"): _latin1_encode,
    }
    # Pickles name numpy.core (numpy 1, Python 2) or numpy._core (numpy 2); both mean the same.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = core._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = core.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and numpy arrays, nothing else.

    Every other global (``os.system``, ``builtins.eval``, any class) is refused before it is
    looked up, so loading cannot run code.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _ArraysOnlyUnpickler._allowed is None:
            _ArraysOnlyUnpickler._allowed = _allowed_globals()
        try:
            return _ArraysOnlyUnpickler._allowed[(module, name)]
        except KeyError:
            raise _Refused(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def load_pickled_arrays(path: str | os.PathLike) -> Any:
    """Read a pickled ``.npy`` (or a bare pickle) holding only containers and numpy arrays.

    This is the safe replacement for ``np.load(path, allow_pickle=True).item()``.

    Returns:
        The unpickled object (``.item()`` already applied to a 0-d object array).

    Raises:
        WeightsError: the file references anything but numpy arrays (possibly malicious),
            or is truncated or not a pickle.
    """
    path = Path(path)
    kind = _sniff(path)
    try:
        with open(path, "rb") as f:
            if kind == "npy":
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise WeightsError(f"{path}: unsupported .npy version {version}")
                if not dtype.hasobject:
                    raise WeightsError(
                        f"{path}: holds a plain {dtype} array of shape {shape}, not a pickled "
                        "dict {'conv1': [W, b], ..., 'fc8': [W, b]}"
                    )
            elif kind != "pickle":
                raise WeightsError(f"{path}: not a .npy or pickle file ({kind} data)")
            # latin1 is how numpy reads Python 2 pickles (bvlc_alexnet.npy is one).
            obj = _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except _Refused as exc:
        if exc.module.split(".")[0] == "torch":
            raise WeightsError(
                f"{path}: is a PyTorch file (it asks for {exc.module}.{exc.name}), not a numpy "
                "pickle; for a torchvision state_dict use --format torchvision"
            ) from None
        raise WeightsError(
            f"{path}: refused to unpickle: the file asks for {exc.module}.{exc.name}, which a "
            "weights file never needs (it may be malicious); nothing was executed"
        ) from None
    except WeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, OSError) as exc:
        raise WeightsError(
            f"{path}: truncated or not a weights pickle ({one_line(exc, typed=True)})"
        ) from exc
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()
    return obj


def load_bvlc_npy(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Read ``bvlc_alexnet.npy`` safely into ``{"conv1": [W, b], ..., "fc8": [W, b]}``.

    Raises:
        WeightsError: unsafe, truncated or not a dict of ``[W, b]`` pairs.
    """
    path = Path(path)
    if _sniff(path) == "zip":
        raise WeightsError(
            f"{path}: is a zip file (a PyTorch .pth or .keras), not bvlc_alexnet.npy; "
            "for a torchvision state_dict use --format torchvision"
        )
    obj = load_pickled_arrays(path)
    if not isinstance(obj, dict):
        # torch.save's legacy format starts with a pickled int (its magic number).
        hint = "; for a PyTorch .pth use --format torchvision" if isinstance(obj, int) else ""
        raise WeightsError(
            f"{path}: holds a {type(obj).__name__}, not the dict "
            "{'conv1': [W, b], ..., 'fc8': [W, b]} of bvlc_alexnet.npy" + hint
        )
    out: dict[str, list[np.ndarray]] = {}
    for key, value in obj.items():
        key = key.decode("latin1") if isinstance(key, bytes) else str(key)
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            value = list(value)
        if not (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, np.ndarray) and v.dtype.kind == "f" for v in value)
        ):
            raise WeightsError(f"{path}: entry {key!r} is not a pair [W, b] of float arrays")
        out[key] = [np.asarray(v, dtype=np.float32) for v in value]
    return out


def load_torchvision_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch ``state_dict`` with ``torch.load(weights_only=True)`` (no code runs).

    Accepts a bare state_dict or a checkpoint dict holding one under ``state_dict`` /
    ``model``; a ``module.`` prefix (DataParallel) is dropped.

    Raises:
        MissingExtraError: torch is not installed.
        WeightsError: the file is unsafe, truncated or not a state_dict.
    """
    path = Path(path)
    kind = _sniff(path)
    if kind == "npy":
        raise WeightsError(
            f"{path}: is a .npy file, not a PyTorch state_dict; "
            "for bvlc_alexnet.npy use --format bvlc-npy"
        )
    try:
        import torch
    except ImportError:
        raise MissingExtraError("importing torchvision .pth weights", "torch", "torch") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: refused by torch.load(weights_only=True): it holds more than tensors "
            f"(it may be malicious; nothing was executed): {one_line(exc, typed=True)}"
        ) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors...
        raise WeightsError(
            f"{path}: truncated or not a PyTorch state_dict ({one_line(exc, typed=True)})"
        ) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a PyTorch state_dict")
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        key = key[len("module.") :] if key.startswith("module.") else key
        out[key] = value.detach().to(torch.float32).numpy()
    return out


# --------------------------------------------------------------------------- conversion


def _fc6_chw_to_hwc(kernel_in_out: np.ndarray) -> np.ndarray:
    """Reorder fc6's input rows from a (C, H, W) flatten of pool5 to Keras' (H, W, C)."""
    h, w, c = _POOL5_HWC
    out_dim = kernel_in_out.shape[1]
    return kernel_in_out.reshape(c, h, w, out_dim).transpose(1, 2, 0, 3).reshape(h * w * c, out_dim)


def _shape_matches(actual: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    if len(actual) != len(expected):
        return False
    return all(e is None or a == e for a, e in zip(actual, expected, strict=True))


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"


def convert_torchvision(
    state: dict[str, np.ndarray], source: str = "<state_dict>"
) -> dict[str, list[np.ndarray]]:
    """Turn a torchvision AlexNet state_dict into Keras ``{layer: [kernel, bias]}``.

    Conv kernels go from (out, in, kh, kw) to (kh, kw, in, out), dense ones from (out, in)
    to (in, out), and fc6's rows from PyTorch's (C, H, W) flatten order to (H, W, C).

    Raises:
        WeightsError: naming ``source`` and the first missing, extra or mis-shaped tensor.
    """
    expected_keys = {
        f"{p}.{s}" for p, _ in _TORCHVISION_LAYERS.values() for s in ("weight", "bias")
    }
    extra = [k for k in state if k not in expected_keys]
    if extra:
        raise WeightsError(
            f"{source}: unexpected tensor {extra[0]!r} {tuple(state[extra[0]].shape)}: not a "
            "torchvision AlexNet state_dict (is --format right?)"
        )
    layers: dict[str, list[np.ndarray]] = {}
    for layer, (prefix, w_shape) in _TORCHVISION_LAYERS.items():
        w_key, b_key = f"{prefix}.weight", f"{prefix}.bias"
        for key in (w_key, b_key):
            if key not in state:
                raise WeightsError(
                    f"{source}: missing tensor {key!r} (layer {layer}): not a torchvision "
                    "AlexNet state_dict (is --format right?)"
                )
        w, b = state[w_key], state[b_key]
        if not _shape_matches(w.shape, w_shape):
            raise WeightsError(
                f"{source}: layer {layer} ({w_key!r}) has shape {tuple(w.shape)}, "
                f"expected {_fmt_shape(w_shape)}"
            )
        if b.shape != (w.shape[0],):
            raise WeightsError(
                f"{source}: layer {layer} ({b_key!r}) has shape {tuple(b.shape)}, "
                f"expected ({w.shape[0]},)"
            )
        if w.ndim == 4:
            kernel = w.transpose(2, 3, 1, 0)
        else:
            kernel = w.T
            if layer == "fc6":
                kernel = _fc6_chw_to_hwc(kernel)
        layers[layer] = [np.ascontiguousarray(kernel, np.float32), np.asarray(b, np.float32)]
    return layers


def convert_bvlc(
    net: dict[str, list[np.ndarray]], source: str = "<bvlc dict>"
) -> dict[str, list[np.ndarray]]:
    """Turn the bvlc_alexnet.npy dict into Keras ``{layer: [kernel, bias]}`` taking RGB.

    Kernels are already (k, k, C_in[/2], C_out) and (in, out). The input-channel axis of
    conv1 is reversed (Caffe read BGR) and fc6's rows go from (C, H, W) to (H, W, C).

    Raises:
        WeightsError: naming ``source`` and the first missing, extra or mis-shaped array.
    """
    extra = [k for k in net if k not in _BVLC_LAYERS]
    if extra:
        raise WeightsError(
            f"{source}: unexpected entry {extra[0]!r}: bvlc_alexnet.npy holds only "
            f"{', '.join(_BVLC_LAYERS)} (is --format right?)"
        )
    layers: dict[str, list[np.ndarray]] = {}
    for key, (layer, w_shape) in _BVLC_LAYERS.items():
        if key not in net:
            raise WeightsError(f"{source}: missing entry {key!r}: not bvlc_alexnet.npy")
        w, b = net[key]
        if not _shape_matches(w.shape, w_shape):
            raise WeightsError(
                f"{source}: layer {key} has kernel shape {tuple(w.shape)}, "
                f"expected {_fmt_shape(w_shape)}"
            )
        if b.shape != (w.shape[-1],):
            raise WeightsError(
                f"{source}: layer {key} has bias shape {tuple(b.shape)}, expected ({w.shape[-1]},)"
            )
        if key == "conv1":
            w = w[:, :, ::-1, :]  # BGR -> RGB input channels
        elif key == "fc6":
            w = _fc6_chw_to_hwc(w)
        layers[layer] = [np.ascontiguousarray(w, np.float32), np.asarray(b, np.float32)]
    return layers


def build_imported_model(
    variant: str,
    layers: dict[str, list[np.ndarray]],
    source: str = "<weights>",
    **build_kwargs: Any,
) -> Any:
    """Build ``build_alexnet(variant, ...)`` and set every named layer's weights.

    The class count comes from the ``predictions`` kernel.

    Raises:
        WeightsError: a layer's weights do not fit the built model (naming the layer).
    """
    from alexkit.model import build_alexnet

    num_classes = int(layers["predictions"][0].shape[-1])
    model = build_alexnet(variant=variant, num_classes=num_classes, **build_kwargs)
    for name, arrays in layers.items():
        layer = model.get_layer(name)
        current = [tuple(v.shape) for v in layer.weights]
        given = [tuple(a.shape) for a in arrays]
        if current != given:
            raise WeightsError(
                f"{source}: layer {name} has weights {given}, the {variant} model expects {current}"
            )
        layer.set_weights(arrays)
    # Every trainable layer must have been filled: a silent random layer is a wrong model.
    missed = [lyr.name for lyr in model.layers if lyr.trainable_weights and lyr.name not in layers]
    if missed:  # pragma: no cover - guards against a model change
        raise WeightsError(f"{source}: no weights for layer {missed[0]} of the {variant} model")
    return model


# --------------------------------------------------------------------------- import / download


def import_weights(
    path: str | os.PathLike,
    format: str,
    *,
    name: str | None = None,
    overwrite: bool = False,
    source: str | None = None,
) -> WeightsEntry:
    """Convert a published weights file and add it to the store.

    Args:
        path: ``alexnet-owt-7be5be79.pth`` (format ``torchvision``) or ``bvlc_alexnet.npy``
            (format ``bvlc-npy``).
        format: ``"torchvision"`` or ``"bvlc-npy"``.
        name: the entry's name; default ``torchvision-imagenet`` / ``bvlc-imagenet``.
        overwrite: replace an existing entry of that name.
        source: what to record as the source (default: the file's absolute path).

    Returns:
        The new store entry.

    Raises:
        WeightsError: wrong format, shapes, truncated or unsafe file (the store is untouched).
        MissingExtraError: ``torchvision`` format without torch installed.
    """
    if format not in FORMATS:
        raise WeightsError(f"unknown weights format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    name = _check_name(name or DEFAULT_NAMES[format])
    if (weights_dir() / name).exists() and not overwrite:
        # Fail before the slow conversion.
        raise WeightsError(
            f"weights {name!r} already exist in {weights_dir()}; pass --force to replace them "
            "or --name to choose another name"
        )
    variant = FORMAT_VARIANTS[format]
    if format == "torchvision":
        layers = convert_torchvision(load_torchvision_state_dict(path), str(path))
        build_kwargs: dict[str, Any] = {}
        notes = "conv kernels OIHW->HWIO, dense (out,in)->(in,out), fc6 rows CHW->HWC"
    else:
        layers = convert_bvlc(load_bvlc_npy(path), str(path))
        build_kwargs = {"lrn": "caffe"}
        notes = (
            "conv1 input channels reversed (Caffe BGR -> RGB), fc6 rows CHW->HWC, "
            "Caffe LRN (k=1, alpha=2e-5 per element); mean = ImageNet per-channel mean"
        )
    model = build_imported_model(variant, layers, str(path), **build_kwargs)
    extra = {"format": format, "num_classes": int(layers["predictions"][0].shape[-1])}
    extra["conversion"] = notes
    if build_kwargs:
        extra["build"] = build_kwargs
    register_weights(
        model,
        name,
        variant=variant,
        source=source or str(path.resolve()),
        sha256=file_sha256(path),
        kind="imagenet",
        overwrite=overwrite,
        extra=extra,
    )
    return get_weights(name)


def _download(url: str, target: Path, progress: Callable[[int, int | None], None] | None) -> str:
    """Stream ``url`` to ``target`` atomically; return its sha256."""
    digest = hashlib.sha256()
    tmp_fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(tmp_fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            total = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
            total = int(total) if total and str(total).isdigit() else None
            done = 0
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return digest.hexdigest()


def _torch_hub_cached(filename: str) -> Path | None:
    """torchvision's own download of ``filename``, if this machine already has it."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    path = Path(torch_home) / "hub" / "checkpoints" / filename
    return path if path.is_file() else None


def download_weights(
    source: str = "torchvision",
    *,
    name: str | None = None,
    overwrite: bool = False,
    url: str | None = None,
    sha256_prefix: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> WeightsEntry:
    """Fetch torchvision's ImageNet AlexNet, check its sha256 prefix, and import it.

    The verified file is kept in ``$ALEXKIT_HOME/downloads`` (and one already in torch's hub
    cache is reused), so a second import needs no network.

    Args:
        source: only ``"torchvision"``: bvlc_alexnet.npy has no stable official URL.
        name: the store entry's name (default ``torchvision-imagenet``).
        overwrite: replace an existing entry of that name.
        url: where to fetch from (default ``$ALEXKIT_WEIGHTS_URL`` or PyTorch's URL).
        sha256_prefix: the prefix the file's sha256 must start with (default: torchvision's
            ``7be5be79``).
        progress: called with (bytes so far, total bytes or None) while downloading.

    Raises:
        WeightsError: offline, unreachable, or a file whose sha256 does not match.
    """
    if source != "torchvision":
        raise WeightsError(
            f"cannot download {source!r} weights: only 'torchvision' has an official URL; for "
            "Caffe's weights get bvlc_alexnet.npy and run "
            "`alexkit weights import bvlc_alexnet.npy --format bvlc-npy`"
        )
    name = _check_name(name or DEFAULT_NAMES["torchvision"])
    if (weights_dir() / name).exists() and not overwrite:
        raise WeightsError(
            f"weights {name!r} already exist in {weights_dir()}; pass --force to replace them "
            "or --name to choose another name"
        )
    url = url or os.environ.get(URL_ENV) or TORCHVISION_URL
    sha256_prefix = sha256_prefix or TORCHVISION_SHA256_PREFIX
    filename = TORCHVISION_FILENAME
    downloads = alexkit_home() / "downloads"
    cached = downloads / filename
    local = cached if cached.is_file() else _torch_hub_cached(filename)
    if local is not None and file_sha256(local).startswith(sha256_prefix):
        logger.info("using the already downloaded %s", local)
        return import_weights(local, "torchvision", name=name, overwrite=overwrite, source=url)

    downloads.mkdir(parents=True, exist_ok=True)
    fetched = downloads / f".{filename}.unverified"
    try:
        digest = _download(url, fetched, progress)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"cannot download {url} ({reason}); are you offline? Download it on another "
            f"machine and run `alexkit weights import {filename} --format torchvision`"
        ) from None
    try:
        if not digest.startswith(sha256_prefix):
            raise WeightsError(
                f"{url}: downloaded file has sha256 {digest[:16]}..., expected it to start "
                f"with {sha256_prefix}; the download is corrupt or not torchvision's AlexNet "
                "(nothing was stored)"
            )
        os.replace(fetched, cached)
    finally:
        if fetched.exists():
            fetched.unlink()
    return import_weights(cached, "torchvision", name=name, overwrite=overwrite, source=url)
