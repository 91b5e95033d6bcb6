"""Running exported artefacts: one runner per format, and :func:`load_exported`."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import CheckpointError, MissingExtraError, UsageError
from alexkit.export.options import _NEEDS, CARD_NAME, card_path_for

# --------------------------------------------------------------------------- runtimes


def _in_batches(x: np.ndarray, batch: int | None, run: Callable[[np.ndarray], Any]) -> np.ndarray:
    """Call ``run`` on ``x``; for a fixed-batch artefact, in chunks padded to ``batch``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if batch is None or len(x) == batch:
        return np.asarray(run(x))
    outs = []
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        outs.append(np.asarray(run(chunk))[:n])
    return np.concatenate(outs)


class _OnnxRunner:
    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        first = self.session.get_inputs()[0].shape[0]
        self.batch = first if isinstance(first, int) else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _in_batches(x, self.batch, lambda b: self.session.run(None, {self.input_name: b})[0])


class _LiteRTRunner:
    def __init__(self, path: Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        detail = self.interpreter.get_input_details()[0]
        self.input_index = detail["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        signature = detail.get("shape_signature", detail["shape"])
        self.batch = None if int(signature[0]) == -1 else int(signature[0])
        self._shape: tuple[int, ...] | None = None

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._shape != x.shape:
            if self.batch is None:
                self.interpreter.resize_tensor_input(self.input_index, list(x.shape))
            self.interpreter.allocate_tensors()
            self._shape = x.shape
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index).copy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _in_batches(x, self.batch, self._run)


class _SavedModelRunner:
    def __init__(self, path: Path, threads: int | None = None):
        import tensorflow as tf

        self.loaded = tf.saved_model.load(str(path))
        self.fn = self.loaded.signatures["serving_default"]
        spec = self.fn.structured_input_signature[1]
        self.input_name = next(iter(spec))
        first = spec[self.input_name].shape[0]
        self.batch = None if first is None else int(first)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.fn(**{self.input_name: x})
        return next(iter(out.values())).numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _in_batches(x, self.batch, self._run)


_RUNNERS = {"onnx": _OnnxRunner, "tflite": _LiteRTRunner, "savedmodel": _SavedModelRunner}


def format_of(path: str | Path) -> str:
    """``onnx``, ``tflite`` or ``savedmodel`` from a path (a folder with saved_model.pb)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".tflite":
        return "tflite"
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "savedmodel"
    raise UsageError(f"{path} is not an exported model (.onnx, .tflite or a SavedModel folder).")


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` is an artefact :func:`load_exported` reads (has a model card)."""
    path = Path(path)
    try:
        format_of(path)
    except UsageError:
        return False
    return card_path_for(path).is_file()


# --------------------------------------------------------------------------- loading


class ExportedModel:
    """An exported artefact with the interface ``predict``/``evaluate`` use.

    Attributes:
        path, format, card: the artefact, its format and its model card.
        class_names: the classes, in output order.
        input_size: the square input side.
        config: a run-config-like dict (``image_size``, ``grayscale``, ``recipe.media``).
        input_shape, output_shape: like a Keras model's (batch ``None`` when dynamic).
    """

    def __init__(self, path: Path, card: dict[str, Any], threads: int | None = None):
        self.path = path
        self.card = card
        self.format = card["artefact"]["format"]
        self.class_names = [str(c) for c in card["classes"]]
        self.input_size = int(card["input"]["image_size"])
        self.config = dict(card.get("run_config") or {})
        self.config.setdefault("class_names", self.class_names)
        batch = card["input"]["shape"][0]
        self.input_shape = (batch, self.input_size, self.input_size, 3)
        self.output_shape = (batch, len(self.class_names))
        self._run = _RUNNERS[self.format](path, threads)

    def predict_on_batch(self, x: Any) -> np.ndarray:
        """Probabilities (N, C) for raw RGB [0, 255] images (N, H, W, 3)."""
        return self._run(np.asarray(x, np.float32))

    def __call__(self, x: Any) -> np.ndarray:
        return self.predict_on_batch(x)

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, format={self.format!r})"


def load_exported(path: str | Path, *, threads: int | None = None) -> ExportedModel:
    """Load an ``.onnx``, ``.tflite`` or SavedModel artefact written by :func:`export_model`.

    Args:
        path: the artefact; its ``model-card.json`` must be beside it (inside a SavedModel).
        threads: intra-op threads for the runtime (default: the runtime's choice).

    Raises:
        UsageError: not an exported model; MissingExtraError: its runtime is not installed.
        CheckpointError: the card is missing, unreadable or describes another file.
    """
    path = Path(path)
    fmt = format_of(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist.")
    card_path = card_path_for(path)
    if not card_path.is_file():
        raise CheckpointError(
            f"{path} has no {CARD_NAME} beside it: re-export it with `alexkit export` "
            "(the card holds the class names and input size)."
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        described = card["artefact"]["file"]
        card["classes"], card["input"]["image_size"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{card_path} is not a valid model card ({exc}).") from exc
    if fmt != "savedmodel" and described != path.name:
        raise CheckpointError(f"{card_path} describes {described}, not {path.name}.")
    if fmt != "savedmodel":
        for module, package in _NEEDS[fmt][-1:]:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise MissingExtraError(f"running {path.name}", "export", package) from exc
    return ExportedModel(path, card, threads)
