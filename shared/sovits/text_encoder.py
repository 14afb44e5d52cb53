"""Prior encoder ``enc_p``: semantic embeddings + target phones + speaker vector -> prior (m, logs).

Split in two steps so streaming can run the expensive context part on a token window and the
per-frame part on the frames it keeps:

* :meth:`TextEncoder.content` — SSL branch, phone branch, MRTE, ``encoder2`` -> ``[B, 192, T50]``;
* :meth:`TextEncoder.prior` — optional speed resampling, then ``proj`` -> mean and log-std.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attentions import AttentionEncoder, apply_mask
from .mrte import MRTE


class TextEncoder(nn.Module):
    def __init__(
        self,
        out_channels: int,
        hidden: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        n_symbols: int,
        ssl_dim: int = 768,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.ssl_proj = nn.Conv1d(ssl_dim, hidden, 1)
        # The SSL branch and encoder2 get half the depth of the phone branch.
        self.encoder_ssl = AttentionEncoder(hidden, filter_channels, n_heads, n_layers // 2, kernel_size)
        # Uninitialised (the checkpoint fills it): a random normal_ init on the meta device, where
        # the loader builds the model, would pull in seconds of one-time imports.
        self.text_embedding = nn.Embedding.from_pretrained(torch.empty(n_symbols, hidden), freeze=True)
        self.encoder_text = AttentionEncoder(hidden, filter_channels, n_heads, n_layers, kernel_size)
        self.mrte = MRTE(content_channels=hidden)
        self.encoder2 = AttentionEncoder(hidden, filter_channels, n_heads, n_layers // 2, kernel_size)
        self.proj = nn.Conv1d(hidden, 2 * out_channels, 1)

    def content(
        self,
        semantic: Tensor,
        phone_ids: Tensor,
        ge: Tensor,
        mask: Tensor | None = None,
        phone_mask: Tensor | None = None,
    ) -> Tensor:
        """semantic [B, 768, T50], phone_ids [B, N] long, ge [B, 512, 1] -> [B, hidden, T50]."""
        y = apply_mask(self.ssl_proj(apply_mask(semantic, mask)), mask)
        y = self.encoder_ssl(y, mask)
        text = self.text_embedding(phone_ids).transpose(1, 2)
        text = self.encoder_text(text, phone_mask)
        y = self.mrte(y, text, ge, mask, phone_mask)
        return self.encoder2(y, mask)

    def prior(self, y: Tensor, speed: float = 1.0, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """content [B, hidden, T] -> (m, logs, mask), each ``[B, out, T']``.

        speed != 1 linearly resamples the content to ``int(T / speed) + 1`` frames (mask by
        nearest), exactly the length rule of the reference implementation.
        """
        if speed != 1:
            y = F.interpolate(y, size=int(y.shape[-1] / speed) + 1, mode="linear")
            if mask is not None:
                mask = F.interpolate(mask, size=y.shape[-1], mode="nearest")
        stats = apply_mask(self.proj(y), mask)
        m, logs = stats.split(self.out_channels, dim=1)
        return m, logs, mask

    def forward(self, semantic: Tensor, phone_ids: Tensor, ge: Tensor, speed: float = 1.0) -> tuple[Tensor, Tensor]:
        """Single utterance (no padding): -> (m, logs)."""
        m, logs, _ = self.prior(self.content(semantic, phone_ids, ge), speed)
        return m, logs
