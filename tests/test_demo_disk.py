"""``alexkit demo`` leaves what a person looks at, and no checkpoints."""

from __future__ import annotations

import json

import pytest
from demo_quick_run import quick_demo


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    return quick_demo(tmp_path_factory)  # the same run as test_demo.py's


@pytest.mark.slow
def test_quick_demo_leaves_models_reports_and_features_only(quick_run):
    out = quick_run.out
    assert quick_run.exit_code == 0, quick_run.stderr[-3000:]
    result = json.loads(quick_run.stdout)
    assert {row["approach"] for row in result["results"]} == {"transfer", "scratch"}
    assert not list(out.rglob("checkpoints"))  # keep_checkpoints=0: none written or left
    assert not (out / "scratch-init.keras").exists()
    assert not (out / "pretrain" / "last.keras").exists()
    for run in ("pretrain", "finetune-transfer", "finetune-scratch"):
        assert (out / run / "model.keras").is_file()  # written once, at the end
        assert (out / run / "history.csv").is_file()
    assert (out / "features-fc7.csv").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert {row["approach"] for row in summary["results"]} == {"transfer", "scratch"}
