"""The end of a training run: the best model scored on the validation data, the result.

:func:`final_metrics` writes ``metrics.json`` (and, for finetune, ``calibration.json``);
:func:`run_result` makes the :class:`~alexkit.train.common.RunResult`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from alexkit.metrics import compute_val_metrics
from alexkit.runs import RunDir, directory_bytes
from alexkit.train.common import RunResult

if TYPE_CHECKING:
    from alexkit.train.engine import Engine


def final_metrics(
    run: RunDir,
    engine: Engine,
    state: dict[str, Any],
    *,
    tta: str = "center",
    make_eval: Callable[..., Any] | None = None,
    meta: dict[str, Any] | None = None,
    calibrate: bool = False,
    target_sensitivity: float | None = None,
) -> dict[str, Any] | None:
    """Evaluate the best model on the validation data; write ``metrics.json``.

    With ``calibrate`` (finetune), a temperature and, for two classes, operating
    thresholds (Youden's J; ``target_sensitivity``) are fitted on these validation
    probabilities and saved as ``calibration.json``; ``metrics.json`` keeps the raw
    model's numbers (scoring the calibration on the data it was fitted on would flatter it).
    """
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
    from alexkit.evaluate import compute_report, group_eval, group_report

    paths = items if len(items) == len(y) else None
    report = compute_report(
        y, p, engine.data.class_names, paths=paths, groups=_groups_of(engine.data.val, paths)
    )
    if report.paths is not None and any("#" in item for item in report.paths):
        # Frames of clips / slices of volumes: also score one row per source.
        report.groups = group_report(report, group_eval(report))
    metrics = report.to_dict()
    metrics.update({"val_" + k: v for k, v in compute_val_metrics(y, p, engine.metrics).items()})
    metrics["meta"] = {
        **metrics.get("meta", {}),
        "split": "validation",
        "tta": tta,
        "model": str(run.model_path),
        **(meta or {}),
    }
    if calibrate and engine.checkpoints.writes:
        from alexkit.calibration import calibration_for_split, save_calibration

        fit = calibration_for_split(y, p, target_sensitivity=target_sensitivity)
        save_calibration(run.path, fitted_on="val", tta=tta, **fit)
        metrics["meta"]["temperature"] = fit["temperature"]
    from alexkit.paths import atomic_write_text

    atomic_write_text(run.metrics_path, json.dumps(metrics, indent=2, default=str) + "\n")
    return metrics


def _groups_of(spec: Any, paths: list[str] | None) -> list[str] | None:
    """The group (patient, clip, volume) of each evaluated item, when the spec has any."""
    if spec is None or paths is None or not any(getattr(spec, "groups", ())):
        return None
    group_of = dict(zip(spec.items, spec.groups, strict=True))
    groups = [group_of.get(item, "") for item in paths]
    return groups if all(groups) else None


def run_result(
    run: RunDir,
    engine: Engine,
    state: dict[str, Any],
    *,
    resumed: bool,
    t0: float,
    metrics: dict[str, Any] | None,
    weights_name: str | None = None,
) -> RunResult:
    """The :class:`RunResult` of a finished run."""
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
        run_dir_bytes=directory_bytes(run.path),
    )
