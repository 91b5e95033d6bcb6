"""Training throughput of alexkit's AlexNet (img/s), with PyTorch as the yardstick.

Prints one JSON object. For every requested (variant, precision, XLA) configuration it
times full training steps (forward + backward + ``PaperSGD`` update, softmax
cross-entropy, 1000 classes) on synthetic batches with ``model.train_on_batch``, after
``--warmup`` untimed steps (tracing, XLA compilation, thread-pool start-up). When torch
is importable it times the same training step of torchvision's AlexNet defined with
``torch.nn`` here (torchvision is not a dependency and must not be installed: it could
replace torch), SGD momentum 0.9 / weight decay 5e-4, same batch, ``torch.set_num_threads``
= the CPU count, in float32 and in bfloat16 autocast (``torch.autocast("cpu",
torch.bfloat16)`` around forward and loss, PyTorch's recommended mixed precision on CPUs),
and reports ``ratio_vs_torch`` = ours / torch at the same precision (bfloat16 rows also
``ratio_vs_torch_fp32``). The JSON names the CPU and whether it has AVX512-BF16 and AMX:
bfloat16 speed-ups depend on them (AMX multiplies bf16 ~4x faster than AVX512-BF16).

``fraction_of_peak`` = achieved FLOP/s / ``--peak-gflops`` (default 210: the 2-core
fp32 matmul peak of the development machine; a 4096² torch fp32 matmul reaches 207
GFLOP/s there, bf16 832), counting training as 3× the forward multiply-adds (2 FLOPs
each) of direct convolution; forward MACs are computed from the layer shapes (≈0.72 G
for ``original``, ≈0.71 G for ``torchvision``). It is an *effective* rate: Winograd
3×3 convolutions (oneDNN) need fewer multiplies, so values near or above 1.0 are
possible; bfloat16 rows use the same fp32 peak. On a GPU pass the card's peak.

Every configuration runs in its own subprocess: the mixed-precision policy is global,
and TensorFlow and PyTorch must not share a process. On a shared machine the numbers
are noisy; repeat and compare medians.

Usage::

    python benchmarks/train_throughput.py                       # everything (minutes)
    python benchmarks/train_throughput.py --variant original --precision float32 \\
        --xla off --no-torch --steps 2                          # one quick row
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# Forward multiply-accumulates per image, from the layer table (out_h·out_w·out_c·k²·in_c/g).
LAYERS = {
    "original": [  # (out_hw, out_c, k, in_c_per_group) ; dense as (1, out, 1, in)
        (55, 96, 11, 3),
        (27, 256, 5, 48),
        (13, 384, 3, 256),
        (13, 384, 3, 192),
        (13, 256, 3, 192),
        (1, 4096, 1, 9216),
        (1, 4096, 1, 4096),
        (1, 1000, 1, 4096),
    ],
    "torchvision": [
        (55, 64, 11, 3),
        (27, 192, 5, 64),
        (13, 384, 3, 192),
        (13, 256, 3, 384),
        (13, 256, 3, 256),
        (1, 4096, 1, 9216),
        (1, 4096, 1, 4096),
        (1, 1000, 1, 4096),
    ],
}


def forward_macs(variant: str) -> int:
    """Forward multiply-adds per image of one AlexNet variant (1000 classes)."""
    return sum(hw * hw * c * k * k * cin for hw, c, k, cin in LAYERS[variant])


def _timed_steps(step, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def keras_setup(cfg: dict) -> tuple:
    """(compiled model, x, y) of one Keras configuration: ``variant``, ``precision``,
    ``batch_size`` and ``xla`` (also what benchmarks/profile_step.py profiles)."""
    import keras
    import numpy as np

    from alexkit.model import build_alexnet
    from alexkit.optim import PaperSGD
    from alexkit.variants import VARIANTS

    if cfg["precision"] == "bfloat16":
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    size = VARIANTS[cfg["variant"]]["image_size"]
    batch = cfg["batch_size"]
    model = build_alexnet(cfg["variant"], num_classes=1000, seed=0)
    model.compile(
        optimizer=PaperSGD(learning_rate=0.01),
        loss="sparse_categorical_crossentropy",
        jit_compile=cfg.get("xla", "auto"),
    )
    rng = np.random.default_rng(0)
    # Backend tensors made once: on a GPU, no host-to-device copy inside the timed step.
    x = keras.ops.convert_to_tensor(
        rng.uniform(0, 255, size=(batch, size, size, 3)).astype("float32")
    )
    y = keras.ops.convert_to_tensor(rng.integers(0, 1000, size=(batch,)).astype("int32"))
    return model, x, y


def run_keras(cfg: dict) -> dict:
    """One Keras configuration (runs in a child process)."""
    import numpy as np

    model, x, y = keras_setup(cfg)
    losses = []

    def step() -> None:
        # train_on_batch returns a Python float: the step is finished when it returns.
        losses.append(float(np.asarray(model.train_on_batch(x, y)).reshape(-1)[0]))

    times = _timed_steps(step, cfg["warmup"], cfg["steps"])
    return {
        "step_s": times,
        "loss_finite": bool(np.isfinite(losses).all()),
        "device": _keras_device(),
    }


def _keras_device() -> str:
    backend = keras_backend()
    if backend == "jax":
        import jax

        return str(jax.devices()[0])
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else "cpu"
    return backend


def keras_backend() -> str:
    import keras

    return keras.backend.backend()


def run_torch(cfg: dict) -> dict:
    """torchvision's AlexNet (defined with torch.nn) training step (child process)."""
    import torch
    from torch import nn

    threads = cfg["threads"]
    torch.set_num_threads(threads)
    device = cfg.get("torch_device", "cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = cfg["precision"] == "bfloat16"
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d((6, 6)),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(9216, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, 1000),
    )
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    batch = cfg["batch_size"]
    x = torch.rand(batch, 3, 224, 224, device=device) * 255
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    times = _timed_steps(step, cfg["warmup"], cfg["steps"])
    return {"step_s": times, "torch": torch.__version__, "threads": threads, "device": device}


def _child(cfg: dict) -> None:
    result = run_torch(cfg) if cfg["kind"] == "torch" else run_keras(cfg)
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(cfg: dict, timeout: float) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail)}


def _pool(results: list[dict]) -> dict:
    """Merge the step times of several runs of one configuration."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[0]
    pooled = {k: v for k, v in ok[0].items() if k != "step_s"}
    pooled["step_s"] = [t for r in ok for t in r["step_s"]]
    pooled["runs"] = len(ok)
    return pooled


def _summarise(cfg: dict, result: dict, peak_gflops: float) -> dict:
    row = {k: cfg[k] for k in ("kind", "variant", "precision", "xla") if k in cfg}
    row.update(batch_size=cfg["batch_size"])
    if "error" in result:
        row["error"] = result["error"]
        return row
    median = statistics.median(result["step_s"])
    macs = forward_macs(cfg["variant"])
    flops_per_img = 3 * 2 * macs
    img_s = cfg["batch_size"] / median
    row.update(
        img_per_s=round(img_s, 2),
        # Fastest step: the least disturbed by other processes on a shared machine.
        img_per_s_best=round(cfg["batch_size"] / min(result["step_s"]), 2),
        step_s_median=round(median, 3),
        step_s=[round(t, 3) for t in result["step_s"]],
        fraction_of_peak=round(img_s * flops_per_img / (peak_gflops * 1e9), 4),
    )
    row.update({k: v for k, v in result.items() if k != "step_s"})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["original", "torchvision", "both"], default="both")
    parser.add_argument("--precision", choices=["float32", "bfloat16", "both"], default="both")
    parser.add_argument("--xla", choices=["off", "on", "both"], default="both")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of all rows (fresh processes), pooled"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--torch-device", choices=["cpu", "cuda", "auto"], default="cpu", help="torch baseline"
    )
    parser.add_argument(
        "--peak-gflops",
        type=float,
        default=210.0,
        help="peak for fraction_of_peak (default: 2-core AVX-512 fp32 of the dev machine)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per configuration, s")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return 0

    def expand(value: str, options: list[str]) -> list[str]:
        return options if value == "both" else [value]

    common = {"batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup}
    rows = []
    precisions = expand(args.precision, ["float32", "bfloat16"])
    torch_cfgs: dict[str, dict] = {}
    if not args.no_torch:
        try:
            import torch  # noqa: F401

            for precision in precisions:
                cfg = dict(common, kind="torch", variant="torchvision", precision=precision)
                cfg.update(xla=False, threads=args.threads, torch_device=args.torch_device)
                torch_cfgs[precision] = cfg
        except ImportError:
            torch_cfgs = {}
    torch_results: dict[str, list[dict]] = {p: [] for p in torch_cfgs}
    keras_cfgs = []
    for variant in expand(args.variant, ["original", "torchvision"]):
        for precision in precisions:
            for xla in expand(args.xla, ["off", "on"]):
                cfg = dict(common, kind="keras", variant=variant, precision=precision)
                cfg["xla"] = xla == "on"
                keras_cfgs.append(cfg)
    # On a shared machine the load drifts: the baseline runs before every round of
    # Keras rows and once after the last, and each row pools its steps over rounds, so
    # a ratio does not hinge on when one run happened to land.
    keras_results: list[list[dict]] = [[] for _ in keras_cfgs]

    def run_torch_round() -> None:
        for precision, cfg in torch_cfgs.items():
            torch_results[precision].append(_run_child(cfg, args.timeout))

    for _ in range(args.repeats):
        run_torch_round()
        for i, cfg in enumerate(keras_cfgs):
            keras_results[i].append(_run_child(cfg, args.timeout))
    torch_rows: dict[str, dict] = {}
    if torch_cfgs:
        run_torch_round()
        for precision, cfg in torch_cfgs.items():
            row = _summarise(cfg, _pool(torch_results[precision]), args.peak_gflops)
            mode = "bfloat16 autocast" if precision == "bfloat16" else "fp32 (no TF32)"
            row["note"] = (
                f"torchvision layout defined with torch.nn; eager {mode}; steps pooled "
                f"from {len(torch_results[precision])} runs around the Keras rows"
            )
            torch_rows[precision] = row

    def ratio(row: dict, ref: dict | None, key: str) -> float | None:
        if not ref or key not in row or key not in ref:
            return None
        return round(row[key] / ref[key], 3)

    for cfg, results in zip(keras_cfgs, keras_results, strict=True):
        row = _summarise(cfg, _pool(results), args.peak_gflops)
        same = torch_rows.get(cfg["precision"])
        if ratio(row, same, "img_per_s") is not None:
            row["ratio_vs_torch"] = ratio(row, same, "img_per_s")
            row["ratio_vs_torch_best"] = ratio(row, same, "img_per_s_best")
        if cfg["precision"] != "float32" and ratio(row, torch_rows.get("float32"), "img_per_s"):
            row["ratio_vs_torch_fp32"] = ratio(row, torch_rows["float32"], "img_per_s")
        rows.append(row)
    from importlib.metadata import version

    from alexkit.precision import read_cpu_info

    report = {
        "benchmark": "train_throughput",
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "keras": version("keras"),
            "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
            "cpu": read_cpu_info().as_dict(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "forward_gmacs": {v: round(forward_macs(v) / 1e9, 4) for v in LAYERS},
        "peak_gflops": args.peak_gflops,
        "goals": {
            "original_vs_torch": 1.0,
            "torchvision_vs_torch": 1.2,
            "original_bf16_vs_torch_bf16": 1.3,
        },
        "torch": torch_rows.get("float32"),
        "torch_bf16": torch_rows.get("bfloat16"),
        "keras": rows,
        "note": "shared machine: timings are noisy; median of the timed steps per row",
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
