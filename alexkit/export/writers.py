"""Writing SavedModel, ONNX and LiteRT files (and quantizing them), then checking them."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from alexkit.errors import AlexkitError, one_line
from alexkit.export.options import ExportError


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


def _convert_checked(
    model: Any, fmt: str, path: Path, quantize: str, spec: Any
) -> tuple[list[str], list[str]]:
    """:func:`_convert`, its failures as :class:`ExportError`, then :func:`_check_artefact`."""
    import tensorflow as tf

    try:
        _convert(model, fmt, path, quantize, spec)
    except AlexkitError:
        raise
    except (tf.errors.OpError, ValueError, RuntimeError, ImportError, OSError) as exc:
        raise ExportError(
            f"converting to {fmt} failed: {one_line(exc, typed=True, limit=400)}"
        ) from exc
    return _check_artefact(fmt, path, quantize)
