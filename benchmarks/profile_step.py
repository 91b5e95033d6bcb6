"""Where a training step's time goes: TensorFlow profiler trace of AlexNet training steps.

Prints one JSON object. For each variant (``original``, ``torchvision``) it builds the
model as ``benchmarks/train_throughput.py`` does (``build_alexnet``, ``PaperSGD``, sparse
cross-entropy, 1000 classes, synthetic batch, ``train_on_batch`` without XLA), runs
``--warmup`` untimed steps, then ``--steps`` steps under ``tf.profiler.experimental``
into a temporary folder, and reads the trace back from its ``.xplane.pb`` with the
protobuf classes TensorFlow ships (no TensorBoard plug-in needed, works offline).

Every TensorFlow op the executor ran appears on a ``tf_Compute`` thread as an event
``op_name:OpType``; its self time is its duration less the op events nested inside it.
Ops are grouped by layer (the path segment after the model's name, with Keras' ``_1``
suffixes dropped) and direction (``fwd``; ``bwd`` for ops under ``gradient_tape/`` and
for a hand-written gradient's ops under ``<layer>_grad/``, as LRN names them; ``opt``
for the optimizer's update). Shares are of the summed op self time
(``share_of_ops``) and of the measured wall time of the profiled steps
(``share_of_step``); with two inter-op threads running ops at once the latter can add
up to more than 1, and a small op that waits for the thread pool while a convolution
holds it looks longer than it is.

``--ablate`` measures what a layer kind really costs a step instead: in one process it
builds ``original``, a copy of it with the LRN layers replaced by ``keras.layers.Identity``
(``keras.models.clone_model``), and ``torchvision``, then times their training steps in
turn (so a change in the machine's load hits all three alike) and reports min / median
step time and the ratios.

Usage::

    python benchmarks/profile_step.py                          # bf16, both variants
    python benchmarks/profile_step.py --precision float32 --batch-size 32 --steps 2
    python benchmarks/profile_step.py --ablate --ablate-steps 6   # + LRN's cost by ablation
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# "model/layer/sub/op:OpType"; executor bookkeeping ("ExecutorState::Process") has "::".
_OP_EVENT = re.compile(r"^([^:\s]+):([A-Za-z0-9_]+)$")


def profile_variant(cfg: dict) -> dict:
    """Profile ``cfg["steps"]`` training steps of one variant (run in a child process)."""
    import numpy as np
    import tensorflow as tf
    from train_throughput import keras_setup  # this folder: the script's own

    model, x, y = keras_setup(cfg)
    for _ in range(cfg["warmup"]):
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(cfg["steps"]):
            float(np.asarray(model.train_on_batch(x, y)).reshape(-1)[0])
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            raise RuntimeError(f"the profiler wrote no .xplane.pb under {logdir}")
        ops = op_self_times(max(paths, key=os.path.getmtime), model.name)
    return {"wall_s": wall, "ops": ops}


def ablate(cfg: dict) -> dict:
    """Step times of original, original without LRN, torchvision (run in a child process)."""
    import keras
    import numpy as np

    from alexkit.layers import LocalResponseNormalization
    from alexkit.model import VARIANTS, build_alexnet
    from alexkit.optim import PaperSGD

    if cfg["precision"] == "bfloat16":
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")

    def without_lrn(layer):
        if isinstance(layer, LocalResponseNormalization):
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    original = build_alexnet("original", num_classes=1000, seed=0)
    models = {
        "original": original,
        "original_without_lrn": keras.models.clone_model(original, clone_function=without_lrn),
        "torchvision": build_alexnet("torchvision", num_classes=1000, seed=0),
    }
    rng = np.random.default_rng(0)
    batch = cfg["batch_size"]
    labels = keras.ops.convert_to_tensor(rng.integers(0, 1000, size=(batch,)).astype("int32"))
    inputs = {}
    for name, model in models.items():
        model.compile(
            optimizer=PaperSGD(learning_rate=0.01), loss="sparse_categorical_crossentropy"
        )
        size = VARIANTS["torchvision" if name == "torchvision" else "original"]["image_size"]
        inputs[name] = keras.ops.convert_to_tensor(
            rng.uniform(0, 255, size=(batch, size, size, 3)).astype("float32")
        )
        for _ in range(cfg["warmup"]):
            model.train_on_batch(inputs[name], labels)
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(cfg["steps"]):
        for name in list(models)[:: 1 if i % 2 == 0 else -1]:
            start = time.perf_counter()
            float(np.asarray(models[name].train_on_batch(inputs[name], labels)).reshape(-1)[0])
            times[name].append(time.perf_counter() - start)
    return times


def summarise_ablation(times: dict[str, list[float]]) -> dict:
    """Min / median step seconds per model and the ratios that answer "what does LRN cost"."""
    import statistics

    rows = {
        name: {"step_s_min": round(min(t), 3), "step_s_median": round(statistics.median(t), 3)}
        for name, t in times.items()
    }
    best = {name: min(t) for name, t in times.items()}
    rows["lrn_share_of_original_step"] = round(
        1 - best["original_without_lrn"] / best["original"], 3
    )
    rows["original_over_torchvision"] = round(best["original"] / best["torchvision"], 3)
    rows["original_without_lrn_over_torchvision"] = round(
        best["original_without_lrn"] / best["torchvision"], 3
    )
    return rows


def _run_child(cfg: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)],
        capture_output=True,
        text=True,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"error": " | ".join(proc.stderr.strip().splitlines()[-3:])}
    return json.loads(lines[-1][len("RESULT ") :])


def op_self_times(path: str, model_name: str) -> list[dict]:
    """Self time (s) per (layer, direction, op type, op name) from one ``.xplane.pb``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals: dict[tuple, float] = collections.defaultdict(float)
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            events = []
            for event in line.events:
                match = _OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if match:
                    events.append((event.offset_ps, event.offset_ps + event.duration_ps, match))
            events.sort(key=lambda e: (e[0], -e[1]))
            # Self time: subtract the op events nested inside an op event.
            stack: list[list] = []  # [end_ps, key, child_ps]
            for begin, end, match in events:
                while stack and stack[-1][0] <= begin:
                    done = stack.pop()
                    totals[done[1]] += done[3] - done[2]
                if stack:
                    stack[-1][2] += end - begin
                stack.append([end, _op_key(match[1], match[2], model_name), 0, end - begin])
            for done in stack:
                totals[done[1]] += done[3] - done[2]
    return [
        {"layer": k[0], "dir": k[1], "type": k[2], "name": k[3], "s": ps * 1e-12}
        for k, ps in totals.items()
    ]


def _op_key(name: str, op_type: str, model_name: str) -> tuple[str, str, str, str]:
    direction = "fwd"
    parts = name.split("/")
    if parts[0] == "gradient_tape":
        direction, parts = "bwd", parts[1:]
    layer = "(other)"
    grad_scope = re.match(r"^(.+)_grad(?:_\d+)?$", parts[0]) if parts else None
    if grad_scope:
        # A hand-written gradient's ops, under the name scope "<layer>_grad" (LRN's).
        direction, layer = "bwd", grad_scope[1]
    elif parts and re.sub(r"_\d+$", "", parts[0]) == model_name:
        if len(parts) > 2:
            layer = re.sub(r"_\d+$", "", parts[1])
        else:
            layer = "(model)"
    elif parts and parts[0].startswith(("paper_sgd", "SGD", "optimizer")):
        direction, layer = "opt", "(optimizer)"
    elif parts and ("loss" in parts[0] or "crossentropy" in name):
        layer = "(loss)"
    return layer, direction, op_type, name


def summarise(result: dict, steps: int, top: int) -> dict:
    """Per-step ms and shares, top ops, and per-layer totals."""
    ops = result["ops"]
    total = sum(o["s"] for o in ops)
    wall = result["wall_s"]

    def row(key: dict, seconds: float) -> dict:
        return dict(
            key,
            ms_per_step=round(seconds / steps * 1e3, 1),
            share_of_ops=round(seconds / total, 4),
            share_of_step=round(seconds / wall, 4),
        )

    by_op: dict[tuple, float] = collections.defaultdict(float)
    by_layer: dict[tuple, float] = collections.defaultdict(float)
    by_type: dict[str, float] = collections.defaultdict(float)
    for o in ops:
        by_op[(o["layer"], o["dir"], o["type"])] += o["s"]
        by_layer[(o["layer"], o["dir"])] += o["s"]
        by_type[o["type"]] += o["s"]
    top_ops = sorted(by_op.items(), key=lambda kv: -kv[1])[:top]
    top_names = sorted(ops, key=lambda o: -o["s"])[:top]
    return {
        "step_ms_wall": round(wall / steps * 1e3, 1),
        "op_ms_per_step": round(total / steps * 1e3, 1),
        "top_ops": [row({"layer": k[0], "dir": k[1], "type": k[2]}, s) for k, s in top_ops],
        "top_op_names": [
            row({"name": o["name"], "type": o["type"], "dir": o["dir"]}, o["s"]) for o in top_names
        ],
        "layers": [
            row({"layer": k[0], "dir": k[1]}, s)
            for k, s in sorted(by_layer.items(), key=lambda kv: -kv[1])
        ],
        "op_types": [
            row({"type": k}, s) for k, s in sorted(by_type.items(), key=lambda kv: -kv[1])[:top]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="original,torchvision")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--ablate", action="store_true", help="also time original without LRN (see above)"
    )
    parser.add_argument("--ablate-steps", type=int, default=6, help="timed steps per model")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        cfg = json.loads(args.child)
        result = ablate(cfg) if cfg.get("kind") == "ablate" else profile_variant(cfg)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    from alexkit.precision import read_cpu_info

    variants = {}
    for variant in filter(None, args.variants.split(",")):
        cfg = {
            "variant": variant,
            "precision": args.precision,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
        }
        # One process per variant: the profiler's trace is per process.
        result = _run_child(cfg)
        if "error" in result:
            variants[variant] = result
            continue
        variants[variant] = summarise(result, args.steps, args.top)
        print(
            f"{variant}: {variants[variant]['step_ms_wall']} ms/step", file=sys.stderr, flush=True
        )
    ablation = None
    if args.ablate:
        cfg = {
            "kind": "ablate",
            "precision": args.precision,
            "batch_size": args.batch_size,
            "steps": args.ablate_steps,
            "warmup": 1,
        }
        times = _run_child(cfg)
        ablation = times if "error" in times else summarise_ablation(times)
    report = {
        "benchmark": "profile_step",
        "cpu": read_cpu_info().as_dict(),
        "precision": args.precision,
        "batch_size": args.batch_size,
        "profiled_steps": args.steps,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "variants": variants,
        "ablation": ablation,
        "note": "TensorFlow profiler, no XLA; wall time includes profiler overhead",
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
