"""Forward + backward time of LocalResponseNormalization: the layer today vs the old one.

Prints one JSON object. For each shape (conv1's output 64×55×55×96 and conv2's
64×27×27×256 by default) and each dtype (float32; bfloat16 as under ``mixed_bfloat16``)
it times one compiled TensorFlow graph (``tf.function``, as Keras ``fit`` runs without
XLA) computing the layer's output and the gradient of ``sum(output * w)`` with respect to
the input, reduced to a scalar so that no 74 MB tensor is copied out of the graph.

Columns:

- ``old``: the formulation this project used first (kept here verbatim): the window sum
  as one dense C×C banded matmul, float32 throughout (casts in and out under bfloat16),
  gradient by automatic differentiation.
- ``new``: ``alexkit.layers.LocalResponseNormalization``.
- ``harness``: the identity in the same graph: the cost of the loss, its gradient and
  the reductions around the layer (subtract it for the layer's own time).
- ``torch``: ``torch.nn.functional.local_response_norm`` (same constants, alpha × n)
  forward + backward in a child process, channels-first as PyTorch lays out images. It
  has no bfloat16 CPU kernel (``avg_pool3d``); the bfloat16 row times it under
  ``torch.autocast("cpu", torch.bfloat16)``, which leaves it in float32.

Rows report the minimum and median of ``--reps`` timed runs after one warm-up, the
columns alternating; on a shared machine the minimum is the least disturbed, and
``speedup`` (old / new, same run) is the number to compare. ``cpu_ms_min`` is the
process's CPU time (all threads) of the fastest run.

Usage::

    python benchmarks/lrn.py                     # both shapes, float32 and bfloat16
    python benchmarks/lrn.py --shapes 64x55x55x96 --dtypes float32 --reps 5 --no-torch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402


def old_lrn(x, radius: int = 2, bias: float = 2.0, alpha: float = 1e-4):
    """The previous layer's computation (beta = 0.75): dense banded matmul, fp32, autodiff."""
    from keras import ops

    channels = x.shape[-1]
    idx = np.arange(channels)
    band = ((np.abs(idx[None, :] - idx[:, None]) <= radius) * alpha).astype("float32")
    xf = ops.cast(x, "float32")
    scale = ops.matmul(ops.square(xf), band) + bias
    root = ops.rsqrt(scale)
    return ops.cast(xf * (root * ops.sqrt(root)), x.dtype)


def time_fwd_bwd(
    fns: dict, shape: tuple[int, ...], dtype: str, reps: int, xla: bool = False
) -> dict[str, dict]:
    """Min/median ms of forward + backward of each of ``fns`` on one random NHWC tensor.

    The timed runs alternate between the functions (old, new, new, old, ...), so a change
    in the machine's load hits all of them alike.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    # ReLU-like activations of conv1's scale: the normalisation really acts.
    x = tf.cast(tf.constant(rng.uniform(0, 60, shape).astype("float32")), dtype)
    w = tf.cast(tf.constant(rng.standard_normal(shape).astype("float32")), dtype)

    def make_step(fn):
        @tf.function(jit_compile=xla)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.cast(fn(x) * w, "float32"))
            return tf.reduce_sum(tf.cast(tape.gradient(loss, x), "float32"))

        step(x).numpy()
        return step

    steps = {name: make_step(fn) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(reps):
        for name in list(steps)[:: 1 if i % 2 == 0 else -1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            steps[name](x).numpy()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {
        name: {
            "ms_min": round(min(t) * 1e3, 1),
            "ms_median": round(statistics.median(t) * 1e3, 1),
            # CPU time of this process (all its threads): less hostage to other
            # processes than wall time on a shared machine.
            "cpu_ms_min": round(min(cpu[name]) * 1e3, 1),
        }
        for name, t in times.items()
    }


def time_torch(shape: tuple[int, ...], dtype: str, reps: int) -> dict:
    """PyTorch's LRN forward + backward on the same NHWC shape (run in a child process)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    n, h, w, c = shape
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(n, c, h, w, generator=gen) * 60).requires_grad_()
    weights = torch.randn(n, c, h, w, generator=gen)
    bf16 = dtype == "bfloat16"

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            # PyTorch divides alpha by the window size n = 5 (Caffe's convention).
            y = torch.nn.functional.local_response_norm(x, 5, alpha=5e-4, beta=0.75, k=2.0)
            loss = (y.float() * weights).sum()
        (grad,) = torch.autograd.grad(loss, x)
        return float(grad.sum())

    step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "ms_min": round(min(times) * 1e3, 1),
        "ms_median": round(statistics.median(times) * 1e3, 1),
        "torch": torch.__version__,
        "mode": "autocast bfloat16 (LRN runs in float32)" if bf16 else "float32",
    }


def _torch_row(shape: tuple[int, ...], dtype: str, reps: int) -> dict:
    try:
        import torch  # noqa: F401
    except ImportError:
        return {"error": "torch is not installed"}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--torch-child", json.dumps([shape, dtype])]
        + ["--reps", str(reps)],
        capture_output=True,
        text=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"error": " | ".join(proc.stderr.strip().splitlines()[-2:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="64x55x55x96,64x27x27x256")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--reps", type=int, default=7, help="timed runs per row")
    parser.add_argument(
        "--xla",
        choices=["off", "on", "both"],
        default="off",
        help="also/only time under XLA (jit_compile=True), which fuses the elementwise ops",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    parser.add_argument("--torch-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_child:
        shape, dtype = json.loads(args.torch_child)
        print("RESULT " + json.dumps(time_torch(tuple(shape), dtype, args.reps)), flush=True)
        return 0

    import keras
    import tensorflow as tf

    from alexkit.layers import LocalResponseNormalization
    from alexkit.precision import read_cpu_info

    rows = []
    xla_modes = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    for text in args.shapes.split(","):
        shape = tuple(int(v) for v in text.lower().split("x"))
        for dtype in args.dtypes.split(","):
            # The policy a model under mixed_bfloat16 gives the layer (else Keras casts the
            # bfloat16 input up to float32 before the layer sees it).
            policy = "mixed_bfloat16" if dtype == "bfloat16" else "float32"
            layer = LocalResponseNormalization(dtype=policy)
            layer.build(shape)
            fns = {
                "harness": lambda x: x,
                "old": old_lrn,
                "new": layer,
            }
            torch_row = None if args.no_torch else _torch_row(shape, dtype, args.reps)
            for xla in xla_modes:
                timed = time_fwd_bwd(fns, shape, dtype, args.reps, xla)
                old, new = timed["old"], timed["new"]
                row = {"shape": "x".join(map(str, shape)), "dtype": dtype, "xla": xla}
                row.update(timed)
                row.update(
                    speedup_min=round(old["ms_min"] / new["ms_min"], 2),
                    speedup_median=round(old["ms_median"] / new["ms_median"], 2),
                    new_minus_harness_ms=round(new["ms_min"] - timed["harness"]["ms_min"], 1),
                )
                if torch_row is not None:
                    row["torch"] = torch_row
                    if "ms_min" in torch_row:
                        row["speedup_vs_torch_min"] = round(torch_row["ms_min"] / new["ms_min"], 2)
                rows.append(row)
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {
        "benchmark": "lrn_forward_backward",
        "cpu": read_cpu_info().as_dict(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "goal_ms": 50,
        "rows": rows,
        "note": (
            "ms of one forward + backward; old = dense banded matmul + autodiff in fp32; "
            "harness = identity (loss and reductions only); shared machine: compare "
            "ratios within a row"
        ),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
