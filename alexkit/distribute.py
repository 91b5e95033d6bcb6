"""Data-parallel training with ``tf.distribute`` (TensorFlow backend).

Strategies (``get_strategy(kind)``):

* ``"none"``: the default (no-op) strategy: one device, whatever TensorFlow picks.
* ``"mirrored"``: ``MirroredStrategy`` over all local GPUs (synchronous all-reduce).
  Without GPUs it mirrors over the logical CPU devices (one unless
  :func:`use_logical_cpus` split the CPU; that is how the tests run it on CPU).
* ``"multiworker"``: ``MultiWorkerMirroredStrategy`` across hosts. Every host runs
  the same command with its own ``TF_CONFIG``, e.g. on host 0 of two::

      TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                  "task": {"type": "worker", "index": 0}}' alexkit pretrain ...

  Worker 0 is the chief: only it writes the run directory (:func:`is_chief`).
  Keras 3's ``model.save`` reads each worker's local copy of the variables, so
  chief-only saving does not block the others (tested), unlike TF-Keras 2's
  ``ModelCheckpoint``, which needed every worker to save. Every worker must see
  the same data order (fixed shuffle seed) and run the same number of steps.

Batch and learning-rate semantics:

* ``--batch-size`` is the **global** batch: the examples consumed by one optimiser
  step across all replicas. With R replicas each computes the gradient of
  ``B/R`` examples; Keras scales each replica's loss by ``1/R`` and the optimiser
  all-reduces (sums) the gradients, so one step equals a single-device step on the
  same ``B`` examples (tested: weights agree to float tolerance).
  ``B`` must be divisible by R.
* The learning rate is **not** scaled with the number of replicas: the global batch
  is what the rate is tuned for, and it does not change when you add devices. If
  you raise ``--batch-size`` to use more devices, scale the rate yourself (linear
  scaling, Goyal et al. 2017, with warm-up) — the paper's 0.01 is for batch 128.

What works and what does not (Keras 3.15, TensorFlow 2.21, measured on CPU):

* ``model.fit`` under ``MirroredStrategy`` works, given either a plain
  ``tf.data.Dataset`` of global batches (Keras splits each batch over the replicas)
  or :func:`distribute_dataset`'s output.
* ``model.fit`` under ``MultiWorkerMirroredStrategy`` FAILS in Keras 3.15 out of the
  box (keras-team/keras#20585; cause in ``MULTIWORKER_NOTES``). Call
  :func:`enable_multiworker_fit` on the compiled model and ``fit`` (plain dataset of
  global batches, or :func:`distribute_dataset`), ``validation_data``, metrics,
  ``evaluate`` and ``predict`` work (tested: two worker processes on 127.0.0.1 end
  with the single-process weights, losses and predictions).
* A custom loop (``strategy.run`` of a ``GradientTape`` step and
  ``optimizer.apply``) works under both strategies as well; :func:`train_steps`
  offers both paths (``method="fit"`` or ``"custom"``) so the tests check both.
* ``model.train_on_batch`` with per-replica batches (what ``alexkit pretrain`` does):
  each worker reads its slice of every global batch (``make_dataset(shard=...)``),
  :class:`ReplicaFeed` splits it over the local replicas, and
  :func:`enable_distributed_batches` lets Keras accept the per-replica values.
  Tested through the CLI: two workers and two logical CPUs against one process.
* XLA (``jit_compile=True``) is not used under strategies here (Keras' "auto"
  turns it off on CPU; on GPU keep the default or measure).

Typical use with ``fit``::

    strategy = get_strategy("multiworker")  # first, before any other TensorFlow work
    with strategy.scope():
        model = build_alexnet(num_classes=10)
        model.compile(optimizer=PaperSGD(), loss="sparse_categorical_crossentropy")
    enable_multiworker_fit(model)  # no-op unless multi-worker
    model.fit(train_batches, validation_data=val_batches, epochs=90)  # global batches
    if is_chief(strategy):
        model.save("run/model.keras")

and step by step (``alexkit.train``'s engine)::

    feed = ReplicaFeed(strategy)
    enable_distributed_batches(model)  # after compile
    for x, y in make_dataset(spec, training=True, batch_size=128,
                             shard=(feed.worker, feed.workers)):
        logs = model.train_on_batch(*feed.split(x, y), return_dict=True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from alexkit.errors import UsageError

__all__ = [
    "STRATEGIES",
    "MULTIWORKER_NOTES",
    "get_strategy",
    "use_logical_cpus",
    "is_chief",
    "shard_and_batch",
    "distribute_dataset",
    "enable_multiworker_fit",
    "enable_distributed_batches",
    "ReplicaFeed",
    "StepsResult",
    "train_steps",
]

STRATEGIES = ("none", "mirrored", "multiworker")

MULTIWORKER_NOTES = """\
Keras 3 + MultiWorkerMirroredStrategy (keras-team/keras#20585), Keras 3.15 / TF 2.21:
- model.fit / evaluate / predict fail out of the box with
  "ValueError: Attempt to convert a value (PerReplica:{...}) ... to a Tensor": before
  training, Keras' TF trainer (_maybe_symbolic_build) reduces the first *nested* (x, y)
  batch with strategy.reduce("MEAN", batch) only to learn its shapes, and
  CollectiveAllReduceStrategy's reduce does not accept nested structures (Mirrored's
  does). It fails the same with a plain tf.data.Dataset (Keras-distributed) and with
  distribute_datasets_from_function. Next, the per-step logs (0-d loss/metrics) are
  reduced with strategy.reduce("MEAN", v, axis=0): "Invalid reduction dimension 0 for
  input with 0 dimensions". Fix for both: enable_multiworker_fit(model) after compile
  (shape probe from the first local batch; logs returned with a leading axis); tested.
- A custom loop (strategy.run + GradientTape + optimizer.apply) works unpatched.
- Create the strategy first in the process, before any other TensorFlow op or Keras
  object (TensorFlow requires the collective runtime to be set up at startup).
- Build AND compile the model inside strategy.scope().
- Both inputs work once patched (tested): a plain tf.data.Dataset of global batches
  (Keras shards it; finite, with validation_data, metrics, evaluate, predict) and
  distribute_dataset() (exact per-example sharding; infinite + steps_per_epoch).
  Every worker must produce the same number of batches, or the last collective waits
  forever (TensorFlow behaviour, not exercised by the tests).
- All workers must run the same number of steps; only the chief saves (Keras 3's
  model.save involves no collective, so the others do not wait for it).
"""


def use_logical_cpus(count: int) -> None:
    """Split the first CPU into ``count`` logical devices (for CPU tests of ``mirrored``).

    Must run before TensorFlow initialises its devices, i.e. before any tensor is
    created in the process.

    Raises:
        UsageError: TensorFlow is already initialised or ``count`` < 1.
    """
    import tensorflow as tf

    if count < 1:
        raise UsageError(f"use_logical_cpus needs count >= 1. Received: count={count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError as err:
        raise UsageError(
            "cannot split the CPU into logical devices after TensorFlow started; "
            "call use_logical_cpus() first thing in the process."
        ) from err


def _read_tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UsageError(
            "strategy 'multiworker' needs the TF_CONFIG environment variable, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\' on host 0.'
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        index = int(config["task"]["index"])
        kind = config["task"]["type"]
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(
            f"TF_CONFIG is not valid ({err!r}); it needs cluster.worker (list of host:port) "
            "and task.type/task.index."
        ) from err
    if not isinstance(workers, list) or not workers or not 0 <= index < len(workers):
        raise UsageError(
            f"TF_CONFIG task.index={index} is outside cluster.worker "
            f"({len(workers) if isinstance(workers, list) else workers!r} workers)."
        )
    if kind not in {"worker", "chief"}:
        raise UsageError(f"TF_CONFIG task.type must be 'worker' or 'chief'. Received: {kind!r}")
    return config


def get_strategy(kind: str = "none", *, devices: list[str] | None = None) -> Any:
    """Return a ``tf.distribute.Strategy`` by name.

    Args:
        kind: ``"none"``, ``"mirrored"`` or ``"multiworker"``.
        devices: for ``mirrored`` only, explicit device names (default: all GPUs,
            else all logical CPUs).

    Returns:
        The strategy. Build and compile the model inside ``strategy.scope()``.

    Raises:
        UsageError: unknown kind, or ``multiworker`` without a valid ``TF_CONFIG``.

    Example:
        >>> strategy = get_strategy("mirrored")
        >>> with strategy.scope():
        ...     model = build_alexnet(num_classes=10)
        ...     model.compile(optimizer=PaperSGD(), loss="sparse_categorical_crossentropy")
    """
    if kind not in STRATEGIES:
        raise UsageError(f"unknown --strategy {kind!r}; choose one of {list(STRATEGIES)}.")
    if kind == "multiworker":
        _read_tf_config()  # validate before TensorFlow starts gRPC servers
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        if devices is None:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        cross_device_ops = None
        if not any("GPU" in d.upper() for d in devices):
            # NCCL is GPU-only; reduce on one CPU device instead.
            cross_device_ops = tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross_device_ops)
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: Any | None = None) -> bool:
    """True on the process that should write outputs (worker 0, or not multi-worker)."""
    if strategy is not None and getattr(strategy.extended, "should_checkpoint", True) is False:
        return False
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    try:
        config = json.loads(raw)
        task = config.get("task", {})
        kind, index = task.get("type"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError):
        return True  # not a usable cluster spec: behave as a single process
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in config.get("cluster", {})


def shard_and_batch(elements: Any, global_batch_size: int, input_context: Any) -> Any:
    """This input pipeline's share of ``elements``, batched per replica.

    Shards *before* batching, by example index: pipeline ``i`` of ``N`` keeps examples
    ``i, i+N, ...`` and batches ``B/R`` of them (R = replicas in sync). Step ``k`` then
    consumes exactly examples ``kB .. kB+B-1`` across all replicas, the same global
    batch a single device sees. Shuffle (with a fixed seed) before calling this so
    every worker shuffles identically.

    Raises:
        UsageError: ``global_batch_size`` not divisible by the number of replicas.
    """
    replicas = input_context.num_replicas_in_sync
    if global_batch_size % replicas:
        raise UsageError(
            f"--batch-size {global_batch_size} is the global batch and must be divisible "
            f"by the {replicas} replicas in sync."
        )
    per_replica = input_context.get_per_replica_batch_size(global_batch_size)
    if input_context.num_input_pipelines > 1:
        elements = elements.shard(
            input_context.num_input_pipelines, input_context.input_pipeline_id
        )
    return elements.batch(per_replica, drop_remainder=True)


def distribute_dataset(
    strategy: Any, elements_fn: Callable[[], Any], global_batch_size: int, *, prefetch: int = 2
) -> Any:
    """A distributed dataset of global batches, from an unbatched dataset factory.

    Args:
        strategy: the strategy to distribute over.
        elements_fn: returns an *unbatched* ``tf.data.Dataset`` of ``(x, y)`` examples,
            identically ordered on every worker (fixed shuffle seed).
        global_batch_size: examples per optimiser step over all replicas.
        prefetch: batches to prefetch per pipeline.

    Returns:
        A ``tf.distribute.DistributedDataset`` to pass to ``model.fit`` or iterate
        in a custom loop.
    """
    import tensorflow as tf

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        batched = shard_and_batch(elements_fn(), global_batch_size, input_context)
        options = tf.data.Options()
        # Already sharded by hand; stop tf.data from sharding again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return batched.with_options(options).prefetch(prefetch)

    return strategy.distribute_datasets_from_function(dataset_fn)


def _local_first(strategy: Any, value: Any) -> Any:
    """The first local replica's part of a per-replica value (anything else as is)."""
    import tensorflow as tf

    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def enable_multiworker_fit(model: Any) -> Any:
    """Work around keras-team/keras#20585 so ``model.fit`` runs under multi-worker.

    Keras 3's TensorFlow trainer learns the input shapes before the first step by
    ``strategy.reduce("MEAN", first_batch)``; ``MultiWorkerMirroredStrategy`` cannot
    reduce a nested ``(x, y)`` batch and ``fit``/``evaluate``/``predict`` raise
    "Attempt to convert a value (PerReplica...) to a Tensor". This replaces that
    shape probe, for this model instance only, by the first *local* replica's batch
    (same shapes, no collective). A no-op for every other strategy. Call it after
    ``compile`` and before ``fit``.

    Second failure, once the first is fixed: the per-step logs (scalar loss and
    metrics) are averaged over workers with ``strategy.reduce("MEAN", v, axis=0)``,
    which fails on 0-d tensors ("Invalid reduction dimension 0 for input with 0
    dimensions"). ``train_step``/``test_step`` of this instance are wrapped to
    return the logs with a leading axis of 1, which that reduction turns back into
    the scalar cross-worker mean.

    Returns:
        The same model.
    """
    import tensorflow as tf

    strategy = getattr(model, "distribute_strategy", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    if not hasattr(model, "_maybe_symbolic_build"):
        return model  # a Keras release where the probe changed: nothing to patch
    if getattr(model, "_alexkit_multiworker", False):
        return model  # already patched (compile() keeps instance attributes)
    model._alexkit_multiworker = True
    original = model._maybe_symbolic_build

    def local_first(value: Any) -> Any:
        return _local_first(strategy, value)

    def maybe_symbolic_build(iterator: Any = None, data_batch: Any = None) -> Any:
        if iterator is not None and data_batch is None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local_first, next(batches))
                break
        return original(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build

    def with_leading_axis(logs: Any) -> Any:
        return tf.nest.map_structure(
            lambda v: tf.reshape(v, [1]) if tf.is_tensor(v) and v.shape.rank == 0 else v, logs
        )

    for name in ("train_step", "test_step"):
        step = getattr(model, name)
        setattr(model, name, lambda data, step=step: with_leading_axis(step(data)))
    return model


def enable_distributed_batches(model: Any) -> Any:
    """Let ``train_on_batch`` take per-replica batches (``DistributedValues``).

    Keras 3.15's ``train_on_batch`` hands its batch to ``_maybe_symbolic_build``, which
    reads ``.shape`` and fails on a ``PerReplica`` value ("'PerReplica' object has no
    attribute 'shape'"); the step itself (``strategy.run``) accepts per-replica values.
    This makes the shape probe read the first local replica's part, for this model
    instance only, under ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy``, and
    applies :func:`enable_multiworker_fit` (needed for the step's logs under
    multi-worker). A no-op without a strategy. Call after ``compile``.

    With it, ``model.train_on_batch(*feed.split(x, y))`` (see :class:`ReplicaFeed`)
    gives each replica its own slice: one step on ``R`` replicas equals one
    single-device step on the concatenated batch (tested, both strategies).

    Returns:
        The same model.
    """
    import tensorflow as tf

    strategy = getattr(model, "distribute_strategy", None)
    kinds = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    if not isinstance(strategy, kinds) or not hasattr(model, "_maybe_symbolic_build"):
        return model
    enable_multiworker_fit(model)
    if getattr(model, "_alexkit_replica_batches", False):
        return model
    model._alexkit_replica_batches = True
    probe = model._maybe_symbolic_build

    def maybe_symbolic_build(iterator: Any = None, data_batch: Any = None) -> Any:
        if data_batch is not None:
            data_batch = tf.nest.map_structure(lambda v: _local_first(strategy, v), data_batch)
        return probe(iterator=iterator, data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
    return model


class ReplicaFeed:
    """Where this process sits in a strategy, and how it splits its batches.

    Attributes:
        replicas: replicas in sync over all workers (R).
        local: replicas on this worker (L).
        workers: ``R // L`` input pipelines, one per worker.
        worker: this worker's index (its replicas are ``worker*L .. worker*L+L-1``).

    Under multi-worker each worker reads ``shard=(worker, workers)`` of every global
    batch (:func:`alexkit.data.make_dataset`) and :meth:`split` cuts that local batch
    into ``L`` equal per-replica parts, in replica order: the global batch is the
    concatenation of every replica's part, as a single device would see it.
    """

    def __init__(self, strategy: Any):
        import tensorflow as tf

        self.strategy = strategy
        ids = strategy.experimental_local_results(
            strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.constant(ctx.replica_id_in_sync_group)
            )
        )
        ids = sorted(int(v) for v in ids)
        self.replicas = int(strategy.num_replicas_in_sync)
        self.local = len(ids)
        self.base = ids[0]
        self.workers = max(1, self.replicas // self.local)
        self.worker = self.base // self.local

    def split(self, *tensors: Any) -> tuple[Any, ...]:
        """Each tensor (local batch first axis) as per-replica ``DistributedValues``."""
        rows = int(tensors[0].shape[0])
        if rows % self.local:
            raise UsageError(f"a local batch of {rows} cannot be split over {self.local} replicas.")
        per = rows // self.local

        def part(t: Any) -> Any:
            return self.strategy.experimental_distribute_values_from_function(
                lambda ctx: t[(ctx.replica_id_in_sync_group - self.base) * per :][:per]
            )

        return tuple(part(t) for t in tensors)

    def mean(self, values: dict[str, Any]) -> dict[str, Any]:
        """The mean of each number over the workers (identical on every worker).

        One all-reduce; every worker must call it at the same point (it runs even for
        an empty dict, so it doubles as a barrier). Used so that decisions taken from
        validation metrics (LR plateau, best model, early stopping) are the same on
        every worker even if float rounding differed. Values that are not finite
        numbers (``None`` for an undefined metric) pass through unchanged.
        """
        import math

        import tensorflow as tf

        if self.workers == 1:
            return dict(values)
        keys = sorted(
            k
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        )
        # Every worker sends the same length: the metric names are fixed by the run.
        vector = tf.constant([float(values[k]) for k in keys] + [0.0], tf.float64)
        summed = self.strategy.reduce(
            tf.distribute.ReduceOp.SUM,
            self.strategy.experimental_distribute_values_from_function(
                lambda ctx: vector / self.replicas
            ),
            axis=None,
        )
        out = dict(values)
        out.update(zip(keys, summed.numpy().tolist()[: len(keys)], strict=True))
        return out


@dataclass
class StepsResult:
    """What :func:`train_steps` returns.

    Attributes:
        weights: the model's weights after training (numpy).
        mean_loss: mean training loss over the steps (the global-batch mean per step).
        eval_loss: ``model.evaluate`` loss over the first ``eval_steps`` global batches
            after training (``method="fit"`` with ``eval_steps > 0``; else None).
    """

    weights: list[np.ndarray]
    mean_loss: float
    eval_loss: float | None = None


def train_steps(
    model_fn: Callable[[], Any],
    elements_fn: Callable[[], Any],
    steps: int,
    strategy: Any,
    *,
    global_batch_size: int,
    optimizer_fn: Callable[[], Any] | None = None,
    loss: str = "sparse_categorical_crossentropy",
    method: str = "fit",
    eval_steps: int = 0,
) -> StepsResult:
    """Build a model under ``strategy`` and train it for ``steps`` global batches.

    Shared by the distribution tests and usable as a smoke test of a cluster (every
    worker runs it; results agree across workers).

    Args:
        model_fn: returns a fresh, deterministic ``keras.Model`` (seeded weights).
        elements_fn: returns an unbatched ``tf.data.Dataset`` of ``(x, y)``.
        steps: optimiser steps to run.
        strategy: from :func:`get_strategy`.
        global_batch_size: examples per step across all replicas.
        optimizer_fn: returns the optimiser (default: ``PaperSGD()``).
        loss: a Keras loss name.
        method: ``"fit"`` (``model.fit``) or ``"custom"`` (``strategy.run`` loop).
        eval_steps: with ``"fit"``, also ``model.evaluate`` this many global batches.

    Returns:
        A :class:`StepsResult`.
    """
    import keras
    import tensorflow as tf

    from alexkit.optim import PaperSGD

    if method not in {"fit", "custom"}:
        raise UsageError(f"train_steps method must be 'fit' or 'custom'. Received: {method!r}")
    optimizer_fn = optimizer_fn or PaperSGD
    with strategy.scope():
        model = model_fn()
        optimizer = optimizer_fn()
        if method == "fit":
            model.compile(optimizer=optimizer, loss=loss, jit_compile=False)

    def make_dataset() -> Any:
        return distribute_dataset(strategy, lambda: elements_fn().repeat(), global_batch_size)

    if method == "fit":
        enable_multiworker_fit(model)
        history = model.fit(make_dataset(), epochs=1, steps_per_epoch=steps, verbose=0)
        eval_loss = None
        if eval_steps > 0:
            eval_loss = float(model.evaluate(make_dataset(), steps=eval_steps, verbose=0))
        return StepsResult(
            [np.asarray(w) for w in model.get_weights()],
            float(history.history["loss"][-1]),
            eval_loss,
        )

    loss_obj = keras.losses.get(loss)

    @tf.function
    def step(iterator: Any) -> Any:
        def replica_step(x: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                per_example = loss_obj(y, model(x, training=True))
                # Sum / global batch per replica, so the summed all-reduce is the mean.
                scaled = tf.reduce_sum(per_example) / global_batch_size
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return scaled

        x, y = next(iterator)
        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    iterator = iter(make_dataset())
    losses = [float(step(iterator)) for _ in range(steps)]
    return StepsResult([np.asarray(w) for w in model.get_weights()], float(np.mean(losses)))
