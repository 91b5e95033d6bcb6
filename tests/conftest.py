"""Shared fixtures. Every test gets its own ALEXKIT_HOME so nothing touches ~/.cache."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN build pools CPU memory (a BFC allocator) and never gives it back: a
# pytest worker that once held three full-size AlexNets keeps their gigabytes for the rest
# of the run, and the next big test stacks on top. malloc returns freed memory, so each
# worker stays near what its current test needs (the largest process of the suite fell
# from 6.7 to 5.4 GB, 2026-11-30). Only memory management changes, not any number. Set
# before TensorFlow loads; the pytest workers and the tests' subprocesses inherit it.
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
# The commands default to --precision auto: bfloat16 on CPUs with AVX512-BF16/AMX, float32
# elsewhere. Tests compare with float32 oracles, so every process of the run (module-scoped
# fixtures too, which are set up before the per-test `alexkit_home` below, and the
# subprocesses they start) computes in float32 on every CPU. The precision tests ask for
# bfloat16 or auto explicitly (or unset this with monkeypatch to test the default).
os.environ["ALEXKIT_PRECISION"] = "float32"

import numpy as np
import pytest

from alexkit.commands._common import collector_paused

# Longest files first (seconds of a worker on 2 cores, measured 2026-11-30). `pytest -n 2 --dist
# loadfile` hands whole files to whichever worker is free, in collection order; xdist's
# default reorder (most tests first) put these few-test, long files last, and one worker
# ran them alone for a minute and a half at the end. Longest-first keeps both busy to the
# end (the two finished 5 s apart). Files not listed keep their order, after these.
LONGEST_FILES_FIRST = (
    "train/test_distribute_pretrain.py",  # ~35 s: seven TensorFlow processes
    "test_export.py",  # ~30 s: SavedModel, ONNX and LiteRT conversions
    "test_examples.py",  # ~30 s: the xray workflow in bash, the features example
    "train/test_lean_checkpoints.py",
    "test_jax_backend.py",  # ~25 s: AlexNet under JAX in a subprocess
    "train/test_resume.py",  # ~25 s: kill -9 and resume, in subprocesses
    "test_model.py",  # ~25 s: AlexNet itself, full size
    "test_explain.py",
    "train/test_pretrain.py",
    "test_evaluate_cli.py",
    "train/test_feature_cache.py",
    "test_distribute.py",
    "test_extract.py",
    "weights/test_weights.py",
    "weights/test_weights_cli.py",
    "data/test_data.py",
    "test_crossval.py",
    "train/test_finetune_precision.py",
    "test_report.py",
    "test_precision_commands.py",
    "test_demo.py",
    "train/test_finetune.py",
    "train/test_engine.py",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order below
        config.option.loadscopereorder = False
    # Whatever collects tests imports TensorFlow (test modules import it at the top): with
    # Python's garbage collector paused that costs 3.4 instead of 5.7 CPU-s, as the CLI
    # does for each command. Not in xdist's controller, which collects nothing.
    controller = not hasattr(config, "workerinput") and bool(
        getattr(config.option, "numprocesses", None)
    )
    if not controller:
        with collector_paused():
            import keras  # noqa: F401  (TensorFlow, Keras' backend, comes with it)


def pytest_collection_modifyitems(config, items):
    tests = os.path.dirname(os.path.abspath(__file__))
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}

    def file_rank(item):
        return rank.get(os.path.relpath(str(item.path), tests), len(rank))

    items.sort(key=file_rank)  # stable: tests keep their order within a file


@pytest.fixture(autouse=True, scope="module")
def release_models_between_modules():
    """Drop what a test module left behind (models, traced functions) before the next one.

    One pytest process builds well over a hundred AlexNets; without this its memory grew
    past 20 GB on a 24 GB machine. Module scope: module-level fixtures are gone by then.
    """
    yield
    import gc
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=True)
    gc.collect()
    log = os.environ.get("ALEXKIT_TEST_RSS_LOG")
    if log:  # where the memory goes, module by module (for whoever trims the suite)
        import resource

        with open("/proc/self/status") as f:
            rss = next(line.split()[1] for line in f if line.startswith("VmRSS"))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open(log, "a") as f:
            f.write(f"{rss} {peak} {os.environ.get('PYTEST_CURRENT_TEST', '')}\n")


@pytest.fixture(autouse=True)
def alexkit_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("alexkit_home")
    monkeypatch.setenv("ALEXKIT_HOME", str(home))
    yield home
    # Weights a test registered (~230 MB per AlexNet) go with it, not at the session's end.
    import shutil

    shutil.rmtree(home, ignore_errors=True)


def write_class_images(root, classes, per_class, size=(48, 40), fmt="PNG", seed=0):
    """Write a learnable folder-per-class set: each class has its own colour and bar.

    Returns the list of written paths. Images are RGB; class k is tinted by a fixed
    colour and has a horizontal bar at a class-dependent height, plus noise.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    w, h = size
    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([(97 * k) % 256, (57 * k + 80) % 256, (151 * k + 30) % 256])
        for i in range(per_class):
            img = rng.integers(0, 60, size=(h, w, 3)) + colour * 0.7
            band = int((k + 1) * h / (len(classes) + 1))
            img[max(0, band - 3) : band + 3, :, :] = 255 - colour
            img = np.clip(img, 0, 255).astype(np.uint8)
            ext = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp"}[fmt]
            path = folder / f"{name}_{i:03d}.{ext}"
            Image.fromarray(img).save(path, format=fmt)
            paths.append(path)
    return paths


@pytest.fixture
def class_folder(tmp_path):
    """A small learnable folder-per-class dataset: 3 classes × 12 PNGs."""
    root = tmp_path / "images"
    write_class_images(root, ["alpha", "beta", "gamma"], 12)
    return root


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on 127.0.0.1 right now (for multi-worker test clusters)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# --------------------------------------------------------------------------- tiny AlexNet
# Tests of the pipeline, the engine and the CLI run the `tiny` variant (the 2012 layout at
# 1/8 width on 99x99, 0.2M parameters) through the same code paths as AlexNet: seconds
# and megabytes instead of minutes and gigabytes. Tests that guard AlexNet itself keep it.


def tiny_recipe(name: str = "digits", **changes):
    """Built-in recipe ``name`` for the ``tiny`` variant (its 99x99 input), plus ``changes``."""
    import dataclasses

    from alexkit.recipes import load_recipe

    return dataclasses.replace(load_recipe(name), variant="tiny", image_size=99, **changes)


@pytest.fixture(scope="session")
def features_file(tmp_path_factory):
    """A 10-class tiny AlexNet (He init, seed 0) with drop6/drop7 off, saved as ``.keras``:
    a stand-in pretrained body for fine-tuning tests.

    Its dropout is off because the frozen body's dropout still fires while the head
    trains, and on fc6's 128 units (AlexNet: 4096) it makes fc7 too noisy for a head to
    learn the test's colour classes in a few steps (measured: 0.67 held-out accuracy with
    0.5, 1.0 with 0). Heads on it train at lr 0.01: Adam's steps move the logits ~30x less
    than on AlexNet's 4096 units.
    """
    from alexkit.model import build_alexnet

    path = tmp_path_factory.mktemp("weights") / "features.keras"
    build_alexnet("tiny", num_classes=10, kernel_init="he", seed=0, dropout=0.0).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_alexnet_file(tmp_path_factory):
    """A 10-class ``tiny`` AlexNet (He init, seed 0) saved once per session as ``.keras``."""
    from alexkit.model import build_alexnet

    path = tmp_path_factory.mktemp("tiny_alexnet") / "tiny.keras"
    build_alexnet("tiny", num_classes=10, kernel_init="he", seed=0).save(path)
    return path


@pytest.fixture
def tiny_weights(tiny_alexnet_file):
    """That model as store entry ``tiny-base`` (variant ``tiny``) of this test's ALEXKIT_HOME.

    ``finetune`` with a recipe of variant ``tiny`` takes ``weights="tiny-base"`` (CLI
    ``--weights tiny-base``); subprocesses see the same store through ALEXKIT_HOME.
    """
    from alexkit.model import load_model
    from alexkit.weights import register_weights

    register_weights(
        load_model(str(tiny_alexnet_file)),
        "tiny-base",
        variant="tiny",
        source=str(tiny_alexnet_file),
        kind="pretrain",
    )
    return "tiny-base"
