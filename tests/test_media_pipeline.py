"""Clips, NIfTI volumes and DICOM series through the CLI: data check, finetune,
evaluate, extract and predict (issue 8).

Fixtures are written here (PyAV clips and pydicom files through tests/test_media.py's
helpers, NIfTI with nibabel). Oracles are hand averages of the per-frame rows the
commands write, and counts of the files generated.
"""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

nib = pytest.importorskip("nibabel")
pytest.importorskip("av")
pytest.importorskip("pydicom")

from test_media import STORED, solid_frames, write_clip, write_dicom  # noqa: E402

from alexkit.cli import app  # noqa: E402
from alexkit.media import clear_cache, parse_item  # noqa: E402

CLASSES = ("lesion", "normal")
SLICES = 3  # every volume: 3 axial slices, none empty
FRAMES = 3  # frames sampled per clip (the recipe's [media] table)

# The tiny variant (AlexNet's 2012 layout at 1/8 width): the media handling through the
# CLI is under test, the same for every variant, not AlexNet's 57M parameters.
RECIPE = f"""
name = "media-test"
description = "Tiny volumes and clips for the pipeline test."
variant = "tiny"
batch_size = 4
seed = 0
monitor = "loss"
val_fraction = 0.2

[media]
frames_per_clip = {FRAMES}
window_center = 500.0
window_width = 1000.0
axis = 2
skip_empty = false

[augment]
crop = false
hflip = false
pca_lighting = 0.0

[[stages]]
name = "head"
epochs = 1
trainable_from = "head"
optimizer = "sgd"
lr = 0.001
momentum = 0.9
"""


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def write_volume(path, label: int, seed: int) -> str:
    """(24, 24, SLICES) int16 volume: noise plus a class-dependent bright square."""
    rng = np.random.default_rng(seed)
    vol = rng.integers(100, 400, size=(24, 24, SLICES)).astype(np.int16)
    lo = 4 if label == 0 else 14
    vol[lo : lo + 6, lo : lo + 6, :] = 900
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return str(path)


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def media_run(tmp_path_factory):
    """A folder-per-class of 4 NIfTI volumes, a recipe file and a 1-epoch run on them."""
    root = tmp_path_factory.mktemp("media")
    data = root / "volumes"
    for k, name in enumerate(CLASSES):
        (data / name).mkdir(parents=True)
        for v in range(2):
            write_volume(data / name / f"{name}{v}.nii.gz", k, seed=10 * k + v)
    recipe = root / "media.toml"
    recipe.write_text(RECIPE)
    run = root / "run"
    args = ["finetune", "--recipe", str(recipe), "--data", str(data), "--weights", "none"]
    args += ["--out", str(run), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4"]
    result = CliRunner().invoke(app, [*args, "--quiet", "--json"])
    assert result.exit_code == 0, result.stderr
    return root, data, run


@pytest.mark.slow
def test_finetune_then_evaluate_reports_frame_and_volume_metrics(media_run):
    root, data, run = media_run
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["media"]["frames_per_clip"] == FRAMES
    assert config["class_names"] == list(CLASSES)
    assert config["variant"] == "tiny" and config["image_size"] == 99
    # The run's own validation metrics are scored per volume as well as per slice.
    run_metrics = json.loads((run / "metrics.json").read_text())
    assert run_metrics["groups"]["level"] == "volume"
    assert run_metrics["groups"]["num_groups"] * SLICES == run_metrics["num_samples"]

    out = root / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(run), "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "Per volume" in result.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 2 * 2 * SLICES  # frame (slice) level
    groups = metrics["groups"]
    assert groups["level"] == "volume" and groups["num_groups"] == 4

    # Volume level = the mean of each volume's slice rows in predictions.csv, by hand.
    per_source: dict[str, list[np.ndarray]] = {}
    truth: dict[str, str] = {}
    for row in read_rows(out / "predictions.csv"):
        source, fields = parse_item(row["path"])
        assert fields["axis"] == 2 and 0 <= fields["slice"] < SLICES
        per_source.setdefault(source, []).append(np.array([float(row[f"p_{c}"]) for c in CLASSES]))
        truth[source] = row["true"]
    assert len(per_source) == 4 and all(len(v) == SLICES for v in per_source.values())
    group_rows = {r["path"]: r for r in read_rows(out / "group_predictions.csv")}
    assert set(group_rows) == set(per_source)
    correct = 0
    for source, rows in per_source.items():
        mean = np.mean(rows, axis=0)
        got = np.array([float(group_rows[source][f"p_{c}"]) for c in CLASSES])
        np.testing.assert_allclose(got, mean, atol=2e-6)
        predicted = CLASSES[1] if mean[1] >= 0.5 else CLASSES[0]  # binary: P(class 1) >= 0.5
        assert group_rows[source]["predicted"] == predicted
        assert group_rows[source]["true"] == truth[source] == source.split("/")[-2]
        correct += predicted == truth[source]
    assert groups["accuracy"] == pytest.approx(correct / 4)
    assert sum(map(sum, groups["confusion_matrix"])) == 4


@pytest.mark.slow
def test_extract_per_frame_columns_and_pooled_rows_per_clip(media_run, tmp_path):
    _, _, run = media_run
    clips = tmp_path / "clips" / "any"
    clips.mkdir(parents=True)
    for k in range(2):
        colours = [((40 * k + 20 * j) % 256, 90, 200) for j in range(8)]
        write_clip(clips / f"c{k}.mp4", solid_frames(colours, size=(16, 16)), fps=4)
    clip_root = clips.parent

    frames_out = tmp_path / "frames.csv"
    args = ["extract", str(run), "--data", str(clip_root), "--out", str(frames_out)]
    result = CliRunner().invoke(app, [*args, "--layer", "fc7"])
    assert result.exit_code == 0, result.stderr
    rows = read_rows(frames_out)
    assert len(rows) == 2 * FRAMES  # the run's recipe samples FRAMES per clip
    assert list(rows[0])[:4] == ["path", "label", "frame", "time"]
    # 8 frames at 4 fps, 3 segments: the centre frames 1, 4, 6 shown at 0.25, 1.0, 1.5 s.
    assert [(int(r["frame"]), float(r["time"])) for r in rows[:FRAMES]] == [
        (1, 0.25),
        (4, 1.0),
        (6, 1.5),
    ]
    assert {r["path"] for r in rows} == {str(clips / "c0.mp4"), str(clips / "c1.mp4")}

    pooled_out = tmp_path / "pooled.csv"
    args = ["extract", str(run), "--data", str(clip_root), "--out", str(pooled_out)]
    result = CliRunner().invoke(app, [*args, "--pool-frames", "mean", "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 2 and summary["images"] == 2 * FRAMES
    pooled = read_rows(pooled_out)
    assert len(pooled) == 2  # one row per clip
    features = [c for c in rows[0] if c[0] == "f" and c[1:].isdigit()]
    assert len(features) == 128  # tiny's fc7
    for row in pooled:
        assert int(row["frames"]) == FRAMES
        mine = [r for r in rows if r["path"] == row["path"]]
        hand = np.mean([[float(r[c]) for c in features] for r in mine], axis=0)
        np.testing.assert_allclose([float(row[c]) for c in features], hand, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_predict_averages_the_slices_of_a_volume(media_run):
    _, data, run = media_run
    volume = data / CLASSES[0] / f"{CLASSES[0]}0.nii.gz"
    runner = CliRunner()
    pooled = runner.invoke(app, ["predict", str(run), str(volume), "--json"])
    assert pooled.exit_code == 0, pooled.stderr
    frames = runner.invoke(app, ["predict", str(run), str(volume), "--json", "--per-frame"])
    assert frames.exit_code == 0, frames.stderr
    [record] = json.loads(pooled.stdout)["predictions"]
    per_slice = json.loads(frames.stdout)["predictions"]
    assert record["path"] == str(volume) and record["frames"] == SLICES == len(per_slice)

    def probs(rec):
        by_class = {e["class"]: e["probability"] for e in rec["top_k"]}
        return np.array([by_class[c] for c in CLASSES])

    hand = np.mean([probs(r) for r in per_slice], axis=0)
    np.testing.assert_allclose(probs(record), hand, atol=1e-6)


def write_series(folder, patient: str, offset: int) -> None:
    folder.mkdir(parents=True)
    for z in range(3):
        write_dicom(
            folder / f"img{z}.dcm",
            np.minimum(STORED + offset + 50 * z, 4095),
            PatientID=patient,
            SeriesInstanceUID=f"1.2.{abs(hash(str(folder))) % 10**8}",
            ImagePositionPatient=[0, 0, 2.5 * z],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        )


def test_dicom_series_folders_expand_as_one_volume_each(tmp_path):
    from alexkit.data import load_spec

    root = tmp_path / "ct"
    for k, name in enumerate(CLASSES):
        for s in range(2):
            write_series(root / name / f"study{s}", f"{name}-{s}", 100 * k)
    spec = load_spec(root, val_fraction=0.0, media_options=None)
    sources = [parse_item(item)[0] for item in spec.items]
    assert sorted(set(sources)) == sorted(
        str(root / n / f"study{s}") for n in CLASSES for s in (0, 1)
    )
    # Every study is one volume of 3 slices (not 3 unrelated files), grouped by patient.
    assert all(sources.count(s) == 3 for s in set(sources))
    assert all(parse_item(item)[1]["axis"] == 2 for item in spec.items)
    assert len(set(spec.groups)) == 4 and all(g.startswith("patient:") for g in spec.groups)
    assert not spec.ignored
    # `alexkit predict` takes a study folder itself as one volume too.
    from alexkit.predict import collect_images

    study = root / CLASSES[0] / "study0"
    items = collect_images([study])
    assert [parse_item(i)[0] for i in items] == [str(study)] * 3
    assert [parse_item(i)[1]["slice"] for i in items] == [0, 1, 2]


def test_data_check_lists_broken_clips_and_truncated_volumes(tmp_path):
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    write_clip(root / "a" / "good.mp4", solid_frames([(200, 10, 10)] * 6, size=(16, 16)))
    (root / "a" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a clip")
    good = write_volume(root / "b" / "good.nii.gz", 1, seed=3)
    data = open(good, "rb").read()
    (root / "b" / "cut.nii.gz").write_bytes(data[: len(data) // 2])

    result = CliRunner().invoke(
        app, ["data", "check", str(root), "--json", "--frames-per-clip", "2"]
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    reasons = {entry["path"]: entry["reason"] for entry in report["unreadable"]}
    assert set(reasons) == {str(root / "a" / "broken.mp4"), str(root / "b" / "cut.nii.gz")}
    assert all(r.startswith("unreadable media (") and "\n" not in r for r in reasons.values())
    assert "cannot read NIfTI volume" in reasons[str(root / "b" / "cut.nii.gz")]
    assert report["classes"] == {"a": 2, "b": SLICES}  # 2 frames of the good clip
    assert report["ignored"] == []

    text = CliRunner().invoke(app, ["data", "check", str(root)])
    assert text.exit_code == 0, text.stderr
    assert "unreadable: 2" in text.stdout and "cut.nii.gz" in text.stdout

    # predict's folder walk skips and names them the same way.
    from alexkit.predict import collect_images

    skipped: list = []
    items = collect_images([root], skipped=skipped)
    assert len(items) == 6 + SLICES  # all 6 frames of the good clip (< 8), the good volume
    assert {p for p, _ in skipped} == set(reasons)


def test_media_without_the_extra_is_one_line_with_the_pip_command(tmp_path, monkeypatch):
    from alexkit.data.decode import decode_image
    from alexkit.errors import MissingExtraError

    root = tmp_path / "vols"
    (root / "x").mkdir(parents=True)
    (root / "y").mkdir(parents=True)
    write_volume(root / "x" / "v.nii.gz", 0, seed=1)
    write_volume(root / "y" / "w.nii.gz", 1, seed=2)
    monkeypatch.setitem(sys.modules, "nibabel", None)  # `import nibabel` now fails

    result = CliRunner().invoke(app, ["data", "check", str(root)])
    assert result.exit_code == 2  # a usage problem, not a broken file
    message = result.stderr.strip()
    assert "\n" not in message
    assert "pip install 'alexkit[medical]'" in message and "nibabel" in message
    # Decoding a slice raises the same error instead of skipping it as unreadable.
    with pytest.raises(MissingExtraError, match=r"pip install 'alexkit\[medical\]'"):
        decode_image(f"{root / 'x' / 'v.nii.gz'}#slice=1,axis=2")
