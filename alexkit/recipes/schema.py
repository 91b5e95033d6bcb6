"""The recipe's schema: frozen dataclasses, their defaults and the allowed values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alexkit.data.augment import AugmentConfig
from alexkit.variants import IMAGE_SIZES, WEIGHT_LAYERS

# The input size each variant's classifier is built for (from alexkit.variants, which
# imports no Keras, so reading a recipe never does either).
VARIANT_IMAGE_SIZE: dict[str, int] = IMAGE_SIZES
COLORS = ("rgb", "grayscale")
OPTIMIZERS = ("sgd", "adam")
# Layers a stage may train from: the weight layers (not every layer name of the model).
LAYER_NAMES = WEIGHT_LAYERS
METRICS = (
    "accuracy",
    "auc",
    "pr_auc",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
    "f1",
    "top5",
)
MONITORS = ("loss", *METRICS)
MODES = ("auto", "min", "max")
CLASS_WEIGHT_MODES = ("balanced", "none")
BUILTIN_DATA = ("digits",)
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001}
# Keys left out of the fingerprint: they describe a recipe but do not change training.
FINGERPRINT_IGNORES = ("name", "description", "dataset", "licence", "citation")


@dataclass(frozen=True)
class DatasetHint:
    """Where users get the data and how it must be laid out on disk."""

    url: str = ""
    layout: str = ""
    notes: str = ""


@dataclass(frozen=True)
class HeadConfig:
    """The new classifier head.

    Attributes:
        dropout: dropout rate before the new layers (0 <= dropout < 1).
        hidden_units: if set, a ReLU Dense layer of this width (plus dropout) between
            ``fc7`` and ``predictions``; None keeps AlexNet's head shape.
    """

    dropout: float = 0.5
    hidden_units: int | None = None


@dataclass(frozen=True)
class Stage:
    """One phase of fine-tuning.

    Attributes:
        name: label used in logs and history.
        epochs: epochs to run in this stage (>= 1).
        trainable_from: the first trainable layer (``conv1``..``conv5``, ``fc6``, ``fc7``,
            ``predictions``); everything before it is frozen. None trains the head only.
        optimizer: ``sgd`` (with momentum) or ``adam``.
        lr: learning rate.
        momentum: SGD momentum (ignored by Adam).
    """

    name: str = "head"
    epochs: int = 10
    trainable_from: str | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when the validation ``metric`` has not improved for ``patience`` epochs.

    ``mode`` is resolved: ``min`` for loss, ``max`` for every other metric.
    """

    metric: str = "loss"
    patience: int = 5
    mode: str = "min"


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Build with :func:`load_recipe` or :func:`recipe_from_dict`.

    Metric names (``monitor``, ``early_stopping.metric``) are validation metrics without
    the ``val_`` prefix. ``class_weights`` is ``"balanced"``, ``"none"`` or a mapping
    from class name to weight (classes not listed weigh 1). ``media`` holds the
    ``alexkit.media.MediaOptions`` of a ``[media]`` table (frame sampling, CT windows,
    volume slicing), None when the recipe has none.
    """

    name: str = "default"
    description: str = ""
    dataset: DatasetHint = field(default_factory=DatasetHint)
    licence: str = ""
    citation: str = ""
    variant: str = "original"
    classes: tuple[str, ...] | None = None
    color: str = "rgb"
    image_size: int = IMAGE_SIZES["original"]
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    class_weights: str | dict[str, float] = "none"
    head: HeadConfig = field(default_factory=HeadConfig)
    stages: tuple[Stage, ...] = (Stage(),)
    weight_decay: float = 5e-4
    early_stopping: EarlyStopping | None = None
    metrics: tuple[str, ...] = ("accuracy",)
    monitor: str = "accuracy"
    batch_size: int = 32
    seed: int = 0
    val_fraction: float = 0.2
    builtin_data: str | None = None
    # alexkit.media.MediaOptions for video/DICOM/NIfTI sources ([media] table), or None.
    media: Any = None
    # Where the recipe came from (file path or "<dict>"): not part of its identity.
    source: str = field(default="<defaults>", compare=False)

    @property
    def grayscale(self) -> bool:
        """True when images are read as grey and replicated to three channels."""
        return self.color == "grayscale"

    @property
    def total_epochs(self) -> int:
        """Epochs over all stages."""
        return sum(stage.epochs for stage in self.stages)

    @property
    def monitor_mode(self) -> str:
        """``min`` when monitoring loss, else ``max``."""
        return mode_for(self.monitor)


def mode_for(metric: str) -> str:
    """``min`` for loss, ``max`` for every other metric."""
    return "min" if metric == "loss" else "max"
