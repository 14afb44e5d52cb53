"""Half-precision modules that never hand NaN downstream: detect, switch to float32, say so once.

Why this exists: on Intel Xeons with AMX (Sapphire Rapids and later), the oneDNN 3.12 bundled with
torch 2.13 picks its ``brg_conv_fwd:avx10_1_512_amx`` bfloat16 convolution for a 3x3 stride-2
convolution whose output is one column wide (ERes2NetV2's ``layer3_ds`` on a reference of a few
frames) and reads source memory past the padded edge instead of zeros: the output is NaN or garbage
whenever that memory held NaN bit patterns, i.e. depending on what the process allocated before
(docs/reliability.md, "Right answers on every CPU"). AMD CPUs and Intel CPUs without AMX take
another kernel and are unaffected; ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` avoids it globally, at
the cost of every other AMX kernel.

A defect like this is silent, so the rule is about the output, not about one kernel: a module run in
half precision whose output is not finite although its input was gets a float32 twin (the same
weights, widened exactly), the call is repeated on the twin, and every later call goes to the twin —
one warning in the log names the module. A float32 module (or a twin) whose output is still not
finite raises :class:`NonFiniteOutput`: the weights or the input are broken, and the caller fails
that request with the reason instead of emitting NaN audio.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger("dora_gpt_sovits")

HALF_DTYPES = (torch.float16, torch.bfloat16)
_TWIN = "_float32_twin"  # attribute of the guarded module that holds its float32 replacement


class NonFiniteOutput(ValueError):
    """A module produced NaN/inf from finite input even in float32."""


def all_finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def module_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def run_finite(
    module: nn.Module, forward: Callable[[nn.Module], torch.Tensor], name: str, inputs: tuple[torch.Tensor, ...] = ()
) -> torch.Tensor:
    """``forward(module)``, or ``forward(float32 twin)`` cast back to the module's dtype when the
    module's own output is not finite. ``forward`` must cast its inputs to the dtype of the module
    it is given. ``inputs`` are checked first, so broken input is reported as such."""
    bad_input = next((i for i, t in enumerate(inputs) if not all_finite(t)), None)
    if bad_input is not None:
        raise NonFiniteOutput(f"{name}: input {bad_input} holds NaN or infinite values")
    twin = getattr(module, _TWIN, None)
    if twin is not None:
        return _checked(forward(twin), name, "float32").to(module_dtype(module))
    out = forward(module)
    if all_finite(out):
        return out
    dtype = module_dtype(module)
    if dtype not in HALF_DTYPES:
        raise NonFiniteOutput(f"{name}: output holds NaN or infinite values in {_short(dtype)} (broken weights?)")
    twin = float32_twin(module)
    log.warning(
        "%s: %s output held NaN/inf on %s; running it in float32 from now on (a half-precision kernel "
        "defect, e.g. oneDNN's AMX bfloat16 convolution: docs/reliability.md)",
        name,
        _short(dtype),
        _device(module),
    )
    return _checked(forward(twin), name, "float32").to(dtype)


def float32_twin(module: nn.Module) -> nn.Module:
    """The module with its weights widened to float32 (exact), kept on the module for later calls."""
    twin = copy.deepcopy(module).float()
    object.__setattr__(module, _TWIN, twin)  # not a submodule: state_dict and .to() leave it alone
    return twin


def require_finite(out: torch.Tensor, name: str) -> torch.Tensor:
    """For engines without a float32 twin (exported graphs): the output, or NonFiniteOutput."""
    if not all_finite(out):
        raise NonFiniteOutput(f"{name}: output holds NaN or infinite values (broken weights or graph?)")
    return out


def _checked(out: torch.Tensor, name: str, precision: str) -> torch.Tensor:
    if not all_finite(out):
        raise NonFiniteOutput(f"{name}: output holds NaN or infinite values even in {precision} (broken weights?)")
    return out


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _device(module: nn.Module) -> str:
    return str(next(module.parameters()).device)
