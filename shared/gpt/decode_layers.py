"""A decode step through all decoder layers in one C++ call (``torch.ops.gsv.decode_layers``).

Once the float16 products run at memory speed (half_matvec.py), what is left of a CPU decode step
is overhead: of ~11 ms per token on 2 cores, the 97 products took ~4.7 ms, PyTorch's attention
~80 µs per layer (1.9 ms: its flash kernel is built for long queries, a step has one) and ~250
small operations plus the Python between them the rest. The operator here runs the same layer
arithmetic (DecoderLayer in model.py: packed float16 products, the new key/value written into the
static cache, attention over the cached positions, residuals, ReLU, LayerNorms) with nothing in
between. It is built with the product kernel (same library, same build). :class:`FusedDecoder`
(the default decoder on a CPU, options.make_decoder) runs its decode steps through it: float16
decode weights by our kernel, a plain :class:`~.kv_cache.KVCache`; a left-padded batch (which
needs the attention mask) steps through the modules instead. Rows of different utterances, each
with a cache and length of its own (continuous batching, batching.py), step together through
``torch.ops.gsv.decode_rows``: the weights are read once for all rows, and a row's arithmetic is
the same as alone. The logits projection runs at the end of the same call (``head``): one
parallel region per token, so the graphs' sleeping pool threads are woken once, not twice.

Results differ from the module path's by float32 summation order only (~1e-6); sampled tokens are
upstream's (tests/test_gpt_quant.py, and the token hashes of scripts/bench.py).
``GSV_FUSED_DECODE=0`` keeps the module path (for comparison).

``GSV_GPT_CACHE_DTYPE=float16`` (lossy, opt-in) holds the cache in float16: the operator rounds each
new key/value once when it writes it and widens the cached ones as it reads them, every sum still
float32; attention then reads half the bytes per cached position (docs/performance.md, "A float16
KV cache"). The prefill fills the cache in the same format (kv_cache.KVCache ``stored``).
"""

from __future__ import annotations

import torch
from torch import nn

from .kv_cache import KVCache
from .module_decoder import ModuleDecoder

LANES = 8  # float32 lanes of an AVX2 vector: head and FFN widths must be multiples
MAX_HEAD_DIM = 128  # the operator keeps one head's output in 16 vector registers
CACHE_FORMATS = (torch.float32, torch.float16)  # what the operator's attention reads


class FusedDecodeLayers:
    """The weights of every decoder layer in the operator's order, and the call."""

    def __init__(self, layers: nn.ModuleList, eps: float, head: nn.Module | None = None) -> None:
        self.weights = [
            tensor
            for layer in layers
            for tensor in (
                layer.qkv.half_weight, layer.qkv.bias, layer.out_proj.half_weight, layer.out_proj.bias,
                layer.norm1.weight, layer.norm1.bias, layer.ffn_in.half_weight, layer.ffn_in.bias,
                layer.ffn_out.half_weight, layer.ffn_out.bias, layer.norm2.weight, layer.norm2.bias,
            )
        ]  # fmt: skip
        if any(t is None for t in self.weights):
            raise ValueError("the fused decode step needs every layer's float16 decode weights and biases")
        self.weights = [t.detach() for t in self.weights]
        self.eps = eps
        # The logits projection (float16 packed, no bias), run by the operator after the last layer.
        packed = getattr(head, "half_weight", None)
        self.head = None if packed is None or head.bias is not None else packed.detach()
        self.vocab = head.out_features if self.head is not None else 0

    @classmethod
    def for_model(cls, model: nn.Module) -> FusedDecodeLayers | None:
        """For a model whose layers all carry half_matvec weights (weights.pack_half) and whose
        widths the operator's 8-lane vectors divide; else None (the module path)."""
        linears = [getattr(layer, name) for layer in model.layers for name in ("qkv", "out_proj", "ffn_in", "ffn_out")]
        if not all(getattr(linear, "half_weight", None) is not None and linear.bias is not None for linear in linears):
            return None
        head_dim, ffn_dim = model.config.head_dim, model.layers[0].ffn_in.out_features
        if head_dim % LANES or head_dim > MAX_HEAD_DIM or ffn_dim % LANES:
            return None
        return cls(model.layers, model.config.norm_eps, model.ar_predict_layer)

    @staticmethod
    def accepts(x: torch.Tensor, cache: KVCache) -> bool:
        """Whether this step can run fused: ``x [B, d]`` float32 on CPU, a plain unpadded cache of
        float32 attention held in float32 or float16."""
        return (
            type(cache) is KVCache
            and cache.visible is None
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and cache.dtype == torch.float32
            and cache.k.dtype in CACHE_FORMATS
            and cache.batch == x.shape[0]
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing()
        )

    def __call__(self, x: torch.Tensor, cache: KVCache, logits: bool = False) -> torch.Tensor:
        """``x [B, d]`` at the cache's next position -> ``[B, d]`` (with ``logits``, the logits
        ``[B, V]``: needs :attr:`head`); writes that position and advances."""
        if cache.length >= cache.max_len:
            raise RuntimeError(f"KV cache full: {cache.length + 1} positions needed, {cache.max_len} allocated")
        head, vocab = self._head(logits)
        out = torch.ops.gsv.decode_layers(
            x.contiguous(), self.weights, cache.k, cache.v, cache.length, self.eps, head, vocab
        )
        cache.advance(1)
        return out

    def rows(self, x: torch.Tensor, caches: list[KVCache], logits: bool = False) -> torch.Tensor:
        """``x [B, d]``, row ``b`` at the next position of its own single-row cache ``caches[b]``
        (rows of different utterances and lengths) -> ``[B, d]`` (with ``logits``, ``[B, V]``);
        writes and advances every cache."""
        for cache in caches:
            if cache.length >= cache.max_len:
                raise RuntimeError(f"KV cache full: {cache.length + 1} positions needed, {cache.max_len} allocated")
        positions = [cache.length for cache in caches]
        head, vocab = self._head(logits)
        out = torch.ops.gsv.decode_rows(
            x.contiguous(), self.weights, [c.k for c in caches], [c.v for c in caches], positions, self.eps, head, vocab
        )
        for cache in caches:
            cache.advance(1)
        return out

    def _head(self, logits: bool) -> tuple[torch.Tensor | None, int]:
        if logits and self.head is None:
            raise ValueError("these layers have no float16 logits projection to end the step with")
        return (self.head, self.vocab) if logits else (None, 0)


class FusedDecoder(ModuleDecoder):
    """The module path's prefill, then decode steps through :class:`FusedDecodeLayers`; the caches
    it fills hold ``cache_dtype`` (None: float32)."""

    name = "fused"
    # Its step splits output rows between threads, each output one thread's sum in a fixed order:
    # the thread count does not change what it computes (decode_threads.py may lower it).
    thread_count_invariant = True

    def __init__(self, model: nn.Module, layers: FusedDecodeLayers, cache_dtype: torch.dtype | None = None) -> None:
        super().__init__(model, cache_dtype)
        self.layers = layers

    def step_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.model.embed_step(tokens, self.prompt_lens + (self.k - 1))
        if not self.layers.accepts(x, self.cache):
            return super().step_logits(tokens)
        if self.layers.head is None:
            return self.model.ar_predict_layer(self.layers(x, self.cache))
        return self.layers(x, self.cache, logits=True)

    def rows_logits(self, tokens: torch.Tensor, positions: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        x = self.model.embed_step(tokens, positions)
        if not all(self.layers.accepts(x[:1], cache) for cache in caches):
            return super().rows_logits(tokens, positions, caches)
        if self.layers.head is None:
            return self.model.ar_predict_layer(self.layers.rows(x, caches))
        return self.layers.rows(x, caches, logits=True)
