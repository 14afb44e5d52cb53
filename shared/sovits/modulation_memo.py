"""The DiT's per-step modulation, computed once per flow time and reused by every later call.

Each DiT block (and the output layer) turns the time code ``c = MLP(t) + MLP(dt)`` into its shifts,
scales and gates with one ``dim x 6 dim`` product. ``c`` depends on the flow time and the step size
only, never on the frames, so every CFM call at the same step count recomputes the same vectors:
22 products on one row that read ~280 MB of weights per step at full size (bfloat16), about a
quarter of a step over a short run's few dozen frames on a CPU. Remembering them by the exact
bytes of ``c`` returns the very tensors the product would give again: the output is unchanged, bit
for bit, and a step count's vectors are computed by its first call only.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from .dit import AdaLayerNormZero, DiT

# Entries per layer (one per distinct flow time and step size): 128 holds every step of, e.g., the
# 4/8/16/32/64 step counts; a full-size entry is 6 x 1024 values.
MAX_TIMES = 128


class MemoModulation(AdaLayerNormZero):
    """An ``AdaLayerNormZero`` sharing the original's ``linear`` (same state-dict names) whose output
    is remembered per distinct time code."""

    def __init__(self, norm: AdaLayerNormZero, max_times: int = MAX_TIMES):
        nn.Module.__init__(self)
        self.chunks = norm.chunks
        self.linear = norm.linear
        self.max_times = max_times
        self.memo: OrderedDict[tuple, tuple[Tensor, ...]] = OrderedDict()

    def forward(self, c: Tensor) -> tuple[Tensor, ...]:
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return super().forward(c)
        key = (
            c.dtype,
            c.device,
            tuple(c.shape),
            c.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes(),
        )
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = super().forward(c)
            while len(self.memo) > self.max_times:
                self.memo.popitem(last=False)
        else:
            self.memo.move_to_end(key)
        return found


def memoize_modulation(dit: DiT, max_times: int = MAX_TIMES) -> DiT:
    """Every modulation layer of ``dit`` remembered (in place; meant for a CPU, where reading ``c``
    back costs nothing). Returns ``dit``."""
    for block in dit.transformer_blocks:
        if not isinstance(block.attn_norm, MemoModulation):
            block.attn_norm = MemoModulation(block.attn_norm, max_times)
    if not isinstance(dit.norm_out, MemoModulation):
        dit.norm_out = MemoModulation(dit.norm_out, max_times)
    return dit
