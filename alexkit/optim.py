"""The paper's optimiser and learning-rate schedules (Krizhevsky et al. 2012, §5).

The paper trains with SGD, batch 128, momentum 0.9 and weight decay 5e-4, using the
update rule

    v ← μ·v − λ·ε·w − ε·∇L
    w ← w + v

with μ = 0.9, λ = 0.0005 and ε the learning rate. The decay term sits *inside* the
momentum buffer, so it is accumulated like a gradient (it is L2 regularisation of the
loss, ½λ‖w‖², folded into the update). Keras' built-in ``weight_decay=`` argument is
*decoupled* (``w ← w − ε·λ·w`` applied to the weights directly, never entering the
velocity, as in AdamW/SGDW): it equals the paper's rule on the first step from zero
velocity and differs from the second step on. :class:`PaperSGD` implements the paper's
rule exactly; ``tests/test_optim.py`` checks two steps against a hand computation.

Schedules (all epoch-based, applied between epochs):

* ``step``: ``lr = base_lr · factor^(epoch // step_epochs)`` (÷10 every 30 epochs).
* ``plateau``: the paper's rule, ÷10 when the validation error stops improving for
  ``patience`` epochs, never below ``min_lr`` (default 1e-5 = three reductions from
  0.01, as in the paper). Its state is a JSON-able dict (:meth:`state_dict` /
  :meth:`load_state_dict`) so a resumed run continues where it stopped.
* ``constant``: ``base_lr`` throughout.

Use :class:`LRScheduleCallback` to drive any of them from ``model.fit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

from alexkit.errors import CheckpointError, UsageError

__all__ = [
    "PaperSGD",
    "step_lr",
    "StepSchedule",
    "PlateauSchedule",
    "ConstantSchedule",
    "build_lr_schedule",
    "LRScheduleCallback",
    "SCHEDULES",
]


@keras.saving.register_keras_serializable(package="alexkit")
class PaperSGD(keras.optimizers.Optimizer):
    """SGD with momentum and the paper's coupled weight decay.

    Update for every trainable variable ``w`` with gradient ``g`` and learning rate ε::

        v ← momentum·v − weight_decay·ε·w − ε·g
        w ← w + v

    Unlike ``keras.optimizers.SGD(weight_decay=...)`` (decoupled decay applied to the
    weights outside the velocity), the decay here enters the momentum buffer exactly as
    in §5 of the paper. Backend-agnostic (``keras.ops`` and the optimizer's ``assign``
    API), so it runs under TensorFlow, JAX and PyTorch backends and inside
    ``tf.distribute`` strategies.

    Args:
        learning_rate: ε, a float or a ``LearningRateSchedule`` (paper: 0.01).
        momentum: μ in [0, 1) (paper: 0.9).
        weight_decay: λ >= 0 (paper: 5e-4). This is the *coupled* decay; Keras'
            decoupled decay of the base class is always off for this optimiser.
        decay_biases: the paper decays every weight (True, default); False skips
            1-D variables (biases), as Caffe's ``decay_mult: 0`` on biases does.
        name: optimiser name.
        **kwargs: the base optimiser's keywords (``clipnorm``, ``global_clipnorm``,
            ``use_ema``, ``loss_scale_factor``, ``gradient_accumulation_steps`` ...).

    Example:
        >>> opt = PaperSGD(learning_rate=0.01)  # momentum 0.9, decay 5e-4
        >>> model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    """

    def __init__(
        self,
        learning_rate: float | Any = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        decay_biases: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ):
        # Keras' own (decoupled) weight_decay must stay off; ours is applied in update_step.
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        momentum = float(momentum)
        if not 0.0 <= momentum < 1.0:
            raise UsageError(
                f"PaperSGD momentum must be in [0, 1) (paper: 0.9). Received: momentum={momentum}"
            )
        weight_decay = float(weight_decay)
        if weight_decay < 0.0 or not math.isfinite(weight_decay):
            raise UsageError(
                "PaperSGD weight_decay must be a finite number >= 0 (paper: 5e-4). "
                f"Received: weight_decay={weight_decay}"
            )
        self.momentum = momentum
        self.coupled_weight_decay = weight_decay
        self.decay_biases = bool(decay_biases)

    def build(self, variables: list) -> None:
        """Create one ``momentum`` slot (the velocity v, zero-initialised) per variable."""
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def _decays(self, variable: Any) -> bool:
        if self.coupled_weight_decay == 0.0:
            return False
        # Biases are the 1-D variables of Conv/Dense layers.
        return self.decay_biases or len(variable.shape) > 1

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Apply ``v ← μv − λεw − εg; w ← w + v`` to one variable."""
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self.momentums[self._get_variable_index(variable)]
        step = gradient
        if self._decays(variable):
            decay = ops.cast(self.coupled_weight_decay, variable.dtype)
            step = ops.add(gradient, ops.multiply(decay, variable))
        momentum = ops.cast(self.momentum, variable.dtype)
        self.assign(
            velocity,
            ops.subtract(ops.multiply(momentum, velocity), ops.multiply(lr, step)),
        )
        self.assign_add(variable, velocity)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.coupled_weight_decay,
                "decay_biases": self.decay_biases,
            }
        )
        return config


def step_lr(epoch: int, base_lr: float = 0.01, step_epochs: int = 30, factor: float = 0.1) -> float:
    """The ``step`` schedule: ``base_lr · factor^(epoch // step_epochs)`` (epoch from 0).

    Example:
        >>> step_lr(29), step_lr(30), step_lr(60)
        (0.01, 0.001, 0.0001)
    """
    # Divide by 1/factor rather than multiply by factor: 0.01 / 10**2 is exactly 1e-4,
    # 0.01 * 0.1**2 is not.
    return float(base_lr) / (1.0 / float(factor)) ** (int(epoch) // int(step_epochs))


def _check_positive(name: str, value: float, kind: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UsageError(f"{kind} schedule needs {name} > 0. Received: {name}={value!r}")


@dataclass
class ConstantSchedule:
    """``base_lr`` for every epoch (fine-tuning with a fixed rate)."""

    base_lr: float = 0.01
    kind = "constant"

    def __post_init__(self) -> None:
        _check_positive("base_lr", self.base_lr, "constant")

    def lr_for_epoch(self, epoch: int) -> float:
        """Learning rate to use for ``epoch`` (0-based)."""
        return float(self.base_lr)

    def end_epoch(self, epoch: int, val_error: float | None = None) -> float:
        """Record the epoch's validation error; returns the next epoch's rate."""
        return self.lr_for_epoch(epoch + 1)

    def state_dict(self) -> dict:
        """JSON-able state (parameters only: this schedule has no memory)."""
        return {"kind": self.kind, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        _check_kind(state, self.kind)
        self.base_lr = float(state["base_lr"])


@dataclass
class StepSchedule:
    """``step``: divide by ``1/factor`` every ``step_epochs`` epochs (default ÷10 every 30)."""

    base_lr: float = 0.01
    step_epochs: int = 30
    factor: float = 0.1
    kind = "step"

    def __post_init__(self) -> None:
        _check_positive("base_lr", self.base_lr, "step")
        _check_positive("step_epochs", self.step_epochs, "step")
        _check_positive("factor", self.factor, "step")

    def lr_for_epoch(self, epoch: int) -> float:
        """Learning rate to use for ``epoch`` (0-based)."""
        return step_lr(epoch, self.base_lr, self.step_epochs, self.factor)

    def end_epoch(self, epoch: int, val_error: float | None = None) -> float:
        """Record the epoch's validation error (unused); returns the next epoch's rate."""
        return self.lr_for_epoch(epoch + 1)

    def state_dict(self) -> dict:
        """JSON-able state (parameters only: the rate is a function of the epoch)."""
        return {
            "kind": self.kind,
            "base_lr": self.base_lr,
            "step_epochs": self.step_epochs,
            "factor": self.factor,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        _check_kind(state, self.kind)
        self.base_lr = float(state["base_lr"])
        self.step_epochs = int(state["step_epochs"])
        self.factor = float(state["factor"])


@dataclass
class PlateauSchedule:
    """``plateau``: the paper's rule, ÷10 when validation error stops improving.

    After each epoch call :meth:`end_epoch` with the validation error (lower is
    better; pass ``1 - accuracy``). When ``patience`` epochs in a row fail to beat the
    best error by more than ``min_delta``, the rate is multiplied by ``factor`` (not
    below ``min_lr``) and the patience counter restarts.

    Args:
        base_lr: starting rate (paper: 0.01).
        factor: multiplier on a plateau (paper: 0.1).
        patience: epochs without improvement before reducing (paper: unstated; 5).
        min_delta: an improvement must exceed this to count.
        min_lr: floor (default 1e-5: the paper's three reductions from 0.01).
    """

    base_lr: float = 0.01
    factor: float = 0.1
    patience: int = 5
    min_delta: float = 0.0
    min_lr: float = 1e-5
    lr: float | None = None
    best: float | None = None
    bad_epochs: int = 0
    reductions: int = 0
    kind = "plateau"

    def __post_init__(self) -> None:
        _check_positive("base_lr", self.base_lr, "plateau")
        _check_positive("factor", self.factor, "plateau")
        if self.factor >= 1:
            raise UsageError(f"plateau schedule needs factor < 1. Received: factor={self.factor}")
        if int(self.patience) < 1:
            raise UsageError(
                f"plateau schedule needs patience >= 1. Received: patience={self.patience}"
            )
        if self.lr is None:
            self.lr = float(self.base_lr)

    def lr_for_epoch(self, epoch: int) -> float:
        """Learning rate to use for the coming epoch (depends on history, not ``epoch``)."""
        return float(self.lr)

    def end_epoch(self, epoch: int, val_error: float | None = None) -> float:
        """Record the epoch's validation error; returns the rate for the next epoch.

        ``None`` or NaN errors (no validation this epoch) leave the state unchanged.
        """
        if val_error is None or not math.isfinite(float(val_error)):
            return float(self.lr)
        val_error = float(val_error)
        if self.best is None or val_error < self.best - self.min_delta:
            self.best = val_error
            self.bad_epochs = 0
            return float(self.lr)
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            new_lr = max(float(self.lr) / (1.0 / self.factor), float(self.min_lr))
            if new_lr < float(self.lr) * (1 - 1e-9):  # at the floor: no more reductions
                self.lr = new_lr
                self.reductions += 1
            self.bad_epochs = 0
        return float(self.lr)

    def state_dict(self) -> dict:
        """JSON-able state: parameters plus the current rate, best error and counters."""
        return {
            "kind": self.kind,
            "base_lr": self.base_lr,
            "factor": self.factor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "min_lr": self.min_lr,
            "lr": self.lr,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "reductions": self.reductions,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (e.g. from a checkpoint when resuming)."""
        _check_kind(state, self.kind)
        try:
            self.base_lr = float(state["base_lr"])
            self.factor = float(state["factor"])
            self.patience = int(state["patience"])
            self.min_delta = float(state["min_delta"])
            self.min_lr = float(state["min_lr"])
            self.lr = float(state["lr"])
            self.best = None if state["best"] is None else float(state["best"])
            self.bad_epochs = int(state["bad_epochs"])
            self.reductions = int(state["reductions"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(
                f"plateau schedule state is incomplete or malformed ({err!r}); "
                "start a fresh run or restore the checkpoint's lr_schedule entry."
            ) from err


SCHEDULES = {"constant": ConstantSchedule, "step": StepSchedule, "plateau": PlateauSchedule}
LRSchedule = ConstantSchedule | StepSchedule | PlateauSchedule


def _check_kind(state: dict, kind: str) -> None:
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"learning-rate schedule state is for {found!r}, not {kind!r}; "
            "resume with the same --lr-schedule the run was started with."
        )


def build_lr_schedule(kind: str, base_lr: float = 0.01, **params: Any) -> LRSchedule:
    """Make a schedule by name: ``"constant"``, ``"step"`` or ``"plateau"``.

    Args:
        kind: schedule name.
        base_lr: starting learning rate.
        **params: the schedule's other fields (``step_epochs``, ``factor``,
            ``patience``, ``min_delta``, ``min_lr``).

    Raises:
        UsageError: unknown kind or parameter.

    Example:
        >>> sched = build_lr_schedule("step", 0.01, step_epochs=30)
        >>> sched.lr_for_epoch(30)
        0.001
    """
    if kind not in SCHEDULES:
        raise UsageError(
            f"unknown learning-rate schedule {kind!r}; choose one of {sorted(SCHEDULES)}."
        )
    cls = SCHEDULES[kind]
    allowed = {"step": {"step_epochs", "factor"}, "constant": set()}.get(
        kind, {"factor", "patience", "min_delta", "min_lr"}
    )
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise UsageError(
            f"{kind} schedule does not take {unknown}; valid parameters: {sorted(allowed)}."
        )
    return cls(base_lr=base_lr, **params)


def schedule_from_state(state: dict) -> LRSchedule:
    """Rebuild a schedule from :meth:`state_dict` output (kind included)."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind not in SCHEDULES:
        raise CheckpointError(
            f"unknown learning-rate schedule state kind {kind!r}; "
            f"expected one of {sorted(SCHEDULES)}."
        )
    schedule = SCHEDULES[kind](base_lr=float(state.get("base_lr", 0.01)))
    schedule.load_state_dict(state)
    return schedule


class LRScheduleCallback(keras.callbacks.Callback):
    """Drive an alexkit schedule from ``model.fit``.

    Sets ``optimizer.learning_rate`` at the start of every epoch and, at the end,
    feeds the validation error to the schedule (``1 - logs[monitor]`` for accuracy
    metrics, ``logs[monitor]`` otherwise) and records ``lr`` in the logs/history.
    The schedule object holds all state: save ``callback.schedule.state_dict()`` in
    checkpoints and ``load_state_dict`` it before resuming.

    Args:
        schedule: a ``ConstantSchedule``, ``StepSchedule`` or ``PlateauSchedule``.
        monitor: the log key to watch (default ``"val_accuracy"``).

    Example:
        >>> cb = LRScheduleCallback(build_lr_schedule("plateau", 0.01, patience=3))
        >>> model.fit(train, validation_data=val, epochs=90, callbacks=[cb])
    """

    def __init__(self, schedule: LRSchedule, monitor: str = "val_accuracy"):
        super().__init__()
        self.schedule = schedule
        self.monitor = monitor

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.optimizer.learning_rate = self.schedule.lr_for_epoch(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["lr"] = float(self.schedule.lr_for_epoch(epoch))
        value = logs.get(self.monitor)
        error = None
        if value is not None:
            value = float(value)
            error = 1.0 - value if "acc" in self.monitor else value
        self.schedule.end_epoch(epoch, error)
