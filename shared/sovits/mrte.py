"""MRTE: the content stream cross-attends to the phone stream and is shifted by the speaker vector.

Widths are fixed by the pretrained design (content 192 -> 512 inner -> 192, 4 heads, speaker
vector 512), independent of the checkpoint's config.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .attentions import apply_mask


class CrossAttention(nn.Module):
    """Plain multi-head attention with 1x1-conv projections on ``[B, C, T]`` tensors."""

    def __init__(self, channels: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)

    def heads(self, x: Tensor) -> Tensor:
        b, c, t = x.shape
        return x.view(b, self.n_heads, c // self.n_heads, t).transpose(2, 3)  # [B, H, T, D]

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        """``mask`` [B, 1, Tx, Tc] additive (0 or -1e4); None = everything may attend."""
        b, c, t = x.shape
        q, k, v = self.heads(self.conv_q(x)), self.heads(self.conv_k(context)), self.heads(self.conv_v(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.conv_o(out.transpose(2, 3).reshape(b, c, t))


class MRTE(nn.Module):
    def __init__(self, content_channels: int = 192, hidden: int = 512, n_heads: int = 4):
        super().__init__()
        self.cross_attention = CrossAttention(hidden, n_heads)
        self.c_pre = nn.Conv1d(content_channels, hidden, 1)
        self.text_pre = nn.Conv1d(content_channels, hidden, 1)
        self.c_post = nn.Conv1d(hidden, content_channels, 1)

    def forward(
        self,
        content: Tensor,
        text: Tensor,
        ge: Tensor,
        content_mask: Tensor | None = None,
        text_mask: Tensor | None = None,
    ) -> Tensor:
        """content [B, 192, T], text [B, 192, N], ge [B, 512, 1] -> [B, 192, T]."""
        c = self.c_pre(apply_mask(content, content_mask))
        t = self.text_pre(apply_mask(text, text_mask))
        pair_mask = None
        if content_mask is not None or text_mask is not None:
            cm = content_mask if content_mask is not None else c.new_ones(c.shape[0], 1, c.shape[2])
            tm = text_mask if text_mask is not None else t.new_ones(t.shape[0], 1, t.shape[2])
            # Additive -1e4 rather than -inf keeps fully padded rows finite (they are masked later).
            pair_mask = (1 - cm.unsqueeze(-1) * tm.unsqueeze(2)) * -1e4  # [B, 1, T, N]
        x = self.cross_attention(apply_mask(c, content_mask), apply_mask(t, text_mask), pair_mask) + c + ge
        return self.c_post(apply_mask(x, content_mask))
