"""Export a trained classifier to SavedModel, ONNX or LiteRT, and prove it equals Keras.

:func:`export_model` writes one artefact and a ``model-card.json`` beside it, then runs
the written file and the Keras model on the same images and measures how far apart they
are. Every artefact takes what the ``.keras`` model takes — raw RGB pixels in [0, 255],
float32, NHWC, at the variant's size — and returns class probabilities (divided by the
run's temperature first, when ``calibration.json`` has one): the preprocessing stays inside.

Built on Keras' own ``model.export`` where it serves:

- ``savedmodel``: a ``serving_default`` signature (``image`` -> ``output_0``), written
  like ``format="tf_saved_model"`` but with each weight stored once (see
  :func:`_save_serving`).
- ``onnx``: ``format="onnx"`` (tf2onnx underneath), checked with ``onnx.checker``
  (``full_check=True``) and run with onnxruntime; ``dynamic-int8`` is onnxruntime's
  ``quantize_dynamic`` on the fully connected layers (int8 weights, activations quantized
  at run time; convolutions stay float32). ONNX has no float16 option here.
- ``tflite``: ``format="litert"`` with the converter restricted to the built-in op set
  (no Flex / "Select TF ops", which phone apps do not ship), run with the LiteRT
  interpreter (``ai-edge-litert``); ``float16`` stores float16 weights, ``dynamic-int8``
  is the converter's dynamic-range quantization.

Float32 exports must match Keras to :data:`PARITY_ATOL` in every probability with the
same top-1 class on every image, or :class:`ExportError` is raised and no card is written.
Quantized exports never claim parity: their card records the measured difference and,
with labelled ``data``, the accuracy change.

:func:`load_exported` reads an artefact back (class names, input size from its card) as
an object with ``predict_on_batch``, so ``predict`` and ``evaluate`` can run the very
file a user deploys.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import (
    EXIT_CHECKPOINT,
    AlexkitError,
    CheckpointError,
    DataError,
    MissingExtraError,
    UsageError,
    one_line,
)

log = logging.getLogger(__name__)

FORMATS = ("savedmodel", "onnx", "tflite")
QUANTIZATIONS = ("none", "float16", "dynamic-int8")
#: Largest allowed |p_export - p_keras| for a float32 export.
PARITY_ATOL = 1e-4
#: The model card's file name, beside the artefact (inside a SavedModel folder).
CARD_NAME = "model-card.json"
CARD_FORMAT = 1
#: Generated images used for parity when no ``data`` is given.
GENERATED_IMAGES = 16
#: At most this many images of ``data`` are compared (a seeded sample beyond it).
MAX_PARITY_IMAGES = 256

_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}
# What each format needs beyond alexkit's own dependencies: (module, pip name).
_NEEDS = {
    "savedmodel": (),
    "onnx": (("tf2onnx", "tf2onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")),
    "tflite": (("ai_edge_litert", "ai-edge-litert"),),
}
_QUANTIZE_FOR = {
    "savedmodel": ("none",),
    "onnx": ("none", "dynamic-int8"),
    "tflite": ("none", "float16", "dynamic-int8"),
}


class ExportError(AlexkitError):
    """A conversion that failed, or an exported file that does not match its Keras model.

    Exit code 4, like other models that cannot be trusted (corrupt, mismatched).
    """

    exit_code = EXIT_CHECKPOINT
    kind = "export"


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and measured.

    Attributes:
        path: the artefact (a file, or the SavedModel folder).
        card_path: its ``model-card.json``.
        format: ``savedmodel``, ``onnx`` or ``tflite``.
        quantize: ``none``, ``float16`` or ``dynamic-int8``.
        size_bytes: the artefact's size on disk.
        parity: the measured comparison with Keras (see :func:`measure_parity`).
        ops: operator types in the artefact (ONNX node types, LiteRT built-in ops).
        lrn_ops: the operator types the LRN layers became (empty without LRN).
        seconds: wall time of conversion plus parity check.
        card: the model card as written.
    """

    path: Path
    card_path: Path
    format: str
    quantize: str
    size_bytes: int
    parity: dict[str, Any]
    ops: list[str]
    lrn_ops: list[str]
    seconds: float
    card: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "card": str(self.card_path),
            "format": self.format,
            "quantize": self.quantize,
            "size_bytes": self.size_bytes,
            "parity": self.parity,
            "ops": self.ops,
            "lrn_ops": self.lrn_ops,
            "seconds": round(self.seconds, 2),
        }


# --------------------------------------------------------------------------- arguments


def require_export_tools(fmt: str) -> None:
    """Raise :class:`MissingExtraError` unless the converters/runtimes ``fmt`` needs import."""
    for module, package in _NEEDS[fmt]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtraError(f"alexkit export --format {fmt}", "export", package) from exc


def check_options(fmt: str, quantize: str = "none", batch: str | int = "dynamic") -> int | None:
    """Validate format, quantization and batch; return the fixed batch size or None.

    Raises:
        UsageError: an unknown value, or a quantization the format does not offer.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}; received {fmt!r}.")
    if quantize not in QUANTIZATIONS:
        raise UsageError(
            f"--quantize must be one of {', '.join(QUANTIZATIONS)}; received {quantize!r}."
        )
    if quantize not in _QUANTIZE_FOR[fmt]:
        raise UsageError(
            f"--quantize {quantize} is not offered for {fmt}: choose "
            f"{' or '.join(_QUANTIZE_FOR[fmt])} (float16 and dynamic-int8 are for tflite; "
            "onnx has dynamic-int8)."
        )
    if batch in ("dynamic", None):
        return None
    try:
        size = int(batch)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise UsageError(f"--batch must be 'dynamic' or a positive integer; received {batch!r}.")
    return size


def artefact_path(out: str | Path, fmt: str) -> Path:
    """Where the artefact goes: ``out`` itself, or ``out/model.<ext>`` for a folder.

    A SavedModel is always a folder. For ONNX and LiteRT, ``out`` ending in the format's
    suffix names the file; a path without a suffix is a folder to write ``model.onnx`` /
    ``model.tflite`` into.
    """
    out = Path(out)
    if fmt == "savedmodel":
        if out.suffix in (".onnx", ".tflite", ".keras") or out.is_file():
            raise UsageError(f"--format savedmodel writes a folder; received --out {out}.")
        if out.is_dir() and any(out.iterdir()) and not (out / "saved_model.pb").is_file():
            raise UsageError(
                f"--out {out} is a folder with other files in it: a SavedModel replaces "
                "its folder, so give a new or empty one (or a previous SavedModel)."
            )
        return out
    suffix = _SUFFIX[fmt]
    if out.suffix == suffix:
        return out
    if out.suffix and not out.is_dir():
        raise UsageError(f"--format {fmt} writes a {suffix} file; received --out {out}.")
    return out / f"model{suffix}"


def card_path_for(artefact: Path) -> Path:
    """``model-card.json`` beside a file, inside a SavedModel folder."""
    return artefact / CARD_NAME if artefact.is_dir() else artefact.parent / CARD_NAME


# --------------------------------------------------------------------------- the source


@dataclasses.dataclass
class Source:
    """A loaded classifier and what the model card says about where it came from."""

    model: Any
    class_names: list[str]
    config: dict[str, Any]
    kind: str  # "run", "keras", "weights" or "model"
    where: str
    run_dir: Path | None = None


def load_source(
    source: Any,
    *,
    weights: bool = False,
    variant: str = "torchvision",
    class_names: Sequence[str] | None = None,
) -> Source:
    """Load what to export: a run directory, a ``.keras`` file, a weights-store name or a model.

    Args:
        source: a run directory or ``.keras`` file (:func:`alexkit.evaluate.load_trained`),
            the name of stored weights (:func:`alexkit.weights.load_weights_model`), or an
            in-memory ``keras.Model``.
        weights: ``source`` is a weights-store name, even if a file of that name exists
            (otherwise a name that is not an existing path is tried in the store).
        variant: the variant of stored weights.
        class_names: names for an in-memory model (default ``"0".."C-1"``).
    """
    if not isinstance(source, str | Path):
        n = int(source.output_shape[-1])
        names = [str(c) for c in class_names] if class_names else [str(i) for i in range(n)]
        return Source(source, names, {}, "model", getattr(source, "name", "model"))
    path = Path(source)
    if path.exists() and not weights:
        from alexkit.evaluate import load_trained

        model, names, config = load_trained(path)
        run_dir = path if path.is_dir() else path.parent
        kind = "run" if path.is_dir() else "keras"
        return Source(model, names, config, kind, str(path), run_dir)
    if weights or (isinstance(source, str) and not any(sep in source for sep in "/\\")):
        from alexkit.weights import load_weights_model

        model = load_weights_model(source, variant)
        n = int(model.output_shape[-1])
        names = [str(c) for c in class_names] if class_names else [str(i) for i in range(n)]
        return Source(model, names, {}, "weights", f"{source} ({variant})")
    raise CheckpointError(
        f"{source} does not exist: pass a run directory, a .keras file or --weights NAME."
    )


def _temperature(src: Source) -> tuple[float | None, dict[str, Any] | None]:
    if src.run_dir is None:
        return None, None
    from alexkit.calibration import load_calibration

    doc = load_calibration(src.run_dir)
    if not doc:
        return None, None
    t = doc.get("temperature")
    return (None if t is None else float(t)), doc


def serving_model(model: Any, temperature: float | None = None) -> Any:
    """The Keras model to export: raw pixels in, (calibrated) probabilities out.

    A model ending in a softmax is returned as it is when there is no temperature. With
    one, the ``predictions`` layer is recomputed without its activation (same weights),
    and ``softmax(logits / T)`` appended. A logits model (no activation) gets a softmax.

    Raises:
        CheckpointError: a temperature for a model whose head is not softmax or linear.
    """
    import keras

    try:
        head = model.get_layer("predictions")
    except ValueError:
        head = model.layers[-1]
    activation = getattr(head, "activation", None)
    act_name = getattr(activation, "__name__", str(activation))
    if act_name == "softmax" and temperature is None:
        return model
    if act_name not in ("softmax", "linear") or not isinstance(head, keras.layers.Dense):
        if temperature is None:
            return model
        raise CheckpointError(
            f"the run has a temperature but its last layer {head.name!r} is not a softmax "
            "Dense layer: cannot apply it inside the exported model."
        )
    logits_layer = keras.layers.Dense(
        head.units, use_bias=head.use_bias, name="logits", dtype="float32"
    )
    logits = logits_layer(head.input)
    logits_layer.set_weights(head.get_weights())
    if temperature is not None:
        logits = keras.layers.Rescaling(1.0 / float(temperature), name="temperature")(logits)
    probs = keras.layers.Softmax(name="probabilities", dtype="float32")(logits)
    return keras.Model(model.inputs, probs, name=f"{model.name}_serving")


# --------------------------------------------------------------------------- conversion


def _input_spec(size: int, batch: int | None) -> Any:
    import tensorflow as tf

    return tf.TensorSpec((batch, size, size, 3), tf.float32, name="image")


def _save_serving(model: Any, path: Path, spec: Any) -> None:
    """A SavedModel whose ``serving_default`` maps ``image`` to ``output_0``.

    What Keras' ``model.export(format="tf_saved_model")`` does, minus one thing: Keras
    3.15's ``ExportArchive`` checkpoints every weight twice (its Keras variables and the
    ``tf.Variable``s its functions use), doubling the folder (488 MB, not 244 MB, for a
    1000-class AlexNet) and what a server restores. Here the module tracks the
    ``tf.Variable``s once.
    """
    import tensorflow as tf

    module = tf.Module()
    module.weights = [v.value for v in model.variables]

    @tf.function(input_signature=[spec], autograph=False)
    def serve(image):
        return {"output_0": model(image, training=False)}

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})


def _convert(model: Any, fmt: str, path: Path, quantize: str, spec: Any) -> None:
    """Write ``model`` as ``fmt`` to ``path`` (Keras' exporters, then quantization)."""
    import tensorflow as tf

    if fmt == "savedmodel":
        if path.exists():
            shutil.rmtree(path)  # only a previous SavedModel (checked in artefact_path)
        _save_serving(model, path, spec)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        quiet = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow")]
        levels = [q.level for q in quiet]
        for q in quiet:
            q.setLevel(logging.ERROR)
        try:
            target = path if quantize == "none" else path.with_suffix(".float32.onnx")
            model.export(str(target), format="onnx", input_signature=[spec], verbose=False)
        finally:
            for q, level in zip(quiet, levels, strict=True):
                q.setLevel(level)
        if quantize == "dynamic-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            try:
                # Fully connected layers only (95 % of AlexNet's weights): onnxruntime's
                # ConvInteger ran 3-4x slower than float Conv on this project's CPU, while
                # int8 MatMul is as fast as float (measured: 4.6 vs 16.8 img/s at batch 32).
                quantize_dynamic(
                    str(target),
                    str(path),
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gemm"],
                )
            finally:
                target.unlink(missing_ok=True)
        return
    # LiteRT: the built-in op set only (Keras adds SELECT_TF_OPS unless told otherwise).
    kwargs: dict[str, Any] = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if quantize == "float16":
        kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
        kwargs["target_spec"]["supported_types"] = [tf.float16]
    elif quantize == "dynamic-int8":
        kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
    model.export(str(path), format="litert", input_signature=[spec], verbose=False, **kwargs)


def _file_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _sha256(path: Path) -> str | None:
    if path.is_dir():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


# --------------------------------------------------------------------------- ops

# Converted graphs keep the Keras layer as a name scope: ".../lrn1_1/Tensordot/MatMul".
_LRN_SCOPE = re.compile(r"/lrn\d+(?:_\d+)?/")


def _tflite_ops(path: Path) -> tuple[list[str], list[str]]:
    """(all op names, ops producing tensors of the lrn layers), before any delegate."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    tensors = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    ops, lrn = set(), set()
    for op in interp._get_ops_details():  # the only listing LiteRT offers
        ops.add(op["op_name"])
        if any(_LRN_SCOPE.search(tensors.get(int(i), "")) for i in op["outputs"]):
            lrn.add(op["op_name"])
    return sorted(ops), sorted(lrn)


def _onnx_ops(path: Path) -> tuple[list[str], list[str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ops = sorted({node.op_type for node in graph.node})
    lrn = sorted({node.op_type for node in graph.node if _LRN_SCOPE.search(node.name)})
    return ops, lrn


def _check_artefact(fmt: str, path: Path, quantize: str) -> tuple[list[str], list[str]]:
    """Structural checks; returns (op types, LRN op types)."""
    if fmt == "onnx":
        import onnx

        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:
            raise ExportError(f"{path} fails onnx.checker: {one_line(exc, typed=True)}") from exc
        return _onnx_ops(path)
    if fmt == "tflite":
        ops, lrn = _tflite_ops(path)
        flex = [op for op in ops if op.startswith("Flex") or op == "CUSTOM"]
        if flex:
            raise ExportError(f"{path} needs non-built-in ops {flex}: phone runtimes lack them.")
        return ops, lrn
    return [], []


# --------------------------------------------------------------------------- parity


def generated_images(size: int, n: int = GENERATED_IMAGES, seed: int = 0) -> np.ndarray:
    """A fixed, seeded set of [0, 255] float32 RGB images: noise, gradients, blocks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    images = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            img = rng.uniform(0, 255, (size, size, 3))
        elif kind == 1:
            a, b, c = rng.uniform(-1, 1, (3, 3))
            img = 127.5 + 127.5 * np.stack(
                [np.sin(3 * a[k] * xx + 3 * b[k] * yy + c[k] * 3) for k in range(3)], axis=-1
            )
        else:
            cells = rng.uniform(0, 255, (8, 8, 3))
            img = np.kron(cells, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
        images.append(np.clip(img, 0, 255))
    return np.stack(images).astype(np.float32)


def data_images(
    data: str | Path,
    class_names: Sequence[str],
    config: dict[str, Any],
    size: int,
    *,
    max_images: int = MAX_PARITY_IMAGES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Centre-cropped images of ``data`` (evaluation preprocessing) and their labels.

    The ``test`` split is used when there is one (else ``val``, else all), at most
    ``max_images`` of it (a seeded sample). Labels are -1 where unknown.
    """
    from alexkit import data as data_mod
    from alexkit.evaluate import align_spec, media_options_from_config

    spec = data_mod.load_spec(
        data, val_fraction=0.0, media_options=media_options_from_config(config)
    )
    split = ""
    for name in ("test", "val"):
        if name in set(spec.splits):
            spec, split = spec.subset(name), name
            break
    spec = align_spec(spec, class_names, require_labels=False)
    if not spec.is_tfrecord and len(spec) > max_images:
        keep = sorted(np.random.default_rng(seed).choice(len(spec), max_images, replace=False))
        spec = dataclasses.replace(
            spec,
            items=tuple(spec.items[i] for i in keep),
            labels=tuple(spec.labels[i] for i in keep),
            splits=tuple(spec.splits[i] for i in keep),
            groups=tuple(spec.groups[i] for i in keep),
        )
    dataset = data_mod.make_dataset(
        spec,
        training=False,
        image_size=size,
        batch_size=32,
        grayscale=bool(config.get("grayscale", False)),
        skipped=data_mod.SkipLog(),
    )
    xs, ys, total = [], [], 0
    for images, labels in dataset:
        xs.append(np.asarray(images, np.float32))
        ys.append(np.asarray(labels))
        total += len(xs[-1])
        if total >= max_images:
            break
    if not xs:
        raise DataError(f"{data}: no readable images to compare the export on.")
    x = np.concatenate(xs)[:max_images]
    y = np.concatenate(ys)[:max_images].astype(np.int64)
    return x, y, f"{data}{f' ({split} split)' if split else ''}"


def measure_parity(
    keras_probs: np.ndarray, exported_probs: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, Any]:
    """Compare two probability arrays row by row.

    Returns:
        ``max_abs_diff``, ``mean_abs_diff``, ``top1_agreement`` (fraction),
        ``top1_disagreements`` (count), ``num_images``; with labels (all >= 0) also
        ``accuracy_keras``, ``accuracy_exported`` and ``accuracy_change`` (exported - keras).
    """
    a = np.asarray(keras_probs, np.float64)
    b = np.asarray(exported_probs, np.float64)
    if a.shape != b.shape:
        raise ExportError(f"the export returns shape {b.shape}; Keras returns {a.shape}.")
    diff = np.abs(a - b)
    same = a.argmax(axis=1) == b.argmax(axis=1)
    out: dict[str, Any] = {
        "num_images": int(len(a)),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "top1_agreement": float(same.mean()) if len(same) else 1.0,
        "top1_disagreements": int((~same).sum()),
    }
    if labels is not None and len(labels) and bool(np.all(labels >= 0)):
        acc_a = float((a.argmax(axis=1) == labels).mean())
        acc_b = float((b.argmax(axis=1) == labels).mean())
        out.update(
            {"accuracy_keras": acc_a, "accuracy_exported": acc_b, "accuracy_change": acc_b - acc_a}
        )
    return out


def _keras_probs(model: Any, x: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate(
        [np.asarray(model.predict_on_batch(x[i : i + batch])) for i in range(0, len(x), batch)]
    )


# --------------------------------------------------------------------------- model card


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    from alexkit import __version__

    out: dict[str, str | None] = {"alexkit": __version__}
    for dist in ("keras", "tensorflow", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _validation_metrics(run_dir: Path | None) -> dict[str, Any] | None:
    """The headline numbers of the run's ``metrics.json`` (no per-sample arrays)."""
    if run_dir is None or not (run_dir / "metrics.json").is_file():
        return None
    try:
        doc = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keep = ("accuracy", "top5_accuracy", "num_samples", "num_classes", "macro_avg", "ci")
    out = {k: doc[k] for k in keep if k in doc}
    out.update({k: v for k, v in doc.items() if k.startswith("val_")})
    if isinstance(doc.get("per_class"), dict):
        out["per_class"] = doc["per_class"]
    if isinstance(doc.get("binary"), dict):
        out["binary"] = {k: v for k, v in doc["binary"].items() if k != "roc_curve"}
    return out


def _preprocess_facts(model: Any) -> dict[str, Any]:
    try:
        layer = model.get_layer("preprocess")
        return {"mean": list(layer.mean), "std": list(layer.std)}
    except (ValueError, AttributeError):
        return {}


def _variant(model: Any, config: dict[str, Any]) -> str:
    if config.get("variant"):
        return str(config["variant"])
    from alexkit.model import variant_of

    return variant_of(model)


# --------------------------------------------------------------------------- export


def export_model(
    source: Any,
    format: str,
    out: str | Path,
    quantize: str = "none",
    data: str | Path | None = None,
    batch: str | int = "dynamic",
    *,
    weights: bool = False,
    variant: str = "torchvision",
    class_names: Sequence[str] | None = None,
    max_images: int = MAX_PARITY_IMAGES,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a classifier, measure it against Keras, and write its model card.

    Args:
        source: a run directory, a ``.keras`` file, a weights-store name, or a
            ``keras.Model`` (see :func:`load_source`).
        format: ``savedmodel``, ``onnx`` or ``tflite``.
        out: the artefact's path (a folder for ``savedmodel``; for the others a file with
            the format's suffix, or a folder to write ``model.onnx`` / ``model.tflite`` in).
        quantize: ``none``; ``float16`` (tflite); ``dynamic-int8`` (tflite, onnx).
        data: images to compare on (their ``test``/``val`` split when present); default a
            fixed set of generated images. Labelled data also gives the accuracy change.
        batch: ``dynamic`` or a fixed batch size for the artefact's input.
        weights: ``source`` is a weights-store name (see :func:`load_source`).
        variant: the variant of stored weights (``source`` a weights name).
        class_names: class names for an in-memory model.
        max_images: compare on at most this many images of ``data``.
        progress: called with a short phrase before each step (for a CLI's stderr).

    Returns:
        An :class:`ExportResult`.

    Raises:
        UsageError: bad options; MissingExtraError: the export extra is not installed.
        CheckpointError: the source cannot be loaded.
        ExportError: conversion failed, or a float32 export differs from Keras by more
            than :data:`PARITY_ATOL` or in a top-1 class (then no card is written).
    """
    fixed_batch = check_options(format, quantize, batch)
    require_export_tools(format)
    path = artefact_path(out, format)
    card_path = card_path_for(path) if format != "savedmodel" else path / CARD_NAME
    _refuse_foreign_card(card_path, path)
    say = progress or (lambda _msg: None)
    started = time.perf_counter()

    say("loading the model")
    src = load_source(source, weights=weights, variant=variant, class_names=class_names)
    temperature, calibration = _temperature(src)
    model = serving_model(src.model, temperature)
    size = int(model.input_shape[1] or src.config.get("image_size") or 227)

    say(f"converting to {format}" + (f" ({quantize})" if quantize != "none" else ""))
    import tensorflow as tf

    try:
        _convert(model, format, path, quantize, _input_spec(size, fixed_batch))
    except AlexkitError:
        raise
    except (tf.errors.OpError, ValueError, RuntimeError, ImportError, OSError) as exc:
        raise ExportError(
            f"converting to {format} failed: {one_line(exc, typed=True, limit=400)}"
        ) from exc
    ops, lrn_ops = _check_artefact(format, path, quantize)

    say("measuring parity with Keras")
    if data is not None:
        x, labels, images_from = data_images(
            data, src.class_names, src.config, size, max_images=max_images
        )
    else:
        x, labels = generated_images(size), None
        images_from = f"{len(x)} generated images (seed 0)"
    reference = _keras_probs(model, x)
    exported = _RUNNERS[format](path)(x)
    parity = measure_parity(reference, exported, labels)
    parity.update({"images": images_from, "tolerance": PARITY_ATOL})
    if quantize == "none":
        ok = parity["max_abs_diff"] <= PARITY_ATOL and parity["top1_disagreements"] == 0
        if not ok:
            raise ExportError(
                f"{path} does not match the Keras model: max |dp| "
                f"{parity['max_abs_diff']:.3g} (allowed {PARITY_ATOL:g}), top-1 differs on "
                f"{parity['top1_disagreements']} of {parity['num_images']} images; the file "
                "is left for inspection and no model card was written."
            )
        parity["claimed"] = True
    else:
        parity["claimed"] = False
        parity["note"] = (
            f"{quantize} is not expected to match float32 Keras to {PARITY_ATOL:g}; "
            + (
                "accuracy change measured on the labelled data above."
                if "accuracy_change" in parity
                else "no labelled --data was given, so the accuracy change was not measured."
            )
        )

    card = _card(
        src, model, format, path, quantize, fixed_batch, size, temperature, calibration, parity
    )
    card["artefact"]["ops"] = ops
    card["artefact"]["lrn_ops"] = lrn_ops
    from alexkit.paths import atomic_write_text

    atomic_write_text(card_path, json.dumps(card, indent=2) + "\n")
    return ExportResult(
        path=path,
        card_path=card_path,
        format=format,
        quantize=quantize,
        size_bytes=card["artefact"]["size_bytes"],
        parity=parity,
        ops=ops,
        lrn_ops=lrn_ops,
        seconds=time.perf_counter() - started,
        card=card,
    )


def _refuse_foreign_card(card_path: Path, artefact: Path) -> None:
    """Two artefacts in one folder would share a card: refuse rather than overwrite."""
    if not card_path.is_file():
        return
    try:
        described = json.loads(card_path.read_text(encoding="utf-8"))["artefact"]["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if described not in (artefact.name, "."):
        raise UsageError(
            f"{card_path} describes {described}, not {artefact.name}: export each model "
            "into its own folder (--out DIR/ or --out DIR/model.onnx)."
        )


def _card(
    src: Source,
    model: Any,
    fmt: str,
    path: Path,
    quantize: str,
    batch: int | None,
    size: int,
    temperature: float | None,
    calibration: dict[str, Any] | None,
    parity: dict[str, Any],
) -> dict[str, Any]:
    config = src.config
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else {}
    return {
        "card_format": CARD_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "artefact": {
            "file": "." if fmt == "savedmodel" else path.name,
            "format": fmt,
            "quantize": quantize,
            "size_bytes": _file_size(path),
            "sha256": _sha256(path),
            "signature": "serving_default" if fmt == "savedmodel" else None,
        },
        "classes": list(src.class_names),
        "num_classes": len(src.class_names),
        "input": {
            "name": "image",
            "shape": [batch, size, size, 3],
            "dtype": "float32",
            "layout": "NHWC",
            "range": [0, 255],
            "color": "RGB",
            "image_size": size,
            "grayscale": bool(config.get("grayscale", False)),
            "preprocessing": "inside the model: (x - mean) / std per channel",
            **_preprocess_facts(model),
        },
        "output": {
            "kind": "probabilities",
            "calibrated": temperature is not None,
            "temperature": temperature,
            "thresholds": (calibration or {}).get("thresholds"),
        },
        "variant": _variant(src.model, config),
        "source": {"kind": src.kind, "path": src.where},
        "validation_metrics": _validation_metrics(src.run_dir),
        "versions": _versions(),
        "parity": parity,
        # What predict/evaluate need to read images as the model was trained.
        "run_config": {
            "image_size": size,
            "grayscale": bool(config.get("grayscale", False)),
            "recipe": {"media": recipe.get("media")} if recipe.get("media") else {},
        },
    }


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
