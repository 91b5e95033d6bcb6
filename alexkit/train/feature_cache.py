"""The training-view feature cache: a frozen prefix runs once per augmented view.

When a stage trains only the top of a chain model, every epoch runs the same frozen
layers on a new augmentation of every training image. With ``K`` views (``finetune
--feature-cache-views K``) the frozen prefix's output is kept for the first ``K`` epochs'
batches and later epochs feed the trainable top from it:

* **View v is epoch v's data.** Stage epoch ``v < K`` draws the batches the uncached
  pipeline draws (``make_train(epoch, steps)``: same seed, same augmentation, same
  order), runs the prefix on them and trains the top on its output; those features
  are what the cache keeps. With ``K`` equal to the stage's epochs a run sees the
  inputs of the uncached run.
* **Stage epoch e >= K reads view e mod K**, its rows in a fresh order drawn from the
  run seed and the epoch (the uncached pipeline also draws a uniform permutation per
  epoch), batched as the pipeline batches.
* **Where the cut is**: just below the first layer that trains or is stochastic
  (dropout, noise, random augmentation: any layer owning a ``SeedGenerator``). For a
  head-only stage on ``original`` that is fc6's output: ``drop6`` stays after the cut
  and draws a new mask every step, as it does without the cache.
* **Budget**: the cache needs views x rows x feature size x 4 bytes. Up to the memory
  budget (1 GiB; ``ALEXKIT_FEATURE_CACHE_MEMORY``, e.g. ``512M`` or ``4G``) it is held
  in memory; above it, it is streamed from ``RUN/feature-cache/`` (NumPy memory maps,
  deleted when the stage ends) if the disk has the room, else the stage trains
  uncached. One log line says which.
* **Kept views only**: a view no later epoch reads (``v >= epochs - K``) is used while
  its epoch trains and not kept.
* **Resume**: nothing of the cache is checkpointed. A view a resumed epoch needs is
  computed again from the same seeded pipeline, so a resumed run continues exactly as
  the uninterrupted one.

The cache is built per stage (a new stage has another frozen prefix) and never when
the stage trains everything, under ``tf.distribute`` or when the model is not a chain.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import UsageError

log = logging.getLogger(__name__)

# Views kept per image when not told (finetune's --feature-cache-views). Measured with
# benchmarks/feature_cache.py (the demo's task: digits-fewshot, 30 head-only epochs on 25
# images, 300 held out; AlexNet pretrained on digits 0-4; shared 2-core AMD EPYC).
# Held-out accuracy, seeds 0-2: K=0 (uncached) 0.857, K=2 0.865, K=4 0.858, K=8 0.878;
# seeds 0-5: K=0 0.871 +- 0.018, K=4 0.874 +- 0.029 (paired differences -0.027..+0.033):
# within the seed-to-seed spread. Fine-tune wall time against K=0: K=2 0.20-0.39x,
# K=4 0.25-0.50x, K=8 0.36-0.51x. K=4 keeps four augmentations of every image (dropout
# still draws new masks every step).
DEFAULT_VIEWS = 4
DEFAULT_MEMORY_BYTES = 1 << 30
MEMORY_ENV = "ALEXKIT_FEATURE_CACHE_MEMORY"
CACHE_DIR = "feature-cache"
# Room left free on the disk besides the cache itself when it streams from there.
_DISK_MARGIN = 256 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def resolve_views(views: int | None) -> int:
    """``views``, or :data:`DEFAULT_VIEWS` for None; 0 turns the cache off.

    Raises:
        UsageError: a negative count.
    """
    if views is None:
        return DEFAULT_VIEWS
    if int(views) < 0:
        raise UsageError(f"--feature-cache-views must be >= 0 (0: off). Received: {views}")
    return int(views)


def memory_budget(value: str | None = None) -> int:
    """Bytes the cache may hold in memory: ``value`` or ``$ALEXKIT_FEATURE_CACHE_MEMORY``
    (a byte count with an optional K/M/G/T suffix, binary units), default 1 GiB.

    Raises:
        UsageError: a value that is not a size.
    """
    text = os.environ.get(MEMORY_ENV) if value is None else value
    if text is None or not text.strip():
        return DEFAULT_MEMORY_BYTES
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1] if raw and raw[-1] in _UNITS else ""
    try:
        number = float(raw[: len(raw) - len(unit)])
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{MEMORY_ENV} must be a size such as 512M or 2G. Received: {text!r}")
    return int(number * _UNITS[unit])


def chain_layers(model: Any) -> list[Any] | None:
    """The model's layers (inputs left out) when each feeds the next, else None."""
    layers = [la for la in model.layers if la.__class__.__name__ != "InputLayer"]
    try:
        chained = (
            len(model.inputs) == 1
            and bool(layers)
            and layers[0].input is model.inputs[0]
            and all(layers[i].input is layers[i - 1].output for i in range(1, len(layers)))
        )
    except (AttributeError, ValueError, IndexError):
        chained = False
    return layers if chained else None


def is_stochastic(layer: Any) -> bool:
    """Whether a layer draws random numbers in training (dropout, noise, augmentation)."""
    import keras

    if isinstance(
        layer,
        (
            keras.layers.Dropout,
            keras.layers.GaussianNoise,
            keras.layers.GaussianDropout,
            keras.layers.AlphaDropout,
        ),
    ):
        return True
    return any(isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values())


def frozen_cut(layers: list[Any]) -> int | None:
    """Index of the first layer that trains or is stochastic: the layers below it are the
    cached prefix. None when there is no such prefix, it holds no weights (nothing to
    save), or nothing above it trains."""
    cut = next((i for i, la in enumerate(layers) if la.trainable or is_stochastic(la)), len(layers))
    if cut == 0 or cut == len(layers):
        return None
    if not any(la.weights for la in layers[:cut]):
        return None
    if not any(la.trainable and la.trainable_weights for la in layers[cut:]):
        return None
    return cut


def kept_views(views: int, epochs: int) -> int:
    """Views a stage of ``epochs`` keeps: those a later epoch (``v + K``) reads again."""
    return max(0, min(views, epochs - views))


@dataclass
class _View:
    """One stored view: the prefix's output and the labels, in the pipeline's order."""

    features: np.ndarray  # in memory or a memory map
    labels: np.ndarray
    rows: int


class TrainFeatureCache:
    """A stage's frozen prefix, its trainable suffix, and the views kept of its output.

    Build it with :func:`plan_train_cache`.

    Args:
        model: the compiled model of the stage.
        layers: its chain of layers.
        cut: index of the first layer above the prefix.
        views: K.
        stage_epochs: epochs of the stage.
        rows: rows one view holds at most.
        folder: where views are streamed from (disk), or None (memory).
        seed: the run seed (the order of reused views).
        batch_size: images per batch.
    """

    def __init__(
        self,
        model: Any,
        layers: list[Any],
        cut: int,
        *,
        views: int,
        stage_epochs: int,
        rows: int,
        folder: Path | None,
        seed: int,
        batch_size: int,
    ):
        import keras

        self.views = views
        self.kept = kept_views(views, stage_epochs)
        self.rows = rows
        self.folder = folder
        self.seed = seed
        self.batch_size = int(batch_size)
        self.cut_name = layers[cut - 1].name
        self.prefix = keras.Model(model.inputs[0], layers[cut - 1].output)
        inputs = keras.Input(tuple(layers[cut - 1].output.shape[1:]), name="cached_features")
        h = inputs
        for layer in layers[cut:]:
            h = layer(h)
        self.suffix = keras.Model(inputs, h, name=f"{model.name}_above_{self.cut_name}")
        self.feature_shape = tuple(int(d) for d in layers[cut - 1].output.shape[1:])
        self._stored: dict[int, _View] = {}

    def compile_like(self, model: Any, jit: bool | None) -> None:
        """Compile the suffix with the model's own optimizer (same variables, same slots)."""
        self.suffix.compile(
            optimizer=model.optimizer,
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile="auto" if jit is None else bool(jit),
        )

    def close(self) -> None:
        """Drop the views and delete the files streamed from disk."""
        self._stored.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    # ----------------------------------------------------------------- batches

    def batches(
        self,
        make_train: Callable[..., Any],
        *,
        epoch_index: int,
        stage_epoch: int,
        steps: int,
        natural: int,
        start: int,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The epoch's (features, labels) batches from step ``start`` on.

        Args:
            make_train: the engine's ``make_train(epoch, steps)``.
            epoch_index: the epoch's index over all stages (what seeds the pipeline).
            stage_epoch: the epoch's index in its stage.
            steps: batches per epoch.
            natural: batches of one pass over the training images.
            start: the first step to yield (after a mid-epoch resume).
        """
        view = stage_epoch % self.views
        stage_start = epoch_index - stage_epoch
        # A kept view holds a whole pass (or the epoch's batches when an epoch is longer):
        # with fewer steps than a pass, the epoch reads the first `steps` batches of it.
        fill_steps = max(steps, natural)
        if stage_epoch < self.views:
            keep = view < self.kept
            stream = make_train(epoch_index, fill_steps if keep else steps)
            yield from self._through_prefix(stream, view if keep else None, start, steps)
            return
        if view not in self._stored:  # after a resume: computed again, the same way
            stream = make_train(stage_start + view, fill_steps)
            for _ in self._through_prefix(stream, view, steps, steps):
                pass
        stored = self._stored[view]
        order = np.random.default_rng([self.seed, epoch_index]).permutation(stored.rows)
        size = self.batch_size
        for step in range(start, steps):
            index = order[step * size : (step + 1) * size]
            if index.size == 0:
                break
            yield np.asarray(stored.features[index]), stored.labels[index]

    def _through_prefix(
        self, stream: Any, keep: int | None, start: int, steps: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Run the prefix on a pipeline's batches; keep them as view ``keep``; yield the
        features of steps ``start`` to ``steps - 1``."""
        writer = _ViewWriter(self, keep) if keep is not None else None
        for step, (x, y) in enumerate(stream):
            features = np.asarray(self.prefix.predict_on_batch(x), dtype=np.float32)
            labels = np.asarray(y)
            if writer is not None:
                writer.add(features, labels)
            if start <= step < steps:
                yield features, labels
        if writer is not None:
            self._stored[keep] = writer.finish()


class _ViewWriter:
    """Fills one view, in memory or in a memory-mapped ``.npy`` file."""

    def __init__(self, cache: TrainFeatureCache, view: int):
        shape = (cache.rows, *cache.feature_shape)
        if cache.folder is None:
            self.features = np.empty(shape, np.float32)
        else:
            cache.folder.mkdir(parents=True, exist_ok=True)
            path = cache.folder / f"view-{view}.npy"
            self.features = np.lib.format.open_memmap(
                path, mode="w+", dtype=np.float32, shape=shape
            )
        self.labels: list[np.ndarray] = []
        self.rows = 0

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        end = self.rows + len(features)
        if end > len(self.features):  # more rows than planned: grow (in memory)
            grown = np.empty((max(end, 2 * len(self.features)), *self.features.shape[1:]), "f4")
            grown[: self.rows] = self.features[: self.rows]
            self.features = grown
        self.features[self.rows : end] = features
        self.labels.append(labels)
        self.rows = end

    def finish(self) -> _View:
        if isinstance(self.features, np.memmap):
            self.features.flush()
        labels = np.concatenate(self.labels) if self.labels else np.zeros((0,), np.int64)
        return _View(self.features, labels, self.rows)


def plan_train_cache(
    model: Any,
    *,
    views: int,
    stage_epochs: int,
    rows: int,
    budget: int,
    folder: Path,
    seed: int,
    batch_size: int,
) -> TrainFeatureCache | None:
    """The stage's training-view cache, or None (uncached), with one log line when the
    stage could use one.

    Args:
        model: the stage's compiled model (its layers frozen as the stage wants).
        views: K (0: off).
        stage_epochs: epochs of the stage.
        rows: rows of one view (a pass over the training images, or an epoch's images
            when epochs are longer than a pass).
        budget: bytes the cache may hold in memory.
        folder: where a cache over the budget is streamed from.
        seed: the run seed.
        batch_size: images per batch.
    """
    if views <= 0:
        return None
    layers = chain_layers(model)
    cut = frozen_cut(layers) if layers is not None else None
    if cut is None:
        return None
    name = layers[cut - 1].name
    size = int(np.prod([int(d) for d in layers[cut - 1].output.shape[1:]]))
    kept = kept_views(views, stage_epochs)
    need = kept * rows * size * 4
    what = f"{kept} view(s) of {rows} images at '{name}' ({_human(need)})"
    if need <= budget:
        log.info(
            "training: the top is fed from the output of the frozen layers up to %r: %s in "
            "memory (K=%d over %d epochs)",
            name, what, views, stage_epochs,
        )  # fmt: skip
        store = None
    else:
        free = free_disk_bytes(folder.parent)
        if free < need + _DISK_MARGIN:
            log.info(
                "training: uncached: the feature cache, %s, is over the memory budget (%s, %s) "
                "and the disk has %s free",
                what, _human(budget), MEMORY_ENV, _human(free),
            )  # fmt: skip
            return None
        log.info(
            "training: the feature cache, %s, is over the memory budget (%s, %s): streamed "
            "from %s",
            what, _human(budget), MEMORY_ENV, folder,
        )  # fmt: skip
        store = folder
    return TrainFeatureCache(
        model, layers, cut, views=views, stage_epochs=stage_epochs, rows=rows,
        folder=store, seed=seed, batch_size=batch_size,
    )  # fmt: skip


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the disk holding ``path``."""
    return shutil.disk_usage(path).free


def _human(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"
