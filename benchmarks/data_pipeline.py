"""Throughput of alexkit's tf.data pipelines vs a PyTorch DataLoader on the same images.

Generates N photo-like 500×375 JPEGs (2 classes), then measures images/second for:

* ``train``: alexkit ``make_dataset(training=True)`` — shorter side 256, random 227 crop,
  horizontal flip, PCA lighting (the full paper augmentation);
* ``eval``: centre crop;
* ``torch``: the same train work through ``torchvision.datasets.ImageFolder`` +
  ``DataLoader(num_workers=2)`` when torchvision imports; otherwise a minimal
  ImageFolder-like ``Dataset`` doing the same steps with PIL + numpy (reported in the
  JSON as ``torch_impl``).

Prints one JSON object. Run: ``python benchmarks/data_pipeline.py --n 400``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
PCA_EIGVEC = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
    np.float32,
)


def make_images(root: Path, n: int, size=(500, 375), seed=0) -> None:
    """Photo-like JPEGs: smooth colour fields plus a little noise (quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.int16)
        img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:05d}.jpg", quality=90)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def time_tf(root: Path, training: bool, batch: int, epochs: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second)."""
    from alexkit.data import load_spec, make_dataset

    spec = load_spec(root, val_fraction=0)
    ds = make_dataset(spec, training=training, batch_size=batch, seed=0)
    for _ in ds:  # warm-up epoch: graph tracing, thread pools, page cache
        pass
    start, cpu, count = time.perf_counter(), _cpu_seconds(), 0
    for _ in range(epochs):
        for images, _labels in ds:
            count += int(images.shape[0])
    return count / (time.perf_counter() - start), count / (_cpu_seconds() - cpu)


class _PilFolder:
    """ImageFolder + RandomCrop-style transforms, in PIL/numpy (no torchvision needed)."""

    def __init__(self, root: Path, seed: int = 0):
        self.items = sorted(
            (str(p), k)
            for k, d in enumerate(sorted(root.iterdir()))
            for p in sorted(d.glob("*.jpg"))
        )
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image

        rng = np.random.default_rng((self.seed, index, time.monotonic_ns()))
        path, label = self.items[index]
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = 256 / min(w, h)
            img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        arr = np.asarray(img, np.float32)
        top = rng.integers(0, arr.shape[0] - 227 + 1)
        left = rng.integers(0, arr.shape[1] - 227 + 1)
        arr = arr[top : top + 227, left : left + 227]
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        alpha = rng.normal(0, 0.1, 3).astype(np.float32)
        arr = np.clip(arr + 255.0 * PCA_EIGVEC @ (alpha * PCA_EIGVAL), 0, 255)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), label


def time_torch(root: Path, batch: int, epochs: int, workers: int) -> tuple[float, float, str]:
    import torch
    from torch.utils.data import DataLoader

    try:
        from torchvision import datasets, transforms

        class Lighting:
            def __call__(self, x):
                alpha = torch.randn(3) * 0.1
                shift = torch.from_numpy(PCA_EIGVEC) @ (alpha * torch.from_numpy(PCA_EIGVAL))
                return (x * 255 + 255 * shift[:, None, None]).clamp(0, 255)

        tf_ = transforms.Compose(
            [
                transforms.Resize(256),
                transforms.RandomCrop(227),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                Lighting(),
            ]
        )
        dataset = datasets.ImageFolder(str(root), transform=tf_)
        impl = "torchvision.ImageFolder"
    except Exception:  # torchvision missing or mismatched with the installed torch
        dataset = _PilFolder(root)
        impl = "minimal PIL Dataset (torchvision not importable)"
    torch.set_num_threads(1)
    # Default (non-persistent) workers: they exit after each epoch, so their CPU time is
    # counted by RUSAGE_CHILDREN; start-up is part of DataLoader's real cost.
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers)
    for _ in loader:
        pass
    start, cpu, count = time.perf_counter(), _cpu_seconds(), 0
    for _ in range(epochs):
        for images, _labels in loader:
            count += int(images.shape[0])
    return count / (time.perf_counter() - start), count / (_cpu_seconds() - cpu), impl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="images to generate")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after a warm-up")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        make_images(root, args.n)
        train, train_cpu = time_tf(root, True, args.batch, args.epochs)
        evaluation, eval_cpu = time_tf(root, False, args.batch, args.epochs)
        result = {
            "images": args.n,
            "image_size": "500x375 JPEG q90",
            "cpus": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "batch": args.batch,
            "train_img_per_s": round(train, 1),
            "eval_img_per_s": round(evaluation, 1),
            # images per CPU-second: steadier than wall time on a shared machine
            "train_img_per_cpu_s": round(train_cpu, 1),
            "eval_img_per_cpu_s": round(eval_cpu, 1),
        }
        if not args.no_torch:
            try:
                rate, rate_cpu, impl = time_torch(root, args.batch, args.epochs, args.workers)
            except ImportError:
                result["torch"] = "not installed"
            else:
                result["torch_train_img_per_s"] = round(rate, 1)
                result["torch_train_img_per_cpu_s"] = round(rate_cpu, 1)
                result["torch_impl"] = impl
                result["torch_workers"] = args.workers
                result["ratio_train_vs_torch"] = round(train / rate, 2)
                result["ratio_train_vs_torch_per_cpu"] = round(train_cpu / rate_cpu, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
