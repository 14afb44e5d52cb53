"""What the numbers were measured on: host, versions, threads, load; and peak memory probes."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from .. import cpu_features


@dataclass(frozen=True)
class HostInfo:
    date: str
    cpu_model: str
    cpu_mhz: float | None
    logical_cpus: int
    memory_gib: float
    load_average: tuple[float, float, float]
    python: str
    torch: str
    dora_rs: str | None
    numpy: str
    threads: int
    device: str
    dtype: str
    gpu: str | None
    git_commit: str | None
    cpu_flags: list[str] = field(default_factory=list)  # the vector/matrix extensions the kernels could use
    read_bandwidth_gbs: dict[str, float] = field(default_factory=dict)  # threads -> GB/s (read_bandwidth_gbs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_model() -> tuple[str, float | None]:
    model, mhz = platform.processor() or "unknown", None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and model in ("unknown", platform.processor()):
                model = value
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
    except OSError:
        pass
    return model, mhz


NOTABLE_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
)  # fmt: skip


def cpu_flags() -> list[str]:
    """Which of :data:`NOTABLE_FLAGS` the CPU reports (``/proc/cpuinfo``; empty where unreadable)."""
    present = cpu_features.cpu_flags()
    return [flag for flag in NOTABLE_FLAGS if flag in present]


def read_bandwidth_gbs(threads: list[int], mib: int = 256, rounds: int = 8) -> dict[str, float]:
    """How fast this machine streams memory into the cores: ``tensor.sum()`` over a float32 buffer of
    ``mib`` MiB (beyond any last-level cache), best of ``rounds``, at each thread count; GB/s by
    thread count. A decode step streams its weights once per token, so weight bytes / this is the
    step's floor (docs/performance.md, "Decode against the bandwidth floor")."""
    buffer = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    before = torch.get_num_threads()
    result: dict[str, float] = {}
    try:
        for n in threads:
            torch.set_num_threads(n)
            buffer.sum()  # first touch and thread start-up outside the timing
            best = min(_timed(buffer.sum) for _ in range(rounds))
            result[str(n)] = round(buffer.numel() * 4 / best / 1e9, 1)
    finally:
        torch.set_num_threads(before)
    return result


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def host_info(device: torch.device, dtype: torch.dtype, repo: Path) -> HostInfo:
    import numpy

    model, mhz = cpu_model()
    threads = torch.get_num_threads()
    bandwidth = read_bandwidth_gbs(sorted({1, threads})) if device.type == "cpu" else {}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return HostInfo(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu_model=model,
        cpu_mhz=mhz,
        logical_cpus=os.cpu_count() or 0,
        memory_gib=memory_gib(),
        load_average=tuple(round(x, 2) for x in os.getloadavg()),
        python=platform.python_version(),
        torch=torch.__version__,
        dora_rs=package_version("dora-rs"),
        numpy=numpy.__version__,
        threads=torch.get_num_threads(),
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        gpu=gpu,
        git_commit=git_commit(repo),
        cpu_flags=cpu_flags(),
        read_bandwidth_gbs=bandwidth,
    )


class LoadSampler:
    """1-minute load average before and after a phase: tells whether a number was taken on a busy host."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []

    def sample(self) -> None:
        self.samples.append((time.time(), os.getloadavg()[0]))

    def summary(self) -> dict[str, float]:
        loads = [load for _, load in self.samples]
        return {"min": min(loads), "max": max(loads), "mean": round(sum(loads) / len(loads), 2)} if loads else {}


# --- peak memory ---------------------------------------------------------------------------------


def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib(pid: int | str = "self") -> float | None:
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else round(kib / 1024, 1)


def rss_mib(pid: int | str = "self") -> float | None:
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else round(kib / 1024, 1)


def reset_peak_gpu(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def synchronize(device: torch.device) -> None:
    """Timers must not stop while queued GPU work is still running."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
