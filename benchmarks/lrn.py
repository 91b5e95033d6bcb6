"""Forward + backward time of LocalResponseNormalization: the layer today vs the old one.

Prints one JSON object. For each shape (conv1's output 64×55×55×96 and conv2's
64×27×27×256 by default) and each dtype (float32; bfloat16 as under ``mixed_bfloat16``)
it times one compiled TensorFlow graph (``tf.function``, as Keras ``fit`` runs without
XLA) computing the layer's output and the gradient of ``sum(output * w)`` with respect to
the input, reduced to a scalar so that no 74 MB tensor is copied out of the graph.

``old`` is the formulation this project used before (kept here verbatim for comparison):
the window sum as one dense C×C banded matmul, float32 throughout (casts in and out under
bfloat16), gradient by automatic differentiation. ``new`` is
``alexkit.layers.LocalResponseNormalization``. Rows report the minimum and median of
``--reps`` timed runs after one warm-up, old and new alternating; on a shared machine the
minimum is the least disturbed, and ``speedup`` (old / new, same run) is the number to
compare.

Usage::

    python benchmarks/lrn.py                     # both shapes, float32 and bfloat16
    python benchmarks/lrn.py --shapes 64x55x55x96 --dtypes float32 --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    for i in range(reps):
        for name in list(steps)[:: 1 if i % 2 == 0 else -1]:
            start = time.perf_counter()
            steps[name](x).numpy()
            times[name].append(time.perf_counter() - start)
    return {
        name: {
            "ms_min": round(min(t) * 1e3, 1),
            "ms_median": round(statistics.median(t) * 1e3, 1),
        }
        for name, t in times.items()
    }


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
    args = parser.parse_args(argv)

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
            for xla in xla_modes:
                timed = time_fwd_bwd({"old": old_lrn, "new": layer}, shape, dtype, args.reps, xla)
                old, new = timed["old"], timed["new"]
                rows.append(
                    {
                        "shape": "x".join(map(str, shape)),
                        "dtype": dtype,
                        "xla": xla,
                        "old": old,
                        "new": new,
                        "speedup_min": round(old["ms_min"] / new["ms_min"], 2),
                        "speedup_median": round(old["ms_median"] / new["ms_median"], 2),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {
        "benchmark": "lrn_forward_backward",
        "cpu": read_cpu_info().as_dict(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "goal_ms": 50,
        "rows": rows,
        "note": "ms of one forward + backward; old = dense banded matmul + autodiff in fp32",
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
