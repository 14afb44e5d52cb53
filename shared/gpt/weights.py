"""What multiplies by each of the GPT's linear layers on a CPU: weight formats and product kernels.

Decoders choose (options.make_decoder; the model itself only calls its layers):

* :func:`use_cpu_kernels` (every torch decoder): a plain float32 ``nn.Linear`` becomes
  :class:`SplitRowsLinear` (a decode step's matrix-vector product split over the intra-op
  threads), a half-precision one :class:`UpcastLinear` (the prefill's GEMM in float32).
* :func:`apply_quantization` (``GSV_GPT_QUANT``), the formats below.

* ``fp16``: the weights also kept as float16, used for decode steps (few rows) by our multi-thread
  kernel (half_matvec.py) or else FBGEMM's; products are computed in float32. Official
  checkpoints store float16 weights, so this is **lossless**: only the summation order differs
  from float32 ``F.linear`` (~1e-6), and token sequences stay those of upstream. Half the bytes
  per step. The prefill (many rows) keeps MKL's float32 GEMM, which is faster there, so the
  float32 weights stay too (+50% weight memory). Refused for weights that float16 cannot hold.
* ``auto`` (default): ``fp16`` where it is lossless and available (CPU, float32), else ``none``.

(An ``int8`` format, FBGEMM's dynamically quantised products on 7-bit per-row weights, was removed
on 2026-12-06: lossy, and no faster than the fused float16 step any more; docs/performance.md.)
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .half_matvec import COLS, KernelUnavailable, half_matvec, load_kernel, pack_rows

QUANT_MODES = ("auto", "none", "fp16")
MAX_PACKED_ROWS = 8  # up to this many rows (decode steps) a product counts as matrix-vector


class QuantizationError(RuntimeError):
    """A weight format was asked for where it cannot run (no FBGEMM kernels, not a CPU model, not float32)."""


def _fbgemm(name: str):
    op = getattr(torch, name, None)
    if op is None or "fbgemm" not in torch.backends.quantized.supported_engines:
        raise QuantizationError(f"packed GPT weights need torch.{name} (FBGEMM), which torch {torch.__version__} lacks")
    return op


# FBGEMM's product as an opaque custom op, so that torch.compile keeps it as a call instead of
# tracing into a kernel it cannot see (its packed operand is a raw memory blob).
@torch.library.custom_op("gsv::half_product", mutates_args=())
def half_product(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    return torch.fbgemm_linear_fp16_weight_fp32_activation(x, packed, bias)


@half_product.register_fake
def _(x, packed, bias, out_features):
    return x.new_empty(*x.shape[:-1], out_features)


class HalfDecodeLinear(nn.Linear):
    """An ``nn.Linear`` whose few-row products (decode steps) read a float16 copy of its
    (float16-exact) weight; many-row products (the prefill) stay float32 ``F.linear``, which MKL
    runs faster there.

    The copy is packed for our kernel (``half_weight``: half_matvec.py, on every intra-op thread)
    or, where that kernel cannot be had, for FBGEMM's (``packed``: one thread).
    """

    half_weight: torch.Tensor | None
    packed: torch.Tensor | None

    @classmethod
    def adopt(cls, layer: nn.Linear, native: bool) -> HalfDecodeLinear:
        w = layer.weight.detach()
        if w.dtype != torch.float32 or not torch.equal(w.half().float(), w):
            raise QuantizationError("GSV_GPT_QUANT=fp16 needs float32 weights that float16 holds exactly")
        native = native and layer.in_features % COLS == 0  # the kernel's column groups
        packed = None if native else _pack_half_for_fbgemm(w)  # checks FBGEMM before touching the layer
        layer.__class__ = cls  # keeps the parameters (and their names) as they are
        layer.register_buffer("half_weight", pack_rows(w) if native else None, persistent=False)
        layer.packed = packed
        layer.decode_bias = None if layer.bias is None else layer.bias.detach()  # the same storage, no autograd
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch warns once per process, here rather than mid-decode
            layer(torch.zeros(1, layer.in_features))
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows > MAX_PACKED_ROWS:  # the prefill: MKL's float32 GEMM (a bfloat16 one: bfloat16_prefill.py)
            return F.linear(x, self.weight, self.bias)
        if self.half_weight is None:
            return half_product(x, self.packed, self.bias, self.out_features)
        y = half_matvec(
            x.reshape(rows, self.in_features).contiguous(), self.half_weight, self.decode_bias, self.out_features
        )
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kernel = "FBGEMM" if self.half_weight is None else "half_matvec"
        return f"{super().extra_repr()}, float16 decode products ({kernel})"


def _pack_half_for_fbgemm(w: torch.Tensor) -> torch.Tensor:
    pack = _fbgemm("fbgemm_pack_gemm_matrix_fp16")
    _fbgemm("fbgemm_linear_fp16_weight_fp32_activation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice; see the module doc
        return pack(w)


def pack_half(model: nn.Module, kernel: str = "auto") -> nn.Module:
    """Give, in place, every linear layer of the transformer stack and the logits projection a
    float16 copy of its weight for decode steps (:class:`HalfDecodeLinear`), read by the kernel
    ``kernel`` chooses (``GSV_HALF_MATVEC``, half_matvec.load_kernel). Returns ``model``."""
    _check_cpu_float32(model, "fp16")
    try:
        native = load_kernel(kernel)
    except KernelUnavailable as err:
        raise QuantizationError(str(err)) from None
    for layer in model.layers:
        for name in ("qkv", "out_proj", "ffn_in", "ffn_out"):
            HalfDecodeLinear.adopt(getattr(layer, name), native)
    HalfDecodeLinear.adopt(model.ar_predict_layer, native)
    return model


def _check_cpu_float32(model: nn.Module, mode: str) -> None:
    if model.device.type != "cpu":
        raise QuantizationError(f"GSV_GPT_QUANT={mode} runs on CPU only (FBGEMM); the model is on {model.device}")
    if model.dtype != torch.float32:
        raise QuantizationError(f"GSV_GPT_QUANT={mode} starts from float32 weights, got {model.dtype}")


def weights_in_use(model: nn.Module) -> str:
    """What decode steps multiply by: ``none``, ``fp16 (half_matvec)`` or ``fp16 (FBGEMM)``."""
    qkv = model.layers[0].qkv
    if isinstance(qkv, HalfDecodeLinear):
        return f"fp16 ({'FBGEMM' if qkv.half_weight is None else 'half_matvec'})"
    return "none"


def half_is_lossless(model: nn.Module) -> bool:
    return all(torch.equal(p.half().float(), p) for p in model.parameters() if p.dim() == 2)


def resolve_mode(model: nn.Module, mode: str) -> str:
    """``auto`` -> ``fp16`` where that is lossless and FBGEMM is there (CPU, float32), else ``none``."""
    if mode not in QUANT_MODES:
        raise QuantizationError(f"GSV_GPT_QUANT={mode!r}: expected one of {', '.join(QUANT_MODES)}")
    if mode != "auto":
        return mode
    usable = (
        model.device.type == "cpu"
        and model.dtype == torch.float32
        and "fbgemm" in torch.backends.quantized.supported_engines
    )
    return "fp16" if usable and hasattr(torch, "fbgemm_pack_gemm_matrix_fp16") and half_is_lossless(model) else "none"


def apply_quantization(model: nn.Module, mode: str, half_kernel: str = "auto") -> nn.Module:
    """Apply ``mode`` (one of :data:`QUANT_MODES`, from ``GSV_GPT_QUANT``) in place, float16
    products by ``half_kernel`` (``GSV_HALF_MATVEC``); returns the model."""
    mode = resolve_mode(model, mode)
    if mode == "fp16":
        return pack_half(model, half_kernel)
    return model


SPLIT_MAX_ROWS = 8  # products with at most this many rows count as matrix-vector


class SplitRowsLinear(nn.Linear):
    """A float32 CPU ``nn.Linear`` whose few-row products (decode steps) run on every thread.

    MKL runs a matrix-vector product on a single core; as a batch of ``parts`` shorter products
    (``baddbmm``) it runs on every intra-op thread (~1.4x per step on 2 cores). Many rows (the
    prefill), ``torch.compile`` (which picks its own kernels; ``get_num_threads`` would break its
    graph) and ONNX tracing get the plain ``F.linear``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return F.linear(x, w, b)
        out, inp = w.shape
        rows = x.numel() // inp
        parts = math.gcd(out, torch.get_num_threads())
        if rows > SPLIT_MAX_ROWS or parts == 1:
            return F.linear(x, w, b)
        blocks = w.view(parts, out // parts, inp).transpose(1, 2)
        xs = x.reshape(1, rows, inp).expand(parts, rows, inp)
        y = torch.bmm(xs, blocks) if b is None else torch.baddbmm(b.view(parts, 1, out // parts), xs, blocks)
        return y.transpose(0, 1).reshape(*x.shape[:-1], out)


class UpcastLinear(nn.Linear):
    """A float16/bfloat16 CPU ``nn.Linear``: many-row products (the prefill) upcast the weight and
    multiply in float32 (CPU half-precision GEMMs are ~7x slower than one pass over the weight);
    few rows keep PyTorch's own half matrix-vector kernel, which is fast and threaded."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or x.numel() // w.shape[1] <= SPLIT_MAX_ROWS:
            return F.linear(x, w, b)
        return F.linear(x.float(), w.float(), None if b is None else b.float()).to(x.dtype)


def use_cpu_kernels(model: nn.Module) -> nn.Module:
    """In place: every plain ``nn.Linear`` of a CPU model becomes :class:`SplitRowsLinear` (float32)
    or :class:`UpcastLinear` (half precision); other devices and layers already packed keep theirs."""
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.device.type == "cpu":
            module.__class__ = SplitRowsLinear if module.weight.dtype == torch.float32 else UpcastLinear
    return model
