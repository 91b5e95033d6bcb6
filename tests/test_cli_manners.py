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


def test_an_unexpected_error_is_one_line_and_exit_1(tmp_path, monkeypatch):
    # The last line of defence (alexkit.cli.AlexkitGroup): any error that is not one of
    # alexkit's own kinds, raised inside a real command, is a one-line "bug" message.
    from alexkit import data

    def broken(*args, **kwargs):
        return {}["no such key"]

    monkeypatch.setattr(data, "load_spec", broken)
    result = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "alexkit hit a bug: KeyError" in lines[0] and "no such key" in lines[0]
    assert "--debug" in lines[0] and "Traceback" not in result.stderr
    # --debug keeps the real exception (and its traceback) for a bug report.
    result = runner.invoke(app, ["--debug", "data", "check", str(tmp_path)])
    assert isinstance(result.exception, KeyError)


@pytest.mark.parametrize(
    "code,words", [(13, "permission denied"), (28, "no space left"), (30, "read-only")]
)
def test_a_refused_write_anywhere_is_one_line_and_exit_4(tmp_path, monkeypatch, code, words):
    from alexkit import data

    def refused(*args, **kwargs):
        raise OSError(code, os.strerror(code), "/data/out/features.csv")

    monkeypatch.setattr(data, "load_spec", refused)
    result = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 4, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "/data/out/features.csv" in lines[0] and words in lines[0]


def test_an_abort_from_typer_is_interrupted_not_a_crash(monkeypatch):
    # Typer 0.29's vendored click has no Abort: the handler must catch typer.Abort.
    from alexkit import data

    def abort(*args, **kwargs):
        raise typer.Abort()

    monkeypatch.setattr(data, "load_spec", abort)
    result = runner.invoke(app, ["data", "check", "."])
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.stderr and "AttributeError" not in result.stderr


def test_an_unwritable_output_is_one_line(tmp_path):
    # Seen in the field: `data pack SRC --out /proc/nope` ended in a traceback.
    from conftest import write_class_images

    write_class_images(tmp_path / "src", ["a", "b"], 2)
    result = runner.invoke(app, ["data", "pack", str(tmp_path / "src"), "--out", "/proc/nope"])
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr


def test_tensorflow_retracing_hints_are_dropped_and_its_other_warnings_kept(caplog):
    import logging

    from alexkit.commands._common import setup_logging

    tf_log = logging.getLogger("tensorflow")
    before = list(tf_log.filters)
    try:
        setup_logging(verbose=False)
        with caplog.at_level(logging.WARNING, logger="tensorflow"):
            tf_log.warning("5 out of the last 19 calls to <f> triggered tf.function retracing.")
            tf_log.warning("a real TensorFlow warning")
        assert [r.getMessage() for r in caplog.records] == ["a real TensorFlow warning"]
    finally:
        tf_log.filters[:] = before
