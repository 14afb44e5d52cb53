"""A bfloat16 DiT on a CPU with weights laid out once for oneDNN: the blocks' products (for short
calls or for all, by CPU), the convolutional position code for all.

A streamed first run is one DiT call over a few dozen frames (32 prompt + 32 new by default), and
each of its steps is ~130 products of 64 rows by the blocks' 1-2 M-weight matrices. At that size a
plain bfloat16 ``F.linear`` is much slower than the same product on a weight laid out once for
oneDNN (385 vs 252 us for 1024 x 1024, PASSIVE, 2 threads), and ``addmm`` first copies the broadcast
bias into the output (one more pass, in parallel: one more thread wake-up under the graphs'
``OMP_WAIT_POLICY=PASSIVE``). Here each block gets, once at load:

* q, k and v as one prepacked ``dim x 3 inner`` product (one call instead of three);
* the feed-forward's in-projection with its tanh-GELU applied inside the product (oneDNN post-op);
* the attention output and feed-forward out-projections prepacked.

And at every length, the two grouped convolutions of the convolutional position code run on
the time-major frames as a channels-last 2-d convolution on a weight laid out once the same way
(bit-equal to the 1-d convolution in bfloat16, 2-4x faster: 2.4 -> 0.6 ms at 64 frames, 4.5 ->
2.0 ms at 516; in float32 it was neither faster nor bit-equal, so float32 keeps the plain modules).

Which calls take the packed products depends on the CPU (:func:`packed_rows_limit`). With AMX,
calls of up to ``MAX_ROWS`` rows: longer ones (later runs: hundreds of frames) keep the plain
modules, where the prepacked layout was measured slower for two of the four shapes at 516 frames
(Intel Xeon, Sapphire Rapids). Without AMX (AVX512-BF16: AMD Zen 4) every call: there the packed
product was 4-19% faster than the plain one at every row count measured, 64 to 1,000, and the GELU
inside it saves a pass (docs/performance.md, "v4 one-shot on the AMD EPYC"). The weights are laid
out for ``MAX_ROWS`` rows either way: a layout made for 644 or 1,000 rows was no faster there and
gives the same bits. The plain modules stay (tracing and exports take them): a second copy of the
blocks' product weights (~350 MB at full size in bfloat16).

A packed product equals the plain bfloat16 one (bit-equal at 64 x 1024 -> 2048, measured) except
the GELU, computed on the float32 accumulator and rounded once instead of after the product and
again after the activation. The first-run DiT call stays 33.8 dB from float32, as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cpu_features import cpu_flags
from ..onednn_linear import PackedLinear
from .dit import CONV_POS_GROUPS, Attention, ConvPositionEmbedding, DiT, FeedForward

# Rows (batch x frames) up to which a call uses the packed weights on an AMX CPU, and the row count
# the weights are laid out for: a first run is 64 by default.
MAX_ROWS = 128


def packed_rows_limit(flags: frozenset[str] | None = None) -> int | None:
    """The longest call (rows) that takes the packed products on this CPU; None: every call."""
    return MAX_ROWS if "amx_bf16" in (cpu_flags() if flags is None else flags) else None


def fits(x: Tensor, dtype: torch.dtype, max_rows: int | None) -> bool:
    """Whether ``x`` may take the packed products: their dtype, short enough, not being traced."""
    short = max_rows is None or x.numel() // x.shape[-1] <= max_rows
    return not torch.jit.is_tracing() and x.dtype == dtype and short


class PackedAttention(Attention):
    """An ``Attention`` sharing the original's modules (same state-dict names) whose calls of up to
    ``max_rows`` rows (None: all) project through packed weights."""

    def __init__(self, attn: Attention, max_rows: int | None = MAX_ROWS):
        nn.Module.__init__(self)
        self.heads, self.dim_head = attn.heads, attn.dim_head
        self.to_q, self.to_k, self.to_v, self.to_out = attn.to_q, attn.to_k, attn.to_v, attn.to_out
        self.max_rows = max_rows
        self.dtype = attn.to_q.weight.dtype
        projections = (attn.to_q, attn.to_k, attn.to_v)
        self.qkv = PackedLinear.pack(
            torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections]), MAX_ROWS
        )
        self.out = PackedLinear.pack(attn.to_out[0].weight, attn.to_out[0].bias, MAX_ROWS)

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not fits(x, self.dtype, self.max_rows):
            return super().project_qkv(x)
        # Views into one [.., 3 inner] output: the rotary then writes q's and k's first head in place.
        return self.qkv(x).chunk(3, dim=-1)

    def project_out(self, x: Tensor) -> Tensor:
        return self.out(x) if fits(x, self.dtype, self.max_rows) else super().project_out(x)


class PackedFeedForward(FeedForward):
    """A ``FeedForward`` sharing the original's modules whose calls of up to ``max_rows`` rows (None:
    all) run on packed weights, the GELU inside the first product."""

    def __init__(self, ff: FeedForward, max_rows: int | None = MAX_ROWS):
        nn.Module.__init__(self)
        self.ff = ff.ff
        self.max_rows = max_rows
        first, last = ff.ff[0][0], ff.ff[2]
        self.dtype = first.weight.dtype
        self.first = PackedLinear.pack(first.weight, first.bias, MAX_ROWS, activation="gelu", algorithm="tanh")
        self.last = PackedLinear.pack(last.weight, last.bias, MAX_ROWS)

    def forward(self, x: Tensor) -> Tensor:
        return self.last(self.first(x)) if fits(x, self.dtype, self.max_rows) else super().forward(x)


class PackedConvPositions(ConvPositionEmbedding):
    """A ``ConvPositionEmbedding`` sharing the original's convolutions whose bfloat16 calls run as
    channels-last 2-d convolutions: [B, T, C] frames seen as [B, C, 1, T] in channels-last order
    are the same memory, so neither the input nor the output is copied."""

    def __init__(self, positions: ConvPositionEmbedding):
        nn.Module.__init__(self)
        self.conv1d = positions.conv1d
        self.convs = [layer for layer in self.conv1d if isinstance(layer, nn.Conv1d)]
        self.dtype = self.convs[0].weight.dtype
        self.weights = [
            c.weight.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last) for c in self.convs
        ]

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != self.dtype or torch.jit.is_tracing():
            return super().forward(x)
        h = x.transpose(1, 2).unsqueeze(2)
        for conv, weight in zip(self.convs, self.weights):
            h = F.mish(F.conv2d(h, weight, conv.bias, padding=(0, conv.padding[0]), groups=CONV_POS_GROUPS))
        return h.squeeze(2).transpose(1, 2)


def pack_products(dit: DiT, max_rows: int | None = MAX_ROWS) -> DiT:
    """A bfloat16 ``dit`` with packed products for calls of up to ``max_rows`` rows (None: every
    call) and channels-last position convolutions (in place; CPU only). Returns ``dit``."""
    dtype = next(dit.parameters()).dtype
    if dtype != torch.bfloat16 or next(dit.parameters()).device.type != "cpu":
        raise ValueError(f"packed DiT products are for a bfloat16 DiT on a CPU, not {dtype}")
    with torch.no_grad():
        if not isinstance(dit.input_embed.conv_pos_embed, PackedConvPositions):
            dit.input_embed.conv_pos_embed = PackedConvPositions(dit.input_embed.conv_pos_embed)
        for block in dit.transformer_blocks:
            if not isinstance(block.attn, PackedAttention):
                block.attn = PackedAttention(block.attn, max_rows)
            if not isinstance(block.ff, PackedFeedForward):
                block.ff = PackedFeedForward(block.ff, max_rows)
    return dit
