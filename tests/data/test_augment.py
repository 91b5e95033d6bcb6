"""AlexNet augmentations: hand-computed oracles for PCA lighting, crops and ten-crop."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from alexkit.data import augment
from alexkit.data.augment import AugmentConfig
from alexkit.errors import UsageError

# Eigenvectors are the columns of this matrix (REFERENCE.md), RGB, pixels in [0, 1].
V = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
LAM = np.array([0.2175, 0.0188, 0.0045])


def _coords(h=256, w=300):
    """uint8 image whose pixels encode their own position: (row, col % 256, col // 256)."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows % 256, cols % 256, cols // 256 + rows // 256 * 8], -1).astype(np.uint8)


def test_pca_lighting_shift_is_sum_of_v_alpha_lambda():
    alpha = np.array([0.1, -0.2, 0.05])
    expected = 255.0 * sum(V[:, j] * alpha[j] * LAM[j] for j in range(3))  # hand formula
    image = np.full((4, 5, 3), 128.0, np.float32)
    image[0, 0] = (10.0, 200.0, 60.0)
    out = augment.pca_lighting(tf.constant(image), tf.constant(alpha, tf.float32)).numpy()
    np.testing.assert_allclose(out - image, np.broadcast_to(expected, image.shape), atol=1e-4)
    assert (
        abs(expected[0] - 255 * (-0.5675 * 0.02175 + 0.7192 * -0.00376 + 0.4009 * 0.000225)) < 1e-6
    )


def test_train_pca_only_shifts_every_pixel_equally():
    cfg = AugmentConfig(crop=False, hflip=False, pca_lighting=0.1, antialias=False)
    image = tf.fill((227, 227, 3), tf.constant(120, tf.uint8))
    out = augment.train_transform(image, tf.constant([3, 4]), cfg, 227).numpy()
    shift = out[0, 0] - 120.0
    np.testing.assert_allclose(out - 120.0, np.broadcast_to(shift, out.shape), atol=1e-3)
    # shift lies in the span of λ-scaled eigenvectors: recover α and check it is a plausible draw
    alpha = np.linalg.solve(V * LAM * 255.0, shift)
    assert 0 < np.abs(alpha).max() < 0.6


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_random_crop_stays_in_bounds_and_is_a_window(seed):
    img = _coords()  # shorter side already 256: resize is the identity
    cfg = AugmentConfig(hflip=False, pca_lighting=0.0)
    out = augment.train_transform(tf.constant(img), tf.constant([seed, 7]), cfg, 227).numpy()
    assert out.shape == (227, 227, 3)
    top = int(out[0, 0, 0])
    left = int(out[0, 0, 1]) + 256 * (int(out[0, 0, 2]) % 8)
    assert 0 <= top <= 256 - 227 and 0 <= left <= 300 - 227
    np.testing.assert_allclose(out, img[top : top + 227, left : left + 227], atol=1e-3)


def test_resize_shorter_side_keeps_aspect():
    out = augment.resize_shorter(tf.zeros((375, 500, 3), tf.uint8), 256)
    assert tuple(out.shape) == (256, 341, 3) and out.dtype == tf.float32
    out = augment.resize_shorter(tf.zeros((600, 300, 3), tf.uint8), 256)
    assert tuple(out.shape) == (512, 256, 3)


def test_ten_crop_returns_the_ten_expected_windows():
    img = _coords(256, 300)
    out = augment.ten_crop(tf.constant(img), 227).numpy()
    assert out.shape == (10, 227, 227, 3)
    windows = [(0, 0), (0, 73), (29, 0), (29, 73), (14, 36)]
    assert augment.crop_windows(256, 300, 227) == windows
    for k, (t, left) in enumerate(windows):
        np.testing.assert_array_equal(out[k], img[t : t + 227, left : left + 227])
        np.testing.assert_array_equal(out[k + 5], img[t : t + 227, left : left + 227][:, ::-1])


def test_eval_centre_crop_and_ten_crop_transform():
    img = _coords(256, 300)
    out = augment.eval_transform(tf.constant(img), 224, 256).numpy()
    np.testing.assert_allclose(out, img[16:240, 38:262], atol=1e-3)
    tta = augment.ten_crop_transform(tf.constant(img), 224, 256).numpy()
    assert tta.shape == (10, 224, 224, 3)
    np.testing.assert_allclose(tta[4], out, atol=1e-3)


def test_same_seed_same_output_and_extras_stay_in_range():
    cfg = AugmentConfig(
        vflip=True,
        rot90=True,
        rotation=20,
        brightness=0.2,
        contrast=0.3,
        saturation=0.3,
        random_resized_crop=(0.3, 1.0),
    )
    img = tf.constant(np.random.default_rng(0).integers(0, 256, (200, 260, 3), dtype=np.uint8))
    a = augment.train_transform(img, tf.constant([5, 6]), cfg, 224).numpy()
    b = augment.train_transform(img, tf.constant([5, 6]), cfg, 224).numpy()
    c = augment.train_transform(img, tf.constant([5, 7]), cfg, 224).numpy()
    assert a.shape == (224, 224, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1.0
    assert a.min() >= 0.0 and a.max() <= 255.0


def test_rotation_by_90_degrees_is_counter_clockwise():
    img = np.zeros((5, 5, 3), np.float32)
    img[0, 4] = 255.0
    out = augment.rotate(tf.constant(img), 90.0).numpy()
    np.testing.assert_allclose(out, np.rot90(img, 1), atol=1e-3)
    np.testing.assert_allclose(augment.rotate(tf.constant(img), 0.0).numpy(), img, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [{"resize": 0}, {"rotation": -1}, {"contrast": 1.0}, {"random_resized_crop": (0.5, 0.2)}],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(UsageError, match=next(iter(kwargs))):
        AugmentConfig(**kwargs)


def test_random_resized_crop_is_normalised_to_floats():
    assert AugmentConfig(random_resized_crop=[0.08, 1]).random_resized_crop == (0.08, 1.0)


@pytest.mark.parametrize(
    "shape",
    [(227, 227), (212, 212), (226, 227), (200, 150), (1, 1), (5, 227), (228, 227), (150, 400)],
)
def test_evaluation_resize_equals_tensorflow_antialiased_resize(shape):
    """Windows that upsample take the cheaper plain-bilinear path: same pixels as TF's
    antialiased resize (the oracle) within float rounding; shrinking ones are unchanged."""
    rng = np.random.default_rng(sum(shape))
    image = tf.constant((rng.random((*shape, 3)) * 255).astype(np.uint8))
    oracle = tf.image.resize(image, (227, 227), antialias=True).numpy()
    got = augment._resize_exact(image, 227, True).numpy()
    assert got.shape == (227, 227, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, oracle, rtol=0, atol=0.01)
