"""AlexNet's augmentations as tf.data-friendly functions.

Every random op is *stateless*, driven by a per-image seed (shape ``[2]`` int) that
:func:`alexkit.data.make_dataset` draws from a seeded stream, so identical seeds give
identical batches even with parallel decoding. Images go in as uint8 (H, W, 3) and come
out as float32 in [0, 255]; mean/std normalisation lives inside the model.

TensorFlow is imported inside the functions: this module is imported by recipes.py and
the CLI, which must stay free of TensorFlow at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

from alexkit.errors import UsageError

# PCA lighting (§4.1): eigenvalues λ and eigenvectors (the COLUMNS of this matrix) of the
# RGB covariance of ImageNet pixels in [0, 1] (fb.resnet.torch / Caffe values).
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation. Defaults are the 2012 paper's (§4.1).

    Attributes:
        resize: shorter side (pixels) before cropping; 256 in the paper.
        crop: random ``image_size`` crop of the resized image (paper); False resizes
            straight to ``image_size``.
        hflip: random horizontal flip (paper).
        vflip: random vertical flip (safe for aerial/satellite/microscopy, not X-rays).
        rot90: random multiples of 90° (aerial imagery).
        rotation: maximum absolute rotation in degrees (uniform), 0 disables.
        brightness: maximum brightness delta as a fraction of the range, 0 disables.
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast], 0 disables.
        saturation: saturation factor drawn from [1 - s, 1 + s], 0 disables.
        random_resized_crop: (min, max) area fraction for an Inception-style crop
            instead of the paper's fixed-scale crop; None uses the paper's crop.
        pca_lighting: σ of the PCA lighting coefficients α (0.1 in the paper), 0 disables.
        antialias: antialiased resizing of *training* crops. False (default) is the
            2012 Caffe pipeline's plain bilinear and makes the train pipeline ~1.7× cheaper;
            evaluation always antialiases, like the Pillow/torchvision reference.
    """

    resize: int = 256
    crop: bool = True
    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    random_resized_crop: tuple[float, float] | None = None
    pca_lighting: float = 0.1
    antialias: bool = False

    def __post_init__(self) -> None:
        if self.resize < 1:
            raise UsageError(f"augment.resize must be a positive size. Received: {self.resize}")
        for name in ("rotation", "brightness", "contrast", "saturation", "pca_lighting"):
            if getattr(self, name) < 0:
                raise UsageError(f"augment.{name} must be >= 0. Received: {getattr(self, name)}")
        for name in ("contrast", "saturation"):
            if getattr(self, name) >= 1:
                raise UsageError(f"augment.{name} must be < 1. Received: {getattr(self, name)}")
        rrc = self.random_resized_crop
        if rrc is not None:
            if len(rrc) != 2 or not 0 < rrc[0] <= rrc[1] <= 1:
                raise UsageError(
                    "augment.random_resized_crop must be (min, max) with "
                    f"0 < min <= max <= 1. Received: {rrc}"
                )
            object.__setattr__(self, "random_resized_crop", (float(rrc[0]), float(rrc[1])))


NO_AUGMENT = AugmentConfig(hflip=False, pca_lighting=0.0)


def resize_shorter(image, size: int, antialias: bool = True):
    """Resize so the shorter side is ``size`` (aspect kept); float32 out."""
    import tensorflow as tf

    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(h, w)
    new_h = tf.maximum(size, tf.cast(tf.round(h * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(w * scale), tf.int32))
    out = tf.image.resize(image, tf.stack([new_h, new_w]), antialias=antialias)
    return tf.cast(out, tf.float32)


def center_crop(image, size: int):
    """The central ``size``×``size`` window (the image must be at least that big)."""
    import tensorflow as tf

    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return image[top : top + size, left : left + size, :]


def crop_windows(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the five ten-crop windows: 4 corners then the centre."""
    return [
        (0, 0),
        (0, width - size),
        (height - size, 0),
        (height - size, width - size),
        ((height - size) // 2, (width - size) // 2),
    ]


def ten_crop(image, size: int):
    """Ten crops, torchvision's order: TL, TR, BL, BR, centre, then the same flipped.

    Returns:
        A (10, size, size, 3) tensor.
    """
    import tensorflow as tf

    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    tops = [0, 0, h - size, h - size, (h - size) // 2]
    lefts = [0, w - size, 0, w - size, (w - size) // 2]
    crops = [
        image[t : t + size, left : left + size, :] for t, left in zip(tops, lefts, strict=True)
    ]
    crops += [tf.reverse(c, axis=[1]) for c in crops]
    return tf.stack(crops)


def pca_shift(alpha):
    """The RGB shift Σ_j v_j α_j λ_j in [0, 255] units for coefficients ``alpha`` (3,)."""
    import tensorflow as tf

    eigvec = tf.constant(PCA_EIGVEC, tf.float32)
    eigval = tf.constant(PCA_EIGVAL, tf.float32)
    return 255.0 * tf.linalg.matvec(eigvec, tf.cast(alpha, tf.float32) * eigval)


def pca_lighting(image, alpha):
    """Add the PCA lighting shift for coefficients ``alpha`` to every pixel (no clipping)."""
    return image + pca_shift(alpha)


def rotate(image, degrees):
    """Rotate about the centre by ``degrees`` (counter-clockwise), reflecting at the edges."""
    import math

    import tensorflow as tf

    angle = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    transform = tf.stack([cos, -sin, x_off, sin, cos, y_off, 0.0, 0.0])[None, :]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    return out[0]


def split_seed(seed):
    """Ten independent stateless seeds from one per-image seed (shape [2])."""
    import tensorflow as tf

    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=10)


def _paper_geometry(shape, size: int, resize: int):
    """Scale and resized (H, W) of 'shorter side to resize' for an image of ``shape``."""
    import tensorflow as tf

    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    target = float(max(resize, size))
    scale = target / tf.minimum(h, w)
    hr = tf.maximum(int(target), tf.cast(tf.round(h * scale), tf.int32))
    wr = tf.maximum(int(target), tf.cast(tf.round(w * scale), tf.int32))
    return scale, hr, wr


def _to_original(shape, scale, top_r, left_r, size: int):
    """Map a ``size`` window at (top_r, left_r) of the resized image back to ``shape``."""
    import tensorflow as tf

    crop = tf.cast(tf.round(size / scale), tf.int32)
    ch = tf.clip_by_value(crop, 1, shape[0])
    cw = tf.clip_by_value(crop, 1, shape[1])
    top = tf.cast(tf.round(tf.cast(top_r, tf.float32) / scale), tf.int32)
    left = tf.cast(tf.round(tf.cast(left_r, tf.float32) / scale), tf.int32)
    top = tf.clip_by_value(top, 0, shape[0] - ch)
    left = tf.clip_by_value(left, 0, shape[1] - cw)
    return tf.stack([top, left, ch, cw])


def paper_window(shape, size: int, resize: int = 256, seed=None):
    """The crop window (top, left, height, width) in *original* pixels.

    Equivalent to "shorter side to ``resize``, then a ``size`` crop" (random with ``seed``,
    central without), so a JPEG can be decoded cropped and only the window resized:
    that skips the inverse DCT outside the window and the resize of discarded pixels.
    """
    import tensorflow as tf

    scale, hr, wr = _paper_geometry(shape, size, resize)
    if seed is None:
        top_r, left_r = (hr - size) // 2, (wr - size) // 2
    else:
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
        top_r = tf.random.stateless_uniform((), seeds[0], 0, hr - size + 1, dtype=tf.int32)
        left_r = tf.random.stateless_uniform((), seeds[1], 0, wr - size + 1, dtype=tf.int32)
    return _to_original(shape, scale, top_r, left_r, size)


def train_window(shape, seeds, config: AugmentConfig, image_size: int):
    """The training crop window in original pixels (seeds from :func:`split_seed`)."""
    import tensorflow as tf

    shape = tf.cast(shape, tf.int32)
    if config.random_resized_crop is not None:
        begin, box, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.stack([shape[0], shape[1], 3]),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seeds[0],
            min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=config.random_resized_crop,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        return tf.stack([begin[0], begin[1], box[0], box[1]])
    if config.crop:
        return paper_window(shape, int(image_size), config.resize, seeds[0])
    return tf.stack([0, 0, shape[0], shape[1]])


def eval_window(shape, image_size: int, resize: int = 256, crop: bool = True):
    """The evaluation window: the paper's centre crop, or the whole image."""
    import tensorflow as tf

    shape = tf.cast(shape, tf.int32)
    if crop:
        return paper_window(shape, int(image_size), resize)
    return tf.stack([0, 0, shape[0], shape[1]])


def take_window(image, window):
    """Slice a (top, left, height, width) window out of a decoded image."""
    return image[window[0] : window[0] + window[2], window[1] : window[1] + window[3], :]


def _resize_exact(image, size: int, antialias: bool):
    import tensorflow as tf

    if antialias:
        # Antialiasing only widens the kernel when shrinking. A window no larger than
        # the output in both dimensions gives the plain bilinear result (within 0.01 of
        # 255) at ~1/4 of the cost (0.16 vs 0.6 ms for 212² → 227² on this CPU): the
        # common case for images stored at or below 256 px, where the centre crop grows.
        shape = tf.shape(image)
        upsample = tf.logical_and(shape[0] <= size, shape[1] <= size)
        out = tf.cond(
            upsample,
            lambda: tf.image.resize(image, (size, size), antialias=False),
            lambda: tf.image.resize(image, (size, size), antialias=True),
        )
    else:
        out = tf.image.resize(image, (size, size), antialias=False)
    return tf.ensure_shape(tf.cast(out, tf.float32), (size, size, 3))


def finish_train(window_image, seeds, config: AugmentConfig, image_size: int, lighting=True):
    """Resize a cropped window to ``image_size`` and apply flips, extras and PCA lighting.

    With ``lighting=False`` the PCA shift and the final clip are left out and returned
    instead: ``(image, shift)``.
    """
    import tensorflow as tf

    image = _resize_exact(window_image, int(image_size), config.antialias)
    if config.hflip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    if config.vflip:
        image = tf.image.stateless_random_flip_up_down(image, seed=seeds[2])
    if config.rot90:
        k = tf.random.stateless_uniform((), seeds[3], minval=0, maxval=4, dtype=tf.int32)
        image = tf.image.rot90(image, k)
    if config.rotation > 0:
        deg = tf.random.stateless_uniform((), seeds[4], -config.rotation, config.rotation)
        image = rotate(image, deg)
    if config.brightness > 0:
        delta = tf.random.stateless_uniform((), seeds[5], -config.brightness, config.brightness)
        image = image + 255.0 * delta
    if config.contrast > 0:
        image = tf.image.stateless_random_contrast(
            image, 1 - config.contrast, 1 + config.contrast, seed=seeds[6]
        )
    if config.saturation > 0:
        image = tf.image.stateless_random_saturation(
            image, 1 - config.saturation, 1 + config.saturation, seed=seeds[7]
        )
    if config.pca_lighting > 0:
        shift = pca_shift(tf.random.stateless_normal((3,), seeds[8], stddev=config.pca_lighting))
    else:
        shift = tf.zeros((3,), tf.float32)
    if not lighting:
        return image, shift
    return tf.clip_by_value(image + shift, 0.0, 255.0)


def train_transform(image, seed, config: AugmentConfig, image_size: int):
    """The training augmentation of one decoded image.

    Shorter side to ``config.resize`` → random ``image_size`` crop (or an Inception-style
    random-resized crop) → flips → rotation → colour jitter → PCA lighting → clip.
    The crop is taken in original pixels and only the window is resized (same result as
    resize-then-crop up to sub-pixel rounding, less work).

    Args:
        image: uint8 or float (H, W, 3).
        seed: int tensor of shape [2] (stateless randomness).
        config: which augmentations.
        image_size: output side (227 original, 224 torchvision).

    Returns:
        float32 (image_size, image_size, 3) in [0, 255].
    """
    import tensorflow as tf

    seeds = split_seed(seed)
    window = train_window(tf.shape(image), seeds, config, image_size)
    return finish_train(take_window(image, window), seeds, config, image_size)


def eval_transform(image, image_size: int, resize: int = 256, crop: bool = True, antialias=True):
    """Evaluation: shorter side to ``resize``, centre ``image_size`` crop; float32 out."""
    import tensorflow as tf

    window = eval_window(tf.shape(image), image_size, resize, crop)
    return _resize_exact(take_window(image, window), int(image_size), antialias)


def ten_crop_transform(image, image_size: int, resize: int = 256, antialias: bool = True):
    """Test-time augmentation: the five :func:`ten_crop` windows of the resized image, flipped too.

    Returns:
        float32 (10, image_size, image_size, 3), torchvision's TenCrop order.
    """
    import tensorflow as tf

    size = int(image_size)
    shape = tf.shape(image)
    scale, hr, wr = _paper_geometry(shape, size, resize)
    corners = [
        (0, 0),
        (0, wr - size),
        (hr - size, 0),
        (hr - size, wr - size),
        ((hr - size) // 2, (wr - size) // 2),
    ]
    crops = []
    for top_r, left_r in corners:
        window = _to_original(shape, scale, top_r, left_r, size)
        crops.append(_resize_exact(take_window(image, window), size, antialias))
    crops += [tf.reverse(c, axis=[1]) for c in crops]
    return tf.stack(crops)
