"""int8 weights for the GPT's linear layers on CPU (``GSV_GPT_QUANT=int8``).

A decode step multiplies one row by ~77M weights: it is bound by how fast the weights stream from
memory, so storing them in int8 (a quarter of float32's bytes) is most of the gain. The product
runs in FBGEMM's int8 kernels (AVX2 is enough): each call quantises its activation row to 8 bits
on the fly (dynamic quantisation), multiplies int8 x int8 into int32 and rescales to float32.

Weights are quantised symmetrically per output row (real checkpoints have rows of very different
magnitude): ``w[n] ~ q[n] * row_scale[n]``, and FBGEMM's product (which itself takes a single scale)
runs on ``q`` with scale 1, the rows being rescaled afterwards in the same fused multiply-add that
adds the bias. ``q`` uses 7 bits (|q| <= 63), not 8: without VNNI, AVX2 int8 products add pairs of
uint8 x int8 products into int16, which saturates for full-range operands (measured: 16% relative
error on a Gaussian input with 8-bit weights, 1% with 7-bit ones). ``torch.ao`` handles the same
problem by giving the activations 7 bits instead (``reduce_range``).

Chosen by measurement on an AVX2 CPU without VNNI (docs/performance.md): these kernels ran the 96
decode-step products of the full-size model ~4x faster than float32 ``F.linear``, ahead of
``torch.ao`` ``quantize_dynamic`` modules (~2x, same FBGEMM underneath plus quantised-tensor
overhead) and of ``torch._weight_int8pack_mm`` (slower than float32 on AVX2). PyTorch marks these
FBGEMM entry points deprecated; if a future release drops them, :func:`quantize_int8` says so.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

QUANT_MODES = ("none", "int8")
Q_MAX = 63  # 7-bit weights: see the module doc


class QuantizationError(RuntimeError):
    """int8 was asked for where it cannot run (no FBGEMM kernels, not a CPU model, not float32)."""


def _fbgemm(name: str):
    op = getattr(torch, name, None)
    if op is None or "fbgemm" not in torch.backends.quantized.supported_engines:
        raise QuantizationError(f"int8 GPT needs torch.{name} (FBGEMM), which torch {torch.__version__} lacks")
    return op


class Int8Linear(nn.Module):
    """``y = (x Q^T) * row_scale + bias`` with ``Q`` the int8 weight, packed once for FBGEMM."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        pack = _fbgemm("fbgemm_pack_quantized_matrix")
        self.product = _fbgemm("fbgemm_linear_int8_weight_fp32_activation")
        w = layer.weight.detach().float()
        peak = w.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        self.q = torch.round(w / peak * Q_MAX).to(torch.int8)  # FBGEMM reads the shape from it
        self.col_offsets = self.q.sum(dim=1, dtype=torch.int32)  # corrects for the activation's zero point
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice; see the module doc
            self.packed = pack(self.q)
        self.register_buffer("row_scale", (peak / Q_MAX).view(-1), persistent=False)
        bias = layer.bias.detach().float() if layer.bias is not None else torch.zeros(w.shape[0])
        self.register_buffer("bias", bias, persistent=False)
        self.register_buffer("no_bias", torch.zeros_like(bias), persistent=False)
        self.in_features, self.out_features = w.shape[1], w.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = self.product(x.float(), self.q, self.packed, self.col_offsets, 1.0, 0, self.no_bias)
        return torch.addcmul(self.bias, y, self.row_scale).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-row"


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace, in place, every linear layer of the transformer stack and the logits projection by
    :class:`Int8Linear`; embeddings, LayerNorms and ``bert_proj`` (prefill only) stay float32.
    Returns ``model``."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise QuantizationError(f"int8 GPT runs on CPU only (FBGEMM); the model is on {device}")
    if model.dtype != torch.float32:
        raise QuantizationError(f"int8 GPT starts from float32 weights, got {model.dtype}")
    for layer in model.layers:
        for name in ("qkv", "out_proj", "ffn_in", "ffn_out"):
            setattr(layer, name, Int8Linear(getattr(layer, name)))
    model.ar_predict_layer = Int8Linear(model.ar_predict_layer)
    return model


def apply_quantization(model: nn.Module, mode: str) -> nn.Module:
    """``mode`` is one of :data:`QUANT_MODES` (``GSV_GPT_QUANT``); ``none`` returns the model as is."""
    if mode not in QUANT_MODES:
        raise QuantizationError(f"GSV_GPT_QUANT={mode!r}: expected one of {', '.join(QUANT_MODES)}")
    return quantize_int8(model) if mode == "int8" else model
