"""``x @ W.T + b`` on a weight laid out once for oneDNN, optionally with an activation applied to
the float32 accumulator before the output is rounded.

At the row counts of a streamed DiT first run or a GPT prefill (tens to hundreds of rows), a plain
bfloat16 ``F.linear`` lays its weight out again on every call; the prepacked product skips that
(385 vs 252 us for 64 x 1024 -> 1024, 2 threads) and is bit-equal to it. Used by the bfloat16 DiT
(sovits/dit_packed.py) and the bfloat16 GPT prefill (gpt/bfloat16_prefill.py).

In float32 the prepacked product is a different kernel from PyTorch's (MKL's GEMM), ~1e-6 apart.
On AMD CPUs it is also much faster at few rows (cpu_features.mkl_float32_is_slow), which is what
:func:`pack_linears` is for: BERT's encoder, a few dozen rows per segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class PackedLinear:
    """``x @ weight.T + bias`` (then ``activation``) on a weight laid out for oneDNN."""

    weight: Tensor
    bias: Tensor | None
    activation: str = "none"
    algorithm: str = ""

    @classmethod
    def pack(cls, weight: Tensor, bias: Tensor | None, rows: int, **activation: str) -> PackedLinear:
        """``rows``: the row count oneDNN lays the weight out for (other counts work too)."""
        return cls(torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows), bias, **activation)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.activation, [], self.algorithm)


class PackedLinearModule(nn.Module):
    """An ``nn.Linear`` replaced by its prepacked product: the packed weight (oneDNN's opaque
    layout) is the only copy kept, so packing costs no memory; the module has no ``weight``."""

    def __init__(self, linear: nn.Linear, rows: int):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = None if linear.bias is None else linear.bias.detach()
        self.product = PackedLinear.pack(linear.weight, bias, rows)

    def forward(self, x: Tensor) -> Tensor:
        return self.product(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN prepacked"


def pack_linears(module: nn.Module, rows: int) -> int:
    """Replace, in place, every ``nn.Linear`` under ``module`` by a :class:`PackedLinearModule`
    laid out for ``rows`` rows; returns how many. Inference only: the result neither trains nor
    traces (ONNX exports take the unpacked model)."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, PackedLinearModule(child, rows))
                replaced += 1
    return replaced
