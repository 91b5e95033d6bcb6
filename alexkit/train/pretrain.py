"""``pretrain``: AlexNet from scratch the 2012 paper's way, optionally on several workers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import AlexkitError, CheckpointError, DataError, UsageError
from alexkit.runlock import RunLock
from alexkit.runs import RunDir
from alexkit.train.common import (
    ProgressFn,
    RunResult,
    check_resume_config,
    choose_run_precision,
    data_fingerprint,
    emit,
    fingerprint,
    merge_saved_args,
    resolve_out,
    seed_everything,
    versions,
)
from alexkit.train.engine import Engine, final_metrics, run_result
from alexkit.train.plan import (
    DataPlan,
    StagePlan,
    check_labels,
    load_specs,
    make_dataset_fns,
    preprocessing,
)

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

# The paper's settings; an option given (or saved in a resumed run) beats them.
DEFAULTS: dict[str, Any] = {
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

# The options that make a run what it is (its recipe fingerprint; resume checks it).
_FINGERPRINTED = (
    "variant", "batch_size", "lr", "schedule", "precision", "seed", "patience", "init",
    "steps_per_epoch",
)  # fmt: skip


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
    save_last: bool = True,
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
        precision: ``"float32"`` (default), ``"mixed_float16"``, ``"mixed_bfloat16"``
            (``fp32``/``bf16``/``fp16`` too), or ``"auto"``: bfloat16 where the CPU has AMX
            or AVX512-BF16 or every GPU has compute capability >= 8.0, else float32.
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
        save_last: also write ``last.keras`` (the model after the last epoch, beside the
            best ``model.keras``); False saves its write where only the best is wanted.
        progress: event callback (never prints).

    Returns:
        A :class:`RunResult`.
    """
    t0 = time.perf_counter()
    out_path = resolve_out(out, "pretrain")
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
    args = merge_saved_args(out_path, resume, args)
    choose_run_precision(args, progress)
    if args["data"] is None:
        raise UsageError("--data is required (it may be left out only with --resume).")
    resolved = _resolve_options(args)
    data_path = Path(args["data"])
    if not data_path.exists() and not any(ch in str(data_path) for ch in "*?["):
        raise DataError(f"--data {data_path} does not exist.")
    strategy, worker, feed = _distribution(resolved["distribute"], int(resolved["batch_size"]))
    with _run_dirs(out_path, worker, feed, resume=resume, force=force) as (run, home):
        result = _pretrain_run(
            run, home, worker, strategy, resolved, args, data_path,
            resume=resume, force=force, jit=jit, checkpoint_every=checkpoint_every,
            ten_crop=ten_crop, register=register, save_last=save_last, name=name,
            progress=progress, t0=t0,
        )  # fmt: skip
    return result


def _resolve_options(args: dict[str, Any]) -> dict[str, Any]:
    """Options given, else the paper's defaults; each one checked."""
    from alexkit.distribute import STRATEGIES
    from alexkit.variants import VARIANTS

    resolved = {
        k: (DEFAULTS[k] if args.get(k) is None and k in DEFAULTS else args.get(k))
        for k in set(args) | set(DEFAULTS)
    }
    choices = {
        "variant": sorted(VARIANTS),
        "schedule": ["plateau", "step"],
        "precision": list(PRECISIONS),
        "distribute": list(STRATEGIES),
        "init": ["paper", "he"],
    }
    for key, valid in choices.items():
        if resolved[key] not in valid:
            if key in ("schedule", "init"):
                raise UsageError(
                    f"--{key} must be {valid[0]} or {valid[1]}; got {resolved[key]!r}."
                )
            raise UsageError(f"--{key} must be one of {valid}; got {resolved[key]!r}.")
    for key in ("epochs", "batch_size"):
        if int(resolved[key]) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1; got {resolved[key]}.")
    if float(resolved["lr"]) <= 0:
        raise UsageError(f"--lr must be > 0; got {resolved['lr']}.")
    return resolved


def _distribution(kind: str, batch: int) -> tuple[Any, int | None, Any]:
    """The strategy, this process's worker index (multiworker only; 0 = chief) and feed."""
    if kind == "none":
        return None, None, None
    from alexkit.distribute import ReplicaFeed, get_strategy, is_chief

    strategy = get_strategy(kind)
    replicas = int(strategy.num_replicas_in_sync)
    if batch % replicas:
        raise UsageError(f"--batch-size {batch} must be divisible by the {replicas} replicas.")
    if kind != "multiworker":
        return strategy, None, None
    feed = ReplicaFeed(strategy)
    return strategy, (0 if is_chief(strategy) else max(feed.worker, 1)), feed


@contextlib.contextmanager
def _run_dirs(
    out_path: Path, worker: int | None, feed: Any, *, resume: bool, force: bool
) -> Iterator[tuple[RunDir, RunDir]]:
    """The run directory this process writes, and the run's own (``--out``).

    Only the chief writes ``--out``. Another worker trains in a scratch run dir (same
    computation, outputs thrown away, removed at the end) and reads the chief's run dir
    on ``--resume``, which then has to be on a filesystem every worker can read. Workers
    agree before training that each could start, and wait for the chief's final writes.
    """
    home = RunDir(out_path)
    run: RunDir | None = None
    lock: RunLock | None = None
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
            # One process per run directory: a second pretrain on the same --out is refused.
            lock = RunLock(out_path).acquire()
            run = home = RunDir.prepare(out_path, resume=resume, force=force)
    except AlexkitError as exc:
        error = exc
    try:
        if worker is not None:
            # Agree before training: a worker that cannot start (e.g. --out exists without
            # --force, only the chief checks) must stop the others, not leave them waiting
            # in the first collective.
            others_failed = feed.mean({"failed": 0.0 if error is None else 1.0})["failed"] > 0
            if error is None and others_failed:
                raise UsageError(
                    "another worker could not start (its error is on its own terminal); "
                    "nothing was trained."
                )
        if error is not None:
            raise error
        assert run is not None
        yield run, home
        if worker is not None:
            feed.mean({})  # wait for the chief's final evaluation and writes
    finally:
        if worker and run is not None:
            shutil.rmtree(run.path, ignore_errors=True)
        if lock is not None:
            lock.release()


def _pretrain_run(
    run: RunDir,
    home: RunDir,
    worker: int | None,
    strategy: Any,
    resolved: dict[str, Any],
    args: dict[str, Any],
    data: Path,
    *,
    resume: bool,
    force: bool,
    jit: bool | None,
    checkpoint_every: int | None,
    ten_crop: bool,
    register: bool,
    save_last: bool,
    name: str | None,
    progress: ProgressFn | None,
    t0: float,
) -> RunResult:
    """The part of :func:`pretrain` after the run directory is settled."""
    import keras

    from alexkit.model import build_alexnet
    from alexkit.variants import VARIANTS

    seed, variant = int(resolved["seed"]), resolved["variant"]
    seed_everything(seed)
    plan, make_train, make_val, make_eval, sources = _pretrain_data(
        data,
        args["val"],
        seed=seed,
        image_size=int(VARIANTS[variant]["image_size"]),
        batch=int(resolved["batch_size"]),
        saved=home.read_config() if resume else None,
    )
    stage = _paper_stage(resolved)
    config = _config(resolved, args, plan, stage, sources)
    if resume:
        check_resume_config(home, config)
    if not resume or worker:
        run.write_config(config)

    def build_model() -> Any:
        return build_alexnet(
            variant,
            num_classes=len(plan.class_names),
            dropout=0.5,
            seed=seed,
            kernel_init=resolved["init"],
        )

    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(resolved["precision"])
    try:
        engine = Engine(
            run=run,
            build_model=build_model,
            stages=[stage],
            data=plan,
            make_train=make_train,
            make_val=make_val,
            monitor="val_accuracy" if make_val is not None else "loss",
            metrics=["loss", "accuracy", "top5"],
            class_weight=None,
            seed=seed,
            steps_per_epoch=resolved.get("steps_per_epoch"),
            checkpoint_every=1000 if checkpoint_every is None else checkpoint_every,
            jit=jit,
            progress=progress,
            strategy=strategy,
            resume=resume,
            save_last=save_last,
            restore_dir=home.checkpoint_dir if worker else None,
            writes=not worker,
        )
        state = engine.run_all()
        metrics = None
        if not worker:
            tta = "ten-crop" if ten_crop else "center"
            metrics = final_metrics(run, engine, state, tta=tta, make_eval=make_eval)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    weights_name = None
    if register and not worker and run.model_path.exists():
        weights_name = _register(run, name or resolved.get("name"), variant, force=force)
        emit(progress, "registered", name=weights_name)
    emit(progress, "done", run_dir=str(home.path))
    result = run_result(
        run, engine, state, resumed=resume, t0=t0, metrics=metrics, weights_name=weights_name
    )
    result.worker = worker
    if worker:  # the chief's paths: this worker's scratch copy is removed
        result.run_dir, result.model_path = home.path, home.model_path
    return result


def _paper_stage(resolved: dict[str, Any]) -> StagePlan:
    """The single stage: every layer, the paper's SGD, a plateau or step LR schedule."""
    return StagePlan(
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


def _config(
    resolved: dict[str, Any],
    args: dict[str, Any],
    plan: DataPlan,
    stage: StagePlan,
    sources: dict[str, Any],
) -> dict[str, Any]:
    """The run's ``config.json``."""
    variant = resolved["variant"]
    return {
        "kind": "pretrain",
        "class_names": plan.class_names,
        "variant": variant,
        "image_size": plan.image_size,
        "grayscale": False,
        "recipe": {
            "name": "paper",
            "stages": [dataclasses.asdict(stage)],
            "batch_size": plan.batch_size,
            "init": resolved["init"],
            "dropout": 0.5,
            "weight_decay": 5e-4,
            "momentum": 0.9,
        },
        "args": args,
        "resolved": resolved,
        "preprocessing": preprocessing(variant, plan),
        "data": sources,
        "versions": versions(),
        "fingerprints": {
            "recipe": fingerprint({k: resolved[k] for k in _FINGERPRINTED}),
            "data": data_fingerprint(sources),
        },
    }


def _register(run: RunDir, name: str | None, variant: str, *, force: bool) -> str:
    import keras

    import alexkit.layers  # noqa: F401
    import alexkit.optim  # noqa: F401
    from alexkit.weights import list_weights, register_weights

    entry = name or f"pretrain-{variant}-{run.path.resolve().name}"
    entry = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in entry)
    model = keras.saving.load_model(run.model_path, compile=False)
    # A resumed run re-registers its own entry; another run's entry needs --force.
    registered_from = next((e.meta.get("source") for e in list_weights() if e.name == entry), None)
    register_weights(
        model,
        entry,
        variant=variant,
        source=str(run.path.resolve()),
        kind="imagenet",
        overwrite=force or registered_from == str(run.path.resolve()),
        extra={"class_names_file": str(run.config_path)},
    )
    return entry


def _pretrain_data(
    data: Path,
    val: str | Path | None,
    *,
    seed: int,
    image_size: int,
    batch: int,
    saved: dict[str, Any] | None,
) -> tuple[
    DataPlan,
    Callable[..., Any],
    Callable[[], Any] | None,
    Callable[..., Any] | None,
    dict[str, Any],
]:
    """Folders, ImageNet layout or TFRecord shards, all through :func:`alexkit.data.load_spec`."""
    from alexkit.data.augment import AugmentConfig

    augment = AugmentConfig()  # the paper's: resize 256, random 227 crop, flip, PCA lighting
    class_names = saved.get("class_names") if saved else None
    train_spec, val_spec = load_specs(data, val, seed=seed, class_names=class_names)
    if train_spec.is_tfrecord:
        known = (saved or {}).get("data", {}).get("num_train")
        num_train = int(known) if known else _count_records(train_spec.items)
    else:
        check_labels(train_spec, str(data))
        num_train = len(train_spec)
    plan = DataPlan(
        train=train_spec,
        val=val_spec,
        class_names=list(train_spec.class_names),
        image_size=image_size,
        batch_size=batch,
        augment=augment,
        num_train=num_train,
    )
    make_train, make_val, make_eval = make_dataset_fns(plan, seed)
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
