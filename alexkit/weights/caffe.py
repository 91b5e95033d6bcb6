"""Import Caffe's ``bvlc_alexnet`` from the widely shared ``bvlc_alexnet.npy``, safely.

The file is a pickled dict ``{"conv1": [W, b], ..., "fc8": [W, b]}``. It is never given to
``np.load(allow_pickle=True)``: a restricted unpickler admits only numpy arrays and dtypes,
so a malicious file is refused instead of run. It becomes variant ``original`` with Caffe's
LRN constants (``lrn="caffe"``). Caffe fed the network BGR images and flattened pool5 as
(C, H, W): the input-channel axis of the conv1 kernel is reversed so the imported model
takes RGB like every alexkit model, and fc6's rows are reordered to (H, W, C). Caffe
subtracted its mean image (channel means ~ B 104, G 117, R 123); the imported model
subtracts the per-channel ImageNet mean of variant ``original`` instead (within 0.5 of
Caffe's per channel).
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import WeightsError, one_line
from alexkit.weights._common import fc6_chw_to_hwc, fmt_shape, shape_matches, sniff

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
    kind = sniff(path)
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
    if sniff(path) == "zip":
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
        if not shape_matches(w.shape, w_shape):
            raise WeightsError(
                f"{source}: layer {key} has kernel shape {tuple(w.shape)}, "
                f"expected {fmt_shape(w_shape)}"
            )
        if b.shape != (w.shape[-1],):
            raise WeightsError(
                f"{source}: layer {key} has bias shape {tuple(b.shape)}, expected ({w.shape[-1]},)"
            )
        if key == "conv1":
            w = w[:, :, ::-1, :]  # BGR -> RGB input channels
        elif key == "fc6":
            w = fc6_chw_to_hwc(w)
        layers[layer] = [np.ascontiguousarray(w, np.float32), np.asarray(b, np.float32)]
    return layers
