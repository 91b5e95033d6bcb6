"""The training loop both workflows share: stages of epochs of steps.

Each step is one ``model.train_on_batch``. At every epoch end the engine validates,
averages the metrics over workers, then asks the policies of :mod:`alexkit.train.policies`
in a fixed order: best model, early stopping, LR schedule, checkpoint, history/logs.

Resume semantics: ``resume=True`` loads the newest complete checkpoint (falling back to
the previous one if it is damaged) and continues from exactly that step: the interrupted
epoch's data order is rebuilt from the run seed and the epoch number and the batches
already seen are skipped, so the epoch ends with the same set of examples it would have
seen without the interruption. The history and the running epoch averages are part of
the checkpoint, so ``history.csv`` never holds a duplicate epoch.

Determinism: with the same seed on CPU two runs give the same history
(``keras.utils.set_random_seed`` + ``tf.config.experimental.enable_op_determinism`` +
seeded tf.data), and the dropout RNG state travels in the checkpoint.

Frozen prefixes: a stage that trains only the top of a chain model computes the frozen
layers' output on the validation images once, and on K augmented views of the training
images (:mod:`alexkit.train.feature_cache`), feeding the top from them. The end of a run
(``metrics.json``, the result) is in :mod:`alexkit.train.results`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import DataError, Interrupted, RecipeError, UsageError
from alexkit.inference import predict_batches
from alexkit.metrics import compute_val_metrics
from alexkit.runs import RunDir
from alexkit.train.common import ProgressFn, default_keep_checkpoints, emit
from alexkit.train.feature_cache import (
    CACHE_DIR,
    TrainFeatureCache,
    chain_layers,
    memory_budget,
    plan_train_cache,
    resolve_views,
)
from alexkit.train.plan import DataPlan, StagePlan
from alexkit.train.policies import (
    BestModel,
    Checkpoints,
    EarlyStop,
    HistoryLog,
    Schedule,
)

# The end of a run (alexkit.train.results), imported from here by finetune and pretrain.
from alexkit.train.results import final_metrics, run_result  # noqa: F401

log = logging.getLogger(__name__)

OPTIMIZERS = ("paper_sgd", "sgd", "adam")


def build_optimizer(stage: StagePlan) -> Any:
    """The stage's optimizer: the paper's SGD (coupled weight decay) or Adam."""
    import keras

    if stage.optimizer in ("paper_sgd", "sgd"):
        from alexkit.optim import PaperSGD

        return PaperSGD(
            learning_rate=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay
        )
    if stage.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=stage.lr)
    raise RecipeError(f"unknown optimizer {stage.optimizer!r}; choose one of {list(OPTIMIZERS)}.")


def _fresh_accum() -> dict[str, Any]:
    return {"loss": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0}


@dataclass
class _Restored:
    """What a checkpoint holds for the stage it was saved in (applied when it starts)."""

    stage: int
    optimizer_arrays: list[np.ndarray]
    optimizer_paths: list[str] | None
    schedule: dict[str, Any] | None


class Engine:
    """The shared training loop over stages of a compiled Keras model.

    Args:
        run: the run directory written to.
        build_model: returns the uncompiled model (called in the strategy's scope).
        stages: the stages to run, in order.
        data: the run's data plan.
        make_train: ``make_train(epoch, steps[, shard])`` -> the epoch's batches.
        make_val: -> the validation batches, or None without validation data.
        monitor: the metric that picks the best model.
        metrics: validation metrics computed every epoch.
        class_weight: Keras ``class_weight`` or None.
        seed: the run seed.
        steps_per_epoch: batches per epoch (None: one pass over the data).
        checkpoint_every: also checkpoint every N steps.
        jit: XLA-compile the train step (None: Keras' "auto").
        progress: event callback.
        strategy: a ``tf.distribute`` strategy or None.
        resume: continue from the newest checkpoint.
        save_last: also save ``last.keras`` at the end.
        restore_dir: resume from these checkpoints instead of the run's own.
        writes: False on non-chief workers (no checkpoints or models).
        keep_checkpoints: checkpoints kept (the newest); 0 writes none (Ctrl-C still
            saves one for ``--resume``) and leaves none when the run ends. None: 2, or
            what :func:`alexkit.train.common.keep_checkpoints` set.
        start_weights_on_resume: ``build_model`` gives the run's starting weights on
            resume too (it loads the same weights file): frozen layers that still hold
            them are then referenced by digest (checked on resume) instead of written
            once per stage to ``checkpoints/frozen-<digest>.npz``.
        cache_val: compute a stage's frozen prefix on the validation images once (a
            chain model whose stage trains its top layers); metrics are unchanged.
        feature_cache_views: training views of the frozen prefix's output kept per
            image (:mod:`alexkit.train.feature_cache`); 0 turns it off, None is
            :data:`~alexkit.train.feature_cache.DEFAULT_VIEWS`.
        feature_cache_memory: bytes that cache may hold in memory before it streams
            from disk (None: ``$ALEXKIT_FEATURE_CACHE_MEMORY`` or 1 GiB).
    """

    def __init__(
        self,
        *,
        run: RunDir,
        build_model: Callable[[], Any],
        stages: Sequence[StagePlan],
        data: DataPlan,
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
        keep_checkpoints: int | None = None,
        start_weights_on_resume: bool = False,
        cache_val: bool = True,
        feature_cache_views: int | None = None,
        feature_cache_memory: int | None = None,
    ):
        self.run = run
        self.build_model = build_model
        self.stages = list(stages)
        self.data = data
        self.make_train = make_train
        self.make_val = make_val
        self.monitor = monitor
        self.metrics = list(metrics)
        self.class_weight = class_weight
        self.seed = int(seed)
        self.steps_per_epoch = steps_per_epoch
        self.jit = jit
        self.progress = progress
        self.strategy = strategy
        self.resume = resume
        self.save_last = save_last
        self.start_weights_on_resume = start_weights_on_resume
        self.cache_val = cache_val
        self._val_cut: tuple[Any, list[Any]] | None = None
        self._val_cache: tuple[np.ndarray, list[np.ndarray]] | None = None
        self.feature_cache_views = resolve_views(feature_cache_views)
        self.feature_cache_memory = feature_cache_memory
        self.train_cache: TrainFeatureCache | None = None
        self.feed = self._replica_feed()
        self.checkpoints = Checkpoints(
            run,
            every=checkpoint_every,
            writes=writes,
            restore_dir=restore_dir,
            progress=progress,
            keep=default_keep_checkpoints() if keep_checkpoints is None else keep_checkpoints,
        )
        # The best model is kept in memory and as its changed variables in
        # checkpoints/best-<epoch> (lean, like a checkpoint; none with keep 0, where a
        # crash restarts the run); model.keras is written from it once, when the run ends
        # or is interrupted. After a crash, --resume reads it back and writes model.keras.
        self.best = BestModel(monitor, lambda m: self.checkpoints.save_best(m, self.best.epoch))
        self.early = EarlyStop()
        self.schedule = Schedule()
        self.log = HistoryLog(run)
        self.model: Any = None
        self.first_batch_loss: float | None = None
        # Where the loop is; with the policies' states it makes a checkpoint's state.json.
        self.position: dict[str, Any] = {
            "global_step": 0,
            "epoch": 0,  # finished epochs, all stages
            "stage": 0,
            "stage_epoch": 0,  # finished epochs in this stage
            "step_in_epoch": 0,
            "accum": _fresh_accum(),
            "history": [],
        }

    def _replica_feed(self) -> Any:
        if self.strategy is None:
            return None
        from alexkit.distribute import ReplicaFeed

        if self.class_weight:
            raise UsageError("class weights are not supported with --distribute.")
        if self.data.num_train < self.data.batch_size:
            raise UsageError(
                f"--distribute needs at least one full global batch: {self.data.num_train} "
                f"training images < --batch-size {self.data.batch_size}."
            )
        return ReplicaFeed(self.strategy)

    @property
    def best_weights(self) -> list[np.ndarray] | None:
        """The best epoch's weights, when it was trained in this call."""
        return self.best.weights

    def snapshot(self) -> dict[str, Any]:
        """The loop state as a checkpoint's ``state.json`` holds it (key order kept)."""
        p = self.position
        return {
            "version": 1,
            "global_step": p["global_step"],
            "epoch": p["epoch"],
            "stage": p["stage"],
            "stage_epoch": p["stage_epoch"],
            "stage_done": self.early.done,
            "step_in_epoch": p["step_in_epoch"],
            "accum": p["accum"],
            "history": p["history"],
            "best": self.best.state_dict(),
            "stage_best": self.early.best,
            "stage_wait": self.early.wait,
            "schedule": self.schedule.state_dict(),
        }

    def steps(self) -> int:
        """Batches per epoch."""
        if self.steps_per_epoch:
            return int(self.steps_per_epoch)
        n = self.data.num_train
        if self.feed is not None:
            # Distributed: full global batches only (they split evenly over replicas).
            return n // self.data.batch_size
        return max(1, math.ceil(n / self.data.batch_size))

    def _scope(self) -> Any:
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    # ----------------------------------------------------------------- loop

    def run_all(self) -> dict[str, Any]:
        """Train every stage to the end; return the final loop state (``snapshot()``)."""
        with self._scope():
            self.model = self.build_model()
        if self.start_weights_on_resume and any(s.trainable_from != "all" for s in self.stages):
            # Frozen layers that keep the starting weights are left out of checkpoints.
            self.checkpoints.note_initial(self.model)
        restored = self._restore() if self.resume else None
        emit(
            self.progress,
            "start",
            run_dir=str(self.run.path),
            resumed=self.resume,
            total_epochs=sum(s.epochs for s in self.stages),
            steps=self.steps(),
            stages=[{"name": s.name, "epochs": s.epochs} for s in self.stages],
        )
        self.log.open()
        try:
            while self.position["stage"] < len(self.stages):
                stage = self.stages[self.position["stage"]]
                if not self.early.done and self.position["stage_epoch"] < stage.epochs:
                    if restored is not None and restored.stage != self.position["stage"]:
                        # The checkpoint ended its stage: this one starts a fresh optimizer
                        # and schedule, as it does in a run never interrupted.
                        restored = None
                    self._start_stage(stage, restored)
                    restored = None
                    while self.position["stage_epoch"] < stage.epochs and not self.early.done:
                        self._run_epoch(stage)
                self._next_stage()
            if self.save_last:
                self.checkpoints.save_model(self.model, self.run.last_model_path)
            self._save_best_model()
            self.checkpoints.finish()
        except KeyboardInterrupt:
            self._interrupted()
        finally:
            self._close_train_cache()
            self.log.close()
        return self.snapshot()

    def _restore(self) -> _Restored:
        loaded = self.checkpoints.load_latest()
        state, optimizer_arrays, folder = loaded.state, loaded.optimizer_arrays, loaded.folder
        # Before the checkpoint goes in: frozen parts may be the freshly built weights.
        self.best.weights = self.checkpoints.load_best(self.model, state["best"]["epoch"])
        self.checkpoints.restore_model(self.model, loaded)
        log.info("resuming from %s", folder)
        emit(
            self.progress,
            "resume",
            checkpoint=str(folder),
            epoch=state["epoch"],
            step_in_epoch=state["step_in_epoch"],
            global_step=state["global_step"],
        )
        self.position = {key: state[key] for key in self.position}
        self.best.load_state_dict(state["best"])
        self.early.load_state_dict(state)
        self.log.write_history(self.position["history"])
        return _Restored(
            state["stage"], optimizer_arrays, state.get("optimizer_paths"), state["schedule"]
        )

    def _start_stage(self, stage: StagePlan, restored: _Restored | None) -> None:
        self._compile(stage)
        self.checkpoints.start_stage(self.model)
        self._plan_val_cache()
        self._plan_train_cache(stage)
        self.schedule.start_stage(stage, restored.schedule if restored else None)
        if restored is not None:
            Checkpoints.restore_optimizer(
                self.model.optimizer, restored.optimizer_arrays, restored.optimizer_paths
            )
        emit(
            self.progress,
            "stage",
            stage=self.position["stage"] + 1,
            name=stage.name,
            epochs=stage.epochs,
            trainable_from=stage.trainable_from,
            trainable_params=int(sum(np.prod(v.shape) for v in self.model.trainable_variables)),
        )

    def _save_best_model(self) -> None:
        """Write ``model.keras`` from the best weights kept in memory.

        The file holds the model without optimizer state (half the size of a compiled
        AlexNet's file when every layer trains): the checkpoints are what resumes.
        """
        if self.best.weights is None or not self.checkpoints.writes:
            return
        try:
            plain = self.model.__class__.from_config(self.model.get_config())
            plain.set_weights(self.best.weights)
        except (TypeError, ValueError, NotImplementedError):
            plain = None  # not rebuildable from its config: save the model itself
        if plain is not None:
            self.checkpoints.save_model(plain, self.run.model_path)
            return
        current = [np.array(v.numpy()) for v in self.model.weights]
        self.model.set_weights(self.best.weights)
        try:
            self.checkpoints.save_model(self.model, self.run.model_path)
        finally:
            self.model.set_weights(current)

    def _next_stage(self) -> None:
        self.position["stage"] += 1
        self.position["stage_epoch"] = 0
        self.early.reset()

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
            self.model.compile(
                optimizer=build_optimizer(stage),
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

    def _interrupted(self) -> None:
        if self.model is None or getattr(self.model, "optimizer", None) is None:
            raise Interrupted("interrupted before training started; nothing was saved.") from None
        path = self.checkpoints.save(self.model, self.snapshot(), interrupted=True)
        self._save_best_model()
        self.log.write_history(self.position["history"])
        writes = self.checkpoints.writes
        saved = f"state saved to {path}" if writes else "the chief saves the state"
        raise Interrupted(
            f"interrupted at epoch {self.position['epoch'] + 1} step "
            f"{self.position['step_in_epoch']}; {saved}; continue with --resume."
        ) from None

    # ----------------------------------------------------------------- epoch

    def _run_epoch(self, stage: StagePlan) -> None:
        """Train one epoch, validate, then let the policies decide in their fixed order."""
        lr = self.schedule.lr(self.position["stage_epoch"])
        self.model.optimizer.learning_rate = lr
        row = self._train_epoch(stage, lr)
        # The order of decisions is fixed: every worker and every resume takes the same.
        self._validate_into(row)  # validation, averaged over workers
        row["seconds"] = self.position["accum"]["seconds"]
        improved = self.best.update(row, self.model)  # best model
        row["best"] = int(improved)
        self.early.update(row, stage.early_stopping)  # early stopping
        self.schedule.end_epoch(self.position["stage_epoch"], self.best.error(row))  # LR
        self._end_epoch(row, improved)  # checkpoint, history, logs

    def _train_epoch(self, stage: StagePlan, lr: float) -> dict[str, Any]:
        """The epoch's batches (after a mid-epoch resume, the rest of them); its train row."""
        pos = self.position
        epoch_index, steps, start = pos["epoch"], self.steps(), int(pos["step_in_epoch"])
        if start == 0:
            pos["accum"] = _fresh_accum()
        emit(
            self.progress,
            "epoch_start",
            epoch=epoch_index + 1,
            stage=pos["stage"] + 1,
            stage_name=stage.name,
            stage_epoch=pos["stage_epoch"] + 1,
            stage_epochs=stage.epochs,
            steps=steps,
            start_step=start,
            lr=lr,
        )
        dataset, model = self._epoch_batches(epoch_index, steps, start)
        accum = pos["accum"]
        tick = time.perf_counter()
        for x, y in dataset:
            loss, accuracy, batch = self._train_step(x, y, epoch_index, model)
            now = time.perf_counter()
            accum["seconds"] += now - tick
            tick = now
            accum["loss"] += loss * batch
            accum["correct"] += accuracy * batch
            accum["count"] += batch
            pos["step_in_epoch"] += 1
            pos["global_step"] += 1
            emit(
                self.progress,
                "batch",
                epoch=epoch_index + 1,
                step=pos["step_in_epoch"],
                steps=steps,
                loss=accum["loss"] / accum["count"],
                accuracy=accum["correct"] / accum["count"],
                img_per_s=accum["count"] / max(accum["seconds"], 1e-9),
            )
            if self.checkpoints.due(pos["global_step"]):
                if pos["step_in_epoch"] < steps:  # the epoch-end save follows otherwise
                    self.checkpoints.save(self.model, self.snapshot())
                self.log.batch_loss(pos["global_step"], loss)
        if accum["count"] == 0:
            raise DataError("the training data produced no batches; check --data.")
        return {
            "epoch": epoch_index + 1,
            "stage": pos["stage"] + 1,
            "stage_name": stage.name,
            "stage_epoch": pos["stage_epoch"] + 1,
            "lr": lr,
            "loss": accum["loss"] / accum["count"],
            "accuracy": accum["correct"] / accum["count"],
            "images": accum["count"],
            "img_per_s": accum["count"] / max(accum["seconds"], 1e-9),
        }

    def _epoch_batches(self, epoch_index: int, steps: int, start: int) -> tuple[Any, Any]:
        """The epoch's batches from step ``start`` on, and the model they train.

        With a training-view cache: batches of the frozen prefix's output for the
        trainable top; otherwise the pipeline's images for the whole model.
        """
        if self.train_cache is not None:
            batches = self.train_cache.batches(
                self.make_train,
                epoch_index=epoch_index,
                stage_epoch=self.position["stage_epoch"],
                steps=steps,
                natural=self._natural_steps(),
                start=start,
            )
            return batches, self.train_cache.suffix
        if self.feed is not None:
            dataset = self.make_train(epoch_index, steps, (self.feed.worker, self.feed.workers))
        else:
            dataset = self.make_train(epoch_index, steps)
        if start:  # resumed mid-epoch: the same order, without the batches already seen
            dataset = dataset.skip(start)
        return dataset, self.model

    def _train_step(
        self, x: Any, y: Any, epoch_index: int, model: Any = None
    ) -> tuple[float, float, int]:
        """One optimizer step of ``model`` (default: the whole model); returns (loss,
        accuracy, images in the global batch)."""
        model = self.model if model is None else model
        batch = int(y.shape[0])
        model.reset_metrics()
        if self.feed is not None:
            # This worker's slice of the global batch, one part per local replica;
            # loss and accuracy come back as global-batch means.
            batch *= self.feed.workers
            x, y = self.feed.split(x, y)
        logs = model.train_on_batch(x, y, class_weight=self.class_weight, return_dict=True)
        loss = float(logs["loss"])
        if self.first_batch_loss is None:
            self.first_batch_loss = loss
        if not math.isfinite(loss):
            raise UsageError(
                f"the training loss became {loss} at epoch {epoch_index + 1}; lower the "
                "learning rate (--lr) and start again with --force."
            )
        return loss, float(logs.get("accuracy", 0.0)), batch

    def _validate_into(self, row: dict[str, Any]) -> None:
        val_metrics = self.validate()
        if self.feed is not None:
            # Identical on every worker: the LR plateau, best-model and early-stopping
            # decisions that follow must not differ between workers.
            val_metrics = self.feed.mean(val_metrics)
        row.update({f"val_{k}": v for k, v in val_metrics.items()})

    def _end_epoch(self, row: dict[str, Any], improved: bool) -> None:
        pos = self.position
        pos["history"] = [r for r in pos["history"] if r["epoch"] != row["epoch"]] + [row]
        pos["epoch"] += 1
        pos["stage_epoch"] += 1
        pos["step_in_epoch"] = 0
        self.checkpoints.save(self.model, self.snapshot())
        self.log.end_epoch(pos["history"], row)
        emit(
            self.progress,
            "epoch_end",
            epoch=row["epoch"],
            row=row,
            improved=improved,
            monitor=self.monitor,
            best=self.best.state_dict(),
        )

    # ----------------------------------------------------------------- inference

    def _plan_val_cache(self) -> None:
        """At a stage start: cache the frozen prefix's output on the validation images?

        Only when the model is a chain of layers, the stage trains a suffix of it, and
        nothing is distributed; the prefix's output is then computed on the first
        validation of the stage and reused by the later ones (the frozen layers cannot
        change within a stage, and validation has no augmentation and no dropout).
        """
        self._val_cut, self._val_cache = None, None
        if self.make_val is None or self.strategy is not None or not self.cache_val:
            return
        layers = chain_layers(self.model)
        if layers is None:
            return
        first = next((i for i, la in enumerate(layers) if la.trainable), None)
        if not first:  # everything trains (or nothing does): no frozen prefix
            return
        import keras

        prefix = keras.Model(self.model.inputs[0], layers[first - 1].output)
        self._val_cut = (prefix, layers[first:])

    def _natural_steps(self) -> int:
        """Batches of one pass over the training images."""
        return max(1, math.ceil(self.data.num_train / self.data.batch_size))

    def _plan_train_cache(self, stage: StagePlan) -> None:
        """At a stage start: feed the trainable top from cached prefix outputs?

        Only for a chain model whose stage trains a suffix above a frozen prefix, without
        ``tf.distribute`` and with K > 0 (:mod:`alexkit.train.feature_cache`); the
        previous stage's cache is dropped first (its prefix was another).
        """
        self._close_train_cache()
        if (
            self.feature_cache_views == 0
            or self.strategy is not None
            or stage.trainable_from == "all"
            or self.data.num_train <= 0
        ):
            return
        steps, natural = self.steps(), self._natural_steps()
        rows = self.data.num_train if steps <= natural else steps * self.data.batch_size
        budget = memory_budget() if self.feature_cache_memory is None else self.feature_cache_memory
        self.train_cache = plan_train_cache(
            self.model,
            views=self.feature_cache_views,
            stage_epochs=stage.epochs,
            rows=rows,
            budget=budget,
            folder=self.run.path / CACHE_DIR,
            seed=self.seed,
            batch_size=self.data.batch_size,
        )
        if self.train_cache is not None:
            self.train_cache.compile_like(self.model, self.jit)

    def _close_train_cache(self) -> None:
        if self.train_cache is not None:
            self.train_cache.close()
            self.train_cache = None

    def _validate_cached(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Labels and probabilities from the cached prefix output, or None (not cached)."""
        if self._val_cut is None:
            return None
        prefix, suffix = self._val_cut
        if self._val_cache is None:
            labels, features = [], []
            for batch in self.make_val():
                x = np.asarray(batch[0])
                if x.ndim != len(prefix.inputs[0].shape):  # ten-crop batches: no cache
                    self._val_cut = None
                    return None
                features.append(np.asarray(prefix(x, training=False)))
                labels.append(np.asarray(batch[1]))
            if not features:
                self._val_cut = None
                return None
            self._val_cache = (np.concatenate(labels), features)
            log.info("validation: frozen layers' output cached for this stage")
        y, features = self._val_cache
        probs = []
        for h in features:
            for layer in suffix:
                h = layer(h, training=False)
            probs.append(np.asarray(h).astype(np.float64))
        return y, np.concatenate(probs)

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
        """This epoch's validation metrics (empty without validation data)."""
        if self.make_val is None:
            return {}
        cached = self._validate_cached()
        y, p = cached if cached is not None else self.predict(self.make_val())
        if y.size == 0:
            return {}
        return compute_val_metrics(y, p, self.metrics)
