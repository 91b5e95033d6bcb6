"""tf.distribute paths end with the same weights as one process on the same global batch.

Each distributed run is a subprocess: logical CPU devices and the multi-worker collective
runtime must be configured before TensorFlow starts, which cannot happen in the test
process. The single-process oracle needs no such set-up (the default strategy): it runs
the same worker code in the test process, on the CPU, in float32, while the subprocesses
start.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from conftest import free_ports

pytest.importorskip("tensorflow")

from alexkit.errors import UsageError  # noqa: E402

GLOBAL_BATCH = 8
STEPS = 3

WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np

    def run(mode, data_path, out_path):
        from alexkit import distribute
        if mode == "mirrored":
            distribute.use_logical_cpus(2)
        # The strategy comes first: the collective runtime is configured at startup.
        strategy = distribute.get_strategy("none" if mode == "single" else mode)
        import keras
        import tensorflow as tf
        from alexkit.optim import PaperSGD
        data = np.load(data_path)

        def model_fn():
            inputs = keras.Input((12, 12, 3))
            x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
            x = keras.layers.MaxPooling2D(2)(x)
            x = keras.layers.Flatten()(x)
            outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
            model = keras.Model(inputs, outputs)
            model.set_weights([data[f"w{i}"] for i in range(4)])
            return model

        def elements_fn():
            return tf.data.Dataset.from_tensor_slices((data["x"], data["y"]))

        results = {}
        for method in ("fit", "custom"):
            result = distribute.train_steps(
                model_fn, elements_fn, int(data["steps"]), strategy,
                global_batch_size=int(data["batch"]), method=method,
                optimizer_fn=lambda: PaperSGD(learning_rate=0.1),
                eval_steps=2 if method == "fit" else 0,
            )
            results.update({f"{method}_{i}": w for i, w in enumerate(result.weights)})
            results[f"{method}_loss"] = result.mean_loss
            if result.eval_loss is not None:
                results[f"{method}_eval"] = result.eval_loss
        # The train loop's path: fit on a plain dataset of global batches (Keras shards
        # it), with validation and a metric, then predict.
        with strategy.scope():
            model = model_fn()
            model.compile(optimizer=PaperSGD(learning_rate=0.1), metrics=["accuracy"],
                          loss="sparse_categorical_crossentropy", jit_compile=False)
        distribute.enable_multiworker_fit(model)
        batches = elements_fn().batch(int(data["batch"]))
        history = model.fit(batches, epochs=1, validation_data=batches, verbose=0)
        results.update({f"plain_{i}": w for i, w in enumerate(model.get_weights())})
        results["plain_loss"] = history.history["loss"][-1]
        results["plain_eval"] = history.history["val_loss"][-1]
        if distribute.is_chief(strategy):
            # Only the chief saves; the next collective (predict) must not hang on it.
            model.save(out_path[: -len(".npz")] + ".keras")
        results["plain_predictions"] = model.predict(batches, verbose=0)
        np.savez(out_path, **results, replicas=strategy.num_replicas_in_sync,
                 chief=distribute.is_chief(strategy))

    if __name__ == "__main__":
        # TensorFlow and Keras imported with the garbage collector paused, what they made
        # frozen after, as the CLI does: `import tensorflow` and exit cost 3.4 instead of
        # 6.3 CPU-s. Importing starts no runtime: the strategy still comes first. The code
        # under test runs with the collector on. No number changes.
        from alexkit.commands._common import collector_paused
        with collector_paused():
            import keras, tensorflow  # noqa: F401
        run(*sys.argv[1:4])
    """
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(0)
    n = GLOBAL_BATCH * STEPS
    arrays = {
        "x": rng.uniform(0, 1, size=(n, 12, 12, 3)).astype("float32"),
        "y": rng.integers(0, 3, size=(n,)).astype("int32"),
        "w0": rng.normal(0, 0.3, size=(3, 3, 3, 4)).astype("float32"),
        "w1": np.full((4,), 0.1, "float32"),
        "w2": rng.normal(0, 0.3, size=(100, 3)).astype("float32"),
        "w3": np.zeros((3,), "float32"),
        "steps": STEPS,
        "batch": GLOBAL_BATCH,
    }
    np.savez(root / "data.npz", **arrays)
    (root / "worker.py").write_text(WORKER)
    return root


def _env(**extra: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _launch(root, mode, out, **env):
    return subprocess.Popen(
        [sys.executable, str(root / "worker.py"), mode, str(root / "data.npz"), str(out)],
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(procs, timeout=240):
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]


def _run_single_here(root) -> None:
    """The worker's code with the default strategy, in this process, as its subprocess ran it.

    The subprocesses see no GPU (``CUDA_VISIBLE_DEVICES=""``), no ``TF_CONFIG`` and Keras'
    float32 default: so does this run. Nothing it changes outlives it.
    """
    import keras
    import tensorflow as tf

    run = runpy.run_path(str(root / "worker.py"))["run"]  # not as __main__: no gc changes
    policy = keras.mixed_precision.global_policy().name
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TF_CONFIG", raising=False)
        keras.mixed_precision.set_global_policy("float32")
        try:
            with tf.device("/CPU:0"), warnings.catch_warnings():
                # Keras' note that fit's default shuffle=True does not apply to a tf.data
                # input (the subprocesses print it to their captured output).
                warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
                run("single", str(root / "data.npz"), str(root / "single.npz"))
        finally:
            keras.mixed_precision.set_global_policy(policy)


@pytest.fixture(scope="module")
def runs(setup):
    """The three distributed processes at once (they mostly wait on imports and each
    other); the single-process oracle runs here meanwhile."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    names = ["mirrored", "worker0", "worker1"]
    procs = [_launch(setup, "mirrored", setup / "mirrored.npz")]
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(_launch(setup, "multiworker", setup / f"worker{i}.npz", TF_CONFIG=tf_config))
    try:
        _run_single_here(setup)
    except BaseException:
        for p in procs:
            p.kill()
            p.wait()
        raise
    results = {name: result for name, result in zip(names, _wait(procs), strict=True)}
    return {"single": (0, ""), **results}


def _load(setup, runs, name, method):
    """(weights, info) of one run and method; info has replicas, chief, loss, eval."""
    code, out = runs[name]
    assert code == 0, f"{name} failed:\n{out[-3000:]}"
    data = np.load(setup / f"{name}.npz")
    weights = [data[f"{method}_{i}"] for i in range(4)]
    info = {
        "replicas": int(data["replicas"]),
        "chief": bool(data["chief"]),
        "loss": float(data[f"{method}_loss"]),
        "eval": float(data[f"{method}_eval"]) if f"{method}_eval" in data else None,
    }
    return weights, info


def _initial_weights(root):
    d = np.load(root / "data.npz")
    return [d[f"w{i}"] for i in range(4)]


def _assert_same(a, b, atol=2e-5):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=1e-4)


def _assert_same_logs(info, single):
    # The logged loss is the global-batch mean on every path (custom loops sum the
    # per-replica loss/B; fit averages per-replica means).
    assert info["loss"] == pytest.approx(single["loss"], rel=1e-5)
    if info["eval"] is not None:
        assert info["eval"] == pytest.approx(single["eval"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fit", "custom"])
def test_mirrored_two_cpus_matches_single_process(setup, runs, method):
    single, single_info = _load(setup, runs, "single", "fit")
    weights, info = _load(setup, runs, "mirrored", method)
    assert info["replicas"] == 2
    _assert_same(weights, single)
    _assert_same_logs(info, single_info)
    initial = _initial_weights(setup)
    assert max(np.abs(w - i).max() for w, i in zip(weights, initial, strict=True)) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fit", "custom"])
def test_multiworker_two_processes_match_single_process(setup, runs, method):
    single, single_info = _load(setup, runs, "single", "fit")
    w0, info0 = _load(setup, runs, "worker0", method)
    w1, info1 = _load(setup, runs, "worker1", method)
    assert (info0["replicas"], info1["replicas"]) == (2, 2)
    assert (info0["chief"], info1["chief"]) == (True, False)
    _assert_same(w0, single)
    _assert_same(w1, w0, atol=1e-7)  # replicas stay in sync
    _assert_same_logs(info0, single_info)
    _assert_same_logs(info1, single_info)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mirrored", "worker0", "worker1"])
def test_fit_on_plain_dataset_with_validation_and_predict_matches_single(setup, runs, name):
    single, single_info = _load(setup, runs, "single", "plain")
    weights, info = _load(setup, runs, name, "plain")
    _assert_same(weights, single)
    _assert_same_logs(info, single_info)
    predictions = np.load(setup / f"{name}.npz")["plain_predictions"]
    reference = np.load(setup / "single.npz")["plain_predictions"]
    np.testing.assert_allclose(predictions, reference, atol=1e-5)
    # Chief-only saving: worker 0 (and the single-machine runs) wrote, worker 1 did not.
    saved = setup / f"{name}.keras"
    assert saved.exists() == (name != "worker1")
    if saved.exists():
        import keras

        import alexkit.optim  # noqa: F401  (PaperSGD for deserialisation)

        reloaded = keras.saving.load_model(saved)
        _assert_same(reloaded.get_weights(), weights, atol=0)


@pytest.mark.slow
def test_single_process_custom_loop_matches_fit(setup, runs):
    fit, fit_info = _load(setup, runs, "single", "fit")
    custom, custom_info = _load(setup, runs, "single", "custom")
    _assert_same(custom, fit)
    assert custom_info["loss"] == pytest.approx(fit_info["loss"], rel=1e-5)
    assert fit_info["eval"] is not None and np.isfinite(fit_info["eval"])


def test_get_strategy_validates_kind_and_tf_config(monkeypatch):
    from alexkit.distribute import get_strategy

    with pytest.raises(UsageError, match="choose one of"):
        get_strategy("horovod")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UsageError, match="TF_CONFIG"):
        get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"index": 3}}')
    with pytest.raises(UsageError, match="TF_CONFIG"):
        get_strategy("multiworker")
    assert get_strategy("none").num_replicas_in_sync == 1


def test_shard_and_batch_covers_each_global_batch_exactly_once():
    import tensorflow as tf

    from alexkit.distribute import shard_and_batch

    elements = tf.data.Dataset.range(24)
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=4
        )
        seen.append([b.numpy().tolist() for b in shard_and_batch(elements, 8, ctx)])
    # Per pipeline: 2 replicas × 2 examples per step; step k holds exactly 8k..8k+7.
    for step in range(3):
        batch = sorted(sum((seen[p][2 * step] + seen[p][2 * step + 1] for p in range(2)), []))
        assert batch == list(range(8 * step, 8 * step + 8))
    with pytest.raises(UsageError, match="divisible"):
        shard_and_batch(elements, 6, ctx)
