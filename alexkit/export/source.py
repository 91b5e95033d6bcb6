"""What to export: a run, a ``.keras`` file, stored weights or a model, made to serve."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alexkit.errors import CheckpointError


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
