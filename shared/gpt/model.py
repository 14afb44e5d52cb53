"""Text2Semantic: the GPT-SoVITS autoregressive decoder from phones (+BERT) to semantic tokens.

One sequence is ``[text ; semantic]``:

    text_t     = E_text[phone_t] + bert_proj(bert_t) + a_text * PE[t]          t = 0..T-1
    semantic_s = E_sem[token_s]                       + a_sem  * PE[s]          s = 0..   (restarts at 0)

followed by ``n_layer`` post-norm transformer layers under a prefix-LM mask (text attends to all
text; semantic attends to all text and causally to semantic) and a bias-free projection to the
semantic vocabulary. Embeddings are not scaled by sqrt(d).

This file is the math only. How products are computed (CPU weight formats and kernels: weights.py)
and how a decode step runs (the module path, one fused C++ call, static shapes for compile/CUDA
graphs, exported graphs) is the decoders' business (decoder.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GPTConfig
from .kv_cache import KVCache

PE_INITIAL_POSITIONS = 4096


def sine_table(n_positions: int, dim: int) -> torch.Tensor:
    """``PE[p, 2i] = sin(p w_i)``, ``PE[p, 2i+1] = cos(p w_i)``, ``w_i = 10000^(-2i/dim)``.

    Always computed in float32 (as upstream does) and cast by the caller, so that half-precision
    models see the same rounded table.
    """
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.empty(n_positions, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


def prefix_lm_mask(text_lens: torch.Tensor, semantic_lens: torch.Tensor, total: int) -> torch.Tensor:
    """Boolean attention mask ``[B, 1, total, total]``, True = may attend.

    Row ``b`` is laid out ``[pad ; text ; semantic]`` (left padding up to ``total``). Text queries
    see all text keys; semantic queries see all text keys and semantic keys up to their own
    position; padded keys are seen by nobody. Every query also sees itself, so padded query rows
    are never fully masked (their outputs are discarded, but must not be NaN).
    """
    pos = torch.arange(total, device=text_lens.device)
    semantic_start = (total - semantic_lens)[:, None]
    text_start = semantic_start - text_lens[:, None]
    key_is_text = (pos >= text_start) & (pos < semantic_start)  # [B, total]
    is_semantic = pos >= semantic_start  # [B, total]
    causal = pos[None, :] <= pos[:, None]  # [query, key]
    allowed = key_is_text[:, None, :] | (is_semantic[:, :, None] & is_semantic[:, None, :] & causal)
    allowed = allowed | (pos[:, None] == pos[None, :])  # the diagonal; written so ONNX can export it
    return allowed[:, None]


class DecoderLayer(nn.Module):
    """Post-norm block: ``h = LN1(x + MHA(x))``, ``out = LN2(h + W2 relu(W1 h))``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(d, 3 * d)  # packed rows: q, then k, then v
        self.out_proj = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.ffn_in = nn.Linear(d, cfg.ffn_dim)
        self.ffn_out = nn.Linear(cfg.ffn_dim, d)
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache, index: int, last_only: bool = False
    ) -> torch.Tensor:
        """``x [B, t, d]`` at the cache's next ``t`` positions -> ``[B, t, d]``, or ``[B, 1, d]`` (the
        last position) if ``last_only``: every position's keys and values are still cached."""
        q, k, v = self.heads(x)
        k, v = cache.write(index, k, v)
        if last_only:
            q, x = q[:, :, -1:], x[:, -1:]
            mask = None if mask is None else mask[..., -1:, :]
        return self.mix(x, attend(q, k, v, mask))

    def forward_rows(self, x: torch.Tensor, caches: list[KVCache], index: int) -> torch.Tensor:
        """One position per row, ``x [B, 1, d]``, each row over a cache of its own (own length):
        products for all rows at once, attention row by row, as each row runs alone."""
        q, k, v = self.heads(x)
        rows = range(len(caches))
        return self.mix(
            x, torch.cat([attend(q[r : r + 1], *caches[r].write(index, k[r : r + 1], v[r : r + 1])) for r in rows])
        )

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values ``[B, n_head, t, head_dim]`` of ``x [B, t, d]``."""
        b, t, _ = x.shape
        return self.qkv(x).view(b, t, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)

    def mix(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The rest of the block after attention: ``attended [B, n_head, t, head_dim]``."""
        h = self.norm1(x + self.out_proj(attended.transpose(1, 2).reshape(x.shape).to(x.dtype)))
        return self.norm2(h + self.ffn_out(F.relu(self.ffn_in(h))))


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = may attend) as the additive one ``scaled_dot_product_attention`` builds
    from it (0 where allowed, -inf elsewhere): the same attention, converted once."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q.to(k.dtype), k, v, attn_mask=mask)


class Text2Semantic(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.hidden_dim
        self.text_embedding = nn.Embedding(cfg.phoneme_vocab_size, d)
        self.bert_proj = nn.Linear(cfg.bert_dim, d)
        self.text_alpha = nn.Parameter(torch.ones(1))
        self.semantic_embedding = nn.Embedding(cfg.vocab_size, d)
        self.semantic_alpha = nn.Parameter(torch.ones(1))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layer))
        self.ar_predict_layer = nn.Linear(d, cfg.vocab_size, bias=False)
        self.register_buffer("pe", sine_table(PE_INITIAL_POSITIONS, d), persistent=False)

    @property
    def early_stop_num(self) -> int:
        return self.config.early_stop_num

    # Read from an embedding: the linear layers may carry packed weights (weights.py).
    @property
    def dtype(self) -> torch.dtype:
        return self.semantic_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.semantic_embedding.weight.device

    def ensure_positions(self, n: int) -> None:
        """Grow the sine table (rarely: only for sequences longer than 4096 positions)."""
        if n > self.pe.shape[0]:
            self.pe = sine_table(n, self.config.hidden_dim).to(self.pe)

    @property
    def cache_dtype(self) -> torch.dtype:
        # PyTorch's CPU attention kernels are several times slower in fp16/bf16 than in float32, and
        # the gap grows with the context; the cache is small next to the weights, so keep it float32.
        return torch.float32 if self.device.type == "cpu" else self.dtype

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        cfg = self.config
        return KVCache(cfg.n_layer, batch, cfg.n_head, cfg.head_dim, max_len, self.cache_dtype, self.device)

    def embed_text(self, phone_ids: torch.Tensor, bert: torch.Tensor) -> torch.Tensor:
        """``phone_ids [B, T]``, ``bert [B, bert_dim, T]`` -> ``[B, T, d]`` with text positions 0..T-1."""
        t = phone_ids.shape[1]
        self.ensure_positions(t)
        x = self.text_embedding(phone_ids) + self.bert_proj(bert.transpose(1, 2))
        return x + self.text_alpha * self.pe[:t]

    def embed_semantic(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, P]`` -> ``[B, P, d]`` with semantic positions 0..P-1."""
        p = tokens.shape[1]
        self.ensure_positions(p)
        return self.semantic_embedding(tokens) + self.semantic_alpha * self.pe[:p]

    def transformer(self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache) -> torch.Tensor:
        """Run all layers over ``x [B, t, d]`` placed at the cache's next ``t`` positions."""
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache, i)
        cache.advance(x.shape[1])
        return x

    def prefill(self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Fill an empty cache with the embedded ``[text ; prompt]`` and return the next logits ``[B, V]``.

        Only the last position's output feeds the logits, so the last layer, once it has cached every
        position's keys and values, runs its attention, projection and feed-forward for that position
        alone (~3% of the prefill's products on the full-size model: three quarters of one layer in 24). The boolean mask
        becomes the additive one attention would build from it, once instead of once per layer.
        """
        mask, positions, last = additive_mask(mask, self.cache_dtype), x.shape[1], len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache, i, last_only=i == last)
        cache.advance(positions)
        return self.ar_predict_layer(x[:, -1])

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Append one semantic token per row (``tokens [B]`` at semantic ``positions [B]``); logits ``[B, V]``."""
        x = self.embed_step(tokens, positions)
        return self.ar_predict_layer(self.transformer(x[:, None], cache.step_mask(), cache)[:, -1])

    def step_rows(self, tokens: torch.Tensor, positions: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """:meth:`step` for rows with caches of their own (rows of different utterances and lengths)."""
        x = self.embed_step(tokens, positions)[:, None]
        for i, layer in enumerate(self.layers):
            x = layer.forward_rows(x, caches, i)
        for cache in caches:
            cache.advance(1)
        return self.ar_predict_layer(x[:, -1])

    def embed_step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``tokens [B]`` at semantic ``positions [B]`` -> ``[B, d]``."""
        return self.semantic_embedding(tokens) + self.semantic_alpha * self.pe[positions]
