"""``--precision`` on extract, evaluate, predict and explain: chosen once, said once, saved.

The float32 runs are the oracle: bfloat16 results must be close to them (within the
bound of ``test_precision_models``) and not identical (the bf16 path really ran).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_class_images
from test_precision import SKYLAKE
from test_precision_models import small_alexnet
from typer.testing import CliRunner

from alexkit import precision
from alexkit.cli import app
from alexkit.errors import UsageError
from alexkit.precision import DEFAULT_PRECISION, default_precision, parse_cpuinfo

CLASSES = ["a", "b", "c", "d", "e"]
EPYC = "model name\t: AMD EPYC 9B14\nflags\t\t: avx512_bf16\n"


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    """A run directory (small AlexNet + class names) and 5 classes × 2 images."""
    root = tmp_path_factory.mktemp("precision")
    run = root / "run"
    run.mkdir()
    small_alexnet(seed=1).save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"class_names": CLASSES}))
    write_class_images(root / "data", CLASSES, 2, size=(48, 40))
    return run, root / "data"


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return result


def said(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("precision ")]


def test_default_is_auto_unless_the_environment_says_otherwise(monkeypatch):
    assert DEFAULT_PRECISION == "auto"  # parity measured: benchmarks/bf16_parity.py
    monkeypatch.delenv("ALEXKIT_PRECISION", raising=False)
    assert default_precision() == "auto"
    monkeypatch.setenv("ALEXKIT_PRECISION", "bf16")
    assert default_precision() == "bf16"
    monkeypatch.setenv("ALEXKIT_PRECISION", "int8")
    with pytest.raises(UsageError, match="ALEXKIT_PRECISION='int8' is not a precision"):
        default_precision()


def test_predict_bf16_is_close_to_float32_and_says_so(run_and_data, runner):
    run, data = run_and_data
    base = ["predict", str(run), str(data), "--json", "--top-k", "5", "--no-calibration"]
    fp32 = invoke(runner, base)
    bf16 = invoke(runner, [*base, "--precision", "mixed_bfloat16"])
    assert said(fp32) == []  # the default float32 goes unsaid (and is recorded)
    assert said(bf16) == ["precision mixed_bfloat16 (asked for)"]  # said once
    a, b = json.loads(fp32.stdout), json.loads(bf16.stdout)
    assert a["precision"] == {"requested": "float32", "policy": "float32", "reason": "default"}
    assert b["precision"]["policy"] == "mixed_bfloat16"

    def probs(out):
        return np.array(
            [[dict((e["class"], e["probability"]) for e in p["top_k"])[c] for c in CLASSES]
             for p in out["predictions"]]
        )  # fmt: skip

    pa, pb = probs(a), probs(b)
    assert [p["path"] for p in a["predictions"]] == [p["path"] for p in b["predictions"]]
    assert 0 < np.abs(pa - pb).max() < 0.1  # see test_precision_models: |Δp| <= |Δlogit| / 2


def test_evaluate_saves_the_choice_in_metrics_json(run_and_data, runner, tmp_path):
    run, data = run_and_data
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--data", str(data), "--n-boot", "0", "--json"]
    result = invoke(runner, [*args, "--out", str(out), "--precision", "bf16"])
    assert said(result) == ["precision mixed_bfloat16 (asked for)"]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["meta"]["precision"] == {
        "requested": "bf16",
        "policy": "mixed_bfloat16",
        "reason": "asked for",
    }
    assert json.loads(result.stdout)["meta"]["precision"] == on_disk["meta"]["precision"]
    plain = json.loads(invoke(runner, args).stdout)
    assert plain["meta"]["precision"]["policy"] == "float32"
    assert plain["num_samples"] == on_disk["num_samples"] == 10


def test_evaluate_probe_computes_the_features_in_the_asked_precision(run_and_data, runner):
    """``evaluate --probe`` as ``probe``: the features in the asked precision, saved."""
    run, data = run_and_data
    args = ["evaluate", str(run), "--data", str(data), "--probe", "logreg", "--train", str(data)]
    meta = {}
    for policy in ("float32", "mixed_bfloat16"):
        result = invoke(runner, [*args, "--precision", policy, "--json", "--n-boot", "0"])
        assert said(result) == [f"precision {policy} (asked for)"]
        meta[policy] = json.loads(result.stdout)["meta"]
        assert meta[policy]["precision"]["policy"] == policy
    assert meta["float32"]["trained_precision"] == meta["mixed_bfloat16"]["trained_precision"]


def test_extract_bf16_features_follow_float32(run_and_data, runner, tmp_path):
    run, data = run_and_data
    feats = {}
    for policy in ("float32", "mixed_bfloat16"):
        out = tmp_path / f"{policy}.npy"
        args = ["extract", str(run), "--data", str(data), "--out", str(out), "--json"]
        result = invoke(runner, [*args, "--precision", policy])
        assert said(result) == [f"precision {policy} (asked for)"]
        assert json.loads(result.stdout)["precision"]["policy"] == policy
        feats[policy] = np.load(out)
    a, b = feats["float32"], feats["mixed_bfloat16"]
    assert a.shape == b.shape == (10, 64) and b.dtype == np.float32
    assert not np.array_equal(a, b)
    # fc7 after ReLU in bfloat16: within the 3 % relative bound of the logits' test.
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 3e-2


def test_explain_records_the_precision(run_and_data, runner, tmp_path):
    run, data = run_and_data
    args = ["explain", str(run), "--data", str(data), "--out", str(tmp_path / "cams"), "--json"]
    result = invoke(runner, [*args, "--precision", "mixed_bfloat16", "--save-maps"])
    assert said(result) == ["precision mixed_bfloat16 (asked for)"]
    summary = json.loads(result.stdout)
    assert summary["precision"]["policy"] == "mixed_bfloat16" and summary["images"] == 10
    maps = np.load(tmp_path / "cams" / "maps.npz")
    assert all(np.isfinite(maps[k]).all() for k in maps.files)


@pytest.mark.parametrize("command", ["predict", "evaluate", "extract", "explain"])
def test_a_bad_precision_is_one_line_and_exit_2(run_and_data, runner, tmp_path, command):
    run, data = run_and_data
    args = {
        "predict": ["predict", str(run), str(data)],
        "evaluate": ["evaluate", str(run), "--data", str(data)],
        "extract": ["extract", str(run), "--data", str(data), "--out", str(tmp_path / "f.csv")],
        "explain": ["explain", str(run), "--data", str(data), "--out", str(tmp_path / "x")],
    }[command]
    result = runner.invoke(app, [*args, "--precision", "float64"])
    assert result.exit_code == 2
    assert result.stdout == ""
    message = " ".join(result.stderr.split())
    assert message.startswith("error: unknown precision 'float64'; choose one of: auto")
    assert message.count("error:") == 1 and "Traceback" not in message
    assert not (tmp_path / "f.csv").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "cpu,policy",
    [(SKYLAKE, "float32"), (EPYC, "mixed_bfloat16")],
)
def test_auto_follows_the_machine_and_says_why(run_and_data, runner, monkeypatch, cpu, policy):
    monkeypatch.setattr(precision, "read_cpu_info", lambda: parse_cpuinfo(cpu))
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: [])
    run, data = run_and_data
    result = invoke(runner, ["predict", str(run), str(data), "--json", "--precision", "auto"])
    [line] = said(result)
    assert line.startswith(f"precision {policy} (auto: CPU ")
    chosen = json.loads(result.stdout)["precision"]
    assert chosen["requested"] == "auto" and chosen["policy"] == policy


def test_the_auto_default_is_said(run_and_data, runner, monkeypatch):
    monkeypatch.delenv("ALEXKIT_PRECISION")  # the suite pins float32 (conftest)
    monkeypatch.setattr(precision, "read_cpu_info", lambda: parse_cpuinfo(EPYC))
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: [])
    run, data = run_and_data
    result = invoke(runner, ["predict", str(run), str(data), "--json"])  # no --precision
    assert said(result) == ["precision mixed_bfloat16 (auto: CPU AMD EPYC 9B14 has avx512_bf16)"]
    assert json.loads(result.stdout)["precision"]["requested"] == "auto"


def test_auto_on_an_exported_file_says_it_runs_as_exported(monkeypatch, capsys):
    from alexkit.commands.evaluate import choose_and_show_precision

    monkeypatch.setattr(precision, "read_cpu_info", lambda: parse_cpuinfo(EPYC))
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: [])
    choice = choose_and_show_precision("auto", "model.onnx")
    assert (choice.requested, choice.policy) == ("auto", "float32")
    assert "precision float32 (auto: an exported model runs as it was exported)" in (
        " ".join(capsys.readouterr().err.split())
    )
    assert choose_and_show_precision("auto", "run-dir").policy == "mixed_bfloat16"


def test_library_functions_take_precision(run_and_data):
    from alexkit.evaluate import load_eval_spec, load_trained
    from alexkit.extract import extract_arrays
    from alexkit.predict import predict_images

    run, data = run_and_data
    model, names, _ = load_trained(run)
    spec = load_eval_spec(str(data), names)
    items, labels, x32 = extract_arrays(model, spec, precision="float32")
    _, _, xbf = extract_arrays(model, spec, precision="mixed_bfloat16")
    _, _, xnone = extract_arrays(model, spec)  # None: the model as loaded (float32 here)
    np.testing.assert_array_equal(x32, xnone)
    assert xbf.dtype == np.float32 and 0 < np.abs(xbf - x32).max()
    preds = predict_images(model, names, [data], precision="bf16")
    assert preds.precision["policy"] == "mixed_bfloat16"
    assert predict_images(model, names, [data]).precision is None
