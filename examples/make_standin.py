"""Write a small stand-in for a public dataset, with the real dataset's on-disk layout.

The example workflows (``examples/*.sh --synthetic``) run on these so CI proves the exact
commands work without downloading anything. Each stand-in copies what matters to a
loader: folder names, split folders, file names and types, colour mode and image sizes.
The pictures are drawn with a class-dependent colour/shape so a model can learn them;
everything is seeded, so the same arguments write the same bytes.

Layouts (``LAYOUT`` argument → folder written under ``OUT``):

* ``xray``: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`` — grayscale JPEGs
  named like Kermany's (``IM-0001-0001.jpeg``, ``person1_bacteria_1.jpeg``); val holds
  2 + 2 images (the real one 8 + 8); one 16-bit PNG in train checks deep-greyscale decoding.
* ``plants``: ``PlantVillage/<Crop>___<Disease>/*.JPG`` — 3 of the 38 classes, 256×256
  RGB, file names with spaces like the real ones (``<uuid>___RS_HL 0001.JPG``).
* ``autism``: ``autism/{train,valid,test}/{Autistic,Non_Autistic}/*.jpg`` — RGB face-like
  crops (the Kaggle set's split names, ``valid`` not ``val``).
* ``eurosat``: ``2750/<Class>/<Class>_<n>.jpg`` — 64×64 RGB tiles, 4 of the 10 classes.

Usage::

    python examples/make_standin.py xray /tmp/standin --per-class 6
    # prints the dataset root, e.g. /tmp/standin/chest_xray
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Drawer = Callable[[np.random.Generator, int], Image.Image]


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 20) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _noise(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    """Add sensor-like noise so no two images of a class are byte-identical."""
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0.0, sigma, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), img.mode)


# --------------------------------------------------------------------------- chest X-ray


def _xray(rng: np.random.Generator, label: int) -> Image.Image:
    """A chest film: bright body, two dark lungs; pneumonia (label 1) adds white clouding."""
    w = int(rng.integers(150, 200))
    h = int(w * rng.uniform(0.8, 1.0))  # real films are landscape-ish and vary in size
    img = Image.new("L", (w, h), int(rng.integers(150, 190)))
    draw = ImageDraw.Draw(img)
    lung = int(rng.integers(30, 60))
    for cx in (0.3, 0.7):
        box = (w * cx - w * 0.15, h * 0.15, w * cx + w * 0.15, h * 0.85)
        draw.ellipse(box, fill=lung)
    draw.rectangle((w * 0.47, 0, w * 0.53, h), fill=200)  # spine
    if label == 1:
        for _ in range(int(rng.integers(3, 6))):
            cx = w * rng.choice([0.3, 0.7]) + rng.uniform(-0.08, 0.08) * w
            cy = h * rng.uniform(0.35, 0.75)
            r = w * rng.uniform(0.05, 0.09)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=int(rng.integers(170, 230)))
    img = img.filter(ImageFilter.GaussianBlur(2))
    return _noise(img, rng, 6)


def _write_xray(out: Path, per_class: int, rng: np.random.Generator) -> Path:
    root = out / "chest_xray"
    counts = {"train": per_class, "val": 2, "test": max(2, per_class // 2)}
    i = 0  # one running number, so no file name repeats across splits
    for split, n in counts.items():
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                i += 1
                if cls == "NORMAL":
                    name = f"IM-{i:04d}-0001.jpeg"
                else:
                    kind = "bacteria" if i % 2 == 0 else "virus"
                    name = f"person{i}_{kind}_{i}.jpeg"
                _xray(rng, label).save(folder / name, quality=90)
    # One 16-bit greyscale PNG, as some hospital exports are: alexkit must read it.
    film = np.asarray(_xray(rng, 1), dtype=np.uint16) * 257
    Image.fromarray(film).save(root / "train" / "PNEUMONIA" / "person999_bacteria_16bit.png")
    return root


# --------------------------------------------------------------------------- PlantVillage

PLANT_CLASSES = {
    # class folder: (leaf colour, spot colour or None, file-name tag)
    "Apple___Apple_scab": ((70, 140, 50), (60, 55, 30), "FREC_Scab"),
    "Tomato___Late_blight": ((60, 130, 45), (120, 80, 40), "GHLB2 Leaf"),
    "Tomato___healthy": ((50, 150, 50), None, "RS_HL"),
}


def _leaf(rng: np.random.Generator, label: int) -> Image.Image:
    leaf, spot, _ = list(PLANT_CLASSES.values())[label]
    background = _jitter(rng, (175, 175, 170), 10)
    img = Image.new("RGB", (256, 256), background)
    draw = ImageDraw.Draw(img)
    rx, ry = rng.integers(70, 100), rng.integers(100, 120)
    draw.ellipse((128 - rx, 128 - ry, 128 + rx, 128 + ry), fill=_jitter(rng, leaf))
    draw.line((128, 128 - ry, 128, 128 + ry), fill=_jitter(rng, (150, 190, 120)), width=3)
    if spot is not None:
        for _ in range(int(rng.integers(6, 12))):
            x, y = (
                rng.integers(128 - rx // 2, 128 + rx // 2),
                rng.integers(128 - ry // 2, 128 + ry // 2),
            )
            r = int(rng.integers(6, 16))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(rng, spot))
    angle = float(rng.uniform(0, 360))
    img = img.rotate(angle, fillcolor=background)
    return _noise(img, rng, 4)


def _write_plants(out: Path, per_class: int, rng: np.random.Generator) -> Path:
    root = out / "PlantVillage"
    for label, (cls, (_, _, tag)) in enumerate(PLANT_CLASSES.items()):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            uid = uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i)
            _leaf(rng, label).save(folder / f"{uid}___{tag} {1000 + i}.JPG", quality=90)
    return root


# --------------------------------------------------------------------------- autism faces


def _face(rng: np.random.Generator, label: int) -> Image.Image:
    """A centred face crop; the classes differ in background tint and mouth shape.

    Only a stand-in: the real set's labels are not visible cues like these.
    """
    size = int(rng.integers(200, 260))
    background = (200, 200, 225) if label == 0 else (225, 210, 190)
    img = Image.new("RGB", (size, size), _jitter(rng, background, 15))
    draw = ImageDraw.Draw(img)
    s = size / 224
    skin = _jitter(rng, (220, 180, 150), 30)
    draw.ellipse((52 * s, 30 * s, 172 * s, 190 * s), fill=skin)
    for ex in (85, 139):
        draw.ellipse(((ex - 9) * s, 90 * s, (ex + 9) * s, 102 * s), fill=(40, 30, 30))
    if label == 0:
        draw.arc((85 * s, 120 * s, 139 * s, 160 * s), 20, 160, fill=(150, 60, 60), width=4)
    else:
        draw.line((90 * s, 145 * s, 134 * s, 145 * s), fill=(150, 60, 60), width=4)
    return _noise(img, rng, 5)


def _write_autism(out: Path, per_class: int, rng: np.random.Generator) -> Path:
    root = out / "autism"
    counts = {"train": per_class, "valid": 2, "test": max(2, per_class // 2)}
    n = 0
    for split, count in counts.items():
        for label, cls in enumerate(("Autistic", "Non_Autistic")):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                n += 1
                _face(rng, label).save(folder / f"{n:04d}.jpg", quality=90)
    return root


# --------------------------------------------------------------------------- EuroSAT

EUROSAT_CLASSES = ("AnnualCrop", "Forest", "Residential", "SeaLake")


def _tile(rng: np.random.Generator, label: int) -> Image.Image:
    """A 64×64 top-down tile: crop stripes, forest speckle, house blocks or water."""
    cls = EUROSAT_CLASSES[label]
    if cls == "AnnualCrop":
        img = Image.new("RGB", (64, 64), _jitter(rng, (150, 140, 90)))
        draw = ImageDraw.Draw(img)
        step = int(rng.integers(5, 9))
        for x in range(0, 64, step):
            draw.rectangle((x, 0, x + step // 2, 64), fill=_jitter(rng, (110, 150, 70)))
        img = img.rotate(float(rng.choice([0, 90, 45])))
    elif cls == "Forest":
        arr = rng.normal(0, 18, (64, 64, 3)) + np.array([35, 75, 40])
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    elif cls == "Residential":
        img = Image.new("RGB", (64, 64), _jitter(rng, (120, 120, 115)))
        draw = ImageDraw.Draw(img)
        for x in range(2, 64, 12):
            for y in range(2, 64, 12):
                draw.rectangle((x, y, x + 7, y + 7), fill=_jitter(rng, (190, 120, 100), 30))
    else:
        img = Image.new("RGB", (64, 64), _jitter(rng, (30, 60, 110), 15))
    return _noise(img, rng, 4)


def _write_eurosat(out: Path, per_class: int, rng: np.random.Generator) -> Path:
    root = out / "2750"
    for label, cls in enumerate(EUROSAT_CLASSES):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _tile(rng, label).save(folder / f"{cls}_{i + 1}.jpg", quality=95)
    return root


WRITERS: dict[str, Callable[[Path, int, np.random.Generator], Path]] = {
    "xray": _write_xray,
    "plants": _write_plants,
    "autism": _write_autism,
    "eurosat": _write_eurosat,
}


def make_standin(layout: str, out: str | Path, *, per_class: int = 6, seed: int = 0) -> Path:
    """Write the stand-in for ``layout`` under ``out`` and return the dataset root.

    Args:
        layout: ``xray``, ``plants``, ``autism`` or ``eurosat``.
        out: parent folder (created); the dataset goes into a subfolder named as in
            the real download (``chest_xray``, ``PlantVillage``, ``autism``, ``2750``).
        per_class: training images per class (test gets half, val/valid 2).
        seed: the images depend only on ``layout``, ``per_class`` and ``seed``.

    Returns:
        The dataset root to pass to the workflow.
    """
    if layout not in WRITERS:
        raise ValueError(f"layout must be one of {sorted(WRITERS)}. Received: {layout!r}")
    if per_class < 2:
        raise ValueError(f"per_class must be >= 2 (train and val). Received: {per_class}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return WRITERS[layout](out, per_class, np.random.default_rng(seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("layout", choices=sorted(WRITERS))
    parser.add_argument("out", type=Path, help="Parent folder for the stand-in dataset.")
    parser.add_argument("--per-class", type=int, default=6, help="Training images per class.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_standin(args.layout, args.out, per_class=args.per_class, seed=args.seed))


if __name__ == "__main__":
    main()
