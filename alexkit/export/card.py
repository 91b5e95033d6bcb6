"""The ``model-card.json`` written beside every artefact."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

from alexkit.errors import UsageError
from alexkit.export.options import CARD_FORMAT
from alexkit.export.source import Source


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
