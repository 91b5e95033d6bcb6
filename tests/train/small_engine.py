"""The run-dir and Engine set-up that the engine tests share (their networks and data differ).

Imported as ``from small_engine import prepared_engine`` (pytest puts this folder on sys.path).
"""

from __future__ import annotations


def prepared_engine(tmp_path, out, *, resume=False, progress=None, **engine_args):
    """An :class:`~alexkit.train.engine.Engine` on ``tmp_path/out``, seeded with 0.

    A new run writes an empty config; ``resume`` opens the existing one. ``engine_args``
    (model, stages, data plan, datasets, ...) go to the Engine over these test defaults:
    monitor val_accuracy, metrics loss and accuracy, seed 0, a checkpoint every step, no
    XLA, no class weights, whole epochs.
    """
    from alexkit.runs import RunDir
    from alexkit.train.common import seed_everything
    from alexkit.train.engine import Engine

    seed_everything(0)
    run = RunDir.prepare(tmp_path / out, resume=resume, force=False)
    if not resume:
        run.write_config({})
    defaults = dict(
        monitor="val_accuracy", metrics=["loss", "accuracy"], class_weight=None, seed=0,
        steps_per_epoch=None, checkpoint_every=1, jit=False,
    )  # fmt: skip
    return Engine(run=run, progress=progress, resume=resume, **{**defaults, **engine_args})
