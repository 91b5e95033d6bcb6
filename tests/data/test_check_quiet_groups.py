"""`alexkit data check`: third-party warnings stay off stderr (counted instead), and clips,
volumes and patients are counted beside their frames/slices (field report #17, items 1, 4).

Fixtures are generated here: a PNG over a lowered Pillow bomb limit (a
DecompressionBombWarning, not an error), DICOMs that make pydicom warn and log
(tests/test_quiet.py), PyAV clips and pydicom series (tests/test_media.py), NIfTI volumes
(tests/test_media_pipeline.py). Oracles are the numbers of files written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import write_class_images
from typer.testing import CliRunner

from alexkit.cli import app


def run_check(args, tmp_path, pillow_limit=None):
    """`alexkit data check ARGS` in a fresh process with the CLI's own logging set up."""
    code = "import sys\n"
    if pillow_limit is not None:
        code += f"from PIL import Image; Image.MAX_IMAGE_PIXELS = {pillow_limit}\n"
    code += (
        f"from alexkit.cli import main; sys.argv = ['alexkit', 'data', 'check', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    sys.exit(e.code)\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    env = dict(os.environ, ALEXKIT_HOME=str(tmp_path / "home"), COLUMNS="200")
    env["PYTHONWARNINGS"] = "always"  # a leaked warning could not hide behind the registry
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def assert_quiet_stderr(stderr: str) -> None:
    """At most the progress line (not with --json; its folder name is the test's, so it
    is set aside rather than searched)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) <= 1 and all(line.startswith("checking ") for line in lines), stderr


def test_pillow_bomb_warning_is_counted_not_printed(tmp_path):
    from PIL import Image

    root = tmp_path / "d"
    write_class_images(root, ["a", "b"], 2)  # 48x40 = 1,920 px each
    # Over a 1,000-pixel limit but under twice it: Pillow warns and still decodes.
    buf = io.BytesIO()
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(buf, "PNG")
    (root / "a" / "wide.png").write_bytes(buf.getvalue())  # 1,200 px: warns too

    result = run_check([str(root), "--json"], tmp_path, pillow_limit=1000)
    assert result.returncode == 0, result.stderr
    assert_quiet_stderr(result.stderr)
    report = json.loads(result.stdout)
    assert report["classes"] == {"a": 3, "b": 2}  # every file read despite the warnings
    assert report["library_warnings"] == {"files": 5, "messages": 5}
    assert any(
        w.startswith("5 file(s) were read despite library warnings") for w in report["warnings"]
    )
    assert report["groups"] == {}  # plain images: no clips, volumes or patients

    text = run_check([str(root)], tmp_path, pillow_limit=1000)
    assert text.returncode == 0, text.stderr
    assert_quiet_stderr(text.stderr)
    assert "5 file(s) were read despite library warnings" in text.stdout
    # Without a lowered limit nothing warns, and nothing is counted.
    plain = run_check([str(root), "--json"], tmp_path)
    assert json.loads(plain.stdout)["library_warnings"] == {"files": 0, "messages": 0}


def test_truncated_png_reason_is_one_line_and_stderr_stays_quiet(tmp_path):
    from PIL import Image

    root = tmp_path / "d"
    write_class_images(root, ["a", "b"], 2)
    buf = io.BytesIO()
    Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)).save(buf, "PNG")
    data = buf.getvalue()
    # Cut the image data but keep IEND: the header sniff passes, Pillow's decoder fails.
    iend = data[-12:]
    (root / "b" / "cut.png").write_bytes(data[: len(data) // 2] + iend)
    result = run_check([str(root), "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert_quiet_stderr(result.stderr)
    report = json.loads(result.stdout)
    [entry] = report["unreadable"]
    assert entry["path"].endswith("cut.png") and "\n" not in entry["reason"]
    assert report["classes"] == {"a": 2, "b": 2}


@pytest.mark.parametrize("json_out", [True, False])
def test_folder_of_odd_dicoms_prints_no_traceback_and_no_library_lines(tmp_path, json_out):
    pytest.importorskip("pydicom")
    from test_media import STORED, write_dicom
    from test_quiet import implicit_body_dicom

    root = tmp_path / "dicoms"
    (root / "odd").mkdir(parents=True)
    (root / "plain").mkdir()
    implicit_body_dicom(root / "odd" / "implicit.dcm")  # pydicom warns and logs; readable
    implicit_body_dicom(root / "odd" / "is.dcm", number_of_frames="x7")  # bad IS value
    implicit_body_dicom(root / "odd" / "short.dcm", pixel_bytes=b"\x00\x01")  # unreadable
    (root / "odd" / "fake.dcm").write_bytes(b"\x00" * 300)  # not DICOM at all
    write_dicom(root / "plain" / "ok.dcm", STORED)
    write_dicom(root / "plain" / "ok2.dcm", STORED, PatientID="OTHER")

    args = [str(root), "--json"] if json_out else [str(root)]
    result = run_check(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert_quiet_stderr(result.stderr)
    if not json_out:
        assert "read despite library warnings" in result.stdout
        assert "Traceback" not in result.stdout
        return
    report = json.loads(result.stdout)
    reasons = {os.path.basename(u["path"]): u["reason"] for u in report["unreadable"]}
    assert set(reasons) == {"short.dcm", "fake.dcm", "is.dcm"}, reasons
    for name in ("short.dcm", "is.dcm"):
        assert "[pydicom: Expected explicit VR, but found implicit VR" in reasons[name]
    assert all("\n" not in r for r in reasons.values())
    assert report["classes"] == {"odd": 1, "plain": 2}
    # Only implicit.dcm was read despite warnings; the failed ones say it in their reason.
    assert report["library_warnings"]["files"] == 1
    # Patients: Q-123 in "odd", MRN0042 and OTHER in "plain"; never their ids.
    assert report["groups"]["patients"]["classes"] == {"odd": 1, "plain": 2}
    assert report["groups"]["patients"]["total"] == 3
    for secret in ("Q-123", "MRN0042", "OTHER", "patient:", "x7"):
        assert secret not in result.stdout


# ------------------------------------------------------------------ groups (item 4)


def test_clips_per_class_and_split_are_counted_beside_their_frames(tmp_path):
    pytest.importorskip("av")
    from test_media import solid_frames, write_clip

    root = tmp_path / "clips"
    clips = {("train", "walk"): 3, ("train", "run"): 2, ("val", "walk"): 1, ("val", "run"): 1}
    for (split, name), n in clips.items():
        (root / split / name).mkdir(parents=True)
        for k in range(n):
            colours = [(20 * k, 30 * j, 100) for j in range(6)]
            write_clip(root / split / name / f"c{k}.mp4", solid_frames(colours, size=(16, 16)))
    result = CliRunner().invoke(
        app, ["data", "check", str(root), "--json", "--frames-per-clip", "2"]
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"] == {"train": {"run": 4, "walk": 6}, "val": {"run": 2, "walk": 2}}
    assert set(report["groups"]) == {"clips"}
    g = report["groups"]["clips"]
    assert g["counts"] == {"train": {"run": 2, "walk": 3}, "val": {"run": 1, "walk": 1}}
    assert g["splits"] == {"train": 5, "val": 2}
    assert g["classes"] == {"run": 3, "walk": 4}
    assert g["total"] == 7
    assert str(root) not in json.dumps(report["groups"])  # counts only

    text = CliRunner().invoke(
        app, ["data", "check", str(root), "--frames-per-clip", "2"], terminal_width=200
    )
    assert text.exit_code == 0, text.stderr
    assert "6 (3 clips)" in text.stdout and "14 (7 clips)" in text.stdout
    assert "frames/slices (clips they come from)" in text.stdout


def test_volumes_and_dicom_series_count_volumes_and_patients(tmp_path):
    pytest.importorskip("pydicom")
    nib = pytest.importorskip("nibabel")
    from test_media import STORED, write_dicom

    root = tmp_path / "ct"
    (root / "bleed").mkdir(parents=True)
    (root / "no_bleed").mkdir(parents=True)
    for v in range(2):  # NIfTI: 3 slices each
        vol = np.random.default_rng(v).integers(100, 900, size=(12, 12, 3)).astype(np.int16)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / "no_bleed" / f"v{v}.nii.gz"))
    # Two series of one patient and one of another: 3 volumes, 2 patients, 9 slices.
    for s, patient in enumerate(["P1", "P1", "P2"]):
        study = root / "bleed" / f"study{s}"
        study.mkdir()
        for z in range(3):
            write_dicom(
                study / f"i{z}.dcm",
                np.minimum(STORED + 40 * z + s, 4095),
                PatientID=patient,
                SeriesInstanceUID=f"1.2.3.{s}",
                ImagePositionPatient=[0, 0, 2.0 * z],
                ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            )
    result = CliRunner().invoke(app, ["data", "check", str(root), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"] == {"all": {"bleed": 9, "no_bleed": 6}}
    assert report["groups"]["volumes"]["counts"] == {"all": {"bleed": 3, "no_bleed": 2}}
    assert report["groups"]["patients"]["counts"] == {"all": {"bleed": 2, "no_bleed": 0}}
    assert report["groups"]["volumes"]["total"] == 5
    assert "patient:" not in result.stdout and "P1" not in result.stdout

    text = CliRunner().invoke(app, ["data", "check", str(root)], terminal_width=200)
    assert "9 (3 volumes, 2 patients)" in text.stdout


def test_manifest_groups_are_counted_and_a_group_of_two_classes_counts_once_in_total(tmp_path):
    root = tmp_path / "m"
    paths = write_class_images(root, ["x", "y"], 3)
    rows = []
    for p in paths:
        name = p.parent.name
        index = int(p.stem.split("_")[-1]) if p.stem.split("_")[-1].isdigit() else 0
        group = "shared" if index == 0 else f"{name}-{index}"
        rows.append({"path": str(p.relative_to(root)), "label": name, "group": group})
    manifest = root / "labels.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    result = CliRunner().invoke(app, ["data", "check", str(manifest), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    expected = {}
    for r in rows:
        expected.setdefault(r["label"], set()).add(r["group"])
    g = report["groups"]["groups"]
    assert g["classes"] == {k: len(v) for k, v in expected.items()}
    assert g["total"] == len({r["group"] for r in rows})
    assert g["total"] < sum(g["classes"].values())  # "shared" is in both classes
    assert "shared" not in result.stdout
