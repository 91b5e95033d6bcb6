"""The CLI's manners: instant --help, one-line errors with documented exit codes, --json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from alexkit import __version__
from alexkit.cli import app

runner = CliRunner()


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from alexkit.cli import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'pandas', 'sklearn', 'torch', 'jax')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"alexkit {__version__}"


@pytest.mark.parametrize(
    "variant,classes,total",
    [
        ("original", 1000, 60_965_224),
        ("torchvision", 1000, 61_100_840),
        ("original", 2, 56_876_418),
        ("tiny", 1000, 202_456),  # the smoke-test variant (1/8 width, 99x99)
    ],
)
def test_model_summary_json_totals(variant, classes, total):
    result = runner.invoke(
        app, ["model", "summary", "--variant", variant, "--classes", str(classes), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # nothing but JSON on stdout
    assert data["total_params"] == total
    assert sum(row["params"] for row in data["layers"]) == total
    names = [row["name"] for row in data["layers"]]
    assert names[-1] == "predictions" and "fc7" in names


def test_model_summary_table():
    result = runner.invoke(app, ["model", "summary", "--classes", "38"])
    assert result.exit_code == 0
    assert "57,023,910" in result.stdout and "conv5" in result.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["model", "summary", "--variant", "alexnet2"], "--variant"),
        (["model", "summary", "--classes", "0"], "--classes"),
        (["model", "summary", "--bogus"], "--bogus"),
        (["model", "frobnicate"], "frobnicate"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and needle in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "alexkit", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"alexkit {__version__}"


def test_atomic_writes_have_ordinary_permissions(tmp_path):
    import os

    from alexkit.paths import atomic_write_text

    target = tmp_path / "out.json"
    atomic_write_text(target, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert target.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left


@pytest.mark.parametrize("was_enabled", [True, False])
def test_tensorflow_is_imported_with_the_collector_paused_then_frozen(was_enabled):
    """What makes each command start ~2 CPU-s sooner: no garbage collection while
    TensorFlow's objects are made, and none of them walked again afterwards."""
    import gc

    from alexkit.commands._common import collector_paused

    before, frozen_before = gc.isenabled(), gc.get_freeze_count()
    gc.unfreeze()  # (conftest froze what its TensorFlow import made)
    (gc.enable if was_enabled else gc.disable)()
    try:
        with collector_paused():
            assert not gc.isenabled()
            made = [[i] for i in range(1000)]  # objects the collector tracks
        assert gc.isenabled() is was_enabled
        assert gc.get_freeze_count() >= len(made)
    finally:
        (gc.freeze if frozen_before else gc.unfreeze)()
        (gc.enable if before else gc.disable)()


def test_a_failing_tensorflow_import_leaves_the_collector_on(monkeypatch):
    import builtins
    import gc

    from alexkit.commands import _common

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "tensorflow":
            raise ImportError("no tensorflow here")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "tensorflow")
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ImportError, match="no tensorflow here"):
        _common.import_tensorflow_quietly()
    assert gc.isenabled()
