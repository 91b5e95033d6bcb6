"""A stage that trains the top of a chain model validates from its frozen prefix's cached
output: the metrics are those of the uncached run, and the prefix runs once per stage."""

from __future__ import annotations

import pytest
from test_lean_checkpoints import ALL_THEN_TOP, HEAD_ONLY, _engine, _stages


def _counting(engine):
    calls = []
    make_val = engine.make_val

    def counted():
        calls.append(1)
        return make_val()

    engine.make_val = counted
    return calls


@pytest.mark.parametrize(
    "specs, val_passes", [(HEAD_ONLY, 1), (ALL_THEN_TOP, 1 + 1)], ids=["head", "all-then-top"]
)
def test_cached_validation_equals_the_uncached_one(tmp_path, specs, val_passes):
    stages = _stages(*specs)
    plain = _engine(tmp_path, "plain", stages)
    plain.cache_val = False
    plain_calls = _counting(plain)
    reference = plain.run_all()["history"]

    cached = _engine(tmp_path, "cached", stages)
    cached_calls = _counting(cached)
    history = cached.run_all()["history"]

    assert len(plain_calls) == 3  # every epoch reads the validation images
    # The all-trainable stage validates uncached (its one epoch), the frozen one once.
    assert len(cached_calls) == val_passes
    for ours, theirs in zip(history, reference, strict=True):
        assert ours["loss"] == theirs["loss"]  # training is untouched
        for key in ("val_loss", "val_accuracy"):
            assert ours[key] == pytest.approx(theirs[key], abs=1e-6)
