"""AlexNet's augmentations as tf.data-friendly functions.

(Skeleton: the data helper owns this module and fills in the functions; the
``AugmentConfig`` fields are a contract shared with recipes.py — add fields, don't rename.)
"""

from __future__ import annotations

from dataclasses import dataclass


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
