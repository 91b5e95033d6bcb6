"""A linear probe: scikit-learn on frozen AlexNet features (the classic "fc7 + SVM").

Features of the training data are extracted once, a logistic regression or linear SVM is
fitted on them (standardised), and the evaluation data gets the same ``EvalReport`` as
``alexkit evaluate``. SVM "probabilities" are the softmax of the decision function:
they rank correctly (ROC/PR AUC are exact) but are not calibrated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from alexkit.errors import DataError, UsageError
from alexkit.evaluate import EvalReport, align_spec, compute_report, load_eval_spec

PROBES = ("logreg", "svm")


def make_probe(kind: str = "logreg", *, c: float = 1.0, seed: int = 0) -> Any:
    """An unfitted scikit-learn pipeline: StandardScaler + LogisticRegression / LinearSVC."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    elif kind == "svm":
        from sklearn.svm import LinearSVC

        clf = LinearSVC(C=c, max_iter=5000, random_state=seed)
    else:
        raise UsageError(f"--probe must be one of {', '.join(PROBES)}; received {kind!r}.")
    return make_pipeline(StandardScaler(), clf)


def probe_probabilities(probe: Any, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) scores from a fitted probe; classes never seen in training get 0."""
    classes = probe.classes_.astype(int)
    if hasattr(probe, "predict_proba"):
        scores = probe.predict_proba(x)
    else:
        decision = np.asarray(probe.decision_function(x), dtype=np.float64)
        if decision.ndim == 1:  # binary: positive-class margin
            decision = np.stack([-decision, decision], axis=1)
        decision -= decision.max(axis=1, keepdims=True)
        scores = np.exp(decision)
        scores /= scores.sum(axis=1, keepdims=True)
    out = np.zeros((x.shape[0], num_classes))
    out[:, classes] = scores
    return out


def fit_and_evaluate(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    class_names: Sequence[str],
    *,
    kind: str = "logreg",
    c: float = 1.0,
    threshold: float = 0.5,
    paths: Sequence[str] | None = None,
    seed: int = 0,
    ci_level: float | None = 0.95,
    n_boot: int = 2000,
) -> EvalReport:
    """Fit a probe on (x_train, y_train) and report on (x_eval, y_eval).

    ``seed`` seeds the probe's solver and the bootstrap; ``ci_level`` and ``n_boot`` are
    as for :func:`alexkit.evaluate.compute_report` (the items of one clip or volume in
    ``paths`` are resampled together).
    """
    if len(np.unique(y_train)) < 2:
        raise DataError("the probe needs training images of at least two classes.")
    probe = make_probe(kind, c=c, seed=seed)
    probe.fit(x_train, y_train)
    probs = probe_probabilities(probe, x_eval, len(class_names))
    report = compute_report(
        y_eval,
        probs,
        class_names,
        threshold=threshold,
        paths=paths,
        ci_level=ci_level,
        n_boot=n_boot,
        seed=seed,
    )
    report.meta.update(
        {"probe": kind, "C": c, "train_samples": int(len(y_train)), "dim": int(x_train.shape[1])}
    )
    return report


def run_probe(
    model: Any,
    train: Any,
    data: Any,
    *,
    kind: str = "logreg",
    layer: str = "fc7",
    pool: str = "none",
    c: float = 1.0,
    batch_size: int = 32,
    threshold: float = 0.5,
    image_size: int | None = None,
    grayscale: bool = False,
    seed: int = 0,
    ci_level: float | None = 0.95,
    n_boot: int = 2000,
    precision: Any = None,
) -> EvalReport:
    """Extract ``layer`` features of ``train`` and ``data``, fit a probe, report on ``data``.

    Args:
        model: the feature network (ImageNet weights or a fine-tuned model).
        train, data: ``DatasetSpec`` or paths for ``data.load_spec``; labelled.
        kind: ``logreg`` or ``svm``.
        layer, pool: as for ``alexkit extract``.
        c: inverse regularisation strength of the probe.
        seed: the probe's solver seed and the bootstrap seed.
        ci_level, n_boot: the intervals, as for ``alexkit evaluate`` (None / 0: none /
            closed-form only).
        precision: compute the features in ``float32``, ``mixed_bfloat16``, ``auto`` or a
            ``PrecisionChoice`` (:func:`alexkit.loading.apply_precision`), once for both
            sets; None: as the model is. Saved in ``meta["precision"]``.

    Raises:
        DataError: ``data`` has classes absent from ``train`` (listed), or no labels.
        UsageError: a bad probe kind, precision or interval option.
    """
    from alexkit.evaluate import evaluation_precision
    from alexkit.extract import extract_arrays
    from alexkit.loading import apply_precision

    if kind not in PROBES:
        raise UsageError(f"--probe must be one of {', '.join(PROBES)}; received {kind!r}.")
    from alexkit.stats import check_level, check_n_boot

    if ci_level is not None:  # before any extraction
        check_level(ci_level)
    check_n_boot(n_boot)
    model, choice = apply_precision(model, precision)
    if hasattr(train, "items"):
        train_spec = train
    else:
        train_spec = load_eval_spec(train, prefer_splits=("train",))
    names = list(train_spec.class_names)
    train_spec = align_spec(train_spec, names)
    eval_spec = align_spec(data, names) if hasattr(data, "items") else load_eval_spec(data, names)
    common = dict(
        layer=layer, pool=pool, batch_size=batch_size, image_size=image_size, grayscale=grayscale
    )
    _, y_train, x_train = extract_arrays(model, train_spec, **common)
    paths, y_eval, x_eval = extract_arrays(model, eval_spec, **common)
    if x_eval.shape[0] == 0:
        raise DataError(f"{eval_spec.root}: no readable images to evaluate.")
    report = fit_and_evaluate(
        x_train,
        y_train,
        x_eval,
        y_eval,
        names,
        kind=kind,
        c=c,
        threshold=threshold,
        paths=paths,
        seed=seed,
        ci_level=ci_level,
        n_boot=n_boot,
    )
    report.meta.update(
        {"layer": layer, "pool": pool, "train": str(train_spec.root), "data": str(eval_spec.root)}
    )
    report.meta["precision"] = evaluation_precision(model, choice)
    return report
