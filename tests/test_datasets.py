"""The embedded digits dataset: content, layout, caching and atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alexkit.datasets import (
    DIGITS_MANIFEST,
    digits_info,
    digits_root,
    materialize_builtin,
    materialize_digits,
)
from alexkit.errors import DataError, UsageError


@pytest.fixture(scope="module")
def sklearn_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.images), np.asarray(bunch.target)


def test_all_digits_match_sklearn_pixel_for_pixel(alexkit_home, sklearn_digits):
    images, targets = sklearn_digits
    root = materialize_digits()
    assert root == alexkit_home / "datasets" / "digits"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [str(d) for d in range(10)]
    files = sorted(root.glob("*/*.png"))
    assert len(files) == 1797
    counts = {d: len(list((root / str(d)).glob("*.png"))) for d in range(10)}
    assert counts == {d: int(n) for d, n in enumerate(np.bincount(targets))}
    for index in (0, 5, 877, 1796):  # file name = index in load_digits
        path = root / str(targets[index]) / f"{index:04d}.png"
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (32, 32)
            pixels = np.asarray(image)
        # Oracle: 0..16 scaled to 0..255, each pixel a 4x4 block (nearest upscaling).
        expected = np.kron(np.rint(images[index] * 255 / 16), np.ones((4, 4)))
        np.testing.assert_array_equal(pixels, expected.astype(np.uint8))
    manifest = json.loads((root / DIGITS_MANIFEST).read_text())
    assert manifest["count"] == 1797 and manifest["classes"] == [str(d) for d in range(10)]
    # Only the class folders and the hidden manifest are visible; no staging left behind.
    assert sorted(p.name for p in root.iterdir() if not p.is_dir()) == [DIGITS_MANIFEST]
    assert [p.name for p in root.parent.iterdir()] == ["digits"]


def test_subset_is_cached_and_reused(alexkit_home, sklearn_digits):
    _, targets = sklearn_digits
    root = materialize_digits(digits=range(3))
    assert root == alexkit_home / "datasets" / "digits-0-2"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["0", "1", "2"]
    assert len(list(root.glob("*/*.png"))) == int(np.isin(targets, [0, 1, 2]).sum())
    marker = root / "0" / "keep-me.txt"  # a second call must not rewrite the folder
    marker.write_text("x")
    assert materialize_digits(digits=[2, 1, 0]) == root
    assert marker.exists()
    assert materialize_digits(digits=range(3), force=True) == root
    assert not marker.exists()
    assert len(list(root.glob("*/*.png"))) == int(np.isin(targets, [0, 1, 2]).sum())


def test_incomplete_copy_is_rebuilt(alexkit_home):
    root = materialize_digits(digits=[1, 7])
    assert root.name == "digits-1_7"
    victim = next((root / "7").glob("*.png"))
    victim.unlink()
    assert materialize_digits(digits=[1, 7]) == root
    assert victim.exists()


def test_foreign_folder_is_never_deleted(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="exists and is not an alexkit digits folder"):
        materialize_digits(root, digits=[0, 1])
    assert (root / "thesis.tex").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert materialize_digits(empty, digits=[0, 1], size=16) == empty
    with Image.open(next((empty / "1").glob("*.png"))) as image:
        assert image.size == (16, 16)


def test_info_before_and_after(alexkit_home):
    info = digits_info(digits=range(5))
    assert info["materialized"] is False and "count" not in info
    assert info["root"] == str(alexkit_home / "datasets" / "digits-0-4")
    assert "CC BY 4.0" in info["licence"] and info["original_size"] == [8, 8]
    materialize_builtin("digits", digits=range(5))
    info = digits_info(digits=range(5))
    assert info["materialized"] is True
    assert sum(info["per_class"].values()) == info["count"] > 800


def test_bad_arguments(alexkit_home):
    with pytest.raises(UsageError, match="digits must be a non-empty selection of 0..9"):
        materialize_digits(digits=[3, 10])
    with pytest.raises(UsageError, match="digits must be a non-empty selection"):
        materialize_digits(digits=[])
    with pytest.raises(UsageError, match="size must be"):
        digits_root(size=4)
    with pytest.raises(UsageError, match="unknown built-in dataset 'mnist'; available: digits"):
        materialize_builtin("mnist")
    assert digits_root(size=64).name == "digits-64px"


def test_alexkit_loader_reads_the_materialised_folder(sklearn_digits):
    from alexkit.data import load_spec
    from alexkit.data.decode import decode_image

    images, targets = sklearn_digits
    root = materialize_digits(digits=[3, 8])
    spec = load_spec(root, val_fraction=0)
    assert spec.class_names == ("3", "8")  # the hidden manifest is not a class
    assert len(spec) == int(np.isin(targets, [3, 8]).sum())
    first = spec.items[spec.labels.index(1)]
    index = int(first.rsplit("/", 1)[-1].removesuffix(".png"))
    assert targets[index] == 8
    pixels = decode_image(first)  # grey PNG -> (H, W, 3) with equal channels
    assert pixels.shape == (32, 32, 3)
    expected = np.kron(np.rint(images[index] * 255 / 16), np.ones((4, 4))).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)
