"""Small pieces both workflows share: the result, progress events, seeding, fingerprints."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import CheckpointError
from alexkit.runs import RunDir

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]


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
        run_dir_bytes: size of the run directory when the run ended (bytes).
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
    run_dir_bytes: int | None = None

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


# Checkpoints kept by runs that do not say (Engine(keep_checkpoints=None)).
_KEEP_CHECKPOINTS: contextvars.ContextVar[int] = contextvars.ContextVar(
    "alexkit_keep_checkpoints", default=2
)


def default_keep_checkpoints() -> int:
    """How many checkpoints a run keeps when not told (2, or :func:`keep_checkpoints`'s)."""
    return _KEEP_CHECKPOINTS.get()


@contextlib.contextmanager
def keep_checkpoints(count: int) -> Iterator[None]:
    """Within the block, runs not told otherwise keep ``count`` checkpoints.

    ``alexkit demo`` trains through :func:`~alexkit.train.pretrain` and
    :func:`~alexkit.train.finetune` with ``0`` (no checkpoints: it has no ``--resume``).
    """
    token = _KEEP_CHECKPOINTS.set(int(count))
    try:
        yield
    finally:
        _KEEP_CHECKPOINTS.reset(token)


def emit(progress: ProgressFn | None, event: str, **payload: Any) -> None:
    """Send one progress event (``{"event": event, **payload}``) if anyone listens."""
    if progress is not None:
        progress({"event": event, **payload})


def versions() -> dict[str, str]:
    """Versions of alexkit, Python, NumPy, TensorFlow and Keras (saved in ``config.json``)."""
    from alexkit import __version__

    out = {"alexkit": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("tensorflow", "keras"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except ImportError:  # pragma: no cover - both are dependencies
            pass
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend, and ask TensorFlow for deterministic ops."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - older TF or already set: determinism is best-effort
        log.debug("op determinism not available", exc_info=True)


def fingerprint(obj: Any) -> str:
    """A short hash of a JSON-able object (keys sorted)."""
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


def resolve_out(out: str | Path | None, prefix: str) -> Path:
    """``out``, or ``runs/<prefix>-<time>`` when not given."""
    if out is not None:
        return Path(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{prefix}-{stamp}"


def check_resume_config(run: RunDir, config: dict[str, Any]) -> dict[str, Any]:
    """Refuse to resume a run with other recipe, data or settings; return the saved config."""
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


def choose_run_precision(args: dict[str, Any], progress: ProgressFn | None) -> None:
    """``args["precision"]`` (``auto``, ``bf16`` …) becomes the policy chosen on this
    machine; that is what ``config.json`` keeps, so a resume elsewhere does not choose again."""
    if args.get("precision") is None:
        return
    from alexkit.precision import choose_precision

    choice = choose_precision(args["precision"])
    args["precision"] = choice.policy
    emit(progress, "precision", **choice.as_dict())


@contextlib.contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
    """Keras' global dtype policy set to ``policy`` inside, restored after."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def merge_saved_args(run_path: Path, resume: bool, args: dict[str, Any]) -> dict[str, Any]:
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
