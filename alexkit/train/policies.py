"""The per-epoch decisions of the engine, each a small object with its own state.

At every epoch end the engine asks them in this order (never change it: resumed and
multi-worker runs rely on it): :class:`BestModel` (keep the model when the monitored
metric improved; ``model.keras`` is written from it when the run ends),
:class:`EarlyStop` (end the stage after ``patience`` epochs without improvement),
:class:`Schedule` (hand the epoch's error to the LR schedule), :class:`Checkpoints`
(an atomic checkpoint) and :class:`HistoryLog`
(``history.csv`` and TensorBoard). Their state travels in the checkpoint's
``state.json`` under the keys each one names.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import CheckpointError, UsageError
from alexkit.runs import FROZEN_PREFIX, CheckpointManager, LoadedCheckpoint, RunDir
from alexkit.train.common import ProgressFn, emit
from alexkit.train.plan import StagePlan, monitor_mode


def monitored(row: dict[str, Any], metric: str) -> float | None:
    """``row[metric]``; without validation data a ``val_`` metric falls back to the train one."""
    value = row.get(metric)
    if value is None and metric.startswith("val_"):
        value = row.get(metric[4:])
    return None if value is None else float(value)


def better(value: float | None, best: float | None, mode: str) -> bool:
    """Whether ``value`` improves on ``best`` (``mode`` ``min``/``max``; NaN never does)."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


class BestModel:
    """Keeps the best model by the monitored metric (state key ``best``).

    Args:
        monitor: the metric (``val_accuracy``, ``loss``, ...).
        save: stores the improved model (the engine keeps its changed variables in
            ``checkpoints/best-<epoch>``; ``model.keras`` is written when the run ends).
    """

    def __init__(self, monitor: str, save: Callable[[Any], None]):
        self.monitor = monitor
        self.mode = monitor_mode(monitor)
        self.save = save
        self.value: float | None = None
        self.epoch: int | None = None
        # Kept in memory so the final evaluation need not reload model.keras.
        self.weights: list[np.ndarray] | None = None

    def update(self, row: dict[str, Any], model: Any) -> bool:
        """Record the epoch in ``row``; save the model if it improved. Returns improved."""
        value = monitored(row, self.monitor)
        improved = better(value, self.value, self.mode)
        if improved:
            self.value, self.epoch = value, int(row["epoch"])
            self.save(model)
            self.weights = [np.array(v.numpy()) for v in model.weights]
        return improved

    def error(self, row: dict[str, Any]) -> float | None:
        """The epoch's error for an LR schedule: the monitored loss, or 1 - the metric."""
        value = monitored(row, self.monitor)
        if value is None:
            return None
        return value if self.mode == "min" else 1.0 - value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.epoch = state["value"], state["epoch"]


class EarlyStop:
    """Ends a stage when its metric stalls (``stage_best``, ``stage_wait``, ``stage_done``).

    It counts within the stage, on the stage's own ``early_stopping`` metric; every new
    stage starts afresh (:meth:`reset`).
    """

    def __init__(self) -> None:
        self.best: float | None = None
        self.wait = 0
        self.done = False

    def reset(self) -> None:
        self.best, self.wait, self.done = None, 0, False

    def update(self, row: dict[str, Any], config: dict[str, Any] | None) -> None:
        """Count the epoch in ``row``; mark ``row["early_stop"]`` when the stage ends.

        Args:
            row: the epoch's history row.
            config: the stage's ``{"metric", "patience", "mode"}``, or None (never stops).
        """
        if not config:
            return
        value = monitored(row, config["metric"])
        if better(value, self.best, config["mode"]):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= int(config["patience"]):
            self.done = True
            row["early_stop"] = 1

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["stage_best"], state["stage_wait"]
        self.done = bool(state["stage_done"])


class Schedule:
    """The stage's LR schedule (state key ``schedule``): the rate of each epoch, and the
    epoch's error handed to it at the end (a plateau schedule decides on it)."""

    def __init__(self) -> None:
        self.schedule: Any = None

    def start_stage(self, stage: StagePlan, saved: dict[str, Any] | None) -> None:
        """Build the stage's schedule; continue from ``saved`` (a checkpoint's) if given."""
        from alexkit.optim import build_lr_schedule

        params = {k: v for k, v in stage.schedule.items() if k != "kind"}
        self.schedule = build_lr_schedule(
            stage.schedule.get("kind", "constant"), stage.lr, **params
        )
        if saved is not None:
            self.schedule.load_state_dict(saved)

    def lr(self, stage_epoch: int) -> float:
        return float(self.schedule.lr_for_epoch(stage_epoch))

    def end_epoch(self, stage_epoch: int, error: float | None) -> None:
        self.schedule.end_epoch(stage_epoch, error)

    def state_dict(self) -> dict[str, Any] | None:
        return self.schedule.state_dict() if self.schedule is not None else None


class Checkpoints:
    """Atomic checkpoints (model variables, optimizer variables, loop state) and model files.

    The one place that decides what a checkpoint holds and how it is put back.

    A checkpoint holds what can change in the stage: the variables of the layers that
    train (and the layers' state, e.g. dropout RNG), the optimizer's slots and the loop
    state. The variables of frozen layers are left out (a *lean* checkpoint): when they
    still hold the weights the run started from they are referenced by their digest
    (checked on resume against the freshly built model), otherwise they are written once
    per stage to ``checkpoints/frozen-<digest>.npz``. A stage that trains everything
    (``pretrain``) writes complete checkpoints, as do runs from before lean checkpoints;
    both are read back as before.

    Args:
        run: the run directory written to.
        every: also checkpoint every N global steps (None: epoch ends only).
        writes: False on non-chief workers, which write nothing.
        restore_dir: where to resume from when not ``run``'s own checkpoints (a worker
            resumes from the chief's).
        progress: event callback.
        keep: how many checkpoints to keep (the newest). 0 writes none while training
            (a crash cannot be resumed; Ctrl-C still saves one for ``--resume``) and
            removes the checkpoints folder when the run ends (:meth:`finish`).
    """

    def __init__(
        self,
        run: RunDir,
        *,
        every: int | None,
        writes: bool = True,
        restore_dir: Path | None = None,
        progress: ProgressFn | None = None,
        keep: int = 2,
    ):
        if int(keep) < 0:
            raise UsageError(f"--keep-checkpoints must be 0 or more. Received: {keep}")
        self.every = every
        self.writes = writes
        self.progress = progress
        self.keep = int(keep)
        self.manager = CheckpointManager(run.checkpoint_dir, keep=self.keep or 2)
        self.restore_from = CheckpointManager(restore_dir) if restore_dir else self.manager
        # Digest of every model variable as built (the run's starting weights), by index.
        self.initial: list[str] | None = None
        # The stage's frozen variables: a checkpoint layout, or None (complete checkpoints).
        self.layout: dict[str, Any] | None = None
        # An epoch that improved, whose checkpoint is to be kept as the best model.
        self.pending_best: int | None = None

    def due(self, global_step: int) -> bool:
        """Whether step ``global_step`` ends a ``checkpoint_every`` period."""
        return bool(self.every) and global_step % self.every == 0

    def note_initial(self, model: Any) -> None:
        """Remember the digests of the freshly built model's variables (its starting weights)."""
        self.initial = [array_digest(v.numpy()) for v in model.variables]

    def start_stage(self, model: Any) -> None:
        """Decide what the stage's checkpoints leave out: the variables of frozen layers.

        Frozen variables equal to the starting weights are referenced by digest; others
        are written once to ``frozen-<digest>.npz`` (by the first checkpoint that needs it).
        """
        variables = list(model.variables)
        frozen_ids = frozen_variable_ids(model)
        frozen = [i for i, v in enumerate(variables) if id(v) in frozen_ids]
        if not frozen:
            self.layout = None
            return
        arrays = [np.asarray(variables[i].numpy()) for i in frozen]
        digests = [array_digest(a) for a in arrays]
        initial = self.initial is not None and len(self.initial) == len(variables)
        if initial and all(self.initial[i] == d for i, d in zip(frozen, digests, strict=True)):
            source = "initial"
        else:
            source = f"{FROZEN_PREFIX}{array_digest(np.array(digests))}.npz"
        self.layout = {
            "version": 1,
            "variables": len(variables),
            "frozen": frozen,
            "source": source,
            "digests": digests,
        }

    def save(self, model: Any, state: dict[str, Any], *, interrupted: bool = False) -> Path:
        """Write a checkpoint of ``model``, its optimizer and ``state``; return its folder.

        With ``keep=0`` only an ``interrupted`` run writes one.
        """
        if not self.writes or (self.keep == 0 and not interrupted):
            return self.restore_from.directory
        state = dict(state)
        model_arrays, layout = self._lean_arrays(model)
        optimizer_variables = list(model.optimizer.variables)
        optimizer_arrays = [np.asarray(v.numpy()) for v in optimizer_variables]
        # Optimizer slot names derive from layer names, so they identify slots across runs.
        state["optimizer_paths"] = [v.path for v in optimizer_variables]
        path = self.manager.save(model_arrays, optimizer_arrays, state, layout=layout)
        if self.pending_best is not None:
            self.manager.save_best(self.pending_best, path)
            self.pending_best = None
        emit(self.progress, "checkpoint", path=str(path), global_step=state["global_step"])
        return path

    def _lean_arrays(self, model: Any) -> tuple[list[np.ndarray], dict[str, Any] | None]:
        """The model arrays a checkpoint stores, and its layout (None: all of them)."""
        variables = list(model.variables)
        layout = self.layout
        if layout is not None and layout["variables"] != len(variables):
            layout = None  # the model changed shape since the stage began: save it whole
        skip = set(layout["frozen"]) if layout else set()
        if layout and layout["source"] != "initial":
            # Written once per stage, before the first checkpoint that refers to it.
            frozen = [np.asarray(variables[i].numpy()) for i in layout["frozen"]]
            self.manager.save_frozen(layout["source"], frozen)
        arrays = [np.asarray(v.numpy()) for i, v in enumerate(variables) if i not in skip]
        return arrays, layout

    def save_best(self, model: Any, epoch: int) -> None:
        """Mark ``epoch`` the best: the checkpoint that ends it is kept as ``best-<epoch>``.

        No bytes of its own: the epoch-end checkpoint written next is hard-linked.
        """
        self.pending_best = int(epoch)

    def load_best(self, model: Any, epoch: int | None) -> list[np.ndarray] | None:
        """The best model's weights (``model.weights`` order) saved for ``epoch``, or None.

        Call it on the freshly built model, before a checkpoint is restored into it.
        """
        if epoch is None:
            return None
        loaded = self.restore_from.load_best(int(epoch))
        if loaded is None:
            return None
        variables = list(model.variables)
        full = self._assemble(variables, loaded)
        by_id = {id(v): a for v, a in zip(variables, full, strict=True)}
        return [by_id[id(w)] for w in model.weights]

    def _assemble(self, variables: list[Any], loaded: LoadedCheckpoint) -> list[np.ndarray]:
        """Every variable's value from a lean save; frozen ones from their source."""
        layout = loaded.layout
        if layout is None:
            if len(loaded.model_arrays) != len(variables):
                raise CheckpointError(
                    f"{loaded.folder.name} holds {len(loaded.model_arrays)} model variables "
                    f"but the run has {len(variables)}; it is from another model."
                )
            return list(loaded.model_arrays)
        if layout["variables"] != len(variables):
            raise CheckpointError(
                f"{loaded.folder.name} is of a model with {layout['variables']} "
                f"variables but the run has {len(variables)}; it is from another model."
            )
        frozen = list(layout["frozen"])
        if layout["source"] == "initial":
            self._check_initial(variables, layout, loaded.folder.name)
            frozen_arrays = [np.asarray(variables[i].numpy()) for i in frozen]
        else:
            frozen_arrays = list(loaded.frozen_arrays or [])
        skip = set(frozen)
        stored = iter(loaded.model_arrays)
        from_frozen = dict(zip(frozen, frozen_arrays, strict=True))
        return [from_frozen[i] if i in skip else next(stored) for i in range(len(variables))]

    def _check_initial(self, variables: list[Any], layout: dict[str, Any], name: str) -> None:
        built = self.initial or [array_digest(v.numpy()) for v in variables]
        if any(built[i] != d for i, d in zip(layout["frozen"], layout["digests"], strict=True)):
            raise CheckpointError(
                f"the frozen layers of {name} hold the run's starting weights, but the "
                "weights loaded now differ from them (was the --weights file replaced?); "
                "resume with the original weights or start again with --force."
            )

    def load_latest(self) -> LoadedCheckpoint:
        """The newest complete checkpoint (with its layout and frozen arrays, if lean)."""
        return self.restore_from.load_latest_checkpoint()

    def finish(self) -> None:
        """At the end of a run: with ``keep=0`` remove every checkpoint."""
        if self.writes and self.keep == 0:
            self.manager.clear()

    def save_model(self, model: Any, path: Path) -> None:
        """Save ``model`` as a ``.keras`` file atomically (chief only)."""
        if not self.writes:
            return
        from alexkit.paths import atomic_path

        with atomic_path(path, suffix=".keras") as tmp:
            model.save(tmp)

    def restore_model(self, model: Any, loaded: LoadedCheckpoint | Sequence[np.ndarray]) -> None:
        """Put a checkpoint's model arrays back (all of them, or a lean checkpoint's parts).

        Raises:
            CheckpointError: the checkpoint is from another model, or the starting weights
                it refers to are not the ones the run was built with now.
        """
        if not isinstance(loaded, LoadedCheckpoint):
            assign(model.variables, loaded, "model")
            return
        layout = loaded.layout
        variables = list(model.variables)
        if layout is None:
            assign(variables, loaded.model_arrays, "model")
            return
        if layout["variables"] != len(variables):
            raise CheckpointError(
                f"checkpoint {loaded.folder.name} is of a model with {layout['variables']} "
                f"variables but the run has {len(variables)}; it is from another model."
            )
        frozen = list(layout["frozen"])
        skip = set(frozen)
        stored = [v for i, v in enumerate(variables) if i not in skip]
        assign(stored, loaded.model_arrays, "model")
        if layout["source"] == "initial":
            self._check_initial(variables, layout, f"checkpoint {loaded.folder.name}")
            return
        assign([variables[i] for i in frozen], loaded.frozen_arrays or [], "frozen model")

    @staticmethod
    def restore_optimizer(
        optimizer: Any, arrays: Sequence[np.ndarray], paths: Sequence[str] | None
    ) -> None:
        """Assign saved optimizer arrays, matched by variable path when the names agree."""
        assign(_ordered_like(optimizer.variables, paths), arrays, "optimizer")


def frozen_variable_ids(model: Any) -> set[int]:
    """``id`` of every weight of a layer that does not train (nor any layer around it).

    A frozen layer's weights cannot change in a stage (Keras runs frozen batch-norm in
    inference mode); RNG state of dropout layers is not a weight and is not included.
    """
    ids: set[int] = set()

    def walk(layer: Any, frozen: bool) -> None:
        frozen = frozen or not layer.trainable
        if frozen:
            ids.update(id(w) for w in layer.weights)
        for child in getattr(layer, "_layers", None) or []:
            walk(child, frozen)

    for layer in model.layers:
        walk(layer, not model.trainable)
    return ids


def array_digest(array: Any) -> str:
    """A short content digest of an array (dtype, shape and bytes)."""
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def assign(variables: Sequence[Any], arrays: Sequence[np.ndarray], what: str) -> None:
    """Assign checkpoint ``arrays`` to ``variables`` after checking count and shapes."""
    if len(variables) != len(arrays):
        raise CheckpointError(
            f"checkpoint holds {len(arrays)} {what} variables but the run has "
            f"{len(variables)}; the checkpoint is from another model or stage."
        )
    for var, arr in zip(variables, arrays, strict=False):
        if tuple(var.shape) != tuple(arr.shape):
            raise CheckpointError(
                f"checkpoint {what} variable {var.path} has shape {arr.shape}, "
                f"expected {tuple(var.shape)}; it is from another model."
            )
    for var, arr in zip(variables, arrays, strict=False):
        var.assign(arr)


def _ordered_like(variables: Sequence[Any], paths: Sequence[str] | None) -> list[Any]:
    """``variables`` in the order of saved ``paths`` when the names match one to one."""
    variables = list(variables)
    if not paths:
        return variables
    by_path = {v.path: v for v in variables}
    if len(by_path) != len(variables) or set(by_path) != set(paths) or len(paths) != len(by_path):
        return variables  # fall back to order; assign checks count and shapes
    return [by_path[p] for p in paths]


class HistoryLog:
    """``history.csv`` (one row per epoch, rewritten atomically) and TensorBoard scalars."""

    def __init__(self, run: RunDir):
        self.run = run
        self.writers: dict[str, Any] = {}

    def open(self) -> None:
        import tensorflow as tf

        self.writers = {
            "train": tf.summary.create_file_writer(str(self.run.logs_dir / "train")),
            "validation": tf.summary.create_file_writer(str(self.run.logs_dir / "validation")),
        }

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()

    def write_history(self, history: Sequence[dict[str, Any]]) -> None:
        self.run.write_history(history)

    def batch_loss(self, global_step: int, loss: float) -> None:
        with self.writers["train"].as_default(step=global_step):
            _scalar("batch_loss", loss)

    def end_epoch(self, history: Sequence[dict[str, Any]], row: dict[str, Any]) -> None:
        """Rewrite ``history.csv``; write the row's numbers to the train/validation logs."""
        self.write_history(history)
        for name, writer in self.writers.items():
            with writer.as_default(step=int(row["epoch"])):
                for key, val in row.items():
                    if isinstance(val, (int, float)) and key not in ("epoch", "stage", "best"):
                        is_val = key.startswith("val_")
                        if (name == "validation") == is_val:
                            _scalar(key[4:] if is_val else key, val)
            writer.flush()


def _scalar(name: str, value: float) -> None:
    """``tf.summary.scalar`` without needing the ``tensorboard`` package installed.

    Writes the same event (scalars plugin metadata) that TensorBoard's own op writes.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )
    tf.summary.write(name, tf.constant(float(value), tf.float32), metadata=metadata)
