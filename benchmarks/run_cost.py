"""What a run costs: wall time, bytes written, run-directory size and peak memory.

Runs fixed small fine-tunes (head only; then from conv4 upward) on the built-in digits
and, unless ``--no-demo``, ``alexkit demo``, each as its own ``alexkit`` process, and
prints one JSON object. Bytes written come from the kernel's accounting of the child
(``wait4`` rusage: file-system output blocks × 512, what GNU ``time -v`` shows as "File
system outputs"), peak RSS from the same rusage, and the run directory is measured on disk
when the process has ended.

    python benchmarks/run_cost.py                 # fine-tunes + full demo
    python benchmarks/run_cost.py --no-demo       # fine-tunes only (~2 min on 2 cores)
    python benchmarks/run_cost.py --demo-quick    # demo --quick instead of the full demo
    python benchmarks/run_cost.py --demo-seeds 0 1 2   # one full demo per seed

Each demo row also carries the demo's own results (``alexkit demo --json``): the
held-out accuracy of transfer and scratch, their difference, and the pretraining run's
precision, epochs and source validation accuracy. ``cpu_s`` is the child's user +
system CPU time: on a machine other people load, compare it as well as the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alexkit.precision import read_cpu_info  # TensorFlow-free

# A fixed small fine-tune on the built-in digits: the digits-fewshot recipe's settings,
# with a bounded number of steps so the run costs the same on every machine.
FROM_CONV4_RECIPE = """
name = "digits-from-conv4"
description = "run_cost benchmark: digits, trainable from conv4 upward"
builtin_data = "digits"
variant = "original"
color = "grayscale"
class_weights = "none"
metrics = ["accuracy"]
monitor = "accuracy"
batch_size = 16
seed = 0
val_fraction = 0.2

[augment]
crop = false
hflip = false
rotation = 10.0
pca_lighting = 0.0

[[stages]]
name = "conv4-up"
epochs = 2
trainable_from = "conv4"
optimizer = "sgd"
lr = 0.001
"""


def dir_size(path: Path) -> int:
    """Bytes on disk of the regular files under ``path``, each inode once (hard links: the
    best checkpoint is a link to an epoch's checkpoint); 0 if it does not exist."""
    if not path.exists():
        return 0
    seen: dict[tuple[int, int], int] = {}
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def measure(name: str, argv: list[str], out_dir: Path, env: dict[str, str]) -> dict:
    """Run ``argv`` as a child process and return its cost."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stdout = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    row = {
        "name": name,
        "command": " ".join(argv[1:]),
        "exit_code": code,
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "written_mb": round(usage.ru_oublock * 512 / 1e6, 1),
        "run_dir_mb": round(dir_size(out_dir) / 1e6, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "load_average_1m": round(os.getloadavg()[0], 2),  # others' work slows the wall time
    }
    if code != 0:
        row["stderr_tail"] = stderr[-2000:]
    else:
        try:
            result = json.loads(stdout)
        except (json.JSONDecodeError, TypeError):
            return row
        if isinstance(result, dict) and "results" in result:  # alexkit demo --json
            accuracy = {r["approach"]: r["accuracy"] for r in result["results"]}
            row["result"] = {"pretrain": result.get("pretrain"), "accuracy": accuracy}
            if {"transfer", "scratch"} <= set(accuracy):
                margin = accuracy["transfer"] - accuracy["scratch"]
                row["result"]["transfer_minus_scratch"] = round(margin, 4)
        elif isinstance(result, dict):
            row["result"] = {
                k: result[k]
                for k in ("best_metric", "best_epoch", "val_accuracy", "metrics")
                if k in result
            }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-demo", action="store_true", help="skip the demo")
    parser.add_argument("--demo-quick", action="store_true", help="demo --quick, not the full one")
    parser.add_argument(
        "--demo-seeds", type=int, nargs="+", default=[0], help="one demo per seed (default 0)"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    args = parser.parse_args()

    alexkit = shutil.which("alexkit") or str(Path(sys.executable).with_name("alexkit"))
    work = Path(tempfile.mkdtemp(prefix="alexkit-run-cost-"))
    env = dict(os.environ, ALEXKIT_HOME=str(work / "home"), TF_CPP_MIN_LOG_LEVEL="2")
    recipe = work / "from-conv4.toml"
    recipe.write_text(FROM_CONV4_RECIPE)
    common = ["--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps_per_epoch)]
    common += ["--weights", "none", "--json", "--quiet"]
    runs = [
        ("finetune_head_only", ["--recipe", "digits-fewshot"]),
        ("finetune_from_conv4", ["--recipe", str(recipe)]),
    ]
    rows = []
    try:
        # Materialise the digits once, outside the measured runs.
        subprocess.run(
            [alexkit, "finetune", "--recipe", "digits-fewshot", "--out", str(work / "warm"),
             "--epochs", "1", "--steps-per-epoch", "1", "--weights", "none", "--quiet"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(work / "warm", ignore_errors=True)
        for name, extra in runs:
            out = work / name
            argv = [alexkit, "finetune", *extra, "--out", str(out), *common]
            rows.append(measure(name, argv, out, env))
        for seed in [] if args.no_demo else args.demo_seeds:
            out = work / f"demo-seed{seed}"
            argv = [alexkit, "demo", "--out", str(out), "--seed", str(seed), "--json", "--quiet"]
            argv += ["--quick"] if args.demo_quick else []
            row = measure("demo_quick" if args.demo_quick else "demo", argv, out, env)
            rows.append({"seed": seed, **row})
            shutil.rmtree(out, ignore_errors=True)  # one demo's folder on disk at a time
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "run_cost",
                "cpu": read_cpu_info().model_name,
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                "runs": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
