"""``pretrain`` (the 2012 paper's ImageNet training) and ``finetune`` (recipes), one engine.

Both workflows run the same loop (:class:`_Engine`): stages of epochs of steps, each step
one ``model.train_on_batch``; validation at every epoch end; the best model by the
monitored metric saved as ``model.keras``; an atomic checkpoint (model variables,
optimizer variables, loop state, history, LR-schedule state) at every epoch end, every
``checkpoint_every`` steps and on Ctrl-C. See :mod:`alexkit.runs` for the directory layout.

Resume semantics: ``resume=True`` loads the newest complete checkpoint (falling back to
the previous one if it is damaged) and continues from exactly that step: the interrupted
epoch's data order is rebuilt from the run seed and the epoch number and the batches
already seen are skipped, so the epoch ends with the same set of examples it would have
seen without the interruption. The history and the running epoch averages are part of
the checkpoint, so ``history.csv`` never holds a duplicate epoch.

Determinism: with the same seed on CPU two runs give the same history
(``keras.utils.set_random_seed`` + ``tf.config.experimental.enable_op_determinism`` +
seeded tf.data), and the dropout RNG state travels in the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import (
    AlexkitError,
    CheckpointError,
    DataError,
    Interrupted,
    RecipeError,
    UsageError,
    WeightsError,
)
from alexkit.inference import predict_batches
from alexkit.metrics import KNOWN_METRICS, compute_val_metrics
from alexkit.runs import CheckpointManager, RunDir

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]

OPTIMIZERS = ("paper_sgd", "sgd", "adam")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass
class RunResult:
    """What a training run produced.

    Attributes:
        run_dir: the run directory.
        model_path: the best model (``model.keras``).
        history: one dict per finished epoch (the rows of ``history.csv``).
        monitor: the monitored metric name (e.g. ``val_accuracy``).
        best_epoch: the epoch of the best model (1-based), or None.
        best_value: the monitored value of the best model.
        metrics: ``metrics.json`` content (validation report of the best model), or None.
        resumed: whether the run continued from a checkpoint.
        seconds: wall time of this call.
        first_batch_loss: loss of the first training batch of this call (before any
            update of a fresh run), or None when resuming.
        weights_name: the weights-store entry registered by ``pretrain``.
        worker: under ``--distribute multiworker``, this process's worker index; only
            worker 0 (the chief) writes the run directory, the others train in a
            scratch directory that is removed at the end (None otherwise).
    """

    run_dir: Path
    model_path: Path
    history: list[dict[str, Any]]
    monitor: str
    best_epoch: int | None
    best_value: float | None
    metrics: dict[str, Any] | None = None
    resumed: bool = False
    seconds: float = 0.0
    first_batch_loss: float | None = None
    weights_name: str | None = None
    worker: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        out = dataclasses.asdict(self)
        out["run_dir"] = str(self.run_dir)
        out["model_path"] = str(self.model_path)
        if self.metrics is not None:
            out["metrics"] = {
                k: v for k, v in self.metrics.items() if k not in ("confusion_matrix_normalized",)
            }
        return out


@dataclass
class StagePlan:
    """One stage of training (finetune has one or two; pretrain has one).

    Attributes:
        name: shown in progress and history (``head``, ``finetune``, ``pretrain``).
        epochs: epochs in this stage.
        trainable_from: first trainable layer; None trains only the head; ``"all"``
            trains everything.
        optimizer: ``paper_sgd``/``sgd`` (the paper's SGD with coupled weight decay,
            :class:`alexkit.optim.PaperSGD`) or ``adam``.
        lr: base learning rate.
        momentum: SGD momentum.
        weight_decay: coupled weight decay of SGD (Adam ignores it).
        schedule: ``{"kind": "constant"|"step"|"plateau", ...params}``.
        early_stopping: ``{"metric": "val_auc", "patience": 5, "mode": "max"}`` or None.
    """

    name: str
    epochs: int
    trainable_from: str | None = "all"
    optimizer: str = "paper_sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "constant"})
    early_stopping: dict[str, Any] | None = None


@dataclass
class _DataPlan:
    train: Any  # DatasetSpec
    val: Any | None  # DatasetSpec or None
    class_names: list[str]
    image_size: int
    batch_size: int
    augment: Any
    grayscale: bool = False
    num_train: int = 0


# --------------------------------------------------------------------------- helpers


def _emit(progress: ProgressFn | None, event: str, **payload: Any) -> None:
    if progress is not None:
        progress({"event": event, **payload})


def _versions() -> dict[str, str]:
    from alexkit import __version__

    out = {"alexkit": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("tensorflow", "keras"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except ImportError:  # pragma: no cover - both are dependencies
            pass
    return out


def _seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - older TF or already set: determinism is best-effort
        log.debug("op determinism not available", exc_info=True)


def _fingerprint(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def data_fingerprint(*specs: Any) -> str:
    """A short hash of the items, labels and class names of dataset specs (None skipped)."""
    h = hashlib.sha256()
    for spec in specs:
        if spec is None:
            h.update(b"<none>")
            continue
        if isinstance(spec, dict):  # TFRecord sources are described by their file list
            h.update(json.dumps(spec, sort_keys=True).encode())
            continue
        h.update(json.dumps(list(spec.class_names)).encode())
        for item, label in zip(spec.items, spec.labels, strict=False):
            h.update(f"{item}\t{label}\n".encode())
    return h.hexdigest()[:16]


def _build_optimizer(stage: StagePlan) -> Any:
    import keras

    if stage.optimizer in ("paper_sgd", "sgd"):
        from alexkit.optim import PaperSGD

        return PaperSGD(
            learning_rate=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay
        )
    if stage.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=stage.lr)
    raise RecipeError(f"unknown optimizer {stage.optimizer!r}; choose one of {list(OPTIMIZERS)}.")


def _build_schedule(stage: StagePlan) -> Any:
    from alexkit.optim import build_lr_schedule

    params = {k: v for k, v in stage.schedule.items() if k != "kind"}
    return build_lr_schedule(stage.schedule.get("kind", "constant"), stage.lr, **params)


def _monitor_mode(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


def _better(value: float | None, best: float | None, mode: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


# --------------------------------------------------------------------------- data


def _load_specs(
    data: str | Path,
    val: str | Path | None,
    *,
    seed: int,
    class_names: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    media_options: Any = None,
) -> tuple[Any, Any | None]:
    """Train and validation specs: ``val`` if given, else the data's own val split.

    ``media_options`` (a recipe's ``[media]`` table) decide how clips, DICOM and NIfTI
    files expand into frames and slices.
    """
    from alexkit import data as data_mod

    spec = data_mod.load_spec(
        str(data),
        class_names=None if class_names is None else list(class_names),
        seed=seed,
        val_fraction=0.0 if val is not None else val_fraction,
        media_options=media_options,
    )
    if val is not None:
        train = spec.subset("train") if "train" in set(spec.splits) else spec
        if len(train) == 0:
            train = spec
        # The whole --val source is validation data (no carving); a split-folder root
        # contributes its val split.
        val_spec = data_mod.load_spec(
            str(val),
            class_names=list(spec.class_names),
            seed=seed,
            val_fraction=0.0,
            media_options=media_options,
        )
        if "val" in set(val_spec.splits):
            val_spec = val_spec.subset("val")
        return train, val_spec
    splits = set(spec.splits)
    if "val" in splits and val_fraction > 0:
        val_counts = spec.counts("val")
        if min(val_counts.values()) < data_mod.MIN_VAL_PER_CLASS:
            # A token val split (Kermany's chest X-rays ship 8 + 8) makes every metric
            # noise: merge it into train and carve a stratified, seeded one instead.
            log.warning(
                "%s: the val split has only %d image(s) in a class; re-splitting %.0f%% of "
                "train+val as validation.",
                data,
                min(val_counts.values()),
                100 * val_fraction,
            )
            spec = data_mod.load_spec(
                str(data),
                class_names=None if class_names is None else list(class_names),
                seed=seed,
                val_fraction=val_fraction,
                resplit_val=True,
                media_options=media_options,
            )
            splits = set(spec.splits)
    train = spec.subset("train") if "train" in splits else spec
    val_spec = spec.subset("val") if "val" in splits else None
    if val_spec is not None and len(val_spec) == 0:
        val_spec = None
    if len(train) == 0:
        raise DataError(f"{data}: no training images found; check the folder layout.")
    return train, val_spec


def _check_labels(spec: Any, what: str) -> None:
    labels = np.asarray(spec.labels)
    if labels.size and (labels < 0).any():
        raise DataError(
            f"{what}: {int((labels < 0).sum())} images have no label; training needs "
            "labelled images (folder-per-class or a manifest with labels)."
        )


def _tfrecord_files(path: Path) -> list[Path] | None:
    """TFRecord shards under ``path`` (train-*/validation-* or *.tfrecord), or None."""
    path = Path(path)
    if path.is_file() and (".tfrecord" in path.name or "-of-" in path.name):
        return [path]
    if not path.is_dir():
        return None
    files = sorted(
        p for p in path.iterdir() if p.is_file() and (".tfrecord" in p.name or "-of-" in p.name)
    )
    return files or None


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


def _ordered_like(variables: Sequence[Any], paths: Sequence[str] | None) -> list[Any]:
    """``variables`` in the order of saved ``paths`` when the names match one to one."""
    variables = list(variables)
    if not paths:
        return variables
    by_path = {v.path: v for v in variables}
    if len(by_path) != len(variables) or set(by_path) != set(paths) or len(paths) != len(by_path):
        return variables  # fall back to order; _assign checks count and shapes
    return [by_path[p] for p in paths]


# --------------------------------------------------------------------------- engine


class _Engine:
    """The shared training loop over stages of a compiled Keras model."""

    def __init__(
        self,
        *,
        run: RunDir,
        build_model: Callable[[], Any],
        stages: Sequence[StagePlan],
        data: _DataPlan,
        make_train: Callable[..., Any],
        make_val: Callable[[], Any] | None,
        monitor: str,
        metrics: Sequence[str],
        class_weight: dict[int, float] | None,
        seed: int,
        steps_per_epoch: int | None,
        checkpoint_every: int | None,
        jit: bool | None,
        progress: ProgressFn | None,
        strategy: Any = None,
        resume: bool = False,
        save_last: bool = False,
        restore_dir: Path | None = None,
        writes: bool = True,
    ):
        self.run = run
        self.writes = writes  # False on non-chief workers: no checkpoints or models
        self.build_model = build_model
        self.stages = list(stages)
        self.data = data
        self.make_train = make_train
        self.make_val = make_val
        self.monitor = monitor
        self.mode = _monitor_mode(monitor)
        self.metrics = list(metrics)
        self.class_weight = class_weight
        self.seed = int(seed)
        self.steps_per_epoch = steps_per_epoch
        self.checkpoint_every = checkpoint_every
        self.jit = jit
        self.progress = progress
        self.strategy = strategy
        self.resume = resume
        self.save_last = save_last
        self.ckpt = CheckpointManager(run.checkpoint_dir)
        # A non-chief worker writes a scratch run dir but resumes from the chief's.
        self.restore = CheckpointManager(restore_dir) if restore_dir else self.ckpt
        self.feed: Any = None
        if strategy is not None:
            from alexkit.distribute import ReplicaFeed

            if class_weight:
                raise UsageError("class weights are not supported with --distribute.")
            if data.num_train < data.batch_size:
                raise UsageError(
                    f"--distribute needs at least one full global batch: {data.num_train} "
                    f"training images < --batch-size {data.batch_size}."
                )
            self.feed = ReplicaFeed(strategy)
        self.model: Any = None
        self.schedule: Any = None
        self.first_batch_loss: float | None = None
        self.best_weights: list[np.ndarray] | None = None
        self._steps_since_save = 0

    # ----------------------------------------------------------------- state

    def _fresh_state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "global_step": 0,
            "epoch": 0,  # finished epochs, all stages
            "stage": 0,
            "stage_epoch": 0,  # finished epochs in this stage
            "stage_done": False,
            "step_in_epoch": 0,
            "accum": {"loss": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0},
            "history": [],
            "best": {"value": None, "epoch": None},
            "stage_best": None,
            "stage_wait": 0,
            "schedule": None,
        }

    def _natural_steps(self) -> int:
        n = self.data.num_train
        if self.feed is not None:
            # Distributed: full global batches only (they split evenly over replicas).
            return n // self.data.batch_size
        return max(1, math.ceil(n / self.data.batch_size))

    def steps(self) -> int:
        return int(self.steps_per_epoch) if self.steps_per_epoch else self._natural_steps()

    def _scope(self) -> Any:
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def _compile(self, stage: StagePlan) -> None:
        from alexkit.model import freeze

        if stage.trainable_from == "all":
            for layer in self.model.layers:
                layer.trainable = True
        else:
            try:
                freeze(self.model, stage.trainable_from)
            except ValueError as err:
                raise RecipeError(f"stage {stage.name!r}: {err}") from err
        with self._scope():
            optimizer = _build_optimizer(stage)
            self.model.compile(
                optimizer=optimizer,
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
                jit_compile="auto" if self.jit is None else bool(self.jit),
            )
            # Build the optimizer now so its variables exist for checkpoint restore. Under
            # mixed_float16 compile wraps it in a LossScaleOptimizer: build the wrapper.
            self.model.optimizer.build(self.model.trainable_variables)
        if self.strategy is not None:
            from alexkit.distribute import enable_distributed_batches

            enable_distributed_batches(self.model)

    def _save(self, state: dict[str, Any]) -> Path:
        if not self.writes:
            self._steps_since_save = 0
            return self.restore.directory
        state = dict(state)
        state["schedule"] = self.schedule.state_dict() if self.schedule is not None else None
        model_arrays = [np.asarray(v.numpy()) for v in self.model.variables]
        optimizer_variables = list(self.model.optimizer.variables)
        optimizer_arrays = [np.asarray(v.numpy()) for v in optimizer_variables]
        # Optimizer slot names derive from layer names, so they identify slots across runs.
        state["optimizer_paths"] = [v.path for v in optimizer_variables]
        path = self.ckpt.save(model_arrays, optimizer_arrays, state)
        self._steps_since_save = 0
        _emit(self.progress, "checkpoint", path=str(path), global_step=state["global_step"])
        return path

    @staticmethod
    def _assign(variables: Sequence[Any], arrays: Sequence[np.ndarray], what: str) -> None:
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

    # ----------------------------------------------------------------- loop

    def run_all(self) -> dict[str, Any]:
        """Train every stage to the end; return the final loop state."""
        with self._scope():
            self.model = self.build_model()
        state = self._fresh_state()
        optimizer_arrays: list[np.ndarray] | None = None
        if self.resume:
            state, model_arrays, optimizer_arrays, folder = self.restore.load_latest()
            self._assign(self.model.variables, model_arrays, "model")
            log.info("resuming from %s", folder)
            _emit(
                self.progress,
                "resume",
                checkpoint=str(folder),
                epoch=state["epoch"],
                step_in_epoch=state["step_in_epoch"],
                global_step=state["global_step"],
            )
            self.run.write_history(state["history"])
        total_epochs = sum(s.epochs for s in self.stages)
        _emit(
            self.progress,
            "start",
            run_dir=str(self.run.path),
            resumed=self.resume,
            total_epochs=total_epochs,
            steps=self.steps(),
            stages=[{"name": s.name, "epochs": s.epochs} for s in self.stages],
        )
        writers = self._writers()
        try:
            while state["stage"] < len(self.stages):
                stage = self.stages[state["stage"]]
                if state["stage_done"] or state["stage_epoch"] >= stage.epochs:
                    self._next_stage(state)
                    continue
                self._compile(stage)
                self.schedule = _build_schedule(stage)
                if state["schedule"] is not None:
                    self.schedule.load_state_dict(state["schedule"])
                if optimizer_arrays is not None:
                    self._assign(
                        _ordered_like(self.model.optimizer.variables, state.get("optimizer_paths")),
                        optimizer_arrays,
                        "optimizer",
                    )
                    optimizer_arrays = None
                _emit(
                    self.progress,
                    "stage",
                    stage=state["stage"] + 1,
                    name=stage.name,
                    epochs=stage.epochs,
                    trainable_from=stage.trainable_from,
                    trainable_params=int(
                        sum(np.prod(v.shape) for v in self.model.trainable_variables)
                    ),
                )
                while state["stage_epoch"] < stage.epochs and not state["stage_done"]:
                    self._run_epoch(state, stage, writers)
                self._next_stage(state)
            if self.save_last:
                self._save_model(self.run.last_model_path)
        except KeyboardInterrupt:
            if self.model is not None and getattr(self.model, "optimizer", None) is not None:
                path = self._save(state)
                self.run.write_history(state["history"])
                saved = f"state saved to {path}" if self.writes else "the chief saves the state"
                raise Interrupted(
                    f"interrupted at epoch {state['epoch'] + 1} step {state['step_in_epoch']}; "
                    f"{saved}; continue with --resume."
                ) from None
            raise Interrupted("interrupted before training started; nothing was saved.") from None
        finally:
            for w in writers.values():
                w.close()
        return state

    def _next_stage(self, state: dict[str, Any]) -> None:
        state["stage"] += 1
        state["stage_epoch"] = 0
        state["stage_done"] = False
        state["stage_best"] = None
        state["stage_wait"] = 0
        state["schedule"] = None

    def _writers(self) -> dict[str, Any]:
        import tensorflow as tf

        return {
            "train": tf.summary.create_file_writer(str(self.run.logs_dir / "train")),
            "validation": tf.summary.create_file_writer(str(self.run.logs_dir / "validation")),
        }

    def _run_epoch(self, state: dict[str, Any], stage: StagePlan, writers: dict[str, Any]) -> None:

        epoch_index = state["epoch"]  # 0-based, global
        lr = float(self.schedule.lr_for_epoch(state["stage_epoch"]))
        self.model.optimizer.learning_rate = lr
        steps = self.steps()
        start = int(state["step_in_epoch"])
        if start == 0:
            state["accum"] = {"loss": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0}
        _emit(
            self.progress,
            "epoch_start",
            epoch=epoch_index + 1,
            stage=state["stage"] + 1,
            stage_name=stage.name,
            stage_epoch=state["stage_epoch"] + 1,
            stage_epochs=stage.epochs,
            steps=steps,
            start_step=start,
            lr=lr,
        )
        if self.feed is not None:
            dataset = self.make_train(epoch_index, steps, (self.feed.worker, self.feed.workers))
        else:
            dataset = self.make_train(epoch_index, steps)
        if start:
            dataset = dataset.skip(start)
        accum = state["accum"]
        tick = time.perf_counter()
        for x, y in dataset:
            batch = int(y.shape[0])
            self.model.reset_metrics()
            if self.feed is not None:
                # This worker's slice of the global batch, one part per local replica;
                # loss and accuracy come back as global-batch means.
                batch *= self.feed.workers
                x, y = self.feed.split(x, y)
            logs = self.model.train_on_batch(x, y, class_weight=self.class_weight, return_dict=True)
            loss = float(logs["loss"])
            if self.first_batch_loss is None:
                self.first_batch_loss = loss
            if not math.isfinite(loss):
                raise UsageError(
                    f"the training loss became {loss} at epoch {epoch_index + 1}; lower the "
                    "learning rate (--lr) and start again with --force."
                )
            now = time.perf_counter()
            accum["seconds"] += now - tick
            tick = now
            accum["loss"] += loss * batch
            accum["correct"] += float(logs.get("accuracy", 0.0)) * batch
            accum["count"] += batch
            state["step_in_epoch"] += 1
            state["global_step"] += 1
            self._steps_since_save += 1
            _emit(
                self.progress,
                "batch",
                epoch=epoch_index + 1,
                step=state["step_in_epoch"],
                steps=steps,
                loss=accum["loss"] / accum["count"],
                accuracy=accum["correct"] / accum["count"],
                img_per_s=accum["count"] / max(accum["seconds"], 1e-9),
            )
            if self.checkpoint_every and state["global_step"] % self.checkpoint_every == 0:
                if state["step_in_epoch"] < steps:  # the epoch-end save follows otherwise
                    self._save(state)
                with writers["train"].as_default(step=state["global_step"]):
                    _scalar("batch_loss", loss)
        if accum["count"] == 0:
            raise DataError("the training data produced no batches; check --data.")
        row: dict[str, Any] = {
            "epoch": epoch_index + 1,
            "stage": state["stage"] + 1,
            "stage_name": stage.name,
            "stage_epoch": state["stage_epoch"] + 1,
            "lr": lr,
            "loss": accum["loss"] / accum["count"],
            "accuracy": accum["correct"] / accum["count"],
            "images": accum["count"],
            "img_per_s": accum["count"] / max(accum["seconds"], 1e-9),
        }
        val_metrics = self.validate()
        if self.feed is not None:
            # Identical on every worker: the LR plateau, best-model and early-stopping
            # decisions below must not differ between workers.
            val_metrics = self.feed.mean(val_metrics)
        row.update({f"val_{k}": v for k, v in val_metrics.items()})
        value = row.get(self.monitor)
        if value is None and self.monitor.startswith("val_"):
            value = row.get(self.monitor[4:])  # no validation data: monitor the train metric
        value = None if value is None else float(value)
        row["seconds"] = accum["seconds"]
        improved = _better(value, state["best"]["value"], self.mode)
        if improved:
            state["best"] = {"value": value, "epoch": epoch_index + 1}
            self._save_model(self.run.model_path)
            # Kept in memory so the final evaluation need not reload model.keras.
            self.best_weights = [np.array(v.numpy()) for v in self.model.weights]
        row["best"] = int(improved)
        # Early stopping counts within the stage, on its own metric.
        es = stage.early_stopping
        if es:
            es_value = row.get(es["metric"])
            if es_value is None and es["metric"].startswith("val_"):
                es_value = row.get(es["metric"][4:])
            es_value = None if es_value is None else float(es_value)
            if _better(es_value, state["stage_best"], es["mode"]):
                state["stage_best"] = es_value
                state["stage_wait"] = 0
            else:
                state["stage_wait"] += 1
                if state["stage_wait"] >= int(es["patience"]):
                    state["stage_done"] = True
                    row["early_stop"] = 1
        error = None
        if value is not None:
            error = value if self.mode == "min" else 1.0 - value
        self.schedule.end_epoch(state["stage_epoch"], error)
        state["history"] = [r for r in state["history"] if r["epoch"] != row["epoch"]] + [row]
        state["epoch"] += 1
        state["stage_epoch"] += 1
        state["step_in_epoch"] = 0
        self._save(state)
        self.run.write_history(state["history"])
        for name, writer in writers.items():
            with writer.as_default(step=epoch_index + 1):
                for key, val in row.items():
                    if isinstance(val, (int, float)) and key not in ("epoch", "stage", "best"):
                        is_val = key.startswith("val_")
                        if (name == "validation") == is_val:
                            _scalar(key[4:] if is_val else key, val)
            writer.flush()
        _emit(
            self.progress,
            "epoch_end",
            epoch=epoch_index + 1,
            row=row,
            improved=improved,
            monitor=self.monitor,
            best=state["best"],
        )

    def _save_model(self, path: Path) -> None:
        if not self.writes:
            return
        from alexkit.paths import atomic_path

        with atomic_path(path, suffix=".keras") as tmp:
            self.model.save(tmp)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if self.strategy is not None:
            # predict_on_batch under MirroredStrategy returns every replica's rows; a plain
            # call in cross-replica context reads the mirrored variables once.
            return np.asarray(self.model(x, training=False))
        return np.asarray(self.model.predict_on_batch(x))

    def predict(
        self, dataset: Any, items: list[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and probabilities over a dataset of (images, labels[, items]) batches.

        When the batches carry item strings and ``items`` is a list, they are appended
        to it (for clip/volume-level metrics).
        """
        y, p, _ = predict_batches(
            dataset, self._forward, items=items, num_classes=len(self.data.class_names)
        )
        return y, p

    def validate(self) -> dict[str, Any]:
        if self.make_val is None:
            return {}
        y, p = self.predict(self.make_val())
        if y.size == 0:
            return {}
        return compute_val_metrics(y, p, self.metrics)


# --------------------------------------------------------------------------- config


def _resolve_out(out: str | Path | None, prefix: str) -> Path:
    if out is not None:
        return Path(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{prefix}-{stamp}"


def _check_resume_config(run: RunDir, config: dict[str, Any]) -> dict[str, Any]:
    """Refuse to resume a run with other recipe, data or settings."""
    saved = run.read_config()
    old, new = saved.get("fingerprints", {}), config.get("fingerprints", {})
    for key, label in (("recipe", "recipe/settings"), ("data", "data")):
        if old.get(key) != new.get(key):
            raise CheckpointError(
                f"{run.path} was trained with other {label} ({key} fingerprint "
                f"{old.get(key)} != {new.get(key)}); resume with the same recipe, data and "
                "options, or start a new run with --out/--force."
            )
    return saved


def _merge_saved_args(run_path: Path, resume: bool, args: dict[str, Any]) -> dict[str, Any]:
    """On resume, options not given again come from the run's saved arguments."""
    if not resume:
        return args
    config_path = run_path / "config.json"
    if not config_path.exists():
        return args
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8")).get("args", {})
    except ValueError:
        return args
    merged = dict(args)
    for key, value in saved.items():
        if merged.get(key) is None and key in merged:
            merged[key] = value
    return merged


def _result(
    run: RunDir,
    engine: _Engine,
    state: dict[str, Any],
    *,
    resumed: bool,
    t0: float,
    metrics: dict[str, Any] | None,
    weights_name: str | None = None,
) -> RunResult:
    return RunResult(
        run_dir=run.path,
        model_path=run.model_path,
        history=list(state["history"]),
        monitor=engine.monitor,
        best_epoch=state["best"]["epoch"],
        best_value=state["best"]["value"],
        metrics=metrics,
        resumed=resumed,
        seconds=time.perf_counter() - t0,
        first_batch_loss=None if resumed else engine.first_batch_loss,
        weights_name=weights_name,
    )


def _final_metrics(
    run: RunDir,
    engine: _Engine,
    state: dict[str, Any],
    *,
    tta: str = "center",
    make_eval: Callable[[str], Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Evaluate the best model on the validation data; write ``metrics.json``."""
    if engine.make_val is None or not run.model_path.exists():
        return None
    import keras

    import alexkit.layers  # noqa: F401  (custom layers for deserialisation)
    import alexkit.optim  # noqa: F401  (PaperSGD for deserialisation)

    if state["best"]["epoch"] != state["epoch"]:
        # The model in memory is the last epoch's: restore the best one.
        if engine.best_weights is not None:
            engine.model.set_weights(engine.best_weights)
        else:  # best epoch was before a resume: read it from disk
            engine.model = keras.saving.load_model(run.model_path, compile=False)
    dataset = make_eval(tta, with_paths=True) if make_eval is not None else engine.make_val()
    items: list[str] = []
    y, p = engine.predict(dataset, items)
    if y.size == 0:
        return None
    try:
        from alexkit.evaluate import compute_report, group_eval, group_report

        report = compute_report(
            y, p, engine.data.class_names, paths=items if len(items) == len(y) else None
        )
        if report.paths is not None and any("#" in item for item in report.paths):
            # Frames of clips / slices of volumes: also score one row per source.
            report.groups = group_report(report, group_eval(report))
        metrics = report.to_dict()
    except ImportError:  # pragma: no cover - evaluate ships with alexkit
        metrics = {}
    metrics.update({"val_" + k: v for k, v in compute_val_metrics(y, p, engine.metrics).items()})
    metrics["meta"] = {
        **metrics.get("meta", {}),
        "split": "validation",
        "tta": tta,
        "model": str(run.model_path),
        **(meta or {}),
    }
    from alexkit.paths import atomic_write_text

    atomic_write_text(run.metrics_path, json.dumps(metrics, indent=2, default=str) + "\n")
    return metrics


# --------------------------------------------------------------------------- finetune


def _recipe_get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _load_recipe(recipe: Any, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any], str]:
    """Resolve a recipe (name, file or object), apply CLI overrides; dict + fingerprint."""
    from alexkit import recipes as recipes_mod

    if recipe is None or (recipe == "default" and "default" not in recipes_mod.recipe_names()):
        rec = recipes_mod.default_recipe()
    elif isinstance(recipe, (str, Path)):
        rec = recipes_mod.load_recipe(recipe)
    else:
        rec = recipe
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        rec = recipes_mod.apply_overrides(rec, **given)
    as_dict = recipes_mod.recipe_to_dict(rec)
    fingerprint = recipes_mod.recipe_fingerprint(rec)
    return rec, as_dict, fingerprint


def _stages_from_recipe(rec: Any) -> list[StagePlan]:
    es = _recipe_get(rec, "early_stopping")
    early = None
    if es is not None:
        metric = str(_recipe_get(es, "metric", "loss"))
        metric = metric if metric.startswith("val_") else "val_" + metric
        mode = str(_recipe_get(es, "mode", "auto"))
        early = {
            "metric": metric,
            "patience": int(_recipe_get(es, "patience", 5)),
            "mode": _monitor_mode(metric) if mode not in ("min", "max") else mode,
        }
    stages = []
    for i, st in enumerate(_recipe_get(rec, "stages", ()) or ()):
        trainable_from = _recipe_get(st, "trainable_from")
        stages.append(
            StagePlan(
                name=str(_recipe_get(st, "name") or f"stage{i + 1}"),
                epochs=int(_recipe_get(st, "epochs", 1)),
                trainable_from=trainable_from,
                optimizer=str(_recipe_get(st, "optimizer", "sgd")).lower(),
                lr=float(_recipe_get(st, "lr", 0.01)),
                momentum=float(_recipe_get(st, "momentum", 0.9)),
                weight_decay=float(_recipe_get(rec, "weight_decay", 5e-4)),
                schedule={"kind": "constant"},
                early_stopping=early,
            )
        )
    if not stages:
        raise RecipeError("the recipe has no [[stages]]; add at least one stage.")
    return stages


def _digits_path() -> Path:
    try:
        from alexkit.datasets import materialize_digits
    except ImportError as err:
        raise UsageError(
            "this recipe's built-in digits data is unavailable in this install; pass --data."
        ) from err
    return Path(materialize_digits())


def _make_dataset_fns(
    plan: _DataPlan, seed: int
) -> tuple[Callable[..., Any], Callable[[], Any] | None, Callable[[str], Any] | None]:
    """Per-epoch training datasets (seeded by run seed and epoch) and the validation set."""
    from alexkit.data import make_dataset

    def make_train(epoch: int, steps: int, shard: tuple[int, int] | None = None) -> Any:
        natural = max(1, math.ceil(plan.num_train / plan.batch_size))
        # More steps than one pass: repeat, with full batches only so that every step
        # sees batch_size images (the partial batch would otherwise recur each pass).
        # Distributed (shard: this worker's slice of every full global batch): always
        # repeat, so every worker yields exactly `steps` batches even when an image
        # failed to decode on one worker only; otherwise that worker would run a step
        # short and leave the others waiting in the gradient all-reduce.
        repeat = shard is not None or steps > natural
        ds = make_dataset(
            plan.train,
            training=True,
            image_size=plan.image_size,
            batch_size=plan.batch_size,
            augment=plan.augment,
            seed=seed * 1_000_003 + epoch,
            shuffle=True,
            grayscale=plan.grayscale,
            drop_remainder=repeat and plan.num_train >= plan.batch_size,
            shard=shard,
        )
        if repeat:
            ds = ds.repeat()
        return ds.take(steps)

    if plan.val is None:
        return make_train, None, None

    def make_eval(tta: str = "center", with_paths: bool = False) -> Any:
        return make_dataset(
            plan.val,
            training=False,
            image_size=plan.image_size,
            batch_size=plan.batch_size,
            seed=seed,
            shuffle=False,
            tta=tta,
            grayscale=plan.grayscale,
            with_paths=with_paths,
        )

    return make_train, (lambda: make_eval("center")), make_eval


def finetune(
    recipe: Any,
    data: str | Path | None = None,
    *,
    val: str | Path | None = None,
    weights: str | None = None,
    out: str | Path | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    resume: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
    steps_per_epoch: int | None = None,
    checkpoint_every: int | None = None,
    jit: bool | None = False,
) -> RunResult:
    """Fine-tune AlexNet on a folder of images following a recipe.

    Stage 1 usually trains only the new head (everything below keeps the pretrained
    weights bit-identical); stage 2 unfreezes from ``trainable_from`` at a lower rate.
    Options given here beat the recipe, the recipe beats the defaults.

    Args:
        recipe: a built-in recipe name, a TOML file, or a loaded ``Recipe``; None means
            the run's own recipe when resuming, else the default recipe.
        data: training images (any layout :func:`alexkit.data.load_spec` reads); may be
            omitted for a recipe with built-in data (``digits``).
        val: validation images; default: the data's own ``val`` split.
        weights: ``"imagenet"`` (default: the store's ImageNet entry for the recipe's
            variant), ``"none"`` (random init), a store name or a ``.keras`` file.
        out: run directory (default ``runs/finetune-<time>``).
        epochs: epochs per stage (overrides the recipe).
        batch_size: batch size (overrides the recipe).
        lr: learning rate of the first stage (overrides the recipe; later stages keep
            their ratio to the first).
        seed: run seed (shuffling, augmentation, dropout, head init).
        resume: continue the run in ``out`` from its newest checkpoint.
        force: delete ``out`` first if it holds anything.
        progress: called with one event dict per step/epoch/stage (never prints).
        steps_per_epoch: cap/extend each epoch to this many batches.
        checkpoint_every: also checkpoint every N steps (epoch ends always are).
        jit: XLA-compile the train step (None: Keras' "auto").

    Returns:
        A :class:`RunResult`.

    Raises:
        RecipeError, WeightsError, DataError, CheckpointError, Interrupted.
    """
    t0 = time.perf_counter()
    out_path = _resolve_out(out, "finetune")
    if isinstance(recipe, (str, Path)):
        recipe_arg = str(Path(recipe).resolve()) if Path(recipe).is_file() else str(recipe)
    else:
        recipe_arg = _recipe_get(recipe, "name")
    args = {
        "recipe": recipe_arg,
        "data": None if data is None else str(Path(data).resolve()),
        "val": None if val is None else str(Path(val).resolve()),
        "weights": weights,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "steps_per_epoch": steps_per_epoch,
    }
    args = _merge_saved_args(out_path, resume, args)
    # On resume, --recipe/--data/--val may be left out: the run's own are used.
    if recipe is None or isinstance(recipe, (str, Path)):
        recipe = args["recipe"]
    data = args["data"]
    val = args["val"]
    epochs, batch_size, lr, seed = args["epochs"], args["batch_size"], args["lr"], args["seed"]
    steps_per_epoch, weights = args["steps_per_epoch"], args["weights"] or "imagenet"
    rec, rec_dict, rec_fp = _load_recipe(
        recipe, {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    )
    seed = int(_recipe_get(rec, "seed", 0) if seed is None else seed)
    batch = int(_recipe_get(rec, "batch_size", 32))
    variant = str(_recipe_get(rec, "variant", "original"))
    grayscale = str(_recipe_get(rec, "color", "rgb")).lower() in ("grayscale", "gray", "l")
    if data is None:
        if _recipe_get(rec, "builtin_data"):
            data = _digits_path()
        else:
            raise UsageError("--data is required for this recipe (it has no built-in data).")
    data = Path(data)
    if not data.exists():
        raise DataError(f"--data {data} does not exist.")

    if not resume and weights != "none":
        # Fail before touching --out when the weights are missing (the message lists
        # the three ways to get them).
        from alexkit.weights import resolve_weights

        resolve_weights(weights, _weights_variant(weights, variant))
    run = RunDir.prepare(out_path, resume=resume, force=force)
    _seed_everything(seed)
    saved = run.read_config() if resume else None
    class_names = saved.get("class_names") if saved else _recipe_get(rec, "classes")
    train_spec, val_spec = _load_specs(
        data,
        val,
        seed=seed,
        class_names=class_names,
        val_fraction=float(_recipe_get(rec, "val_fraction", 0.2)),
        media_options=_recipe_get(rec, "media"),
    )
    _check_labels(train_spec, str(data))
    class_names = list(train_spec.class_names)
    if len(class_names) < 2:
        raise DataError(f"{data}: found {len(class_names)} class; finetuning needs at least 2.")

    from alexkit.model import VARIANTS

    stages = _stages_from_recipe(rec)
    monitor = str(_recipe_get(rec, "monitor", "val_accuracy") or "val_accuracy")
    if not monitor.startswith("val_"):
        monitor = "val_" + monitor
    wanted = [str(m).lower() for m in (_recipe_get(rec, "metrics", ()) or ())]
    unknown = [m for m in wanted if m not in KNOWN_METRICS]
    if unknown:
        raise RecipeError(f"unknown metrics {unknown}; valid metrics: {list(KNOWN_METRICS)}.")
    if monitor[4:] not in KNOWN_METRICS:
        raise RecipeError(f"monitor {monitor!r} is not one of val_{{{','.join(KNOWN_METRICS)}}}.")
    wanted = sorted(set(wanted) | {"loss", "accuracy", monitor[4:]})
    class_weight = _class_weights(rec, train_spec)

    base_variant = variant
    head = _recipe_get(rec, "head")
    head_dropout = _recipe_get(head, "dropout")
    head_hidden = _recipe_get(head, "hidden_units")
    if resume and saved is not None:
        variant = saved.get("variant", variant)
    elif weights not in ("none",):
        variant = _weights_variant(weights, variant)

    def build_model() -> Any:
        return _finetune_model(
            weights if not resume or weights == "none" else "__architecture__",
            variant,
            len(class_names),
            head_dropout,
            head_hidden,
            seed,
        )

    image_size = int(VARIANTS[variant]["image_size"])
    plan = _DataPlan(
        train=train_spec,
        val=val_spec,
        class_names=class_names,
        image_size=image_size,
        batch_size=batch,
        augment=_recipe_get(rec, "augment"),
        grayscale=grayscale,
        num_train=len(train_spec),
    )
    config = {
        "kind": "finetune",
        "class_names": class_names,
        "variant": variant,
        "image_size": image_size,
        "grayscale": grayscale,
        "recipe": rec_dict,
        "args": args,
        "resolved": {
            "seed": seed,
            "batch_size": batch,
            "weights": weights,
            "recipe_variant": base_variant,
            "monitor": monitor,
            "metrics": wanted,
            "class_weight": class_weight,
            "stages": [dataclasses.asdict(s) for s in stages],
        },
        "preprocessing": _preprocessing(variant, plan),
        "data": {
            "train": str(data),
            "val": None if val is None else str(val),
            "num_train": len(train_spec),
            "num_val": 0 if val_spec is None else len(val_spec),
        },
        "versions": _versions(),
        "fingerprints": {
            "recipe": _fingerprint([rec_fp, weights, steps_per_epoch]),
            "data": data_fingerprint(train_spec, val_spec),
        },
    }
    if resume:
        _check_resume_config(run, config)
    else:
        run.write_config(config)
    make_train, make_val, make_eval = _make_dataset_fns(plan, seed)
    engine = _Engine(
        run=run,
        build_model=build_model,
        stages=stages,
        data=plan,
        make_train=make_train,
        make_val=make_val,
        monitor=monitor,
        metrics=wanted,
        class_weight=class_weight,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        checkpoint_every=checkpoint_every,
        jit=jit,
        progress=progress,
        resume=resume,
    )
    state = engine.run_all()
    metrics = _final_metrics(run, engine, state, make_eval=make_eval)
    _emit(progress, "done", run_dir=str(run.path))
    return _result(run, engine, state, resumed=resume, t0=t0, metrics=metrics)


def _preprocessing(variant: str, plan: _DataPlan) -> dict[str, Any]:
    from alexkit.model import VARIANTS

    v = VARIANTS[variant]
    aug = plan.augment
    return {
        "image_size": plan.image_size,
        "resize": int(_recipe_get(aug, "resize", v["resize"]) or v["resize"]),
        "crop": "center",
        "mean": [float(m) for m in v["mean"]],
        "std": [float(s) for s in v["std"]],
        "grayscale": plan.grayscale,
        "input": "RGB pixels in [0, 255]; the model's preprocess layer applies mean/std",
        "augment": dataclasses.asdict(aug) if dataclasses.is_dataclass(aug) else aug,
    }


def _class_weights(rec: Any, spec: Any) -> dict[int, float] | None:
    setting = _recipe_get(rec, "class_weights")
    if not setting or setting in ("none", False):
        return None
    from alexkit import recipes as recipes_mod

    weights = recipes_mod.compute_class_weights(
        [int(x) for x in spec.labels], len(spec.class_names), setting, list(spec.class_names)
    )
    if weights is None:
        return None
    if isinstance(weights, dict):
        return {int(k): float(v) for k, v in weights.items()}
    return {i: float(w) for i, w in enumerate(np.asarray(weights).reshape(-1))}


def _weights_variant(weights: str, variant: str) -> str:
    """A ``.keras`` file decides its own variant; store entries are checked by the store."""
    path = Path(weights).expanduser()
    if path.is_file() and path.name.endswith(".keras"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                config = zf.read("config.json").decode()
        except (OSError, KeyError, zipfile.BadZipFile) as err:
            raise WeightsError(f"{path}: not a readable .keras file ({err}).") from err
        return "original" if '"lrn1"' in config else "torchvision"
    return variant


def _finetune_model(
    weights: str,
    variant: str,
    num_classes: int,
    head_dropout: float | None,
    head_hidden: int | None,
    seed: int,
) -> Any:
    """The model to fine-tune: pretrained body + new head sized for the data's classes."""
    from alexkit.model import build_alexnet, replace_head

    if weights == "none":
        return build_alexnet(variant, num_classes=num_classes, seed=seed)
    if weights == "__architecture__":  # resume: every variable comes from the checkpoint
        base = build_alexnet(variant, num_classes=1000, seed=seed)
    else:
        from alexkit.weights import load_weights_model

        base = load_weights_model(weights, variant)
    return replace_head(
        base, num_classes, dropout=head_dropout, hidden_units=head_hidden, seed=seed
    )


# --------------------------------------------------------------------------- pretrain


def pretrain(
    data: str | Path | None,
    *,
    val: str | Path | None = None,
    variant: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    schedule: str | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    precision: str | None = None,
    jit: bool | None = None,
    distribute: str | None = None,
    steps_per_epoch: int | None = None,
    name: str | None = None,
    seed: int | None = None,
    force: bool = False,
    checkpoint_every: int | None = None,
    patience: int | None = None,
    ten_crop: bool = False,
    init: str | None = None,
    register: bool = True,
    progress: ProgressFn | None = None,
) -> RunResult:
    """Train AlexNet from scratch the 2012 paper's way (ImageNet or any labelled set).

    SGD with momentum 0.9 and coupled weight decay 5e-4 (:class:`alexkit.optim.PaperSGD`),
    batch 128, LR 0.01 divided by 10 on a validation-error plateau (``schedule="plateau"``)
    or every 30 epochs (``"step"``); the paper's N(0, 0.01) init and dropout 0.5; top-1 and
    top-5 validation accuracy on centre crops each epoch and, with ``ten_crop``, a ten-crop
    evaluation of the best model at the end. The best model registers in the weights
    store as an ``imagenet`` entry so ``finetune --weights imagenet`` finds it.

    Args:
        data: training images: folder per class, ImageNet layout, or TFRecord shards
            (may be None with ``resume``: the run's own data).
        val: validation images (default: the data's own val split).
        variant: ``"original"`` (default) or ``"torchvision"``.
        epochs: default 90.
        batch_size: default 128.
        lr: default 0.01.
        schedule: ``"plateau"`` (default, paper) or ``"step"``.
        out: run directory (default ``runs/pretrain-<time>``).
        resume: continue from the newest complete checkpoint.
        precision: ``"float32"`` (default), ``"mixed_float16"`` or ``"mixed_bfloat16"``.
        jit: XLA-compile the train step (None: Keras' "auto").
        distribute: ``"none"`` (default), ``"mirrored"`` or ``"multiworker"``.
        steps_per_epoch: batches per epoch (default: one pass over the data).
        name: weights-store name (default ``pretrain-<variant>-<run dir name>``).
        seed: default 0.
        force: delete ``out`` first if it holds anything.
        checkpoint_every: also checkpoint every N steps (default 1000).
        patience: plateau patience in epochs (default 5).
        ten_crop: evaluate the best model with ten crops at the end.
        init: ``"paper"`` (N(0, 0.01), default) or ``"he"`` (trains faster from scratch
            on small data).
        register: register the best model in the weights store.
        progress: event callback (never prints).

    Returns:
        A :class:`RunResult`.
    """
    from alexkit.distribute import STRATEGIES
    from alexkit.model import VARIANTS

    t0 = time.perf_counter()
    out_path = _resolve_out(out, "pretrain")
    args = {
        "data": None if data is None else str(Path(data).absolute()),
        "val": None if val is None else str(Path(val).absolute()),
        "variant": variant,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "schedule": schedule,
        "precision": precision,
        "distribute": distribute,
        "steps_per_epoch": steps_per_epoch,
        "seed": seed,
        "patience": patience,
        "init": init,
        "name": name,
    }
    args = _merge_saved_args(out_path, resume, args)
    data, val = args["data"], args["val"]
    if data is None:
        raise UsageError("--data is required (it may be left out only with --resume).")
    defaults = {
        "variant": "original",
        "epochs": 90,
        "batch_size": 128,
        "lr": 0.01,
        "schedule": "plateau",
        "precision": "float32",
        "distribute": "none",
        "seed": 0,
        "patience": 5,
        "init": "paper",
    }
    resolved = {
        k: (defaults[k] if args.get(k) is None and k in defaults else args.get(k))
        for k in set(args) | set(defaults)
    }
    variant = resolved["variant"]
    if variant not in VARIANTS:
        raise UsageError(f"--variant must be one of {sorted(VARIANTS)}; got {variant!r}.")
    if resolved["schedule"] not in ("plateau", "step"):
        raise UsageError(f"--schedule must be plateau or step; got {resolved['schedule']!r}.")
    if resolved["precision"] not in PRECISIONS:
        raise UsageError(
            f"--precision must be one of {list(PRECISIONS)}; got {resolved['precision']!r}."
        )
    if resolved["distribute"] not in STRATEGIES:
        raise UsageError(
            f"--distribute must be one of {list(STRATEGIES)}; got {resolved['distribute']!r}."
        )
    if resolved["init"] not in ("paper", "he"):
        raise UsageError(f"--init must be paper or he; got {resolved['init']!r}.")
    for key in ("epochs", "batch_size"):
        if int(resolved[key]) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1; got {resolved[key]}.")
    if float(resolved["lr"]) <= 0:
        raise UsageError(f"--lr must be > 0; got {resolved['lr']}.")
    data = Path(data)
    if not data.exists() and not any(ch in str(data) for ch in "*?["):
        raise DataError(f"--data {data} does not exist.")
    seed = int(resolved["seed"])
    batch = int(resolved["batch_size"])

    strategy = None
    worker: int | None = None  # set under multiworker only (0 = the chief)
    feed: Any = None
    if resolved["distribute"] != "none":
        from alexkit.distribute import get_strategy, is_chief

        strategy = get_strategy(resolved["distribute"])
        replicas = int(strategy.num_replicas_in_sync)
        if batch % replicas:
            raise UsageError(f"--batch-size {batch} must be divisible by the {replicas} replicas.")
        if resolved["distribute"] == "multiworker":
            from alexkit.distribute import ReplicaFeed

            feed = ReplicaFeed(strategy)
            worker = 0 if is_chief(strategy) else max(feed.worker, 1)

    # Only the chief writes --out. Another worker trains in a scratch run dir (same
    # computation, outputs thrown away) and reads the chief's run dir on --resume,
    # which then has to be on a filesystem every worker can read.
    home = RunDir(out_path)
    run: RunDir | None = None
    error: AlexkitError | None = None
    try:
        if worker:
            if resume and not home.checkpoint_dir.is_dir():
                raise CheckpointError(
                    f"worker {worker} cannot read {home.checkpoint_dir}: with --resume every "
                    "worker needs the chief's run directory (a shared filesystem or a copy)."
                )
            scratch = Path(tempfile.mkdtemp(prefix=f"alexkit-worker{worker}-"))
            run = RunDir.prepare(scratch, resume=False, force=True)
        else:
            run = home = RunDir.prepare(out_path, resume=resume, force=force)
    except AlexkitError as exc:
        error = exc
    if worker is not None:
        # Agree before training: a worker that cannot start (e.g. --out exists without
        # --force, only the chief checks) must stop the others, not leave them waiting
        # in the first collective.
        others_failed = feed.mean({"failed": 0.0 if error is None else 1.0})["failed"] > 0
        if error is None and others_failed:
            if run is not None and worker:
                shutil.rmtree(run.path, ignore_errors=True)
            raise UsageError(
                "another worker could not start (its error is on its own terminal); "
                "nothing was trained."
            )
    if error is not None:
        raise error
    assert run is not None
    try:
        result = _pretrain_run(
            run, home, worker, strategy, resolved, args, data, val, seed, batch, variant,
            resume=resume, force=force, jit=jit, checkpoint_every=checkpoint_every,
            ten_crop=ten_crop, register=register, name=name, progress=progress, t0=t0,
        )  # fmt: skip
        if worker is not None:
            feed.mean({})  # wait for the chief's final evaluation and writes
        return result
    finally:
        if worker:
            shutil.rmtree(run.path, ignore_errors=True)


def _pretrain_run(
    run: RunDir,
    home: RunDir,
    worker: int | None,
    strategy: Any,
    resolved: dict[str, Any],
    args: dict[str, Any],
    data: Path,
    val: str | Path | None,
    seed: int,
    batch: int,
    variant: str,
    *,
    resume: bool,
    force: bool,
    jit: bool | None,
    checkpoint_every: int | None,
    ten_crop: bool,
    register: bool,
    name: str | None,
    progress: ProgressFn | None,
    t0: float,
) -> RunResult:
    """The part of :func:`pretrain` after the run directory is settled."""
    from alexkit.model import VARIANTS

    _seed_everything(seed)
    image_size = int(VARIANTS[variant]["image_size"])
    plan, make_train, make_val, make_eval, fp_sources = _pretrain_data(
        data,
        val,
        seed=seed,
        image_size=image_size,
        batch=batch,
        saved=home.read_config() if resume else None,
    )
    stage = StagePlan(
        name="pretrain",
        epochs=int(resolved["epochs"]),
        trainable_from="all",
        optimizer="paper_sgd",
        lr=float(resolved["lr"]),
        schedule=(
            {"kind": "plateau", "patience": int(resolved["patience"])}
            if resolved["schedule"] == "plateau"
            else {"kind": "step", "step_epochs": 30}
        ),
    )
    num_classes = len(plan.class_names)
    monitor = "val_accuracy" if make_val is not None else "loss"
    config = {
        "kind": "pretrain",
        "class_names": plan.class_names,
        "variant": variant,
        "image_size": image_size,
        "grayscale": False,
        "recipe": {
            "name": "paper",
            "stages": [dataclasses.asdict(stage)],
            "batch_size": batch,
            "init": resolved["init"],
            "dropout": 0.5,
            "weight_decay": 5e-4,
            "momentum": 0.9,
        },
        "args": args,
        "resolved": resolved,
        "preprocessing": _preprocessing(variant, plan),
        "data": fp_sources,
        "versions": _versions(),
        "fingerprints": {
            "recipe": _fingerprint(
                {
                    k: resolved[k]
                    for k in (
                        "variant",
                        "batch_size",
                        "lr",
                        "schedule",
                        "precision",
                        "seed",
                        "patience",
                        "init",
                        "steps_per_epoch",
                    )
                }
            ),
            "data": data_fingerprint(fp_sources),
        },
    }
    if resume:
        _check_resume_config(home, config)
    if not resume or worker:
        run.write_config(config)

    import keras

    def build_model() -> Any:
        from alexkit.model import build_alexnet

        return build_alexnet(
            variant, num_classes=num_classes, dropout=0.5, seed=seed, kernel_init=resolved["init"]
        )

    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(resolved["precision"])
    try:
        engine = _Engine(
            run=run,
            build_model=build_model,
            stages=[stage],
            data=plan,
            make_train=make_train,
            make_val=make_val,
            monitor=monitor,
            metrics=["loss", "accuracy", "top5"],
            class_weight=None,
            seed=seed,
            steps_per_epoch=resolved.get("steps_per_epoch"),
            checkpoint_every=1000 if checkpoint_every is None else checkpoint_every,
            jit=jit,
            progress=progress,
            strategy=strategy,
            resume=resume,
            save_last=True,
            restore_dir=home.checkpoint_dir if worker else None,
            writes=not worker,
        )
        state = engine.run_all()
        metrics = None
        if not worker:
            metrics = _final_metrics(
                run, engine, state, tta="ten-crop" if ten_crop else "center", make_eval=make_eval
            )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    weights_name = None
    if register and not worker and run.model_path.exists():
        weights_name = _register(run, name or resolved.get("name"), variant, force=force)
        _emit(progress, "registered", name=weights_name)
    _emit(progress, "done", run_dir=str(home.path))
    result = _result(
        run, engine, state, resumed=resume, t0=t0, metrics=metrics, weights_name=weights_name
    )
    result.worker = worker
    if worker:  # the chief's paths: this worker's scratch copy is removed
        result.run_dir, result.model_path = home.path, home.model_path
    return result


def _register(run: RunDir, name: str | None, variant: str, *, force: bool) -> str:
    import keras

    import alexkit.layers  # noqa: F401
    import alexkit.optim  # noqa: F401
    from alexkit.weights import register_weights

    entry = name or f"pretrain-{variant}-{run.path.resolve().name}"
    entry = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in entry)
    model = keras.saving.load_model(run.model_path, compile=False)
    # A resumed run re-registers its own entry; another run's entry needs --force.
    overwrite = force or _registered_from(entry) == str(run.path.resolve())
    register_weights(
        model,
        entry,
        variant=variant,
        source=str(run.path.resolve()),
        kind="imagenet",
        overwrite=overwrite,
        extra={"class_names_file": str(run.config_path)},
    )
    return entry


def _registered_from(name: str) -> str | None:
    from alexkit.paths import alexkit_home

    meta = alexkit_home() / "weights" / name / "meta.json"
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError):
        return None


def _pretrain_data(
    data: Path,
    val: str | Path | None,
    *,
    seed: int,
    image_size: int,
    batch: int,
    saved: dict[str, Any] | None,
) -> tuple[
    _DataPlan,
    Callable[..., Any],
    Callable[[], Any] | None,
    Callable[[str], Any] | None,
    dict[str, Any],
]:
    """Folders, ImageNet layout or TFRecord shards, all through :func:`alexkit.data.load_spec`."""
    from alexkit.data.augment import AugmentConfig

    augment = AugmentConfig()  # the paper's: resize 256, random 227 crop, flip, PCA lighting
    class_names = saved.get("class_names") if saved else None
    train_spec, val_spec = _load_specs(data, val, seed=seed, class_names=class_names)
    if train_spec.is_tfrecord:
        known = (saved or {}).get("data", {}).get("num_train")
        num_train = int(known) if known else _count_records(train_spec.items)
    else:
        _check_labels(train_spec, str(data))
        num_train = len(train_spec)
    plan = _DataPlan(
        train=train_spec,
        val=val_spec,
        class_names=list(train_spec.class_names),
        image_size=image_size,
        batch_size=batch,
        augment=augment,
        num_train=num_train,
    )
    make_train, make_val, make_eval = _make_dataset_fns(plan, seed)
    sources = {
        "train": str(data),
        "val": None if val is None else str(val),
        "format": "tfrecord" if train_spec.is_tfrecord else "images",
        "num_train": num_train,
        "num_val": None if val_spec is None else len(val_spec),
        "items": data_fingerprint(train_spec, val_spec),
    }
    return plan, make_train, make_val, make_eval, sources


def _count_records(shards: Sequence[str]) -> int:
    """Records in TFRecord shards: ``pack.json`` when alexkit wrote them, else one pass."""
    import tensorflow as tf

    folder = Path(shards[0]).parent
    try:
        meta = json.loads((folder / "pack.json").read_text(encoding="utf-8"))
        names = {Path(p).name for p in shards}
        packed = meta.get("shards", {})
        for prefix, files in packed.items():
            if set(files) == names:
                return int(meta["counts"][prefix])
    except (OSError, ValueError, KeyError, TypeError):
        pass

    count = tf.data.TFRecordDataset(list(shards)).reduce(np.int64(0), lambda n, _: n + 1)
    return int(count)
