"""README.md stays true: its two opening commands, and every `alexkit` command it shows."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import typer

from alexkit.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```bash\n(.*?)^```", README, flags=re.S | re.M)


def _alexkit_lines() -> list[str]:
    lines = []
    for block in BLOCKS:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("alexkit "):
                lines.append(line)
    return lines


def test_readme_opens_with_two_newcomer_commands():
    first_two = BLOCKS[:2]
    assert len(first_two) == 2 and all(len(b.strip().splitlines()) == 1 for b in first_two)
    setup_demo, setup_tests = (b.strip() for b in first_two)
    assert setup_demo.endswith("alexkit demo") and "pip install" in setup_demo
    assert "pip install" in setup_tests
    assert setup_tests.split("&&")[-1].split()[0] == ".venv/bin/pytest"  # runs the tests
    # No other code block comes before them.
    assert README.index("```") == README.index("```bash\n" + first_two[0])


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extracted = subprocess.run(
        ["awk", r"/^```bash$/ {n++; getline; if (n == 2) {print; exit}}", str(ROOT / "README.md")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == BLOCKS[1].strip()
    assert 'eval "$test_cmd"' in ci


def test_readme_shows_every_command():
    shown = {tuple(shlex.split(line)[1:3]) for line in _alexkit_lines()}
    top = {words[0] for words in shown}
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert name in top, f"README shows no `alexkit {name}` example"
        if hasattr(command, "commands"):
            for sub in command.commands:
                assert (name, sub) in shown, f"README shows no `alexkit {name} {sub}` example"


@pytest.mark.parametrize("line", _alexkit_lines())
def test_readme_command_parses(line):
    """Each shown command resolves to a real command and its options parse."""
    words = shlex.split(line)[1:]
    command = typer.main.get_command(app)
    path = ["alexkit"]
    while hasattr(command, "commands"):
        assert words, f"{line!r}: names no command under {' '.join(path)}"
        name = words.pop(0)
        assert name in command.commands, f"{line!r}: unknown command {name!r}"
        command = command.commands[name]
        path.append(name)
    ctx = command.make_context(" ".join(path), list(words))
    assert not ctx.args, f"{line!r}: unexpected arguments {ctx.args}"
