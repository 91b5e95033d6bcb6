"""Import torchvision's AlexNet ``state_dict`` (``alexnet-owt-7be5be79.pth``).

The file is read with ``torch.load(weights_only=True)``, which executes no code. It becomes
variant ``torchvision``. PyTorch stores conv kernels as (out, in, kh, kw) and dense ones as
(out, in), and flattens pool5 channel-major (C, H, W) where Keras flattens (H, W, C), so
kernels are transposed and the rows of fc6 are reordered.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from alexkit.errors import MissingExtraError, WeightsError, one_line
from alexkit.weights._common import fc6_chw_to_hwc, fmt_shape, shape_matches, sniff

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


def load_torchvision_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch ``state_dict`` with ``torch.load(weights_only=True)`` (no code runs).

    Accepts a bare state_dict or a checkpoint dict holding one under ``state_dict`` /
    ``model``; a ``module.`` prefix (DataParallel) is dropped.

    Raises:
        MissingExtraError: torch is not installed.
        WeightsError: the file is unsafe, truncated or not a state_dict.
    """
    path = Path(path)
    kind = sniff(path)
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
        if not shape_matches(w.shape, w_shape):
            raise WeightsError(
                f"{source}: layer {layer} ({w_key!r}) has shape {tuple(w.shape)}, "
                f"expected {fmt_shape(w_shape)}"
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
                kernel = fc6_chw_to_hwc(kernel)
        layers[layer] = [np.ascontiguousarray(kernel, np.float32), np.asarray(b, np.float32)]
    return layers
