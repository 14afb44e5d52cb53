"""GSV_DIT_COMPILE: the v3/v4 DiT's per-step call under ``torch.compile`` (opt-in, off by default).

``off`` leaves the DiT eager. ``inductor`` compiles :meth:`DiT.velocity` (the part run once per
flow step; the text branch and the step code run once per call, eager) with ``dynamic=True``: a
streamed segment's runs grow by a few frames each, and a graph specialised per length would
recompile at every run. ``cudagraphs`` is the same with ``mode="reduce-overhead"``, which on CUDA
captures the step as CUDA graphs (one per length met, replayed after); it needs a CUDA device.

A compiled DiT takes neither CPU shortcut of ``MelVocoderEngine.load``: the per-time modulation
memo (``modulation_memo.py``: a Python dict keyed by the bytes of ``c``, which a trace cannot
follow) nor the prepacked bfloat16 products (``dit_packed.py``: oneDNN ops of their own). Inductor
fuses the modulation's elementwise work and picks its own product kernels, so the compiled path is
the plain DiT, compiled. On this project's CPU it lost to the eager path (docs/performance.md,
"DiT under torch.compile"), so it is meant for GPUs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .dit import DiT

COMPILE_MODES = ("off", "inductor", "cudagraphs")


def compile_mode(env: Mapping[str, str], device: torch.device) -> str:
    """GSV_DIT_COMPILE for a DiT on ``device``; SettingsError (one line) for a bad value or
    ``cudagraphs`` off CUDA."""
    from ..settings import DIT_COMPILE, SettingsError

    mode = DIT_COMPILE.read(env)
    check_mode(mode, device, SettingsError)
    return mode


def check_mode(mode: str, device: torch.device, error: type[Exception] = ValueError) -> None:
    if mode not in COMPILE_MODES:
        raise error(f"GSV_DIT_COMPILE={mode!r} is not one of {', '.join(COMPILE_MODES)}")
    if mode == "cudagraphs" and torch.device(device).type != "cuda":
        raise error(f"GSV_DIT_COMPILE=cudagraphs needs a CUDA device, this DiT runs on {torch.device(device)}")


def compile_dit(dit: DiT, mode: str) -> DiT:
    """``dit`` with its per-step ``velocity`` compiled as ``mode`` says (in place). Returns ``dit``.

    ValueError (one line) for an unknown mode or ``cudagraphs`` off CUDA."""
    check_mode(mode, next(dit.parameters()).device)
    if mode == "off":
        return dit
    options = {"mode": "reduce-overhead"} if mode == "cudagraphs" else {}
    # The bound method of the eager module, compiled; the instance attribute shadows the class's.
    dit.velocity = torch.compile(DiT.velocity.__get__(dit), dynamic=True, **options)
    return dit


def is_compiled(dit: DiT) -> bool:
    return "velocity" in vars(dit)
