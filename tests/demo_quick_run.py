"""One ``alexkit demo --quick`` per test session, shared by test_demo.py and
test_demo_disk.py: the quick demo trains AlexNet three times (~35 s on 2 cores), and both
files only read what it leaves, so the suite pays for it once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class QuickDemo:
    """What ``alexkit demo --quick --json --quiet`` returned and where it wrote."""

    out: Path
    exit_code: int
    stdout: str
    stderr: str


_RUN: QuickDemo | None = None


def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> QuickDemo:
    """The session's quick demo, run on first use (the CLI, as a newcomer runs it)."""
    global _RUN
    if _RUN is None:
        from typer.testing import CliRunner

        from alexkit.cli import app

        out = tmp_path_factory.mktemp("demo-quick") / "demo"
        args = ["demo", "--quick", "--out", str(out), "--json", "--quiet"]
        result = CliRunner().invoke(app, args)
        _RUN = QuickDemo(out, result.exit_code, result.stdout, result.stderr)
    return _RUN
