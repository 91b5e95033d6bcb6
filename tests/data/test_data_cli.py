"""`alexkit data check` and `alexkit data pack` through the real CLI app."""

from __future__ import annotations

import json

from conftest import write_class_images
from typer.testing import CliRunner

from alexkit.cli import app


def _folder(tmp_path):
    root = tmp_path / "xray"
    write_class_images(root / "train", ["NORMAL", "PNEUMONIA"], 3, fmt="JPEG")
    paths = write_class_images(root / "val", ["NORMAL", "PNEUMONIA"], 1, fmt="JPEG")
    # the same file in train and val: leakage
    (root / "train" / "NORMAL" / "copy.jpg").write_bytes(paths[0].read_bytes())
    (root / "train" / "PNEUMONIA" / "empty.jpeg").write_bytes(b"")
    (root / "train" / "PNEUMONIA" / "notes.JPG").write_text("not an image")
    return root


def test_check_json_is_documented_and_complete(tmp_path):
    root = _folder(tmp_path)
    result = CliRunner().invoke(app, ["data", "check", str(root), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)  # only JSON on stdout
    assert report["classes"] == {"NORMAL": 5, "PNEUMONIA": 4}
    assert report["counts"] == {
        "train": {"NORMAL": 4, "PNEUMONIA": 3},
        "val": {"NORMAL": 1, "PNEUMONIA": 1},
    }
    assert report["splits"] == {"train": 7, "val": 2}
    unreadable = {u["path"].rsplit("/", 1)[1]: u["reason"] for u in report["unreadable"]}
    assert unreadable == {
        "empty.jpeg": "empty file (0 bytes)",
        "notes.JPG": "not an image (looks like text)",
    }
    (dup,) = report["duplicates_across_splits"]
    assert {d["split"] for d in dup} == {"train", "val"}
    assert report["sizes"]["width"]["max"] == 48 and report["formats"] == {"JPEG": 9}
    assert any("appear in more than one split" in w for w in report["warnings"])
    assert any("only 1 image" in w for w in report["warnings"])


def test_check_table_and_strict_exit_code(tmp_path):
    root = _folder(tmp_path)
    result = CliRunner().invoke(app, ["data", "check", str(root)])
    assert result.exit_code == 0
    assert "PNEUMONIA" in result.stdout and "empty.jpeg" in result.stdout
    assert "duplicate across splits" in result.stdout
    strict = CliRunner().invoke(app, ["data", "check", str(root), "--strict"])
    assert strict.exit_code == 3 and "2 unreadable file(s)" in strict.stderr


def test_check_missing_path_is_a_one_line_data_error(tmp_path):
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path / "nope")])
    assert result.exit_code == 3
    message = " ".join(result.stderr.split())  # the console may wrap at 80 columns
    assert message.startswith("error:") and message.endswith(
        "give a folder of class folders or a CSV."
    )
    assert "Traceback" not in result.stderr


def test_pack_writes_shards_and_check_reads_them(tmp_path):
    root = _folder(tmp_path)
    out = tmp_path / "shards"
    result = CliRunner().invoke(
        app,
        ["data", "pack", str(root), "--out", str(out), "--shards", "2", "--resize", "32", "--json"],
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"train": 7, "validation": 2}
    assert summary["shards"] == {"train": 2, "validation": 1}
    assert len(summary["skipped"]) == 2
    assert sorted(p.name for p in out.glob("*-of-*")) == [
        "train-00000-of-00002",
        "train-00001-of-00002",
        "validation-00000-of-00001",
    ]
    check = CliRunner().invoke(app, ["data", "check", str(out), "--json"])
    assert check.exit_code == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["layout"] == "tfrecord" and report["classes"] == {"NORMAL": 5, "PNEUMONIA": 4}
    assert report["sizes"]["height"]["max"] == 32 and report["unreadable"] == []


def test_help_shows_examples():
    for cmd in ("check", "pack"):
        result = CliRunner().invoke(app, ["data", cmd, "--help"])
        assert result.exit_code == 0 and "Example: alexkit data" in result.stdout


def test_light_commands_start_without_tensorflow(tmp_path):
    """`data check` (Pillow) and `weights list` (store folders) don't pay TensorFlow's
    ~5 s import."""
    import os
    import subprocess
    import sys

    write_class_images(tmp_path / "d", ["a", "b"], 3, fmt="JPEG")
    for argv in (["data", "check", str(tmp_path / "d"), "--json"], ["weights", "list", "--json"]):
        code = (
            f"import sys; from alexkit.cli import main; sys.argv = ['alexkit', *{argv!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
        )
        env = dict(os.environ, ALEXKIT_HOME=str(tmp_path / "home"))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout)
        assert out["classes"] == {"a": 3, "b": 3} if argv[0] == "data" else out == []
