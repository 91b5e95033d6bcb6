"""resolve_precision: bfloat16 exactly where the hardware multiplies it natively."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alexkit import precision
from alexkit.errors import UsageError
from alexkit.precision import (
    CpuInfo,
    choose_precision,
    parse_cpuinfo,
    read_cpu_info,
    resolve_precision,
)

# Trimmed /proc/cpuinfo texts of the kinds of machine this decides between.
XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
EPYC_ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16
"""
SKYLAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512bw
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16 sve
"""


@pytest.mark.parametrize(
    "text,name,amx,avx512_bf16,expected",
    [
        (XEON_AMX, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", True, True, "mixed_bfloat16"),
        (EPYC_ZEN4, "AMD EPYC 9B14", False, True, "mixed_bfloat16"),
        (SKYLAKE, "Intel(R) Xeon(R) CPU @ 2.00GHz", False, False, "float32"),
        # arm64's bf16 feature is not one this project has measured a gain from: float32.
        (ARM, None, False, False, "float32"),
    ],
)
def test_auto_follows_cpu_flags(text, name, amx, avx512_bf16, expected):
    info = parse_cpuinfo(text)
    if name is not None:
        assert info.model_name == name
    assert (info.amx, info.avx512_bf16) == (amx, avx512_bf16)
    assert resolve_precision("auto", cpu=info, gpu_capabilities=[]) == expected
    flags = info.as_dict()
    assert (flags["amx_bf16"], flags["avx512_bf16"]) == (amx, avx512_bf16)


def test_auto_reads_this_machine_through_the_flag_reader(monkeypatch):
    seen = []

    def fake_reader(path="/proc/cpuinfo"):
        seen.append(path)
        return parse_cpuinfo(SKYLAKE)

    monkeypatch.setattr(precision, "read_cpu_info", fake_reader)
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: [])
    assert resolve_precision() == "float32"
    monkeypatch.setattr(precision, "read_cpu_info", lambda: parse_cpuinfo(EPYC_ZEN4))
    assert resolve_precision("AUTO") == "mixed_bfloat16"
    assert seen == ["/proc/cpuinfo"]


@pytest.mark.parametrize(
    "caps,expected",
    [
        ([(8, 0)], "mixed_bfloat16"),  # A100
        ([(9, 0), (8, 6)], "mixed_bfloat16"),
        ([(7, 5)], "float32"),  # T4: no native bf16, even on a bf16 CPU
        ([(8, 0), (7, 0)], "float32"),  # mixed cards: the weakest decides
    ],
)
def test_auto_with_a_gpu_follows_its_compute_capability(caps, expected):
    cpu = parse_cpuinfo(XEON_AMX)
    assert resolve_precision("auto", cpu=cpu, gpu_capabilities=caps) == expected


@pytest.mark.parametrize(
    "requested,expected",
    [
        ("float32", "float32"),
        ("fp32", "float32"),
        ("bf16", "mixed_bfloat16"),
        ("bfloat16", "mixed_bfloat16"),
        ("mixed_bfloat16", "mixed_bfloat16"),
        ("Mixed_Float16", "mixed_float16"),
        ("fp16", "mixed_float16"),
    ],
)
def test_explicit_choices_are_policy_names_whatever_the_hardware(requested, expected):
    no_bf16 = parse_cpuinfo(SKYLAKE)
    assert resolve_precision(requested, cpu=no_bf16, gpu_capabilities=[]) == expected


def test_unknown_precision_is_a_usage_error_naming_the_choices():
    with pytest.raises(UsageError, match=r"unknown precision 'float64'.*auto.*bf16"):
        resolve_precision("float64", cpu=CpuInfo("x"), gpu_capabilities=[])


def test_unreadable_cpuinfo_means_no_flags(tmp_path):
    info = read_cpu_info(str(tmp_path / "missing"))
    assert info.flags == frozenset() and info.model_name
    assert resolve_precision("auto", cpu=info, gpu_capabilities=[]) == "float32"


def test_gpu_probe_respects_hidden_gpus_and_missing_nvidia_smi(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert precision.gpu_compute_capabilities() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(precision.shutil, "which", lambda name: None)
    assert precision.gpu_compute_capabilities() == []


def test_gpu_probe_parses_nvidia_smi(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(precision.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def fake_run(cmd, **kwargs):
        assert "--query-gpu=compute_cap" in cmd
        return subprocess.CompletedProcess(cmd, 0, stdout="8.0\n7.5\n", stderr="")

    monkeypatch.setattr(precision.subprocess, "run", fake_run)
    assert precision.gpu_compute_capabilities() == [(8, 0), (7, 5)]


def test_resolving_imports_neither_tensorflow_nor_keras():
    code = (
        "import sys; from alexkit.precision import resolve_precision; resolve_precision('auto');"
        "print(any(m in sys.modules for m in ('tensorflow', 'keras', 'jax', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_choice_says_why():
    amx = choose_precision("auto", cpu=parse_cpuinfo(XEON_AMX), gpu_capabilities=[])
    assert amx.policy == "mixed_bfloat16"
    assert amx.reason == (
        "auto: CPU Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz has amx_bf16 and avx512_bf16"
    )
    plain = choose_precision("auto", cpu=parse_cpuinfo(SKYLAKE), gpu_capabilities=[])
    assert (plain.policy, plain.reason.endswith("has neither amx_bf16 nor avx512_bf16")) == (
        "float32",
        True,
    )
    t4 = choose_precision("auto", cpu=parse_cpuinfo(XEON_AMX), gpu_capabilities=[(7, 5)])
    assert (t4.policy, t4.reason) == (
        "float32",
        "auto: GPU compute capability 7.5 (below 8.0: no native bfloat16)",
    )
    asked = choose_precision("bf16", cpu=parse_cpuinfo(SKYLAKE), gpu_capabilities=[])
    assert asked.as_dict() == {
        "requested": "bf16",
        "policy": "mixed_bfloat16",
        "reason": "asked for",
    }
