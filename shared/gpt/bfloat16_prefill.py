"""The GPT prefill in bfloat16 on a CPU's matrix units (``GSV_GPT_PREFILL_DTYPE=bfloat16``): optional
and **lossy** — the products round their inputs and outputs to 8 mantissa bits, so tokens drift from
upstream's (docs/performance.md, "Prefill"). Decode steps are untouched.

A float32 prefill is ~70% products that MKL already runs near the cores' float32 peak, so the only
large gain left is the matrix units: AMX tiles (Intel, ~4.5x the float32 products) or AVX512-BF16
dot products (AMD Zen 4, ~2.8x). Once the products are that fast, what surrounded them matters, so
each layer's many-row calls here (the prefill; few-row calls, decode steps and the last layer's
last position, stay the layer's own):

* multiply on bfloat16 weights laid out once for oneDNN, bias inside the product (onednn_linear);
* apply the feed-forward's ReLU inside its first product and feed that product's bfloat16 output
  straight to the second: the same numbers as widening it, applying ReLU and rounding it back (ReLU
  commutes with rounding), three passes fewer over a ``[t, 4d]`` activation.

The cache stays float32 (keys and values are widened as they are written), and so do the
residual stream, the LayerNorms and attention (PyTorch's kernel: two products and a softmax by hand
measured no faster here, 2026-12-07, AMD EPYC).
"""

from __future__ import annotations

import torch
from torch import nn

from ..cpu_features import matrix_units_for
from ..onednn_linear import PackedLinear
from .model import DecoderLayer
from .weights import MAX_PACKED_ROWS, QuantizationError, use_cpu_kernels

PREFILL_DTYPES = ("float32", "bfloat16")
PACKED_FOR_ROWS = 256  # the row count oneDNN lays the weights out for: a typical prompt + text


class BFloat16PrefillLayer(DecoderLayer):
    """A :class:`~.model.DecoderLayer` whose many-row calls run in bfloat16 (module doc); its
    parameters, and every few-row call, are the original layer's."""

    qkv_bf16: PackedLinear
    out_bf16: PackedLinear
    ffn_in_relu_bf16: PackedLinear
    ffn_out_bf16: PackedLinear

    @classmethod
    def adopt(cls, layer: DecoderLayer) -> None:
        def pack(linear: nn.Linear, **activation: str) -> PackedLinear:
            bias = None if linear.bias is None else linear.bias.detach().bfloat16()
            return PackedLinear.pack(linear.weight.detach().bfloat16(), bias, PACKED_FOR_ROWS, **activation)

        packed = {
            "qkv_bf16": pack(layer.qkv),
            "out_bf16": pack(layer.out_proj),
            "ffn_in_relu_bf16": pack(layer.ffn_in, activation="relu"),
            "ffn_out_bf16": pack(layer.ffn_out),
        }
        layer.__class__ = cls  # keeps the parameters (and their names) as they are
        for name, product in packed.items():
            setattr(layer, name, product)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if few_rows(x):
            return super().heads(x)
        b, t, _ = x.shape
        qkv = self.qkv_bf16(x.to(torch.bfloat16))
        return qkv.view(b, t, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)

    def mix(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        if few_rows(x):
            return super().mix(x, attended)
        attended = attended.transpose(1, 2).reshape(x.shape).to(torch.bfloat16)
        h = self.norm1(x + self.out_bf16(attended).float())
        return self.norm2(h + self.ffn_out_bf16(self.ffn_in_relu_bf16(h.to(torch.bfloat16))).float())


def few_rows(x: torch.Tensor) -> bool:
    """Whether ``x [..., d]`` is a decode step's few rows (the layer's own kernels) or being traced."""
    return x.numel() // x.shape[-1] <= MAX_PACKED_ROWS or torch.jit.is_tracing() or torch.compiler.is_compiling()


def use_bfloat16_prefill(model: nn.Module) -> nn.Module:
    """In place: every transformer layer becomes a :class:`BFloat16PrefillLayer` (+2 bytes per
    weight for the packed copies). Refused (QuantizationError) off a float32 CPU model or on a CPU
    without AMX or AVX512-BF16, where bfloat16 products are slower than float32."""
    if model.device.type != "cpu" or model.dtype != torch.float32:
        raise QuantizationError(
            f"GSV_GPT_PREFILL_DTYPE=bfloat16 is for a float32 CPU model, this one is {model.dtype} on {model.device}"
        )
    if matrix_units_for(torch.bfloat16) is None:
        raise QuantizationError(
            "GSV_GPT_PREFILL_DTYPE=bfloat16 needs a CPU with AMX or AVX512-BF16 (none in /proc/cpuinfo)"
        )
    use_cpu_kernels(model)
    for layer in model.layers:
        if not isinstance(layer, BFloat16PrefillLayer):
            BFloat16PrefillLayer.adopt(layer)
    return model


def prefill_dtype(model: nn.Module) -> str:
    """What the prefill's products multiply in: ``float32`` or ``bfloat16``."""
    return "bfloat16" if isinstance(model.layers[0], BFloat16PrefillLayer) else "float32"
