"""MelStyleEncoder (``ref_enc``): reference linear spectrogram -> one global speaker/style vector.

Per frame: two Linear+Mish layers, two gated (GLU) convolutions with residuals, one residual
self-attention block, a Linear to ``gin``; then the average over time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GatedConv(nn.Module):
    """x + a * sigmoid(b) where [a; b] = conv(x); 'same' padding."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class StyleSelfAttention(nn.Module):
    """Residual multi-head self-attention on ``[B, T, C]``.

    The logits are divided by sqrt(C) (the model width), not sqrt(head dim): that is how the
    pretrained weights were trained.
    """

    def __init__(self, channels: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.w_qs = nn.Linear(channels, channels)
        self.w_ks = nn.Linear(channels, channels)
        self.w_vs = nn.Linear(channels, channels)
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape

        def heads(y: Tensor) -> Tensor:
            return y.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2)

        q, k, v = heads(self.w_qs(x)), heads(self.w_ks(x)), heads(self.w_vs(x))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(c))
        return x + self.fc(out.transpose(1, 2).reshape(b, t, c))


class MelStyleEncoder(nn.Module):
    def __init__(self, in_bins: int, out_channels: int, hidden: int = 128, kernel_size: int = 5, n_heads: int = 2):
        super().__init__()
        self.in_bins = in_bins
        self.spectral_in = nn.Linear(in_bins, hidden)
        self.spectral_out = nn.Linear(hidden, hidden)
        self.glu_convs = nn.ModuleList(GatedConv(hidden, kernel_size) for _ in range(2))
        self.attn = StyleSelfAttention(hidden, n_heads)
        self.proj = nn.Linear(hidden, out_channels)

    def forward(self, spec: Tensor) -> Tensor:
        """spec [B, >=in_bins, T] -> [B, out_channels, 1]; only the first ``in_bins`` bins are read."""
        x = spec[:, : self.in_bins].transpose(1, 2)
        x = F.mish(self.spectral_out(F.mish(self.spectral_in(x))))
        x = x.transpose(1, 2)
        for conv in self.glu_convs:
            x = conv(x)
        x = self.proj(self.attn(x.transpose(1, 2)))
        # Averaged in float32 like the training code, so half precision does not lose the mean.
        return x.float().mean(dim=1).to(x.dtype).unsqueeze(-1)
