"""`alexkit evaluate|extract|predict|probe` end to end on a tiny stand-in model.

The stand-in has AlexNet's public layer names (conv5, pool5, fc6, fc7, predictions) on
32x32 inputs so the CLI paths run in seconds; numbers are checked against scikit-learn
and against the model applied directly to the pipeline's images.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import write_class_images
from sklearn import metrics as skm
from typer.testing import CliRunner

from alexkit.cli import app

SIZE = 32


def tiny_model(num_classes: int, seed: int = 0):
    """A small Functional model with AlexNet's layer names, taking raw [0, 255] pixels."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0, name="preprocess")(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv5")(x)
    x = keras.layers.MaxPooling2D(2, name="pool5")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc6")(x)
    x = keras.layers.Dense(12, activation="relu", name="fc7")(x)
    out = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="tiny")


def tiny_run(root, class_names, seed=0):
    """A run directory (config.json + model.keras) holding ``tiny_model``."""
    root.mkdir(parents=True, exist_ok=True)
    model = tiny_model(len(class_names), seed)
    model.save(root / "model.keras")
    config = {"class_names": list(class_names), "variant": "original", "image_size": SIZE}
    config["grayscale"] = False
    (root / "config.json").write_text(json.dumps(config))
    return root, model


def pipeline_images(folder, class_names=None, tta="center"):
    """Images, labels and items exactly as the evaluation pipeline feeds them."""
    from alexkit.data import load_spec, make_dataset

    spec = load_spec(str(folder), val_fraction=0)
    if class_names is not None:
        from alexkit.evaluate import align_spec

        spec = align_spec(spec, class_names)
    ds = make_dataset(
        spec, training=False, image_size=SIZE, batch_size=64, tta=tta, with_paths=True
    )
    xs, ys, items = [], [], []
    for x, y, p in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
        items += [s.decode() for s in p.numpy()]
    return np.concatenate(xs), np.concatenate(ys), items


def _csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def test_evaluate_multiclass_json_and_files(tmp_path, runner):
    names = ["alpha", "beta", "gamma"]
    data = tmp_path / "data"
    write_class_images(data, names, 6, size=(40, 36))
    run, model = tiny_run(tmp_path / "run", names)
    out = tmp_path / "eval"
    result = runner.invoke(
        app, ["evaluate", str(run), "--data", str(data), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)  # nothing else on stdout
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["accuracy"] == metrics["accuracy"]

    rows = _csv_rows(out / "predictions.csv")
    assert len(rows) == 18 and list(rows[0])[:3] == ["path", "true", "predicted"]
    y_true = [names.index(r["true"]) for r in rows]
    y_pred = [names.index(r["predicted"]) for r in rows]
    probs = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows])
    # Oracle 1: the model applied directly to the pipeline's images.
    x, y, items = pipeline_images(data)
    assert [r["path"] for r in rows] == items
    np.testing.assert_array_equal(y_true, y)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=2e-6)
    # Oracle 2: scikit-learn on the same predictions.
    assert y_pred == list(probs.argmax(1))
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    f1 = skm.f1_score(y_true, y_pred, average="macro", labels=[0, 1, 2], zero_division=0)
    assert metrics["macro_avg"]["f1"] == pytest.approx(f1)
    with open(out / "confusion_matrix.csv", newline="") as fh:
        cm = list(csv.reader(fh))
    assert cm[0][1:] == names and [r[0] for r in cm[1:]] == names
    np.testing.assert_array_equal(
        np.array([[int(v) for v in r[1:]] for r in cm[1:]]),
        skm.confusion_matrix(y_true, y_pred, labels=[0, 1, 2]),
    )
    wrong = _csv_rows(out / "misclassified.csv")
    assert len(wrong) == sum(t != p for t, p in zip(y_true, y_pred, strict=True))


def test_evaluate_binary_ten_crop_and_tables(tmp_path, runner):
    names = ["NORMAL", "PNEUMONIA"]
    data = tmp_path / "data"
    write_class_images(data, names, 5, size=(40, 36), seed=3)
    run, model = tiny_run(tmp_path / "run", names, seed=1)
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--data", str(data), "--out", str(out)]
    result = runner.invoke(app, [*args, "--tta", "ten-crop", "--threshold", "0.4"])
    assert result.exit_code == 0, result.stderr
    assert "ROC AUC" in result.stdout and "specificity @ 0.4" in result.stdout
    assert (out / "roc.png").stat().st_size > 10_000
    metrics = json.loads((out / "metrics.json").read_text())
    rows = _csv_rows(out / "predictions.csv")
    y_true = np.array([names.index(r["true"]) for r in rows])
    p1 = np.array([float(r["p_PNEUMONIA"]) for r in rows])
    # Ten-crop oracle: the softmax averaged over the 10 crops of each image.
    x, _, _ = pipeline_images(data, tta="ten-crop")
    want = model.predict(x.reshape(-1, SIZE, SIZE, 3), verbose=0).reshape(len(x), 10, 2).mean(1)
    np.testing.assert_allclose(p1, want[:, 1], atol=2e-6)
    assert metrics["binary"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, p1), abs=1e-6)
    assert metrics["binary"]["pr_auc"] == pytest.approx(
        skm.average_precision_score(y_true, p1), abs=1e-6
    )
    y_pred = (p1 >= 0.4).astype(int)
    assert metrics["binary"]["sensitivity"] == pytest.approx(skm.recall_score(y_true, y_pred))
    assert metrics["binary"]["specificity"] == pytest.approx(
        skm.recall_score(y_true, y_pred, pos_label=0)
    )


def test_evaluate_refuses_unknown_classes(tmp_path, runner):
    data = tmp_path / "data"
    write_class_images(data, ["alpha", "delta", "omega"], 2, size=(40, 36))
    run, _ = tiny_run(tmp_path / "run", ["alpha", "beta"])
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(data)])
    assert result.exit_code == 3
    assert result.stdout == "" and result.stderr.startswith("error:")
    message = " ".join(result.stderr.split())  # rich wraps long lines at the terminal width
    assert "does not know: delta, omega" in message and message.count("error:") == 1


def test_evaluate_missing_model_is_exit_4(tmp_path, runner):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope"), "--data", str(tmp_path)])
    assert result.exit_code == 4 and "does not exist" in " ".join(result.stderr.split())


def test_predict_json_and_csv(tmp_path, runner):
    names = ["alpha", "beta", "gamma"]
    data = tmp_path / "data"
    write_class_images(data, names, 2, size=(40, 36))
    run, model = tiny_run(tmp_path / "run", names)
    single = data / "beta" / "beta_000.png"
    result = runner.invoke(app, ["predict", str(run), str(single), str(data / "gamma"), "--json"])
    assert result.exit_code == 0, result.stderr
    preds = json.loads(result.stdout)["predictions"]
    assert [p["path"] for p in preds] == [
        str(single),
        str(data / "gamma" / "gamma_000.png"),
        str(data / "gamma" / "gamma_001.png"),
    ]
    x, _, items = pipeline_images(data)
    want = model.predict(x, verbose=0)
    for p in preds:
        row = want[items.index(p["path"])]
        assert p["predicted"] == names[int(row.argmax())]
        assert p["probability"] == pytest.approx(float(row.max()), abs=2e-6)
        assert len(p["top_k"]) == 3  # top-k capped at the class count
    result = runner.invoke(app, ["predict", str(run), str(single), "--csv", "--top-k", "2"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "path,rank,class,probability" and len(lines) == 3


def test_extract_and_probe_cli(tmp_path, runner):
    names = ["alpha", "beta"]
    train, test = tmp_path / "train", tmp_path / "test"
    write_class_images(train, names, 8, size=(40, 36), seed=1)
    write_class_images(test, names, 4, size=(40, 36), seed=2)
    run, model = tiny_run(tmp_path / "run", names)
    out = tmp_path / "f.parquet"
    result = runner.invoke(
        app, ["extract", str(run), "--data", str(test), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 8 and summary["dim"] == 12 and out.exists()

    result = runner.invoke(
        app,
        ["probe", str(run), "--train", str(train), "--data", str(test), "--probe", "svm", "--json"],
    )
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["meta"]["probe"] == "svm" and metrics["num_samples"] == 8
    result = runner.invoke(
        app,
        ["evaluate", str(run), "--data", str(test), "--probe", "logreg", "--train", str(train)],
    )
    assert result.exit_code == 0, result.stderr
    assert "accuracy" in result.stdout


def test_help_has_examples(runner):
    for command in ("evaluate", "extract", "predict", "probe"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Example" in result.stdout, command


def test_evaluate_intervals_calibration_and_thresholds(tmp_path, runner):
    from alexkit.calibration import save_calibration

    names = ["NORMAL", "PNEUMONIA"]
    data = tmp_path / "data"
    write_class_images(data, names, 10, size=(40, 36), seed=5)
    run, model = tiny_run(tmp_path / "run", names, seed=2)
    thresholds = {
        "youden": {"threshold": 0.45},
        "target_sensitivity": {"target": 0.9, "threshold": 0.3},
    }
    save_calibration(run, temperature=2.5, thresholds=thresholds, fitted_on="val")
    out, raw_out = tmp_path / "eval", tmp_path / "raw"
    args = ["evaluate", str(run), "--data", str(data), "--n-boot", "200", "--seed", "3"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "Summary (95% CI)" in text and "saved thresholds" in text and "ECE (15 bins)" in text
    metrics = json.loads((out / "metrics.json").read_text())
    lo, hi = metrics["ci"]["accuracy"]
    assert f"{metrics['accuracy']:.3f} ({lo:.3f}–{hi:.3f})" in result.stdout
    assert metrics["ci_bootstrap"]["n_boot"] == 200 and metrics["ci_bootstrap"]["seed"] == 3
    assert metrics["calibration"]["temperature"] == 2.5
    # Oracle: the model's softmax, re-tempered by hand.
    x, y, _ = pipeline_images(data)
    p = model.predict(x, verbose=0).astype(np.float64)
    z = np.log(np.clip(p, 1e-12, 1)) / 2.5
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    rows = _csv_rows(out / "predictions.csv")
    got = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-5)
    points = metrics["operating_points"]
    pred = want[:, 1] >= 0.45
    assert points["youden"]["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert points["youden"]["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert metrics["calibration"]["uncalibrated"]["brier"] == pytest.approx(
        skm.brier_score_loss(y, p[:, 1]), abs=1e-5
    )
    for png in ("reliability.png", "roc.png", "pr.png"):
        assert (out / png).stat().st_size > 10_000
    assert (out / "report.html").is_file()

    result = runner.invoke(app, [*args, "--out", str(raw_out), "--no-calibration", "--json"])
    assert result.exit_code == 0, result.stderr
    raw = json.loads(result.stdout)
    rows = _csv_rows(raw_out / "predictions.csv")
    got = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows])
    np.testing.assert_allclose(got, p, atol=1e-5)
    assert raw["calibration"]["temperature"] is None
    # Same decisions at the saved thresholds whichever scale the probabilities are on.
    for name in ("youden", "target_sensitivity"):
        for key in ("sensitivity", "specificity"):
            assert raw["operating_points"][name][key] == pytest.approx(points[name][key])


def test_evaluate_leakage_warning_and_strict(tmp_path, runner):
    import shutil

    from alexkit.data import load_spec
    from alexkit.leakage import record_hashes, save_hashes

    names = ["alpha", "beta"]
    train, test = tmp_path / "train", tmp_path / "test"
    write_class_images(train, names, 4, size=(40, 36), seed=1)
    write_class_images(test, names, 3, size=(40, 36), seed=2)
    shutil.copy(train / "alpha" / "alpha_000.png", test / "alpha" / "copied.png")
    shutil.copy(train / "beta" / "beta_001.png", test / "beta" / "copied.png")
    run, _ = tiny_run(tmp_path / "run", names)
    save_hashes(run, record_hashes(load_spec(str(train), val_fraction=0)))
    args = ["evaluate", str(run), "--data", str(test), "--n-boot", "0"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    leak = json.loads(result.stdout)["leakage"]
    assert leak["duplicates"] == {"train": 2} and leak["duplicate_items"] == 2 and leak["leaked"]
    assert leak["checked"] == 8
    err = " ".join(result.stderr.split())
    assert "LEAKAGE" in err and "2 of 8 evaluation items are byte-identical" in err
    out = tmp_path / "eval"
    result = runner.invoke(app, [*args, "--strict", "--out", str(out)])
    assert result.exit_code == 3
    assert "--strict" in " ".join(result.stderr.split())
    assert json.loads((out / "metrics.json").read_text())["leakage"]["duplicate_items"] == 2
    clean = runner.invoke(app, ["evaluate", str(run), "--data", str(train), "--strict", "--json"])
    assert clean.exit_code == 3  # its own training data: everything leaks
    (test / "alpha" / "copied.png").unlink()
    (test / "beta" / "copied.png").unlink()
    result = runner.invoke(app, [*args, "--strict", "--json"])
    assert result.exit_code == 0 and not json.loads(result.stdout)["leakage"]["leaked"]


def test_evaluate_manifest_groups_and_subgroups(tmp_path, runner):
    names = ["alpha", "beta"]
    data = tmp_path / "data"
    paths = write_class_images(data, names, 12, size=(40, 36), seed=4)
    rel = [p.relative_to(data) for p in paths]
    lines = ["path,label,group"] + [
        f"{r},{r.parent.name},patient{i // 3}" for i, r in enumerate(rel)
    ]
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")
    sub = ["path,site"] + [f"{r},{'A' if i % 2 else 'B'}" for i, r in enumerate(rel)]
    (data / "subgroups.csv").write_text("\n".join(sub) + "\n")
    run, _ = tiny_run(tmp_path / "run", names)
    result = runner.invoke(
        app,
        [
            "evaluate", str(run), "--data", str(data / "manifest.csv"), "--n-boot", "200",
            "--subgroups", str(data / "subgroups.csv"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Subgroups" in result.stdout
    result = runner.invoke(
        app,
        [
            "evaluate", str(run), "--data", str(data / "manifest.csv"), "--n-boot", "200",
            "--subgroups", str(data / "subgroups.csv"), "--json",
        ],
    )  # fmt: skip
    metrics = json.loads(result.stdout)
    assert metrics["ci_bootstrap"]["resampled"] == "groups"
    assert metrics["ci_bootstrap"]["num_units"] == 8  # 24 images of 8 patients
    assert set(metrics["ci_method"].values()) == {"bootstrap"}
    sites = metrics["subgroups"]["attributes"]["site"]
    assert sites["A"]["n"] == sites["B"]["n"] == 12 and metrics["subgroups"]["unmatched"] == 0


def test_evaluate_bad_interval_options(tmp_path, runner):
    run, _ = tiny_run(tmp_path / "run", ["a", "b"])
    for opts in (["--ci-level", "95"], ["--n-boot", "5"]):
        result = runner.invoke(app, ["evaluate", str(run), "--data", str(tmp_path), *opts])
        assert result.exit_code == 2, opts


def test_evaluate_volumes_resamples_volumes_and_reports_them(tmp_path, runner):
    """NIfTI volumes: slices cluster per volume; the volume level gets its own intervals."""
    nib = pytest.importorskip("nibabel")
    names = ["normal", "lesion"]
    data = tmp_path / "vols"
    for k, name in enumerate(names):
        (data / name).mkdir(parents=True)
        for v in range(4):
            rng = np.random.default_rng(10 * k + v)
            vol = rng.integers(100, 400, size=(24, 24, 6)).astype(np.int16)
            vol[4 + 10 * k : 10 + 10 * k, 4:10, :] = 900
            nib.save(nib.Nifti1Image(vol, np.eye(4)), str(data / name / f"{name}{v}.nii.gz"))
    run, _ = tiny_run(tmp_path / "run", names)
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--data", str(data), "--n-boot", "200", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 8 * 6
    assert metrics["ci_bootstrap"]["resampled"] == "groups"
    assert metrics["ci_bootstrap"]["num_units"] == 8  # volumes, not slices
    assert set(metrics["ci_method"].values()) == {"bootstrap"}
    groups = metrics["groups"]
    assert groups["level"] == "volume" and groups["num_groups"] == 8
    assert groups["ci_method"]["accuracy"] == "wilson"  # volumes are independent
    page = (out / "report.html").read_text()
    assert "Per volume" in page
    wrong = metrics["num_misclassified"]
    assert wrong > 0  # an untrained stand-in gets some wrong
    assert page.count("data:image/jpeg;base64,") == min(wrong, 24)  # slice thumbnails


def test_predict_applies_saved_temperature(tmp_path, runner):
    from alexkit.calibration import save_calibration

    names = ["alpha", "beta", "gamma"]
    data = tmp_path / "data"
    write_class_images(data, names, 2, size=(40, 36))
    run, model = tiny_run(tmp_path / "run", names)
    save_calibration(run, temperature=0.5)  # sharpen: a visible change
    x, _, items = pipeline_images(data)
    raw = model.predict(x, verbose=0).astype(np.float64)
    z = np.log(np.clip(raw, 1e-12, 1)) / 0.5
    tempered = np.exp(z - z.max(1, keepdims=True))
    tempered /= tempered.sum(1, keepdims=True)
    for flags, want in (([], tempered), (["--no-calibration"], raw)):
        result = runner.invoke(app, ["predict", str(run), str(data), "--json", *flags])
        assert result.exit_code == 0, result.stderr
        for p in json.loads(result.stdout)["predictions"]:
            row = want[items.index(p["path"])]
            assert p["predicted"] == names[int(row.argmax())]  # temperature keeps the arg-max
            assert p["probability"] == pytest.approx(float(row.max()), abs=2e-6)


def _write_dicom(path, pixels, patient):
    """A minimal single-frame 12-bit MONOCHROME2 DICOM with a PatientID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.PatientID = patient
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_evaluate_dicom_patients_resampled_and_shared_patients_flagged(tmp_path, runner):
    pytest.importorskip("pydicom")
    from alexkit.data import load_spec
    from alexkit.leakage import record_hashes, save_hashes

    names = ["normal", "opacity"]
    rng = np.random.default_rng(0)

    def write(root, patients, per_patient):
        for k, name in enumerate(names):
            (root / name).mkdir(parents=True, exist_ok=True)
            for p in patients:
                for i in range(per_patient):
                    pixels = rng.integers(0, 1500, (24, 24)) + 1500 * k
                    _write_dicom(root / name / f"{p}_{i}.dcm", pixels, f"{name}-{p}")

    write(tmp_path / "test", ["p1", "p2", "p3"], 3)
    write(tmp_path / "train", ["p3", "p4"], 2)  # patient p3 of each class is in both
    run, _ = tiny_run(tmp_path / "run", names)
    save_hashes(run, record_hashes(load_spec(str(tmp_path / "train"), val_fraction=0)))
    args = ["evaluate", str(run), "--data", str(tmp_path / "test"), "--n-boot", "200"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["num_samples"] == 18
    assert metrics["ci_bootstrap"]["resampled"] == "groups"
    assert metrics["ci_bootstrap"]["num_units"] == 6  # patients, not images
    leak = metrics["leakage"]
    assert leak["duplicate_items"] == 0  # no file is shared ...
    assert (
        leak["shared_groups"] == {"train": 2} and leak["shared_group_items"] == 6
    )  # ... patients are
    result = runner.invoke(app, [*args, "--strict"])
    assert result.exit_code == 3


def test_evaluate_clips_resampled_per_clip(tmp_path, runner):
    av = pytest.importorskip("av")
    names = ["still", "moving"]
    data = tmp_path / "clips"
    rng = np.random.default_rng(1)
    for k, name in enumerate(names):
        (data / name).mkdir(parents=True)
        for c in range(3):
            with av.open(str(data / name / f"clip{c}.mp4"), "w") as container:
                stream = container.add_stream("mpeg4", rate=10)
                stream.width, stream.height, stream.pix_fmt = 48, 48, "yuv420p"
                for _ in range(12):
                    img = (rng.integers(0, 60, (48, 48, 3)) + 150 * k).astype(np.uint8)
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
    run, _ = tiny_run(tmp_path / "run", names)
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--data", str(data), "--n-boot", "200", "--out", str(out)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["num_samples"] > 6  # several frames per clip
    assert metrics["ci_bootstrap"]["num_units"] == 6  # clips, not frames
    assert metrics["groups"]["level"] == "clip" and metrics["groups"]["num_groups"] == 6
    assert "Per clip" in (out / "report.html").read_text()


def test_evaluate_explain_puts_gradcam_overlays_in_the_report(tmp_path, runner):
    import base64
    import io
    import re

    from PIL import Image
    from test_report import _chromium, _render

    from alexkit.explain import gradcam_overlays
    from alexkit.html_report import overlay_jpeg

    names = ["alpha", "beta", "gamma"]
    data = tmp_path / "data"
    write_class_images(data, names, 10, size=(40, 36))
    run, model = tiny_run(tmp_path / "run", names, seed=3)
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--data", str(data), "--json", "--out", str(out)]
    result = runner.invoke(app, [*args, "--explain", "--n-boot", "200"])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    wrong = _csv_rows(out / "misclassified.csv")  # the gallery's order: most confident first
    shown = wrong[:24]
    assert len(wrong) == metrics["num_misclassified"] and len(shown) >= 5
    page = (out / "report.html").read_text()
    overlays = re.findall(
        r'<img class="gradcam" alt="[^"]*" src="data:image/jpeg;base64,([^"]+)"', page
    )
    assert len(overlays) == len(shown)
    assert page.count("data:image/jpeg;base64,") == 2 * len(shown)  # thumbnails stay
    assert "Grad-CAM at conv5 for the predicted class" in page

    # Oracle: gradcam_overlays on the evaluation pipeline's own crops of the same items,
    # for the predicted class, gives the very pictures the page embeds, in gallery order.
    x, _, items = pipeline_images(data, names)
    index = [items.index(row["path"]) for row in shown]
    expected = gradcam_overlays(
        model,
        x[index],
        targets=[names.index(row["predicted"]) for row in shown],
        class_names=names,
        true_labels=[names.index(row["true"]) for row in shown],
    )

    for got, want in zip(overlays, expected, strict=True):
        assert base64.b64decode(got) == overlay_jpeg(want)
    with Image.open(io.BytesIO(base64.b64decode(overlays[0]))) as im:
        assert im.width == 360  # twice the shown width, not the 430-pixel PNG

    # Without --explain: the same page has no overlays.
    plain = runner.invoke(app, [*args[:-2], "--out", str(tmp_path / "plain"), "--n-boot", "200"])
    assert plain.exit_code == 0, plain.stderr
    assert 'class="gradcam"' not in (tmp_path / "plain" / "report.html").read_text()
    # --explain has nowhere to go without --out.
    refused = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "--explain"])
    assert refused.exit_code == 2 and "--explain" in refused.stderr

    # The page with its overlays still renders in a real browser, without console errors.
    exe = _chromium()
    dom, console, shot = _render(exe, out / "report.html", tmp_path)
    assert console == [], console
    assert "Most confidently wrong" in dom and dom.count('class="gradcam"') == len(shown)
    with Image.open(shot) as im:
        assert np.asarray(im.convert("L"), dtype=np.float64).std() > 10  # not blank


def test_evaluate_records_both_precisions_in_metrics_html_and_table(tmp_path, runner):
    names = ["alpha", "beta"]
    data = tmp_path / "data"
    write_class_images(data, names, 3, size=(40, 36))
    run, _ = tiny_run(tmp_path / "run", names)
    config = json.loads((run / "config.json").read_text())
    config.update(kind="finetune", args={"precision": "mixed_bfloat16"})  # as finetune saves
    (run / "config.json").write_text(json.dumps(config))
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--data", str(data), "--n-boot", "0", "--precision", "float32"]
    result = runner.invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert meta["precision"] == {"requested": "float32", "policy": "float32", "reason": "asked for"}
    assert meta["trained_precision"] == "mixed_bfloat16"
    from test_report import visible_text

    text = visible_text((out / "report.html").read_text())
    assert "precision: evaluated in float32 (asked for)" in text
    assert "precision: trained in mixed_bfloat16 (the run's config.json)" in text
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.stderr
    assert "precision: trained in" in table.stdout and "mixed_bfloat16 (the run's" in table.stdout
