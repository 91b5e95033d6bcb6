"""Which numeric precision to compute in: ``"auto"`` resolved from the hardware, cheaply.

bfloat16 pays off where the hardware multiplies it natively: CPUs with AMX (Intel Sapphire
Rapids and later) or AVX512-BF16 (Intel Cooper Lake, AMD Zen 4 and later), and NVIDIA GPUs
of compute capability 8.0 or more (Ampere and later). Elsewhere it is emulated and slower
than float32, so ``"auto"`` means float32 there.

Nothing here imports TensorFlow or Keras: the CPU's flags come from ``/proc/cpuinfo`` and a
GPU's compute capability from ``nvidia-smi``, so resolving ``auto`` costs milliseconds and
can run before the backend is chosen.

Example:
    >>> policy = resolve_precision("auto")          # "mixed_bfloat16" or "float32"
    >>> keras.mixed_precision.set_dtype_policy(policy)
    >>> choice = choose_precision("auto")           # the same, with the reason to show
    >>> choice.policy, choice.reason
    ('mixed_bfloat16', 'auto: CPU AMD EPYC has avx512_bf16')
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field

from alexkit.errors import UsageError

#: Keras dtype-policy names this module returns.
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")

#: What users may write, mapped to a Keras dtype-policy name (``"auto"`` is resolved).
ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "mixed_bfloat16",
    "bf16": "mixed_bfloat16",
    "mixed_bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
    "fp16": "mixed_float16",
    "mixed_float16": "mixed_float16",
}

#: CPU flags (as /proc/cpuinfo spells them) that mean native bfloat16 arithmetic.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")

#: Lowest NVIDIA compute capability with native bfloat16 (Ampere).
BF16_GPU_CAPABILITY = (8, 0)

#: What the commands (``finetune``, ``pretrain``, ``extract``, ``evaluate``, ``predict``,
#: ``explain``) compute in unless told by ``--precision`` or ``$ALEXKIT_PRECISION``:
#: bfloat16 where the hardware has it. Parity measured before choosing it
#: (``benchmarks/bf16_parity.py``; 2-core AMD EPYC): fc7 per-feature correlation median
#: 0.99975, linear probes equal within 0.8 points on 3 seeds, the demo's transfer accuracy
#: 0.838 vs 0.846 (3 seeds, within their 3.4-point spread). Library functions keep their
#: own default (the model as given, float32).
DEFAULT_PRECISION = "auto"

#: The environment variable that overrides :data:`DEFAULT_PRECISION` for the commands
#: (e.g. ``float32`` to compare runs bit for bit across machines; the test suite sets it).
PRECISION_ENV = "ALEXKIT_PRECISION"


def default_precision() -> str:
    """The commands' precision when ``--precision`` is not given.

    Returns:
        ``$ALEXKIT_PRECISION`` if set (checked), else :data:`DEFAULT_PRECISION`.

    Raises:
        UsageError: ``$ALEXKIT_PRECISION`` names no precision.
    """
    value = os.environ.get(PRECISION_ENV, "").strip()
    if not value:
        return DEFAULT_PRECISION
    if value.lower() != "auto" and value.lower() not in ALIASES:
        raise UsageError(
            f"{PRECISION_ENV}={value!r} is not a precision: use auto, float32, "
            "mixed_bfloat16 or mixed_float16 (or unset it)."
        )
    return value


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and feature flags (empty where they cannot be read)."""

    model_name: str
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def amx(self) -> bool:
        """AMX tiles with bfloat16 (``amx_bf16``)."""
        return "amx_bf16" in self.flags

    @property
    def avx512_bf16(self) -> bool:
        return "avx512_bf16" in self.flags

    @property
    def bfloat16(self) -> bool:
        """Native bfloat16 arithmetic: AMX or AVX512-BF16."""
        return any(flag in self.flags for flag in BF16_CPU_FLAGS)

    def as_dict(self) -> dict:
        """For benchmark JSON and run configs: name, cores and the flags that matter here."""
        return {
            "model_name": self.model_name,
            "cpus": os.cpu_count(),
            "avx512f": "avx512f" in self.flags,
            "avx512_bf16": self.avx512_bf16,
            "amx_bf16": self.amx,
            "amx_tile": "amx_tile" in self.flags,
        }


def parse_cpuinfo(text: str) -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (first processor's entries)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / arm64 spelling
            flags = frozenset(value.split())
    return CpuInfo(model_name=model or platform.processor() or platform.machine(), flags=flags)


def read_cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CPU; on systems without ``/proc/cpuinfo``, a name and no flags."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return CpuInfo(model_name=platform.processor() or platform.machine())


def gpu_compute_capabilities(timeout: float = 5.0) -> list[tuple[int, int]]:
    """Compute capabilities of the NVIDIA GPUs this process may use; ``[]`` when none.

    Asks ``nvidia-smi`` (no CUDA or TensorFlow import) and honours
    ``CUDA_VISIBLE_DEVICES`` being empty or ``-1`` (GPUs hidden on purpose).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return []
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    caps = []
    for line in proc.stdout.splitlines():
        major, _, minor = line.strip().partition(".")
        if major.isdigit():
            caps.append((int(major), int(minor) if minor.isdigit() else 0))
    return caps


def resolve_precision(
    requested: str = "auto",
    *,
    cpu: CpuInfo | None = None,
    gpu_capabilities: list[tuple[int, int]] | None = None,
) -> str:
    """The Keras dtype-policy name to use for ``requested``.

    ``"auto"``: with a visible NVIDIA GPU (the computation runs there), ``mixed_bfloat16``
    if every visible GPU has compute capability >= 8.0, else ``float32``; without one,
    ``mixed_bfloat16`` if the CPU has AMX or AVX512-BF16, else ``float32``. Explicit
    values (``float32``/``fp32``, ``bfloat16``/``bf16``/``mixed_bfloat16``,
    ``float16``/``fp16``/``mixed_float16``) are returned as policy names, unchecked
    against the hardware: asking is allowed, it may just be slow.

    Args:
        requested: ``"auto"`` or one of the names above (case-insensitive).
        cpu: the CPU to decide for (default: this machine's, :func:`read_cpu_info`).
        gpu_capabilities: the visible GPUs' compute capabilities (default:
            :func:`gpu_compute_capabilities`); ``[]`` for none.

    Returns:
        ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``.

    Raises:
        UsageError: an unknown precision name.
    """
    name = str(requested).strip().lower()
    if name in ALIASES:
        return ALIASES[name]
    if name != "auto":
        valid = ", ".join(["auto", *ALIASES])
        raise UsageError(f"unknown precision {requested!r}; choose one of: {valid}.")
    caps = gpu_compute_capabilities() if gpu_capabilities is None else gpu_capabilities
    if caps:
        return "mixed_bfloat16" if min(caps) >= BF16_GPU_CAPABILITY else "float32"
    info = read_cpu_info() if cpu is None else cpu
    return "mixed_bfloat16" if info.bfloat16 else "float32"


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved precision and why: what a command prints and saves in its run config."""

    requested: str
    policy: str
    reason: str

    def as_dict(self) -> dict:
        return {"requested": self.requested, "policy": self.policy, "reason": self.reason}


def choose_precision(
    requested: str = "auto",
    *,
    cpu: CpuInfo | None = None,
    gpu_capabilities: list[tuple[int, int]] | None = None,
) -> PrecisionChoice:
    """:func:`resolve_precision` with a one-line reason (e.g. ``auto: CPU X has amx_bf16``).

    Raises:
        UsageError: an unknown precision name.
    """
    caps = gpu_compute_capabilities() if gpu_capabilities is None else gpu_capabilities
    info = read_cpu_info() if cpu is None else cpu
    policy = resolve_precision(requested, cpu=info, gpu_capabilities=caps)
    if str(requested).strip().lower() != "auto":
        return PrecisionChoice(str(requested), policy, "asked for")
    if caps:
        listed = ", ".join(f"{major}.{minor}" for major, minor in caps)
        verdict = "all >= 8.0" if policy != "float32" else "below 8.0: no native bfloat16"
        return PrecisionChoice("auto", policy, f"auto: GPU compute capability {listed} ({verdict})")
    found = [flag for flag in BF16_CPU_FLAGS if flag in info.flags]
    why = f"has {' and '.join(found)}" if found else "has neither amx_bf16 nor avx512_bf16"
    return PrecisionChoice("auto", policy, f"auto: CPU {info.model_name} {why}")


def as_choice(precision: str | PrecisionChoice | None) -> PrecisionChoice | None:
    """A :class:`PrecisionChoice` from a name (resolved here) or a choice made already.

    Library functions take either, so a CLI can choose (and print) once before loading a
    model and pass its choice on; None stays None ("the model as it is").

    Raises:
        UsageError: an unknown precision name.
    """
    if precision is None or isinstance(precision, PrecisionChoice):
        return precision
    return choose_precision(precision)
