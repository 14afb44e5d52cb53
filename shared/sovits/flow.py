"""Normalising flow between the prior and the decoder latent, run in reverse only.

Four mean-only affine coupling layers, each conditioned on the speaker vector through a
non-causal WaveNet. The files store them at indices 0, 2, 4, 6 (odd indices were parameter-free
channel flips); here they are ``couplings.0..3`` and the flips are explicit in :meth:`reverse`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attentions import apply_mask


class WaveNet(nn.Module):
    """Gated dilated convolutions with residual and skip paths, globally conditioned on ``g``."""

    def __init__(self, channels: int, kernel_size: int, n_layers: int, gin_channels: int, dilation_rate: int = 1):
        super().__init__()
        self.channels = channels
        self.n_layers = n_layers
        self.receptive_field = sum(dilation_rate**i * (kernel_size - 1) // 2 for i in range(n_layers))
        self.cond_layer = nn.Conv1d(gin_channels, 2 * channels * n_layers, 1)
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = dilation * (kernel_size - 1) // 2
            self.in_layers.append(nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation, padding=padding))
            # The last layer only feeds the skip sum, so it has no residual half.
            out = 2 * channels if i < n_layers - 1 else channels
            self.res_skip_layers.append(nn.Conv1d(channels, out, 1))

    def forward(self, x: Tensor, g: Tensor, mask: Tensor | None = None) -> Tensor:
        c = self.channels
        g_all = self.cond_layer(g)  # [B, 2C * n_layers, 1]: every layer's bias at once
        skip = 0
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            a = in_layer(x) + g_all[:, 2 * c * i : 2 * c * (i + 1)]
            h = res_skip(torch.tanh(a[:, :c]) * torch.sigmoid(a[:, c:]))
            if i < self.n_layers - 1:
                x = apply_mask(x + h[:, :c], mask)
                skip = skip + h[:, c:]
            else:
                skip = skip + h
        return apply_mask(skip, mask)


class CouplingLayer(nn.Module):
    """Mean-only coupling: the second half is shifted by a function of the first half."""

    def __init__(self, channels: int, hidden: int, kernel_size: int, n_layers: int, gin_channels: int):
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = WaveNet(hidden, kernel_size, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden, self.half, 1)

    def reverse(self, x: Tensor, g: Tensor, mask: Tensor | None = None) -> Tensor:
        x0, x1 = x.split(self.half, dim=1)
        h = self.enc(apply_mask(self.pre(x0), mask), g, mask)
        shift = apply_mask(self.post(h), mask)
        return torch.cat([x0, apply_mask(x1 - shift, mask)], dim=1)


class ResidualCouplingFlow(nn.Module):
    def __init__(
        self, channels: int, hidden: int, gin_channels: int, kernel_size: int = 5, n_layers: int = 4, n_flows: int = 4
    ):
        super().__init__()
        self.couplings = nn.ModuleList(
            CouplingLayer(channels, hidden, kernel_size, n_layers, gin_channels) for _ in range(n_flows)
        )

    @property
    def receptive_field(self) -> int:
        """Frames on each side that can influence one output frame (exact: convolutions only)."""
        return sum(c.enc.receptive_field for c in self.couplings)

    def reverse(self, z: Tensor, g: Tensor, mask: Tensor | None = None) -> Tensor:
        """Prior sample -> decoder latent. Forward order was [coupling, flip] x 4, so undo it backwards."""
        for coupling in reversed(self.couplings):
            z = coupling.reverse(z.flip(1), g, mask)
        return z
