"""``crossval``: stratified, group-aware K-fold fine-tuning with pooled out-of-fold results.

Every item of the data (its ``test`` split excepted: a held-out test set stays held out)
is assigned to one of K folds, stratified by class; items sharing a group (patient,
clip, volume, a manifest's group column) always share a fold. Fold k fine-tunes on the
other K-1 folds and validates on fold k, as an ordinary run directory ``OUT/fold-<k>``
driven through :func:`alexkit.train.finetune`. Then the best model of each fold predicts
its own validation fold (raw probabilities: a fold's temperature was fitted on that very
fold), and the K out-of-fold predictions are pooled into one evaluation with intervals
whose bootstrap resamples groups.

``OUT`` holds::

    config.json        crossval's arguments (so --resume needs only --out)
    folds.json         fold per item, with the data fingerprint it was made for
    folds/             fold-<k>-train.csv / fold-<k>-val.csv manifests, fold-<k>-oof.npz
    fold-<k>/          a normal finetune run directory per fold
    summary.json       per-fold metrics, their mean and sample sd, the pooled headline
    metrics.json, predictions.csv, ..., report.html   the pooled out-of-fold evaluation

A killed crossval continues where it stopped: finished folds (``metrics.json`` and
``model.keras`` present) are skipped, the interrupted fold resumes from its newest
checkpoint, and the saved fold assignment is checked against the data first.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexkit.errors import CheckpointError, DataError, UsageError

CONFIG = "config.json"
FOLDS = "folds.json"
SUMMARY = "summary.json"
FOLD_FILES = "folds"

#: The per-fold numbers summarised as mean ± sd (dotted paths into a fold's metrics.json).
SUMMARY_METRICS = (
    "accuracy",
    "macro_avg.f1",
    "macro_avg.recall",
    "binary.roc_auc",
    "binary.pr_auc",
    "binary.sensitivity",
    "binary.specificity",
    "calibration.ece",
    "calibration.brier",
)

ProgressFn = Callable[[dict[str, Any]], None]


@dataclasses.dataclass
class CrossvalResult:
    """What a cross-validation produced.

    Attributes:
        out: the crossval directory.
        folds: per fold: ``fold`` (1-based), ``run_dir``, ``num_train``, ``num_val``,
            ``status`` (``trained``, ``resumed`` or ``skipped`` in this call) and
            ``metrics`` (the :data:`SUMMARY_METRICS` of its validation ``metrics.json``).
        summary: the content of ``summary.json``.
        report: the pooled out-of-fold :class:`alexkit.evaluate.EvalReport`.
        files: report files written into ``out`` (``{name: path}``).
    """

    out: Path
    folds: list[dict[str, Any]]
    summary: dict[str, Any]
    report: Any
    files: dict[str, Path]


# --------------------------------------------------------------------------- folds


def assign_folds(labels: Sequence[int], groups: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per item: stratified by label, groups never split.

    With any non-empty group, scikit-learn's ``StratifiedGroupKFold`` (items without a
    group are their own group); else ``StratifiedKFold``. Both shuffled with ``seed``.

    Raises:
        UsageError: k < 2.
        DataError: a class with fewer than k groups (or items) cannot be in every fold.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if k < 2:
        raise UsageError(f"--folds must be at least 2. Received: {k}")
    y = np.asarray(labels, dtype=int)
    units = unit_ids(groups)
    for label in np.unique(y):
        count = len({units[i] for i in np.flatnonzero(y == label)})
        if count < k:
            raise DataError(
                f"class {int(label)} has only {count} "
                f"{'groups' if any(groups) else 'items'} for {k} folds; use fewer folds "
                "or add data."
            )
    fold_of = np.full(len(y), -1, dtype=int)
    x = np.zeros((len(y), 1))
    if any(groups):
        splitter: Any = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(x, y, groups=units)
    else:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(x, y)
    for fold, (_, val_index) in enumerate(splits):
        fold_of[val_index] = fold
    return fold_of


def unit_ids(groups: Sequence[str]) -> list[str]:
    """Per item, what keeps items together: its group, else the item alone."""
    return [g if g else f"\x00item:{i}" for i, g in enumerate(groups)]


def _groups_from_column(spec: Any, column: str) -> tuple[str, ...]:
    """Groups from a CSV manifest's column (frames/slices inherit their file's group)."""
    from alexkit.media import parse_item

    path = Path(spec.root)
    if spec.layout != "csv":
        raise UsageError(f"--group-column needs a CSV manifest as --data; {path} is not one.")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = {(h or "").strip().lower(): h for h in reader.fieldnames or []}
        if column.lower() not in header:
            raise DataError(
                f"{path} has no column {column!r}; columns: {list(reader.fieldnames or [])}."
            )
        path_col = next(
            (header[c] for c in ("path", "filepath", "filename", "file", "image") if c in header),
            None,
        )
        rows = list(reader)
    by_path: dict[str, str] = {}
    for row in rows:
        rel = Path((row.get(path_col) or "").strip()).expanduser()
        full = rel if rel.is_absolute() else path.parent / rel
        by_path[str(full)] = (row.get(header[column.lower()]) or "").strip()
    return tuple(by_path.get(parse_item(item)[0], by_path.get(item, "")) for item in spec.items)


def load_crossval_spec(
    data: str | Path, *, media_options: Any = None, class_names: Sequence[str] | None = None,
    group_column: str | None = None,
) -> Any:  # fmt: skip
    """The items crossval folds: every split of ``data`` but ``test``, never re-split."""
    from alexkit.data import load_spec

    spec = load_spec(
        str(data), class_names=class_names, val_fraction=0.0, media_options=media_options
    )
    if spec.is_tfrecord:
        raise DataError(f"{data}: crossval needs image files or a manifest, not TFRecord shards.")
    keep = [i for i, s in enumerate(spec.splits) if s != "test"]
    if not keep:
        raise DataError(f"{data}: every item is in the test split; nothing to cross-validate.")
    spec = _subset(spec, keep)
    if group_column is not None:
        spec = dataclasses.replace(spec, groups=_groups_from_column(spec, group_column))
    if any(lab < 0 for lab in spec.labels):
        raise DataError(f"{data}: crossval needs labelled items.")
    return spec


def folds_fingerprint(spec: Any, k: int, seed: int) -> str:
    """What a fold assignment depends on: items, labels, classes, groups, k and seed."""
    from alexkit.train.common import data_fingerprint

    h = hashlib.sha256(data_fingerprint(spec).encode())
    h.update("\n".join(spec.groups).encode())
    h.update(f"\nk={k} seed={seed}".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- summary


def _get(metrics: dict[str, Any], dotted: str) -> float | None:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return None if value is None else float(value)


def summarize(fold_metrics: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{metric: {"values": [...], "mean": m, "sd": s}}`` over folds (sd with ddof=1).

    Metrics missing from any fold (e.g. a fold without both binary classes has no AUC)
    are summarised over the folds that have them, with ``n`` saying how many.
    """
    out: dict[str, dict[str, Any]] = {}
    for key in SUMMARY_METRICS:
        values = [_get(m, key) for m in fold_metrics]
        present = [v for v in values if v is not None and np.isfinite(v)]
        if not present:
            continue
        arr = np.asarray(present, dtype=float)
        out[key] = {
            "values": values,
            "mean": float(arr.mean()),
            "sd": float(arr.std(ddof=1)) if arr.size > 1 else None,
            "n": int(arr.size),
        }
    return out


# --------------------------------------------------------------------------- run


def crossval(
    recipe: Any,
    data: str | Path | None = None,
    *,
    folds: int | None = None,
    out: str | Path,
    group_column: str | None = None,
    weights: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    steps_per_epoch: int | None = None,
    resume: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
    ci_level: float | None = 0.95,
    n_boot: int = 2000,
    jit: bool | None = False,
) -> CrossvalResult:
    """K-fold fine-tuning: one run per fold, then the pooled out-of-fold evaluation.

    Args:
        recipe: recipe name, TOML file or ``Recipe`` (as :func:`alexkit.train.finetune`).
        data: labelled images (any layout ``load_spec`` reads; its ``test`` split is left
            out); may be omitted on resume.
        folds: K (>= 2); may be omitted on resume.
        out: the crossval directory.
        group_column: a CSV manifest's column that groups items (e.g. ``patient_id``);
            default: the data's own groups (manifest ``group`` column, clips, volumes,
            DICOM patients).
        weights, epochs, batch_size, lr, seed, steps_per_epoch: as in ``finetune``
            (``seed`` also shuffles the fold assignment; default the recipe's).
        resume: continue the crossval in ``out`` (finished folds are kept).
        force: delete ``out`` first if it holds anything.
        progress: called with finetune's events (each with ``"fold"``) and with
            ``{"event": "fold", "fold": k, "folds": K, "status": ...}``.
        ci_level: confidence level of the pooled intervals (None: none).
        n_boot: bootstrap resamples of the pooled intervals.
        jit: XLA-compile the train step.

    Returns:
        A :class:`CrossvalResult`.

    Raises:
        UsageError, DataError, CheckpointError, RecipeError, WeightsError, Interrupted.
    """
    out = Path(out)
    given = dict(
        recipe=None if recipe is None else _recipe_arg(recipe),
        data=None if data is None else str(Path(data).resolve()), folds=folds,
        group_column=group_column, weights=weights, epochs=epochs, batch_size=batch_size,
        lr=lr, seed=seed, steps_per_epoch=steps_per_epoch,
    )  # fmt: skip
    args = _read_args(out, given, resume=resume, force=force)
    if recipe is None or isinstance(recipe, (str, Path)):
        recipe = args["recipe"]
    if args["data"] is None:
        raise UsageError("--data is required (the images to cross-validate).")
    if args["folds"] is None:
        raise UsageError("--folds is required (K, at least 2).")
    k = int(args["folds"])
    from alexkit.train.plan import load_recipe

    rec, _, _ = load_recipe(recipe, {})
    run_seed = int(rec.seed if args["seed"] is None else args["seed"])
    spec = load_crossval_spec(
        args["data"], media_options=rec.media, class_names=rec.classes,
        group_column=args["group_column"],
    )  # fmt: skip
    fp = folds_fingerprint(spec, k, run_seed)
    if resume:
        fold_of = _saved_folds(out, spec, fp)
    else:
        # Everything that can be refused is checked before --out is touched.
        fold_of = assign_folds(spec.labels, spec.groups, k, run_seed)
        _start_out(out, args, spec, fold_of, fp)
    rows: list[dict[str, Any]] = []
    try:
        for fold in range(k):
            rows.append(
                _run_fold(out, spec, fold_of, fold, k, recipe, args, jit=jit, progress=progress)
            )
    except Exception:
        if not resume and not (out / "fold-1" / "config.json").is_file():
            # Nothing trained (e.g. missing weights): leave no half-made crossval behind.
            shutil.rmtree(out, ignore_errors=True)
        raise
    report = _pooled_report(out, spec, k, ci_level=ci_level, n_boot=n_boot, seed=run_seed)
    summary = _summary(rows, report, k, run_seed, spec)
    from alexkit.paths import atomic_write_text
    from alexkit.report import write_report

    files = write_report(report, out)
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    files[SUMMARY] = out / SUMMARY
    return CrossvalResult(out=out, folds=rows, summary=summary, report=report, files=files)


def _recipe_arg(recipe: Any) -> str | None:
    if isinstance(recipe, (str, Path)):
        return str(Path(recipe).resolve()) if Path(recipe).is_file() else str(recipe)
    return recipe.name


def _read_args(out: Path, given: dict[str, Any], *, resume: bool, force: bool) -> dict:
    """Check ``out`` like a run directory (writing nothing); the arguments to use.

    On resume, options left out come from the saved ``config.json``; options given
    again must equal the saved ones (a fold's settings cannot change half-way).
    """
    if resume and force:
        raise CheckpointError("--resume and --force contradict each other; pass only one.")
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} is a file, not a directory; choose another --out.")
    config = out / CONFIG
    if not resume:
        if out.exists() and any(out.iterdir()) and not force:
            raise CheckpointError(
                f"{out} already exists and is not empty; pass --resume to continue that "
                "crossval or --force to overwrite it."
            )
        return dict(given)
    if not config.is_file():
        raise CheckpointError(
            f"nothing to resume in {out} (no {CONFIG}); run again without --resume."
        )
    saved = json.loads(config.read_text(encoding="utf-8"))
    if saved.get("kind") != "crossval":
        raise CheckpointError(f"{out} is not a crossval directory (its kind is not crossval).")
    args = dict(saved["args"])
    for key, value in given.items():
        if value is not None and value != args.get(key):
            raise CheckpointError(
                f"{out} was made with --{key.replace('_', '-')} {args.get(key)}; received "
                f"{value}. Resume with the same (or leave it out), or start over with --force."
            )
    return args


def _start_out(out: Path, args: dict[str, Any], spec: Any, fold_of: np.ndarray, fp: str) -> None:
    """Empty ``out`` (--force was checked) and write ``config.json`` and ``folds.json``."""
    from alexkit.paths import atomic_write_text

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    record = {
        "fingerprint": fp,
        "folds": int(fold_of.max()) + 1,
        "class_names": list(spec.class_names),
        "items": list(spec.items),
        "fold": fold_of.tolist(),
    }
    atomic_write_text(out / FOLDS, json.dumps(record) + "\n")
    config = {"kind": "crossval", "args": args}
    atomic_write_text(out / CONFIG, json.dumps(config, indent=2) + "\n")


def _saved_folds(out: Path, spec: Any, fp: str) -> np.ndarray:
    """The saved fold assignment, after checking it was made for this very data."""
    path = out / FOLDS
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is unreadable ({err}); start over with --force.") from None
    if saved.get("fingerprint") != fp or saved.get("items") != list(spec.items):
        raise CheckpointError(
            f"{out} was cross-validated on other data or groups (fingerprint "
            f"{saved.get('fingerprint')} != {fp}); resume with the same, or use --force."
        )
    return np.asarray(saved["fold"], dtype=int)


def write_manifest(path: Path, spec: Any, index: np.ndarray) -> None:
    """A ``path,label,group`` CSV of some items (absolute paths; labels as class names).

    Frames and slices (``clip.mp4#frame=3,...``) are written as items: read back, each
    stays that one item with its group (the manifest reader does not expand them again).
    """
    from alexkit.paths import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "group"])
    for i in index:
        writer.writerow([spec.items[i], spec.class_names[spec.labels[i]], spec.groups[i]])
    atomic_write_text(path, buf.getvalue())


def _subset(spec: Any, index: Sequence[int]) -> Any:
    return dataclasses.replace(
        spec,
        items=tuple(spec.items[i] for i in index),
        labels=tuple(spec.labels[i] for i in index),
        splits=tuple(spec.splits[i] for i in index),
        groups=tuple(spec.groups[i] for i in index),
    )


def _finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").is_file() and (run_dir / "model.keras").is_file()


def _resumable(run_dir: Path) -> bool:
    """A fold that started and saved at least one checkpoint (else it starts afresh)."""
    from alexkit.runs import CheckpointManager, RunDir

    run = RunDir(run_dir)
    return run.config_path.is_file() and bool(CheckpointManager(run.checkpoint_dir).list())


def _run_fold(
    out: Path,
    spec: Any,
    fold_of: np.ndarray,
    fold: int,
    k: int,
    recipe: Any,
    args: dict[str, Any],
    *,
    jit: bool | None,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    """Train fold ``fold`` (0-based) unless done; predict its validation items."""
    from alexkit.train import finetune

    number = fold + 1
    run_dir = out / f"fold-{number}"
    files = out / FOLD_FILES
    files.mkdir(exist_ok=True)
    train_csv, val_csv = files / f"fold-{number}-train.csv", files / f"fold-{number}-val.csv"
    val_index = np.flatnonzero(fold_of == fold)
    train_index = np.flatnonzero(fold_of != fold)
    if _finished(run_dir):
        status = "skipped"
    else:
        status = "resumed" if _resumable(run_dir) else "trained"
        write_manifest(train_csv, spec, train_index)
        write_manifest(val_csv, spec, val_index)
    _emit(progress, "fold", fold=number, folds=k, status=status, run_dir=str(run_dir),
          num_train=int(train_index.size), num_val=int(val_index.size))  # fmt: skip
    if status != "skipped":

        def tagged(event: dict[str, Any]) -> None:
            if progress is not None:
                progress({**event, "fold": number})

        finetune(
            recipe, train_csv, val=val_csv, weights=args["weights"], out=run_dir,
            epochs=args["epochs"], batch_size=args["batch_size"], lr=args["lr"],
            seed=args["seed"], steps_per_epoch=args["steps_per_epoch"],
            resume=status == "resumed", force=status == "trained", progress=tagged, jit=jit,
        )  # fmt: skip
    oof = files / f"fold-{number}-oof.npz"
    if status != "skipped" or not oof.is_file():
        _predict_fold(run_dir, spec, val_index, oof)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {
        "fold": number,
        "run_dir": str(run_dir),
        "num_train": int(train_index.size),
        "num_val": int(val_index.size),
        "status": status,
        "metrics": {key: _get(metrics, key) for key in SUMMARY_METRICS},
    }


def _predict_fold(run_dir: Path, spec: Any, val_index: np.ndarray, path: Path) -> None:
    """The fold's best model on its validation items: raw probabilities, saved as npz."""
    from alexkit.evaluate import evaluate_model
    from alexkit.paths import atomic_path

    val_spec = _subset(spec, val_index)
    report = evaluate_model(run_dir, val_spec, calibrate=False, ci_level=None, check_leaks=False)
    # Columns in crossval's class order (a fold's manifest may sort classes otherwise).
    columns = [report.class_names.index(name) for name in spec.class_names]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            paths=np.asarray(report.paths, dtype=str),
            probs=report.probs[:, columns].astype(np.float64),
        )


def _pooled_report(
    out: Path, spec: Any, k: int, *, ci_level: float | None, n_boot: int, seed: int
) -> Any:
    """Every fold's out-of-fold predictions as one evaluation (groups resampled whole)."""
    from alexkit.evaluate import compute_report, group_eval, group_report

    label_of = dict(zip(spec.items, spec.labels, strict=True))
    group_of = dict(zip(spec.items, spec.groups, strict=True))
    paths: list[str] = []
    probs: list[np.ndarray] = []
    for fold in range(1, k + 1):
        with np.load(out / FOLD_FILES / f"fold-{fold}-oof.npz") as saved:
            paths.extend(str(p) for p in saved["paths"])
            probs.append(saved["probs"])
    y = np.asarray([label_of[p] for p in paths], dtype=int)
    groups = [group_of[p] for p in paths]
    report = compute_report(
        y, np.concatenate(probs), list(spec.class_names), paths=paths, groups=groups,
        ci_level=ci_level, n_boot=n_boot, seed=seed,
    )  # fmt: skip
    report.group_eval = group_eval(report)
    report.groups = group_report(report, report.group_eval)
    report.meta.update(
        {
            "split": "out-of-fold",
            "model": f"{out.resolve().name}: {k}-fold cross-validation, out-of-fold",
            "folds": k,
            "data": str(spec.root),
            "calibration": {"temperature_applied": None},
            "skipped": [
                {"path": p, "reason": "unreadable"} for p in sorted(set(spec.items) - set(paths))
            ],
        }
    )
    return report


def _summary(
    rows: list[dict[str, Any]], report: Any, k: int, seed: int, spec: Any
) -> dict[str, Any]:
    pooled = report.to_dict()
    keep = ("accuracy", "macro_avg", "binary", "calibration", "ci", "ci_level", "ci_method")
    return {
        "folds": k,
        "seed": seed,
        "num_items": len(spec),
        "num_groups": len({g for g in spec.groups if g}),
        "class_names": list(spec.class_names),
        "per_fold": [
            {key: row[key] for key in ("fold", "run_dir", "num_train", "num_val", "metrics")}
            for row in rows
        ],
        "mean_sd": summarize([_unflatten(row["metrics"]) for row in rows]),
        "pooled": {key: pooled[key] for key in keep if key in pooled},
    }


def _unflatten(flat: dict[str, float | None]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _emit(progress: ProgressFn | None, event: str, **payload: Any) -> None:
    if progress is not None:
        progress({"event": event, **payload})
