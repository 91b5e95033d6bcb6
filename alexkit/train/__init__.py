"""``pretrain`` (the 2012 paper's ImageNet training) and ``finetune`` (recipes), one engine.

Both workflows run the same loop (:class:`alexkit.train.engine.Engine`): stages of epochs
of steps, each step one ``model.train_on_batch``; validation at every epoch end; the best
model by the monitored metric saved as ``model.keras``; an atomic checkpoint (model
variables, optimizer variables, loop state, history, LR-schedule state) at every epoch
end, every ``checkpoint_every`` steps and on Ctrl-C. See :mod:`alexkit.runs` for the
directory layout.

Modules: ``engine`` (the epoch loop), ``policies`` (best model, early stopping, LR
schedule, checkpoints, history/TensorBoard), ``plan`` (recipe -> stages and data),
``feature_cache`` (a frozen prefix's outputs on K augmented views per training image),
``results`` (metrics.json, RunResult), ``finetune``, ``pretrain`` and ``common`` (seeding,
fingerprints, precision).
"""

from alexkit.train.common import RunResult, data_fingerprint
from alexkit.train.finetune import finetune
from alexkit.train.plan import StagePlan
from alexkit.train.pretrain import pretrain

__all__ = ["RunResult", "StagePlan", "data_fingerprint", "finetune", "pretrain"]
