"""`alexkit demo --quick`: the newcomer's path, end to end, at CI size; and it leaves what
a person looks at, and no checkpoints.

The quick demo trains three times and every test here only reads what it left: it runs
once per variant, and its tests sit in this one file so that ``pytest -n 2 --dist
loadfile`` cannot run it once on each worker.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alexkit.cli import app
from alexkit.demo import SIZES, write_manifests
from alexkit.precision import POLICIES
from alexkit.variants import VARIANTS


@dataclass(frozen=True)
class QuickDemo:
    """What ``alexkit demo --quick --json --quiet`` returned and where it wrote."""

    out: Path
    exit_code: int
    stdout: str
    stderr: str
    variant: str


# Every run: the quick demo on the tiny variant (the 2012 layout at 1/8 width, ~7 s): every
# step, file and number of the demo. The same on the full-size 2012 network (~35 CPU-s,
# ~1 GB of model files) is opt-in, `pytest -m heavy`, and benchmarks/run_cost.py --demo
# measures the full demo itself.
@pytest.fixture(scope="module", params=["tiny", pytest.param("original", marks=pytest.mark.heavy)])
def quick_run(request, tmp_path_factory):
    """The quick demo of one variant (the CLI, as a newcomer runs it)."""
    out = tmp_path_factory.mktemp("demo-quick") / "demo"
    args = ["demo", "--quick", "--out", str(out), "--json", "--quiet"]
    if request.param != "original":  # the default
        args += ["--variant", request.param]
    result = CliRunner().invoke(app, args)
    return QuickDemo(out, result.exit_code, result.stdout, result.stderr, request.param)


@pytest.mark.slow
def test_demo_quick_end_to_end(quick_run):
    out = quick_run.out
    assert quick_run.exit_code == 0, quick_run.stderr[-3000:]
    summary = json.loads(quick_run.stdout)  # --json: nothing but JSON on stdout
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["pretrain"]["epochs"] == SIZES["quick"].pretrain_epochs
    assert summary["pretrain"]["precision"] in POLICIES
    # The pretrained model computes in the precision the summary names.
    config = json.loads((out / "pretrain" / "config.json").read_text())
    assert config["resolved"]["precision"] == summary["pretrain"]["precision"]
    assert summary["variant"] == config["variant"] == quick_run.variant
    approaches = {row["approach"]: row for row in summary["results"]}
    assert set(approaches) == {"transfer", "scratch"}
    size = SIZES["quick"]
    for row in approaches.values():
        assert row["test_images"] == size.test_per_class * 5
        assert 0.0 <= row["accuracy"] <= 1.0
        # The reported accuracy is the evaluation's own, from the written files.
        metrics = json.loads((out / f"evaluate-{row['approach']}" / "metrics.json").read_text())
        assert metrics["accuracy"] == pytest.approx(row["accuracy"], abs=1e-4)
    for name in ("transfer confusion matrix", "scratch confusion matrix"):
        png = out / f"evaluate-{name.split()[0]}" / "confusion_matrix.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "features-fc7.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    fc7 = VARIANTS[quick_run.variant]["fc_units"]  # 4096 for the 2012 network
    assert rows[0][:2] == ["path", "label"] and len(rows[0]) == 2 + fc7
    assert len(rows) - 1 == size.test_per_class * 5
    # The transfer run started from the pretrained model of the source task.
    config = json.loads((out / "finetune-transfer" / "config.json").read_text())
    assert config["class_names"] == ["5", "6", "7", "8", "9"]
    assert config["variant"] == quick_run.variant


def test_demo_trains_the_2012_network_unless_told_otherwise(tmp_path):
    import inspect

    from alexkit.demo import run_demo

    assert inspect.signature(run_demo).parameters["variant"].default == "original"
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert "--variant" in result.stdout and "original" in result.stdout
    # A bad name is refused before anything is written.
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--variant", "huge", "--out", str(out)])
    assert result.exit_code == 2 and "huge" in result.stderr
    assert not out.exists()


def test_demo_refuses_to_clobber(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 4
    assert "--force" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def _paths_by_split(manifest):
    """(the manifest's rows, {split: set of paths})."""
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_split: dict[str, set[str]] = {}
    for row in rows:
        by_split.setdefault(row["split"], set()).add(row["path"])
    return rows, by_split


def test_demo_manifests_are_disjoint_and_seeded(tmp_path):
    from alexkit.datasets import materialize_digits

    source = materialize_digits(digits=range(5))
    target = materialize_digits(digits=range(5, 10))
    size = SIZES["full"]
    source_csv, first = write_manifests(source, target, tmp_path / "a", size, seed=3)
    _, again = write_manifests(source, target, tmp_path / "b", size, seed=3)
    assert first.read_text() == again.read_text()
    _, by_split = _paths_by_split(first)
    assert len(by_split["train"]) == size.shots * 5
    assert len(by_split["test"]) == size.test_per_class * 5
    assert not (by_split["train"] & by_split["test"]) and not (by_split["val"] & by_split["test"])
    # Pretraining validates on its own held-back source images, not on what it trains on.
    source_rows, source = _paths_by_split(source_csv)
    assert len(source["train"]) == size.source_per_class * 5
    assert len(source["val"]) == size.source_val_per_class * 5
    assert not source["train"] & source["val"]
    assert {row["label"] for row in source_rows} == {"0", "1", "2", "3", "4"}


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
