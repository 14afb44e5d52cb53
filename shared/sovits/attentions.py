"""VITS-style transformer encoder with windowed relative-position self-attention.

Used three times inside the SoVITS text encoder (SSL branch, phone branch, after MRTE). Post-norm
layers; LayerNorm runs over the channel axis of ``[B, C, T]`` tensors. Masks are ``[B, 1, T]``
(1 = valid); ``None`` means every frame is valid, which is the single-utterance inference case and
skips the masking work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over dim 1 of ``[B, C, T]`` (parameter names ``gamma``/``beta`` as in the files)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.transpose(1, 2), self.gamma.shape, self.gamma, self.beta, self.eps)
        return x.transpose(1, 2)


class RelativeSelfAttention(nn.Module):
    """Multi-head self-attention with learned relative-position keys and values.

    Offsets ``j - i`` within ``±window`` get a key bias ``q_i · E_k[j - i]`` and a value term
    ``Σ_j p_ij E_v[j - i]``; farther pairs get neither. One embedding table is shared by all heads.
    """

    def __init__(self, channels: int, n_heads: int, window: int = 4):
        super().__init__()
        assert channels % n_heads == 0
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window = window
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.emb_rel_k = nn.Parameter(torch.zeros(1, 2 * window + 1, self.head_dim))
        self.emb_rel_v = nn.Parameter(torch.zeros(1, 2 * window + 1, self.head_dim))

    def split_heads(self, x: Tensor) -> Tensor:
        b, c, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)  # [B, H, T, D]

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, c, t = x.shape
        q = self.split_heads(self.conv_q(x)) / math.sqrt(self.head_dim)
        keys_t = self.conv_k(x).view(b, self.n_heads, self.head_dim, t)  # [B, H, D, T], already transposed
        v = self.split_heads(self.conv_v(x))

        scores = q @ keys_t
        rel_k = q @ self.emb_rel_k[0].transpose(0, 1)  # [B, H, T, 2w+1]: bias per offset
        pair_band, in_pair_band = self.band_index(t, t, x.device, key_major=True)  # [T, T]
        # (zero padding: ONNX's GatherElements wants the data at least as wide as the index)
        scores = scores + F.pad(rel_k, (0, t)).gather(-1, pair_band.expand(b, self.n_heads, t, t)) * in_pair_band
        if mask is not None:
            pair_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)  # [B, 1, T, T]
            scores = scores.masked_fill(pair_mask == 0, -1e4)
        p = scores.softmax(dim=-1)

        out = p @ v
        width = 2 * self.window + 1
        key, in_band = self.band_index(t, width, x.device, key_major=False)  # [T, 2w+1]
        p_band = F.pad(p, (0, width)).gather(-1, key.expand(b, self.n_heads, t, width)) * in_band
        out = out + p_band @ self.emb_rel_v[0]
        return self.conv_o(out.transpose(2, 3).reshape(b, c, t))

    def band_index(self, t: int, cols: int, device: torch.device, key_major: bool) -> tuple[Tensor, Tensor]:
        """Index tables for the band ``|j - i| <= window`` (gathers instead of per-diagonal loops,
        so the graph exports with a dynamic length; out-of-band entries are multiplied by 0).

        ``key_major``: for query ``i`` and key ``j`` (``cols = T``) -> offset column ``j - i + w``.
        Otherwise: for query ``i`` and offset column ``o`` -> key ``i + o - w``.
        """
        i = torch.arange(t, device=device)[:, None]
        c = torch.arange(cols, device=device)[None, :]
        w = self.window
        if key_major:
            index, valid = c - i + w, (c - i).abs() <= w
            return index.clamp(0, 2 * w), valid.to(self.emb_rel_k.dtype)
        index = i + c - w
        valid = (index >= 0) & (index < t)
        return index.clamp(0, t - 1), valid.to(self.emb_rel_k.dtype)


class FeedForward(nn.Module):
    """Two 'same'-padded convolutions with ReLU, masked before each convolution and at the end."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int):
        super().__init__()
        # Even kernels pad one more on the right, matching the files' training code.
        self.padding = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.conv_1(F.pad(apply_mask(x, mask), self.padding))
        x = self.conv_2(F.pad(apply_mask(torch.relu(x), mask), self.padding))
        return apply_mask(x, mask)


class AttentionEncoder(nn.Module):
    """Stack of post-norm [relative self-attention, FFN] layers."""

    def __init__(self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int):
        super().__init__()
        self.attn_layers = nn.ModuleList(RelativeSelfAttention(channels, n_heads) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(FeedForward(channels, filter_channels, kernel_size) for _ in range(n_layers))
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = apply_mask(x, mask)
        for attn, norm1, ffn, norm2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm1(x + attn(x, mask))
            x = norm2(x + ffn(x, mask))
        return apply_mask(x, mask)


def apply_mask(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask
