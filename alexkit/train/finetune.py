"""``finetune``: a pretrained AlexNet, a new head, and a recipe's stages on your images."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Any

from alexkit.errors import DataError, UsageError, WeightsError
from alexkit.recipes import Recipe, recipe_to_dict
from alexkit.runlock import RunLock
from alexkit.runs import RunDir
from alexkit.train.common import (
    ProgressFn,
    RunResult,
    check_resume_config,
    choose_run_precision,
    data_fingerprint,
    dtype_policy,
    emit,
    fingerprint,
    merge_saved_args,
    resolve_out,
    seed_everything,
    versions,
)
from alexkit.train.engine import Engine, final_metrics, run_result
from alexkit.train.feature_cache import resolve_views
from alexkit.train.plan import (
    DataPlan,
    StagePlan,
    check_labels,
    class_weights,
    digits_path,
    load_recipe,
    load_specs,
    make_dataset_fns,
    metrics_from_recipe,
    preprocessing,
    stages_from_recipe,
)
from alexkit.weights import resolve_weights

log = logging.getLogger(__name__)


def finetune(
    recipe: Any,
    data: str | Path | None = None,
    *,
    val: str | Path | None = None,
    positive_class: str | None = None,
    target_sensitivity: float | None = None,
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
    feature_cache_views: int | None = None,
    precision: str | None = None,
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
        positive_class: two classes: the positive one (label 1: sensitivity, AUC); needed
            when a binary recipe's class names are not the data's.
        target_sensitivity: two classes: also choose an operating threshold on the
            validation data that reaches this sensitivity (saved in ``calibration.json``).
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
        feature_cache_views: a stage that trains only layers above a frozen prefix
            runs the prefix on this many augmented views of each training image (the
            first K epochs' own) and feeds later epochs from them
            (:mod:`alexkit.train.feature_cache`); 0 runs every epoch uncached. None:
            the run's saved choice on resume, else
            :data:`~alexkit.train.feature_cache.DEFAULT_VIEWS`.
        precision: ``"float32"`` (default), ``"mixed_bfloat16"``, ``"mixed_float16"``
            (``fp32``/``bf16``/``fp16`` too), or ``"auto"``: bfloat16 where the CPU has AMX
            or AVX512-BF16 or every GPU has compute capability >= 8.0, else float32. The
            policy chosen is what ``config.json`` keeps (a resume does not choose again).

    Returns:
        A :class:`RunResult`.

    Raises:
        RecipeError, WeightsError, DataError, CheckpointError, Interrupted.
    """
    t0 = time.perf_counter()
    if feature_cache_views is not None:
        resolve_views(feature_cache_views)  # a bad count fails before --out is touched
    out_path = resolve_out(out, "finetune")
    given = dict(
        recipe=_recipe_arg(recipe), data=_absolute(data), val=_absolute(val), weights=weights,
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, steps_per_epoch=steps_per_epoch,
        positive_class=positive_class, target_sensitivity=target_sensitivity,
        feature_cache_views=feature_cache_views, precision=precision,
    )  # fmt: skip
    args = merge_saved_args(out_path, resume, given)
    choose_run_precision(args, progress)
    # On resume, --recipe/--data/--val may be left out: the run's own are used.
    if recipe is None or isinstance(recipe, (str, Path)):
        recipe = args["recipe"]
    overrides = {k: args[k] for k in ("epochs", "batch_size", "lr", "seed")}
    rec, _, rec_fp = load_recipe(recipe, overrides)
    seed = int(rec.seed if args["seed"] is None else args["seed"])
    weights = args["weights"] or "imagenet"
    data = _training_data(args["data"], rec)
    if not resume and weights != "none":
        # Fail before touching --out when the weights are missing (the message lists
        # the three ways to get them).
        resolve_weights(weights, _weights_variant(weights, rec.variant))
    # One process per run directory: a second finetune on the same --out is refused.
    with RunLock(out_path):
        run = RunDir.prepare(out_path, resume=resume, force=force)
        return _finetune_run(
            run, rec, rec_fp, args, data, weights, seed, resume, t0,
            progress=progress, checkpoint_every=checkpoint_every, jit=jit,
        )  # fmt: skip


def _finetune_run(
    run: RunDir,
    rec: Recipe,
    rec_fp: str,
    args: dict[str, Any],
    data: Path,
    weights: str,
    seed: int,
    resume: bool,
    t0: float,
    *,
    progress: ProgressFn | None,
    checkpoint_every: int | None,
    jit: bool | None,
) -> RunResult:
    """The run itself, in a prepared (and locked) run directory."""
    seed_everything(seed)
    saved = run.read_config() if resume else None
    rec = _match_classes(rec, data, args.get("positive_class"), saved)
    rec_dict = recipe_to_dict(rec)  # config.json keeps the recipe as applied to the data
    train_spec, val_spec = _specs(rec, data, args["val"], seed=seed, saved=saved)
    class_names = list(train_spec.class_names)
    if resume and saved is not None:
        variant = saved.get("variant", rec.variant)
    else:
        variant = rec.variant if weights == "none" else _weights_variant(weights, rec.variant)
    plan = _data_plan(rec, variant, train_spec, val_spec)
    stages = stages_from_recipe(rec)
    monitor, wanted = metrics_from_recipe(rec)
    weight_of_class = class_weights(rec, train_spec)
    config = _config(
        rec, rec_dict, plan, variant, stages, args, data, weights,
        fingerprint=fingerprint([rec_fp, weights, args["steps_per_epoch"]]),
        seed=seed, monitor=monitor, metrics=wanted, class_weight=weight_of_class,
    )  # fmt: skip
    if resume:
        check_resume_config(run, config)
    else:
        run.write_config(config)
        _record_data_hashes(run, train_spec, val_spec)
    # On resume every variable comes from the checkpoint: build the architecture only.
    policy = args.get("precision") or "float32"
    build_model = functools.partial(
        _finetune_model, weights, variant, len(class_names), rec, seed,
        load_weights=not resume, precision=policy,
    )  # fmt: skip
    make_train, make_val, make_eval = make_dataset_fns(plan, seed)
    engine = Engine(
        run=run, build_model=build_model, stages=stages, data=plan, make_train=make_train,
        make_val=make_val, monitor=monitor, metrics=wanted, class_weight=weight_of_class,
        seed=seed, steps_per_epoch=args["steps_per_epoch"], checkpoint_every=checkpoint_every,
        jit=jit, progress=progress, resume=resume,
        feature_cache_views=args.get("feature_cache_views"),
    )  # fmt: skip
    with dtype_policy(policy):  # layers the engine builds (heads, prefixes) follow it too
        state = engine.run_all()
        # End of run: the best model evaluated on the validation data (metrics.json).
        metrics = final_metrics(
            run, engine, state, make_eval=make_eval, calibrate=True,
            target_sensitivity=args.get("target_sensitivity"),
        )  # fmt: skip
    emit(progress, "done", run_dir=str(run.path))
    return run_result(run, engine, state, resumed=resume, t0=t0, metrics=metrics)


def _absolute(path: str | Path | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _recipe_arg(recipe: Any) -> str | None:
    """How ``config.json`` records the recipe: a resolved file path, a name, or None."""
    if isinstance(recipe, (str, Path)):
        return str(Path(recipe).resolve()) if Path(recipe).is_file() else str(recipe)
    return None if recipe is None else recipe.name


def _training_data(data: str | None, rec: Recipe) -> Path:
    if data is None:
        if not rec.builtin_data:
            raise UsageError("--data is required for this recipe (it has no built-in data).")
        return digits_path()
    path = Path(data)
    if not path.exists():
        raise DataError(f"--data {path} does not exist.")
    return path


def _match_classes(
    rec: Recipe, data: Path, positive_class: str | None, saved: dict[str, Any] | None
) -> Recipe:
    """The recipe applied to the data's own class names.

    Names match ignoring case, '_', '-' and spaces; otherwise the data's classes are used
    (a binary recipe then needs ``--positive-class``). A resumed run keeps its saved order.
    """
    from alexkit import data as data_mod
    from alexkit.recipes import ClassMatch, apply_class_match, match_classes

    if saved is not None and saved.get("class_names"):
        names = tuple(saved["class_names"])
        return apply_class_match(rec, ClassMatch(names, None, True, {}))
    if rec.classes is None and positive_class is None:
        return rec  # the data's sorted order
    found = data_mod.load_spec(str(data), val_fraction=0.0, media_options=rec.media)
    match = match_classes(rec, found.class_names, positive_class)
    if match.note:
        log.info("%s", match.note)
    return apply_class_match(rec, match)


def _record_data_hashes(run: RunDir, train_spec: Any, val_spec: Any) -> None:
    """``data-hashes.json``: what ``evaluate`` checks for leakage (content hashes, keyed groups)."""
    from alexkit.leakage import HASHES_FILE, record_run_hashes, save_hashes

    if (run.path / HASHES_FILE).exists():
        return
    save_hashes(run.path, record_run_hashes(train_spec, val_spec))


def _specs(
    rec: Recipe, data: Path, val: str | None, *, seed: int, saved: dict[str, Any] | None
) -> tuple[Any, Any]:
    """Train and validation specs; a resumed run keeps its saved class order."""
    train_spec, val_spec = load_specs(
        data,
        val,
        seed=seed,
        class_names=saved.get("class_names") if saved else rec.classes,
        val_fraction=float(rec.val_fraction),
        media_options=rec.media,
    )
    check_labels(train_spec, str(data))
    count = len(train_spec.class_names)
    if count < 2:
        raise DataError(f"{data}: found {count} class; finetuning needs at least 2.")
    return train_spec, val_spec


def _data_plan(rec: Recipe, variant: str, train_spec: Any, val_spec: Any) -> DataPlan:
    from alexkit.variants import VARIANTS

    return DataPlan(
        train=train_spec,
        val=val_spec,
        class_names=list(train_spec.class_names),
        image_size=int(VARIANTS[variant]["image_size"]),
        batch_size=int(rec.batch_size),
        augment=rec.augment,
        grayscale=rec.grayscale,
        num_train=len(train_spec),
    )


def _config(
    rec: Recipe,
    rec_dict: dict[str, Any],
    plan: DataPlan,
    variant: str,
    stages: list[StagePlan],
    args: dict[str, Any],
    data: Path,
    weights: str,
    *,
    fingerprint: str,
    seed: int,
    monitor: str,
    metrics: list[str],
    class_weight: dict[int, float] | None,
) -> dict[str, Any]:
    """The run's ``config.json``."""
    val = args["val"]
    return {
        "kind": "finetune",
        "class_names": plan.class_names,
        "variant": variant,
        "image_size": plan.image_size,
        "grayscale": plan.grayscale,
        "recipe": rec_dict,
        "args": args,
        "resolved": {
            "seed": seed,
            "batch_size": plan.batch_size,
            "weights": weights,
            "recipe_variant": rec.variant,
            "monitor": monitor,
            "metrics": metrics,
            "class_weight": class_weight,
            "stages": [dataclasses.asdict(s) for s in stages],
            "feature_cache_views": resolve_views(args.get("feature_cache_views")),
        },
        "preprocessing": preprocessing(variant, plan),
        "data": {
            "train": str(data),
            "val": None if val is None else str(val),
            "num_train": len(plan.train),
            "num_val": 0 if plan.val is None else len(plan.val),
        },
        "versions": versions(),
        "fingerprints": {
            "recipe": fingerprint,
            "data": data_fingerprint(plan.train, plan.val),
        },
    }


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
        from alexkit.variants import variant_of_config

        return variant_of_config(config)
    return variant


def _finetune_model(
    weights: str,
    variant: str,
    num_classes: int,
    rec: Recipe,
    seed: int,
    *,
    load_weights: bool,
    precision: str = "float32",
) -> Any:
    """The model to fine-tune: pretrained body + new head sized for the data's classes.

    Args:
        weights: ``"none"`` (random init, the plain network) or a ``--weights`` spec.
        load_weights: False builds the pretrained model's architecture without reading
            the weights (a resumed run restores every variable from its checkpoint).
        precision: the dtype policy to compute in; a ``.keras`` file keeps the policy it
            was saved with, so the model is rebuilt under this one
            (:func:`alexkit.loading.model_with_precision`; the head stays float32).
    """
    from alexkit.loading import model_with_precision
    from alexkit.model import build_alexnet, replace_head

    if weights == "none":
        with dtype_policy(precision):
            return build_alexnet(variant, num_classes=num_classes, seed=seed)
    if load_weights:
        from alexkit.weights import load_weights_model

        base = load_weights_model(weights, variant)
    else:
        base = build_alexnet(variant, num_classes=1000, seed=seed)
    head = rec.head
    base = model_with_precision(base, precision)
    with dtype_policy(precision):  # the new head_hidden layer computes like the body
        return replace_head(
            base, num_classes, dropout=head.dropout, hidden_units=head.hidden_units, seed=seed
        )
