"""The single semantic codebook (1024 x 768): HuBERT features <-> 25 Hz semantic token ids."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SemanticCodebook(nn.Module):
    def __init__(self, n_codes: int = 1024, dim: int = 768):
        super().__init__()
        self.register_buffer("embed", torch.zeros(n_codes, dim))

    def encode(self, x: Tensor) -> Tensor:
        """x [B, D, T] -> codes [B, 1, T] (nearest row by squared Euclidean distance).

        Always in float32: the argmin decides token ids, and half precision would turn near-ties
        into different tokens.
        """
        x = x.float().transpose(1, 2)  # [B, T, D]
        e = self.embed.float()
        # ||x||^2 is constant per frame, so argmin ||x - e||^2 = argmax (2 x.e - ||e||^2); the
        # full expression is kept so ties resolve like the reference implementation.
        dist = x.pow(2).sum(-1, keepdim=True) - 2 * x @ e.t() + e.pow(2).sum(-1)
        return (-dist).argmax(dim=-1).unsqueeze(1)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, 1, T] -> embeddings [B, D, T]."""
        if codes.dim() != 3 or codes.shape[1] != 1:
            raise ValueError(f"expected codes shaped [B, 1, T], got {tuple(codes.shape)}")
        return F.embedding(codes[:, 0], self.embed).transpose(1, 2)
