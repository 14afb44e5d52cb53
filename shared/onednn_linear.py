"""``x @ W.T + b`` on a weight laid out once for oneDNN, optionally with an activation applied to
the float32 accumulator before the output is rounded.

At the row counts of a streamed DiT first run or a GPT prefill (tens to hundreds of rows), a plain
bfloat16 ``F.linear`` lays its weight out again on every call; the prepacked product skips that
(385 vs 252 us for 64 x 1024 -> 1024, 2 threads) and is bit-equal to it. Used by the bfloat16 DiT
(sovits/dit_packed.py) and the bfloat16 GPT prefill (gpt/bfloat16_prefill.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
