#!/usr/bin/env bash
# Training throughput of alexkit's AlexNet on a GPU machine, Keras on the JAX backend.
#
# Run on a lent NVIDIA H200 (JAX 0.11.2, PyTorch 2.11 cu130, no TensorFlow; host CPU an
# Intel Xeon with AMX) on 2026-11-29 with STEPS=20 WARMUP=3, batch 128, img/s:
#   original fp32 12,156  bf16 14,479 | torchvision fp32 17,110  bf16 24,524
#   PyTorch torchvision AlexNet (eager) fp32 14,887  bf16 autocast 20,217
# (JAX's fp32 on NVIDIA uses TF32 matmuls by default; PyTorch's eager fp32 does not.)
#
# Two steps:
#
#   1. On a machine WITH network (PyPI), from the repository root:
#        benchmarks/gpu_train.sh fetch
#      downloads Keras and its small dependencies as wheels into benchmarks/wheels/
#      (newest release per CPython 3.10-3.13, manylinux x86_64).
#   2. On the GPU machine, from the repository root (wheels/ travels with the tree):
#        benchmarks/gpu_train.sh run [extra train_throughput.py args]
#      installs whichever of Keras' requirements the system Python lacks, offline
#      (pip --no-index --find-links wheels/ --target $SITE), then prints JSON img/s for
#      both variants in float32 and mixed bfloat16 (batch 128, jax.jit) and torch.nn's
#      torchvision AlexNet on CUDA (fp32) as the yardstick.
#
# Environment: WHEELS (wheel folder, default benchmarks/wheels), SITE (install target,
# default /tmp/alexkit-gpu-site), PYTHON (default python3), STEPS (timed steps,
# default 30), WARMUP (default 5), BATCH (default 128), PEAK_GFLOPS (for
# fraction_of_peak; default 989000 = H100 SXM dense bf16; 1979000 is with sparsity).
# Note: JAX's default fp32 matmul precision on NVIDIA GPUs uses TF32; PyTorch's default
# matmul does not (its cuDNN convolutions do). Read the fp32 rows with that in mind.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
WHEELS="${WHEELS:-$HERE/wheels}"
SITE="${SITE:-/tmp/alexkit-gpu-site}"
PYTHON="${PYTHON:-python3}"
DISTS="keras namex rich markdown-it-py mdurl pygments absl-py packaging optree ml-dtypes h5py"

fetch() {
    mkdir -p "$WHEELS"
    # One look-up per Python version: Keras 3.13+ needs Python >= 3.11, so 3.10 gets an
    # older Keras; the binary wheels (optree, ml-dtypes, h5py) are per version.
    for py in 3.10 3.11 3.12 3.13; do
        "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "$py" \
            --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux_2_28_x86_64 -d "$WHEELS" $DISTS
    done
    ls -la "$WHEELS"
}

missing_dists() {
    # Prints the distributions Keras needs that this Python cannot import.
    "$PYTHON" -c '
import importlib, sys
print("python", sys.version.split()[0], file=sys.stderr)
for mod in ("jax", "torch", "numpy"):
    try:
        print(mod, importlib.import_module(mod).__version__, file=sys.stderr)
    except Exception as err:
        print(mod, "MISSING:", err, file=sys.stderr)
needed = {"keras": "keras", "namex": "namex", "rich": "rich", "markdown_it": "markdown-it-py",
          "mdurl": "mdurl", "pygments": "pygments", "absl": "absl-py",
          "packaging": "packaging", "optree": "optree", "ml_dtypes": "ml-dtypes",
          "h5py": "h5py"}
missing = []
for module, dist in needed.items():
    try:
        importlib.import_module(module)
    except Exception:
        missing.append(dist)
print(" ".join(missing))
'
}

run() {
    if [ ! -d "$WHEELS" ]; then
        echo "no wheels in $WHEELS: run 'benchmarks/gpu_train.sh fetch' on a machine with network" >&2
        exit 2
    fi
    export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    missing="$(missing_dists)"
    if [ -n "$missing" ]; then
        echo "installing offline into $SITE: $missing" >&2
        # --no-index: never touch the network; --target: leave the system Python alone.
        "$PYTHON" -m pip install --no-index --find-links "$WHEELS" --no-deps \
            --target "$SITE" $missing >&2
    fi
    export KERAS_BACKEND=jax
    # Do not let JAX grab 75% of the card up front: the torch child runs afterwards.
    export XLA_PYTHON_CLIENT_PREALLOCATE=false
    "$PYTHON" -c "import keras, jax; print('keras', keras.__version__, keras.backend.backend(), jax.devices())" >&2
    cd "$ROOT"
    "$PYTHON" benchmarks/train_throughput.py \
        --variant both --precision both --xla on \
        --batch-size "${BATCH:-128}" --steps "${STEPS:-30}" --warmup "${WARMUP:-5}" \
        --torch-device auto --peak-gflops "${PEAK_GFLOPS:-989000}" "$@"
}

case "${1:-}" in
    fetch) shift; fetch "$@" ;;
    run) shift; run "$@" ;;
    *)
        sed -n '2,26p' "$0" >&2
        exit 2
        ;;
esac
