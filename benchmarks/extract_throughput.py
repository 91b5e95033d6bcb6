"""End-to-end feature extraction throughput: JPEG folder → fc7 features → CSV.

Prints one JSON object: img/s for ``alexkit.extract.extract_features`` (both variants)
and, when torch is importable, for the same job in PyTorch (AlexNet in torchvision's
layout defined with ``torch.nn`` here — torchvision itself is not a dependency — a PIL
``Dataset`` and ``DataLoader(num_workers=2)``), with the ratio ours / torch. With
``--precisions float32,bfloat16`` (the default) each side also runs in bfloat16: alexkit
under Keras' ``mixed_bfloat16`` policy, PyTorch under ``torch.autocast("cpu",
torch.bfloat16)``; ratios compare the same precision. The JSON names the CPU and whether
it has AVX512-BF16 and AMX, on which bfloat16's pay-off depends.

Each measurement runs in its own subprocess (TensorFlow and PyTorch never share one),
after a warm-up pass over one batch, so one-time costs (kernel and thread-pool set-up,
tracing the extractor, which alexkit caches per model) are excluded on both sides.
The timed alexkit call still builds its tf.data pipeline, as every ``extract`` does
(~90 ms here): ~3 % of a 512-image run. A one-off ``alexkit extract`` also traces its
extractor once (~70 ms more). Weights are random: throughput does not depend on their values. Both
sides write CSV with the same formatter (alexkit's CSVWriter) so the comparison is
about decoding + model + pipeline.

Usage::

    python benchmarks/extract_throughput.py --n 512 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TORCH_NOTE = (
    "torchvision is not installed (and must not replace torch): the torch baseline defines "
    "torchvision's AlexNet layout with torch.nn in this script and reads images with a PIL "
    "Dataset + DataLoader(num_workers=2); weights random"
)


def make_jpegs(root: Path, n: int, size: tuple[int, int] = (320, 240)) -> None:
    """``n`` photo-like JPEGs in two class folders (smooth gradients + noise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.stack(
            [(xx * (i + 1)) % 256, (yy * 3 + i * 7) % 256, ((xx + yy) * 2) % 256], axis=-1
        )
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img_{i:05d}.jpg", quality=90)


def run_alexkit(
    data: Path, variant: str, batch_size: int, warmup: Path, precision: str = "float32"
) -> dict:
    import keras

    if precision == "bfloat16":
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    from alexkit.data import load_spec
    from alexkit.extract import extract_features
    from alexkit.model import build_alexnet

    model = build_alexnet(variant, num_classes=1000)
    with tempfile.TemporaryDirectory() as tmp:
        extract_features(model, load_spec(str(warmup)), Path(tmp) / "w.csv", batch_size=batch_size)
        start = time.perf_counter()
        result = extract_features(
            model, load_spec(str(data)), Path(tmp) / "fc7.csv", layer="fc7", batch_size=batch_size
        )
        seconds = time.perf_counter() - start
    return {"images": result.rows, "seconds": round(seconds, 3), "img_per_s": result.rows / seconds}


def run_torch(data: Path, batch_size: int, warmup: Path, precision: str = "float32") -> dict:
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    class AlexNet(nn.Module):  # torchvision.models.alexnet, verbatim layout
        def __init__(self, num_classes: int = 1000):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            )  # fmt: skip
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
                nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes),
            )  # fmt: skip

        def fc7(self, x):
            x = torch.flatten(self.avgpool(self.features(x)), 1)
            return self.classifier[:6](x)

    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)

    class Folder(Dataset):
        def __init__(self, root: Path):
            self.files = sorted(str(p) for p in root.rglob("*.jpg"))

        def __len__(self) -> int:
            return len(self.files)

        def __getitem__(self, i: int):
            img = Image.open(self.files[i]).convert("RGB")
            w, h = img.size  # Resize(256) + CenterCrop(224), as torchvision's transforms
            s = 256 / min(w, h)
            img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
            w, h = img.size
            left, top = (w - 224) // 2, (h - 224) // 2
            img = img.crop((left, top, left + 224, top + 224))
            x = (np.asarray(img, np.float32) / 255.0 - mean) / std
            return torch.from_numpy(x.transpose(2, 0, 1).copy()), self.files[i]

    from alexkit.extract import CSVWriter

    model = AlexNet().eval()
    bf16 = precision == "bfloat16"

    def job(root: Path, out: Path) -> int:
        loader = DataLoader(Folder(root), batch_size=batch_size, num_workers=2)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
        with CSVWriter(out) as writer, torch.inference_mode(), autocast:
            for x, paths in loader:
                feats = model.fc7(x).float().numpy()
                writer.write(list(paths), [Path(p).parent.name for p in paths], feats)
        return writer.rows

    with tempfile.TemporaryDirectory() as tmp:
        job(warmup, Path(tmp) / "w.csv")
        start = time.perf_counter()
        rows = job(data, Path(tmp) / "fc7.csv")
        seconds = time.perf_counter() - start
    return {
        "images": rows,
        "seconds": round(seconds, 3),
        "img_per_s": rows / seconds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _child(args: argparse.Namespace) -> None:
    data, warmup = Path(args.data), Path(args.warmup)
    name, _, precision = args.child.partition(":")
    precision = precision or "float32"
    if name == "torch":
        result = run_torch(data, args.batch_size, warmup, precision)
    else:
        result = run_alexkit(data, name, args.batch_size, warmup, precision)
    print(json.dumps(result))


def _spawn(args: argparse.Namespace, child: str, data: Path, warmup: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", child, "--data", str(data)]
    cmd += ["--warmup", str(warmup), "--batch-size", str(args.batch_size)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="images in the timed run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", default="original,torchvision")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    try:
        import importlib.util

        has_torch = importlib.util.find_spec("torch") is not None
    except ImportError:
        has_torch = False
    with tempfile.TemporaryDirectory() as tmp:
        data, warmup = Path(tmp) / "data", Path(tmp) / "warmup"
        make_jpegs(data, args.n)
        # A full batch, so the timed run reuses the traced batch shape (a partial
        # warm-up batch left a retrace of the 61M-parameter model inside the timing).
        make_jpegs(warmup, args.batch_size)
        precisions = args.precisions.split(",")
        # Keys: "original" (float32, as before) and "original:bfloat16".
        variants = args.variants.split(",")
        names = [v if p == "float32" else f"{v}:{p}" for p in precisions for v in variants]
        ours = {name: _spawn(args, name, data, warmup) for name in names}
        torch_results = {}
        if has_torch:
            for p in precisions:
                name = "torch" if p == "float32" else f"torch:{p}"
                torch_results[p] = _spawn(args, name, data, warmup)
    from alexkit.precision import read_cpu_info

    torch_result = torch_results.get("float32")
    report = {
        "task": "JPEG folder (320x240) -> fc7 features -> CSV, end to end",
        "n": args.n,
        "batch_size": args.batch_size,
        "cpus": os.cpu_count(),
        "cpu": read_cpu_info().as_dict(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "alexkit": ours,
        "torch": torch_result,
        "torch_bf16": torch_results.get("bfloat16"),
        "torch_note": TORCH_NOTE if has_torch else "torch not importable: no baseline",
    }
    ratios = {}
    for name, r in ours.items():
        ref = torch_results.get(name.partition(":")[2] or "float32")
        if ref and "img_per_s" in ref and "img_per_s" in r:
            ratios[name] = round(r["img_per_s"] / ref["img_per_s"], 3)
    if ratios:
        report["ratio_vs_torch"] = ratios  # same precision on both sides
    report["noise"] = "one run; other processes share the CPUs (see load_average_1m)"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
