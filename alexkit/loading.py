"""Loading what evaluation needs: a trained model and its class names, and the data.

``load_trained`` opens a run directory, a ``.keras`` file or an exported model;
``load_eval_spec`` / ``align_spec`` read evaluation data in the model's class order.
Every name here is also importable from :mod:`alexkit.evaluate`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alexkit.errors import CheckpointError, DataError, one_line


def load_trained(path: str | Path) -> tuple[Any, list[str], dict[str, Any]]:
    """Load a trained classifier and its class names.

    Args:
        path: a run directory (``config.json`` + ``model.keras``), a ``.keras`` file
            (class names from a sibling ``config.json`` when present, else ``"0".."N-1"``),
            or a file ``alexkit export`` wrote (``.onnx``, ``.tflite``, a SavedModel
            folder): class names, input size and run config from its ``model-card.json``.

    Returns:
        ``(model, class_names, config)``; ``config`` is ``{}`` when there is none.

    Raises:
        CheckpointError: the path is missing, or the model or config cannot be read.
    """
    path = Path(path)
    if is_exported(path):
        from alexkit.export import load_exported

        exported = load_exported(path)
        return exported, list(exported.class_names), dict(exported.config)
    if path.is_dir():
        model_path = path / "model.keras"
        config_path = path / "config.json"
        if not model_path.is_file():
            raise CheckpointError(
                f"{path} is not a run directory: no model.keras in it "
                "(pass a run directory from `alexkit finetune` or a .keras file)."
            )
    elif path.is_file():
        model_path = path
        config_path = path.parent / "config.json"
    else:
        raise CheckpointError(f"{path} does not exist: pass a run directory or a .keras file.")
    if model_path.suffix != ".keras":
        raise CheckpointError(f"{model_path} is not a .keras model file.")

    config: dict[str, Any] = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{config_path} is not valid JSON ({exc}).") from exc

    import keras

    import alexkit.layers  # noqa: F401  (registers the custom layers for deserialisation)

    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises many kinds for a bad archive
        raise CheckpointError(f"cannot load {model_path}: {one_line(exc, limit=10_000)}") from exc

    num_outputs = int(model.output_shape[-1])
    names = config.get("class_names")
    if names is None:
        names = [str(i) for i in range(num_outputs)]
    names = [str(n) for n in names]
    if len(names) != num_outputs:
        raise CheckpointError(
            f"{config_path} lists {len(names)} class_names but {model_path} has "
            f"{num_outputs} outputs: the config does not belong to this model."
        )
    return model, names, config


def model_image_size(model: Any, config: dict[str, Any] | None = None) -> int:
    """The square input size a model expects: the run config's ``image_size``, else
    :func:`input_size_of` (its input shape, or its variant's size)."""
    if config and config.get("image_size"):
        return int(config["image_size"])
    return input_size_of(model)


def input_size_of(model: Any) -> int:
    """The square input side ``model`` takes, read from the model itself.

    Its input shape when that is fixed; else (a body built with ``input_shape=(None,
    None, 3)``, which runs at any size) the size of the AlexNet variant its layers make it
    (``lrn1`` and conv1's width, nested models searched: 227 ``original``, 224
    ``torchvision``, 99 ``tiny``), the size its fc6 and pretrained weights were made for.
    A model with neither a fixed size nor a ``conv1`` layer gets the paper's 227.

    Args:
        model: a Keras model, or an exported one (its card fixes the size).

    Returns:
        The side in pixels.
    """
    from alexkit.model import all_layers, variant_of
    from alexkit.variants import IMAGE_SIZES

    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):  # several inputs: the first is the image
        shape = shape[0]
    if shape is not None and len(shape) >= 3 and shape[1] is not None:
        return int(shape[1])
    if not any(layer.name == "conv1" for layer in all_layers(model)):
        return IMAGE_SIZES["original"]
    return IMAGE_SIZES[variant_of(model)]


def align_spec(spec: Any, class_names: Sequence[str], *, require_labels: bool = True) -> Any:
    """Re-index a ``DatasetSpec``'s labels to the model's class order.

    Raises:
        DataError: the data has classes the model does not know (listed), or no labels.
    """
    names = list(class_names)
    if getattr(spec, "is_tfrecord", False):  # labels live in the records: keep the model's map
        return dataclasses.replace(spec, class_names=tuple(names))
    used = sorted({spec.class_names[lbl] for lbl in spec.labels if lbl >= 0})
    unknown = [c for c in used if c not in names]
    if unknown:
        more = f" … (+{len(unknown) - 10})" if len(unknown) > 10 else ""
        shown = ", ".join(unknown[:10]) + more
        raise DataError(
            f"the data has {len(unknown)} class(es) the model does not know: {shown}; "
            f"the model knows: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}."
        )
    if require_labels and any(label < 0 for label in spec.labels):
        raise DataError(
            f"{spec.root}: some images have no label; evaluation needs labelled data "
            "(class folders or a manifest with a label column)."
        )
    index = {c: i for i, c in enumerate(names)}
    labels = tuple(index[spec.class_names[lbl]] if lbl >= 0 else -1 for lbl in spec.labels)
    return dataclasses.replace(spec, labels=labels, class_names=tuple(names))


def media_options_from_config(config: dict[str, Any] | None) -> Any:
    """The run's ``[media]`` recipe settings as ``MediaOptions`` (None when absent)."""
    table = ((config or {}).get("recipe") or {}).get("media")
    if not table:
        return None
    from alexkit.media import MediaOptions

    return MediaOptions.from_mapping(
        {k: v for k, v in table.items() if v is not None}, source="config.json"
    )


def load_eval_spec(
    source: str | Path,
    class_names: Sequence[str] | None = None,
    *,
    prefer_splits: Sequence[str] = ("test", "val"),
    media_options: Any = None,
) -> Any:
    """Load data for evaluation: never re-split, and one split when the source has several.

    A source with ``train/val/test`` folders is evaluated on ``test`` (else ``val``);
    ``prefer_splits=("train",)`` picks the training part (for a probe). With
    ``class_names`` the labels are re-indexed to that order (unknown classes refused).
    ``media_options`` expand clips and volumes as in training (see
    :func:`media_options_from_config`).
    """
    from alexkit.data import load_spec

    spec = load_spec(source, val_fraction=0.0, media_options=media_options)
    present = set(spec.splits)
    if len(present - {""}) >= 1:
        for split in prefer_splits:
            if split in present:
                spec = spec.subset(split)
                break
    return spec if class_names is None else align_spec(spec, class_names)


def is_exported(path: str | Path) -> bool:
    """A model ``alexkit export`` wrote: ``.onnx``, ``.tflite`` or a SavedModel folder."""
    path = Path(path)
    return path.suffix in (".onnx", ".tflite") or (path / "saved_model.pb").is_file()


def run_dir_of(model_or_run: Any) -> Path | None:
    """The run directory whose ``calibration.json`` / ``data-hashes.json`` apply, or None.

    A run directory is itself; a ``.keras`` file's folder plays that part (as for its
    ``config.json`` in :func:`load_trained`); an in-memory model has none, and neither
    has an exported file (its temperature is already inside it).
    """
    if not isinstance(model_or_run, str | Path) or is_exported(model_or_run):
        return None
    path = Path(model_or_run)
    return path if path.is_dir() else path.parent


def model_with_precision(model: Any, precision: str) -> Any:
    """``model`` computing under ``precision``, with its weights: a rebuild when needed.

    A loaded ``.keras`` file keeps the dtype policy it was saved with (``float32`` for
    most), so asking for bfloat16 means building the same layers again under the
    ``mixed_bfloat16`` policy and copying the weights in (variables stay float32 under a
    mixed policy, so they copy bit for bit). The layers that produce the model's outputs
    keep ``float32``, as :func:`alexkit.model.build_alexnet` keeps ``predictions``, so
    softmax probabilities are computed in float32; ``Preprocess`` computes in float32
    whatever its policy and casts once at its end. A model that already computes as
    asked is returned as it is (no copy); so is an exported model (``.onnx``, ``.tflite``,
    SavedModel) asked for float32.

    Args:
        model: a Keras model (Functional or Sequential; nested models are rebuilt too),
            or an exported model from :func:`load_trained`.
        precision: a name :func:`alexkit.precision.resolve_precision` accepts
            (``float32``, ``mixed_bfloat16``, ``auto``, ``bf16`` …).

    Returns:
        A model computing in ``precision`` (``model`` itself when it already does).

    Raises:
        UsageError: an unknown precision name, or a reduced precision asked of an
            exported model (its precision was fixed when it was exported).
    """
    from alexkit.errors import UsageError
    from alexkit.precision import resolve_precision

    policy = resolve_precision(precision)
    if _is_exported_model(model):
        if policy == "float32":
            return model
        raise UsageError(
            f"--precision {policy} needs a Keras model (a run directory or .keras file); "
            "an exported model runs in the precision it was exported with."
        )
    if _computes_as(model, policy, keep_outputs=True):
        return model
    return _rebuilt(model, policy, keep_outputs=True)


def layer_policies(model: Any) -> dict[str, str]:
    """``{layer name: dtype-policy name}`` of every non-input layer (nested: ``outer/inner``)."""
    import keras

    found: dict[str, str] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            found.update({f"{layer.name}/{k}": v for k, v in layer_policies(layer).items()})
        else:
            found[layer.name] = layer.dtype_policy.name
    return found


def _output_layer_names(model: Any) -> set[str]:
    names = set()
    for tensor in model.outputs:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            names.add(history[0].name)
    return names


def _wanted_policy(layer: Any, policy: str, outputs: set[str]) -> str:
    return "float32" if layer.name in outputs else policy


def _computes_as(model: Any, policy: str, *, keep_outputs: bool) -> bool:
    import keras

    outputs = _output_layer_names(model) if keep_outputs else set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            if not _computes_as(layer, policy, keep_outputs=False):
                return False
        elif layer.dtype_policy.name != _wanted_policy(layer, policy, outputs):
            return False
    return True


def _rebuilt(model: Any, policy: str, *, keep_outputs: bool) -> Any:
    """The same graph of fresh layers under ``policy``, then ``model``'s weights copied in."""
    import keras

    import alexkit.layers  # noqa: F401  (custom layers registered for from_config)

    outputs = _output_layer_names(model) if keep_outputs else set()

    def clone(layer: Any) -> Any:
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.Model):
            return _rebuilt(layer, policy, keep_outputs=False)
        config = layer.get_config()
        config["dtype"] = _wanted_policy(layer, policy, outputs)
        return layer.__class__.from_config(config)

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def apply_precision(model: Any, precision: Any) -> tuple[Any, Any]:
    """``(model computing as chosen, the PrecisionChoice)``; ``(model, None)`` for None.

    Args:
        model: as for :func:`model_with_precision`.
        precision: None (the model as it is), a precision name (``auto`` resolved on
            this machine) or a :class:`alexkit.precision.PrecisionChoice` made already.

    ``auto`` never fails on an exported model: it runs as exported, and the choice says so
    (:func:`exported_choice`).

    Raises:
        UsageError: an unknown name, or bfloat16 asked for by name of an exported model.
    """
    from alexkit.precision import as_choice

    choice = as_choice(precision)
    if choice is None:
        return model, None
    if _is_exported_model(model):
        choice = exported_choice(choice)
    return model_with_precision(model, choice.policy), choice


def exported_choice(choice: Any) -> Any:
    """What ``choice`` becomes for an exported model: ``auto`` means "as exported" (float32
    in, whatever the file computes inside); an explicit name is kept (and refused later
    when it is not float32)."""
    import dataclasses

    if choice.requested.strip().lower() != "auto" or choice.policy == "float32":
        return choice
    return dataclasses.replace(
        choice, policy="float32", reason="auto: an exported model runs as it was exported"
    )


def _is_exported_model(model: Any) -> bool:
    return getattr(model, "card", None) is not None or not hasattr(model, "get_config")
