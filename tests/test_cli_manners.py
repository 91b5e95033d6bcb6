"""CLI manners: help with examples everywhere, exit codes, colour, --debug."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from alexkit.cli import app
from alexkit.commands._common import guarded
from alexkit.errors import CheckpointError, DataError, RecipeError

runner = CliRunner()
ANSI = "\x1b["
# An SGR sequence that sets a foreground or background colour.
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])[;m]")


def _all_commands():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            for sub in command.commands:
                yield (name, sub)
        else:
            yield (name,)


@pytest.mark.parametrize("words", list(_all_commands()), ids=" ".join)
def test_every_command_has_help_with_an_example(words):
    result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout, f"`alexkit {' '.join(words)} --help` shows no example"


def _probe_app():
    """A throwaway app whose commands raise each documented error."""
    probe = typer.Typer()

    @probe.command()
    @guarded(light=True)
    def fail(kind: str) -> None:
        if kind == "data":
            raise DataError("no images in /tmp/x: put them in one folder per class")
        if kind == "checkpoint":
            raise CheckpointError("runs/a already holds a run: add --force or --resume")
        if kind == "recipe":
            raise RecipeError("recipe.toml: unknown key 'epoch' (did you mean 'epochs'?)")
        if kind == "interrupt":
            raise KeyboardInterrupt
        raise RuntimeError("a bug")

    @probe.command()
    def other() -> None:  # a second command keeps `fail` a subcommand
        pass

    return probe


@pytest.mark.parametrize(
    "kind,code", [("data", 3), ("checkpoint", 4), ("recipe", 2), ("interrupt", 130)]
)
def test_documented_exit_codes_and_one_line_messages(kind, code):
    result = runner.invoke(_probe_app(), ["fail", kind])
    assert result.exit_code == code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "Traceback" not in result.stderr


def test_debug_keeps_the_traceback():
    from alexkit.commands import _common

    _common.STATE["debug"] = True
    try:
        result = runner.invoke(_probe_app(), ["fail", "data"])
    finally:
        _common.STATE["debug"] = False
    assert isinstance(result.exception, DataError)


def test_root_debug_flag_reaches_commands():
    result = runner.invoke(app, ["--debug", "model", "summary", "--variant", "nope"])
    assert result.exit_code != 0 and result.exception is not None


def test_real_data_error_exit_3(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    result = runner.invoke(app, ["data", "check", str(tmp_path / "empty")])
    assert result.exit_code == 3, result.output
    assert result.stderr.strip().startswith("error:")


def test_no_colour_codes_when_not_a_terminal():
    result = runner.invoke(app, ["model", "summary", "--variant", "nope"])
    assert ANSI not in result.stderr and ANSI not in result.stdout


def test_no_color_is_respected_even_when_colour_is_forced():
    env = dict(os.environ, NO_COLOR="1", FORCE_COLOR="1", TERM="xterm-256color")
    proc = subprocess.run(
        [sys.executable, "-m", "alexkit", "recipes", "show", "no-such-recipe"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "no-such-recipe" in proc.stderr
    assert not COLOUR.search(proc.stderr)  # bold may stay; colours may not
    env.pop("NO_COLOR")
    forced = subprocess.run(
        [sys.executable, "-m", "alexkit", "recipes", "show", "no-such-recipe"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert COLOUR.search(forced.stderr)  # the check above can fail: forced colour shows
