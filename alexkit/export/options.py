"""Export options: formats, quantizations, where artefacts and cards go, and the result."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

from alexkit.errors import EXIT_CHECKPOINT, AlexkitError, MissingExtraError, UsageError

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
