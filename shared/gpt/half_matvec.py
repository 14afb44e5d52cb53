"""Decode-step products with float16 weights on every CPU thread: our C++ kernel (half_matvec.cpp).

A decode step multiplies one activation row by every weight of the GPT once, so its products are
bound by how fast ~150 MB of float16 weights stream from memory. FBGEMM's float16 product (the one
PyTorch exposes) runs on a single thread, and one core of the 2-core AMD EPYC we measure on draws
~17 GB/s where two draw ~35 GB/s. The kernel here splits the weight rows over PyTorch's intra-op
threads: the 97 decode-step products of the full-size model (96 in the layers + the logits) took
10.8 ms with FBGEMM and 5.3 ms with it (2 threads; docs/performance.md, "Our float16 kernel").
Products accumulate in float32 from the exact float16 weights, as FBGEMM's do, so only the
summation order differs from float32 ``F.linear`` (~1e-6).

The kernel is compiled on first use with ``torch.utils.cpp_extension`` (a C++ compiler and ninja,
as ``torch.compile`` on CPU needs too) into ``~/.cache/dora-gpt-sovits/kernels/`` — ~2.5 min of CPU once per
torch version, then loaded in a fraction of a second. It needs x86-64 with AVX2, FMA and F16C.
Where it cannot be had, :func:`load_kernel` says why and the caller keeps FBGEMM's kernel:
``GSV_HALF_MATVEC`` = ``auto`` (default: ours when it builds, else FBGEMM) | ``native`` (ours or
an error) | ``fbgemm`` (never build ours).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch

from ..cpu_features import cpu_flags

log = logging.getLogger("gsv.gpt")

SOURCES = tuple(Path(__file__).with_name(name) for name in ("half_matvec.cpp", "decode_layers.cpp"))
HEADERS = (Path(__file__).with_name("half_blocks.h"),)
LIBRARY = "gsv_cpu_kernels"  # both operators: half_matvec and decode_layers (decode_layers.py)
KERNEL_CHOICES = ("auto", "native", "fbgemm")
BUILD_FOLDER = Path(f"~/.cache/dora-gpt-sovits/kernels/torch-{torch.__version__}").expanduser()
CFLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp"]  # OpenMP: at::parallel_for's threads


class KernelUnavailable(RuntimeError):
    """Our kernel cannot be built or loaded here; the message says why."""


ROWS, COLS = 8, 8  # the kernel's block: output rows x columns per packed group


def pack_rows(weight: torch.Tensor) -> torch.Tensor:
    """``weight [N, K]`` (float16-exact, K a multiple of 8) -> the kernel's layout
    ``[ceil(N/8), K/8, 8, 8]`` float16: each block of 8 output rows one contiguous run, in the
    order the kernel reads it. Missing rows of the last block are zeros (their outputs are not written)."""
    n, k = weight.shape
    if k % COLS:
        raise ValueError(f"half_matvec needs a column count that is a multiple of {COLS}, got {k}")
    blocks = -(-n // ROWS)
    padded = torch.zeros(blocks * ROWS, k, dtype=torch.float16)
    padded[:n] = weight.detach().to(torch.float16)
    return padded.view(blocks, ROWS, k // COLS, COLS).transpose(1, 2).contiguous()


def half_matvec(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    """``x [R, K]`` float32 (contiguous) times a :func:`pack_rows` weight, plus ``bias [N]`` -> ``[R, N]``.

    A C++ operator (``torch.ops.gsv.half_matvec``, opaque to ``torch.compile``); call
    :func:`load_kernel` first.
    """
    return torch.ops.gsv.half_matvec(x, packed, bias, out_features)


def load_kernel(choice: str = "auto") -> bool:
    """Whether decode steps use our kernel, per ``GSV_HALF_MATVEC`` (``choice``): builds it if needed.

    ``auto`` logs the reason once and returns False where it cannot be had; ``native`` raises
    :class:`KernelUnavailable` instead.
    """
    if choice not in KERNEL_CHOICES:
        raise KernelUnavailable(f"GSV_HALF_MATVEC={choice!r}: expected one of {', '.join(KERNEL_CHOICES)}")
    if choice == "fbgemm":
        return False
    built, problem = _build()
    if built:
        return True
    if choice == "native":
        raise KernelUnavailable(f"GSV_HALF_MATVEC=native: {problem}")
    _log_once(f"float16 decode products use FBGEMM's one-thread kernel: {problem}")
    return False


@cache
def _log_once(message: str) -> None:
    log.warning(message)


@cache
def _build() -> tuple[bool, str | None]:
    """``(True, None)`` once the operator is registered, else ``(False, why not)``; tried once per process."""
    problem = _unsupported_reason()
    if problem:
        return False, problem
    started = time.perf_counter()
    try:
        _load_or_build(_build_folder())
    except Exception as err:  # compiler errors arrive as RuntimeError/CalledProcessError/OSError
        detail = str(err).strip().splitlines()
        return (
            False,
            f"building {', '.join(path.name for path in SOURCES)} failed: {detail[-1] if detail else type(err).__name__}",
        )
    elapsed = time.perf_counter() - started
    if elapsed > 5:
        log.warning("C++ decode kernels ready after %.0f s (cached in %s)", elapsed, _build_folder())

    @torch.library.register_fake("gsv::half_matvec")
    def _(x, packed, bias, out_features):
        return x.new_empty(x.shape[0], out_features)

    return True, None


def _unsupported_reason() -> str | None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"it is written for x86-64 (AVX2/F16C), this CPU is {platform.machine()}"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2" and not capability.startswith("AVX512"):
        return f"the CPU lacks AVX2 (PyTorch reports {capability})"
    flags = cpu_flags()  # empty without /proc (not Linux): AVX2 CPUs all have F16C, and a failed build says so
    if flags and "f16c" not in flags:
        return "the CPU lacks F16C"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH)"
    if shutil.which("ninja") is None:
        _add_pip_ninja_to_path()
        if shutil.which("ninja") is None:
            return "ninja is not installed (pip install ninja)"
    return None


def _add_pip_ninja_to_path() -> None:
    """The ``ninja`` wheel installs its binary next to the interpreter, which a node's PATH may lack."""
    try:
        import ninja  # noqa: PLC0415
    except ImportError:
        return
    os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"


def _build_folder() -> Path:
    """One folder per source, flags and torch version: a finished build there is up to date."""
    code = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    digest = hashlib.sha256(code + " ".join(CFLAGS).encode()).hexdigest()[:12]
    return BUILD_FOLDER / digest


def _load_or_build(folder: Path) -> None:
    """Register the operator from ``folder``'s library, building it first if no build finished there.

    Under an OS lock of our own, which the kernel drops when its holder dies: torch's own build lock
    (torch 2.13) is a file whose mere existence blocks, taken on every ``load`` — a node killed
    while holding it (a graph stopped during start-up) left every later gpt node waiting. Loading a
    finished build never calls ``cpp_extension.load``; a build removes torch's file first, which
    only a dead builder can have left while we hold our lock.
    """
    import fcntl  # noqa: PLC0415 (Linux/macOS; the kernel is x86-64 only anyway)

    from torch.utils import cpp_extension

    folder.mkdir(parents=True, exist_ok=True)
    library, finished = folder / f"{LIBRARY}.so", folder / "finished"
    with (folder / "build.flock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is building the C++ decode kernels in %s: waiting for it", folder)
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits for a live builder only
        if finished.exists():
            torch.ops.load_library(str(library))
            return
        (folder / "lock").unlink(missing_ok=True)
        with _announced_build(folder):
            cpp_extension.load(
                name=LIBRARY,
                sources=[str(path) for path in SOURCES],
                extra_cflags=CFLAGS,
                extra_ldflags=["-fopenmp"],
                build_directory=str(folder),
                is_python_module=False,  # registers torch.ops.gsv.half_matvec and .decode_layers
                verbose=False,
            )
        finished.touch()  # after a complete build and load: a half-written library is never loaded


BUILD_NOTE_EVERY_S = 30.0


@contextmanager
def _announced_build(folder: Path) -> Iterator[None]:
    """Say that the build runs, and every BUILD_NOTE_EVERY_S that it still does: a node silent for
    minutes looks hung. Warnings, because before a node joins dora only those reach its log."""
    log.warning(
        "building the C++ decode kernels (%s) into %s: once per torch version, "
        "~2.5 min of CPU (longer on a busy machine)",
        ", ".join(path.name for path in SOURCES),
        folder,
    )
    started, done = time.perf_counter(), threading.Event()

    def note() -> None:
        while not done.wait(BUILD_NOTE_EVERY_S):
            log.warning("still building the C++ decode kernels (%.0f s)", time.perf_counter() - started)

    thread = threading.Thread(target=note, name="kernel-build-note", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def main() -> None:
    """``python -m dora_gpt_sovits.gpt.half_matvec``: build the kernels now (scripts/setup_env.sh does)
    rather than in the first gpt node; exit status 1, with the reason, where they cannot be had."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cached = (_build_folder() / "finished").exists()
    built, problem = _build()
    if not built:
        print(f"the C++ decode kernels cannot be built here: {problem}", file=sys.stderr)
        raise SystemExit(1)
    if cached:  # a build says so itself, with its time
        print(f"C++ decode kernels ready (cached in {_build_folder()})", file=sys.stderr)


if __name__ == "__main__":
    main()
