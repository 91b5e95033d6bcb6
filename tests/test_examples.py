"""The examples/ workflows run end to end on their generated stand-ins.

Each ``examples/<domain>.sh --synthetic --variant tiny`` runs in bash exactly as a user
would run it, with the installed ``alexkit`` executable (the one next to this Python). The
``tiny`` variant (the 2012 layout at 1/8 width, 0.2M parameters) goes through the very
commands the recipe's full-size AlexNet would, in seconds instead of a minute and a GB of
model files a run: what these tests guard is the workflows (arguments, layouts, the order
of the steps, the files they leave), not AlexNet. That the default workflow trains the
recipe itself (its own variant) is checked with a stand-in ``alexkit`` that records its
arguments. The selected scripts (xray by default, all four with ``-m heavy``) and
``features_sklearn.py --quick`` are started by one module-scoped fixture, two at a time:
most of each run is process start-up (TensorFlow import), which overlaps well.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexkit.errors import UsageError
from alexkit.recipes import load_recipe, with_variant
from alexkit.variants import VARIANTS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = ("xray", "plants", "autism", "satellite")

# The workflows run on the tiny variant (see the module docstring).
VARIANT = "tiny"
# What each synthetic run must produce: classes in label order, the recipe's own variant
# (what a run without --variant trains), grayscale, and how many held-out test images
# the stand-in (6 training images a class) yields.
EXPECTED = {
    "xray": (["NORMAL", "PNEUMONIA"], "original", True, 6),
    "plants": (
        ["Apple___Apple_scab", "Tomato___Late_blight", "Tomato___healthy"],
        "original",
        False,
        3,
    ),
    "autism": (["Autistic", "Non_Autistic"], "original", False, 6),
    "satellite": (["AnnualCrop", "Forest", "Residential", "SeaLake"], "torchvision", False, 4),
}


def _load_module(name: str):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _alexkit_command() -> str:
    """The installed console script next to this interpreter, else ``python -m alexkit``."""
    exe = Path(sys.executable).parent / "alexkit"
    return str(exe) if exe.is_file() else f"{sys.executable} -m alexkit"


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ALEXKIT=_alexkit_command(),
        PYTHON=sys.executable,
        ALEXKIT_HOME=str(home),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("OUT", None)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def _selected_jobs(session) -> set[str]:
    """The jobs whose tests were collected (``-k xray`` runs one script, not five)."""
    names = set()
    for item in session.items:
        if "example_runs" in getattr(item, "fixturenames", ()):
            callspec = getattr(item, "callspec", None)
            names.add(callspec.params["name"] if callspec else "features")
    return names


@pytest.fixture(scope="module")
def example_runs(request, tmp_path_factory):
    """Run the selected workflows, two at a time; yield {name: (result, out_dir)}."""
    base = tmp_path_factory.mktemp("examples")
    env = _env(base / "home")
    bash = shutil.which("bash") or "bash"
    jobs = {
        name: (
            [bash, str(EXAMPLES / f"{name}.sh"), "--synthetic", "--variant", VARIANT]
            + ["--out", str(base / name)],
            base / name,
        )
        for name in SCRIPTS
    }
    features = [sys.executable, str(EXAMPLES / "features_sklearn.py"), "--quick"]
    jobs["features"] = ([*features, "--variant", VARIANT], base)
    jobs = {name: job for name, job in jobs.items() if name in _selected_jobs(request.session)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run, args, env, base) for name, (args, _) in jobs.items()}
        results = {name: (futures[name].result(), jobs[name][1]) for name in jobs}
    yield results
    shutil.rmtree(base, ignore_errors=True)


# Every run: xray (folder layout, grayscale, data check -> finetune -> evaluate -> predict).
# plants and satellite (holdout CSV) and autism (train/valid/test folders, --val) run the
# same commands on other layouts, all on the tiny network (so satellite's torchvision
# recipe does not change the network either): opt-in with `pytest -m heavy` (~65 CPU-s,
# most of it starting TensorFlow in twelve more processes). Their stand-ins and argument
# flow run every time (test_workflow_without_variant_trains_the_recipe_itself and the
# stand-in and holdout tests below).
EVERY_RUN = ("xray",)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n if n in EVERY_RUN else pytest.param(n, marks=pytest.mark.heavy) for n in SCRIPTS]
)
def test_workflow_runs_end_to_end(example_runs, name):
    result, out = example_runs[name]
    assert result.returncode == 0, f"{name}.sh failed:\n{result.stderr[-3000:]}"
    classes, _, grayscale, n_test = EXPECTED[name]
    run = out / "run"

    config = json.loads((run / "config.json").read_text())
    assert config["class_names"] == classes
    assert config["recipe"]["name"] == name
    assert config["variant"] == config["recipe"]["variant"] == VARIANT
    assert config["image_size"] == VARIANTS[VARIANT]["image_size"] == 99
    assert config["grayscale"] is grayscale
    assert config["args"]["weights"] == "none"
    # The recipe written for --variant is the domain's recipe in every other respect.
    assert load_recipe(out / f"recipe-{VARIANT}.toml") == with_variant(load_recipe(name), VARIANT)
    # Every weight of the model saved (float32): the tiny net with this many classes.
    params = VARIANTS[VARIANT]["params"] - (VARIANTS[VARIANT]["fc_units"] + 1) * (
        1000 - len(classes)
    )
    assert 4 * params < (run / "model.keras").stat().st_size < 4 * params + 2e6

    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.shape == (len(classes), len(classes))
    assert matrix.sum() == metrics["num_samples"] == n_test
    assert matrix.sum(axis=1).tolist() == [n_test // len(classes)] * len(classes)
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    png = (run / "eval" / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # Every step ran, in order, and predict printed one of the classes.
    steps = re.findall(r"^\+ .*? (data check|finetune|evaluate|predict) ", result.stderr, re.M)
    assert steps == ["data check", "finetune", "evaluate", "predict"]
    assert any(c in result.stdout for c in classes)


@pytest.mark.slow
def test_features_sklearn_quick_prints_accuracies(example_runs):
    result, _ = example_runs["features"]
    assert result.returncode == 0, result.stderr[-3000:]
    scores = dict(re.findall(r"^(\w+) accuracy: ([0-9.]+)$", result.stdout, re.M))
    assert set(scores) == {"majority", "logreg", "linear_svm"}
    assert "fc7 features: 128 dims" in result.stdout  # tiny's fc7
    assert float(scores["majority"]) == pytest.approx(0.1)  # 10 digits, 4 test images each
    # Random-init fc7 features of digits are far above chance (measured 0.8 on tiny's
    # 128-dim fc7, ~0.9 on AlexNet's 4096).
    assert float(scores["logreg"]) >= 0.5
    assert float(scores["linear_svm"]) >= 0.5


# --------------------------------------------------------------------------- fast checks


# A stand-in for the alexkit command: records each call's arguments, does nothing.
RECORDER = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$ALEXKIT_CALLS"
"""


@pytest.mark.parametrize("name", SCRIPTS)
def test_workflow_without_variant_trains_the_recipe_itself(name, tmp_path):
    """As a user runs it: ``--recipe <domain>``, so the recipe's own variant (the runs
    above take ``--variant tiny``)."""
    recorder = tmp_path / "alexkit"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    env = _env(tmp_path / "home")
    env.update(ALEXKIT=str(recorder), ALEXKIT_CALLS=str(tmp_path / "calls.txt"))
    script = ["bash", str(EXAMPLES / f"{name}.sh"), "--synthetic"]
    result = _run([*script, "--out", str(tmp_path / "out")], env, tmp_path)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["data", "finetune", "evaluate", "predict"]
    assert re.search(r"--recipe (\S+) ", calls[1]).group(1) == name
    assert load_recipe(name).variant == EXPECTED[name][1]
    assert not list((tmp_path / "out").glob("recipe-*"))


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--synthetic"),
        (["missing"], "no such folder"),
        (["--bogus"], "unknown option"),
        (["--synthetic", "--variant", "huge"], "invalid choice: 'huge'"),
    ],
)
def test_script_refuses_bad_arguments_before_doing_anything(name, args, message, tmp_path):
    result = _run(["bash", str(EXAMPLES / f"{name}.sh"), *args], _env(tmp_path), tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_standin_layouts_match_the_real_datasets(tmp_path):
    make = _load_module("make_standin").make_standin
    xray = make("xray", tmp_path, per_class=4)
    assert xray == tmp_path / "chest_xray"
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for cls in ("NORMAL", "PNEUMONIA"):
            files = sorted((xray / split / cls).iterdir())
            extra = 1 if (split, cls) == ("train", "PNEUMONIA") else 0  # the 16-bit PNG
            assert len(files) == n + extra
            jpegs = [f for f in files if f.suffix == ".jpeg"]
            assert len(jpegs) == n
            with Image.open(jpegs[0]) as im:
                assert (im.format, im.mode) == ("JPEG", "L")
    with Image.open(xray / "train" / "PNEUMONIA" / "person999_bacteria_16bit.png") as im:
        assert im.mode.startswith("I")
        assert int(np.asarray(im).max()) > 255  # really uses 16 bits

    plants = make("plants", tmp_path, per_class=3)
    folders = sorted(p.name for p in plants.iterdir())
    assert len(folders) == 3 and all("___" in f for f in folders)
    leaf = sorted((plants / folders[0]).iterdir())[0]
    assert leaf.suffix == ".JPG" and " " in leaf.name
    with Image.open(leaf) as im:
        assert (im.mode, im.size) == ("RGB", (256, 256))

    autism = make("autism", tmp_path, per_class=3)
    assert sorted(p.name for p in autism.iterdir()) == ["test", "train", "valid"]
    assert sorted(p.name for p in (autism / "valid").iterdir()) == ["Autistic", "Non_Autistic"]

    eurosat = make("eurosat", tmp_path, per_class=3)
    assert eurosat.name == "2750"
    tiles = sorted((eurosat / "Forest").iterdir())
    assert [t.name for t in tiles] == ["Forest_1.jpg", "Forest_2.jpg", "Forest_3.jpg"]
    with Image.open(tiles[0]) as im:
        assert (im.mode, im.size) == ("RGB", (64, 64))


def test_standin_is_deterministic_and_classes_differ(tmp_path):
    make = _load_module("make_standin").make_standin
    a = make("eurosat", tmp_path / "a", per_class=3)
    b = make("eurosat", tmp_path / "b", per_class=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    # Class-dependent colour: the mean colours of two classes are far apart.
    forest = np.mean([np.asarray(Image.open(p)) for p in (a / "Forest").iterdir()], (0, 1, 2))
    sea = np.mean([np.asarray(Image.open(p)) for p in (a / "SeaLake").iterdir()], (0, 1, 2))
    assert np.abs(forest - sea).max() > 30


def test_holdout_is_a_stratified_partition(tmp_path):
    make = _load_module("make_standin").make_standin
    root = make("eurosat", tmp_path, per_class=10)
    train, test = _load_module("holdout").write_holdout(root, tmp_path / "split", test_fraction=0.2)

    def rows(path):
        with open(path, newline="") as fh:
            return [(r["path"], r["label"]) for r in csv.DictReader(fh)]

    train_rows, test_rows = rows(train), rows(test)
    everything = {(str(p.resolve()), p.parent.name) for p in root.rglob("*.jpg")}
    assert set(train_rows) | set(test_rows) == everything
    assert not set(train_rows) & set(test_rows)
    # 20% of 10 per class: exactly 2 of each class held out.
    assert sorted(label for _, label in test_rows) == sorted(
        ["AnnualCrop", "Forest", "Residential", "SeaLake"] * 2
    )


def test_recipe_for_another_variant_changes_only_what_the_variant_needs():
    import dataclasses

    xray = load_recipe("xray")
    tiny = with_variant(xray, "tiny")
    assert (tiny.variant, tiny.image_size, tiny.augment.resize) == ("tiny", 99, 112)
    assert dataclasses.replace(tiny, variant="original", image_size=227, augment=xray.augment) == (
        xray
    )
    # A resize the recipe chose itself (not its variant's default) is kept.
    own = dataclasses.replace(xray, augment=dataclasses.replace(xray.augment, resize=300))
    assert with_variant(own, "tiny").augment.resize == 300
    with pytest.raises(UsageError, match="huge"):
        with_variant(xray, "huge")
