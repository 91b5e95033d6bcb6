"""LocalResponseNormalization under Keras' JAX backend: correct, and how fast, on any device.

Prints one JSON object. Made for machines without TensorFlow (e.g. a GPU machine with
JAX): the oracle is the paper's formula evaluated here in float64 numpy,
``b_i = a_i / (k + alpha * sum_{|j-i|<=r} a_j**2) ** beta``, and its gradient taken by
central differences of that formula along a random direction (so the layer's hand-written
gradient is checked against something it does not share code with). Then it times
forward + backward (``jax.jit`` of the gradient of ``sum(layer(x) * w)``) on conv1's
output, 64x55x55x96, in float32 and bfloat16, on JAX's default device.

Usage::

    KERAS_BACKEND=jax python benchmarks/lrn_jax.py            # on a GPU: the card
    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python benchmarks/lrn_jax.py --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

R, K, ALPHA, BETA = 2, 2.0, 1e-4, 0.75  # the paper's constants (alexkit's defaults)


def reference(x: np.ndarray) -> np.ndarray:
    """The paper's LRN in float64, channels last, window clipped at the ends."""
    x = x.astype(np.float64)
    sq = np.square(x)
    c = x.shape[-1]
    window = np.zeros_like(sq)
    for i in range(c):
        window[..., i] = sq[..., max(0, i - R) : i + R + 1].sum(-1)
    return x / (K + ALPHA * window) ** BETA


def check(seed: int = 0) -> dict:
    """Errors of the layer's value and gradient against the float64 formula.

    ``value_max_rel_err_*``: max |layer - formula| / (|formula| + 1e-3). On NVIDIA GPUs
    JAX computes float32 matmuls in TF32 by default, and the layer's window sum is a small
    banded matmul, so the float32 rows are also given under
    ``jax.default_matmul_precision("highest")`` (``*_fp32_highest``).
    """
    import jax
    import jax.numpy as jnp

    from alexkit.layers import LocalResponseNormalization

    layer = LocalResponseNormalization()
    rng = np.random.default_rng(seed)
    # conv1-like activations: ReLU outputs up to ~100, where the denominator matters.
    x = np.maximum(rng.normal(0, 40, size=(2, 7, 7, 96)), 0).astype(np.float32)
    w = rng.normal(size=x.shape).astype(np.float32)

    def loss(xx):
        return jnp.sum(layer(xx) * w)

    out = {}
    ref = reference(x)
    # Directional derivative of the float64 formula, to compare with <grad, v>.
    v = rng.normal(size=x.shape)
    eps = 1e-3
    num = (np.sum(reference(x + eps * v) * w) - np.sum(reference(x - eps * v) * w)) / (2 * eps)
    for suffix, precision in (("fp32", None), ("fp32_highest", "highest")):
        with jax.default_matmul_precision(precision):
            value = np.asarray(layer(jnp.asarray(x)), dtype=np.float64)
            grad = np.asarray(jax.grad(loss)(jnp.asarray(x)), dtype=np.float64)
        out[f"value_max_rel_err_{suffix}"] = float(
            np.max(np.abs(value - ref) / (np.abs(ref) + 1e-3))
        )
        ana = float(np.sum(grad * v))
        out[f"grad_directional_rel_err_{suffix}"] = abs(ana - num) / max(abs(num), 1e-12)
    xb = jnp.asarray(x, dtype=jnp.bfloat16)
    vb = np.asarray(layer(xb).astype(jnp.float32), dtype=np.float64)
    out["value_max_rel_err_bf16"] = float(np.max(np.abs(vb - ref) / (np.abs(ref) + 1e-3)))
    gb = np.asarray(jax.grad(lambda z: jnp.sum(layer(z).astype(jnp.float32) * w))(xb))
    gb = gb.astype(np.float64)
    out["grad_directional_rel_err_bf16"] = abs(float(np.sum(gb * v)) - num) / max(abs(num), 1e-12)
    out["ok"] = bool(
        out["value_max_rel_err_fp32_highest"] < 1e-5
        and out["grad_directional_rel_err_fp32_highest"] < 1e-4
        and out["value_max_rel_err_fp32"] < 2e-3
        and out["value_max_rel_err_bf16"] < 2e-2
        and out["grad_directional_rel_err_bf16"] < 2e-2
    )
    return out


def time_fwd_bwd(shape: tuple[int, ...], dtype: str, reps: int) -> dict:
    """Min/median ms of one jitted forward + backward of the layer on ``shape``."""
    import jax
    import jax.numpy as jnp

    from alexkit.layers import LocalResponseNormalization

    layer = LocalResponseNormalization()
    key = jax.random.PRNGKey(0)
    x = jnp.maximum(jax.random.normal(key, shape) * 40, 0).astype(dtype)
    w = jax.random.normal(jax.random.PRNGKey(1), shape).astype(dtype)
    step = jax.jit(jax.grad(lambda z: jnp.sum((layer(z) * w).astype(jnp.float32))))
    step(x).block_until_ready()  # compile
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step(x).block_until_ready()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"min_ms": round(min(times), 3), "median_ms": round(statistics.median(times), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64x55x55x96")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args(argv)
    import jax
    import keras

    shape = tuple(int(s) for s in args.shape.split("x"))
    result = {
        "benchmark": "lrn_jax",
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "check": check(),
        "shape": list(shape),
        "fwd_bwd": {d: time_fwd_bwd(shape, d, args.reps) for d in ("float32", "bfloat16")},
    }
    print(json.dumps(result, indent=1))
    return 0 if result["check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
