"""``alexkit demo`` leaves what a person looks at, and no checkpoints."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_quick_demo_leaves_models_reports_and_features_only(tmp_path):
    from alexkit.demo import run_demo

    out = tmp_path / "demo"
    result = run_demo(out, quick=True)
    assert {row["approach"] for row in result.rows} == {"transfer", "scratch"}
    assert not list(out.rglob("checkpoints"))  # keep_checkpoints=0: none written or left
    assert not (out / "scratch-init.keras").exists()
    assert not (out / "pretrain" / "last.keras").exists()
    for run in ("pretrain", "finetune-transfer", "finetune-scratch"):
        assert (out / run / "model.keras").is_file()  # written once, at the end
        assert (out / run / "history.csv").is_file()
    assert (out / "features-fc7.csv").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert {row["approach"] for row in summary["results"]} == {"transfer", "scratch"}
