"""What the CPU can do, from ``/proc/cpuinfo``: which half-precision work its matrix units speed up.

The kernels pick their own instructions at run time (oneDNN, our decode kernel); this module only
answers questions whose answer changes a *setting*: a bfloat16 convolution is ~3x faster than
float32 on a CPU with AMX or AVX512-BF16 and several times slower on one without, so a
half-precision request is honoured only where it pays (docs/performance.md, "Vocoder on the
matrix units").
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

# Flags that make half-precision convolutions and products fast (Linux /proc/cpuinfo names).
MATRIX_FLAGS = {
    torch.bfloat16: ("amx_bf16", "avx512_bf16"),  # Sapphire Rapids and later; AMD Zen 4 and later
    torch.float16: ("amx_fp16",),  # Granite Rapids: AVX512-FP16 alone measured slower than float32
}


@cache
def cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo (``GenuineIntel``, ``AuthenticAMD``; empty where unreadable)."""
    return _cpuinfo_field("vendor_id")


def mkl_float32_is_slow(vendor: str | None = None) -> bool:
    """Whether oneDNN's float32 product on a prepacked weight beats MKL's GEMM (PyTorch's
    ``F.linear``) here. On an AMD EPYC (Zen 4, torch 2.13's MKL 2024.2) it did by 2.5-2.9x at 18 rows
    and 1.3x at 171 (docs/performance.md, "BERT on oneDNN"); on Intel Xeons the two were measured
    equal at the GPT prefill's shapes ("Prefill"), so MKL stays there."""
    return (cpu_vendor() if vendor is None else vendor) == "AuthenticAMD"


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is unreadable: not Linux)."""
    return frozenset(_cpuinfo_field("flags").split())


def _cpuinfo_field(name: str) -> str:
    """The first value of ``name`` in /proc/cpuinfo ("" where absent or unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def matrix_units_for(dtype: torch.dtype, flags: frozenset[str] | None = None) -> str | None:
    """The flag that makes ``dtype`` convolutions fast on this CPU, or None."""
    present = cpu_flags() if flags is None else flags
    return next((flag for flag in MATRIX_FLAGS.get(dtype, ()) if flag in present), None)
