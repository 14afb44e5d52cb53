"""Static key/value cache: every layer's keys and values for a batch, allocated once per utterance."""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    """Pre-allocated ``[n_layer, batch, n_head, max_len, head_dim]`` keys and values.

    Positions ``[0, length)`` are filled; a forward pass writes its new positions in place at
    ``length`` for every layer, then :meth:`advance` moves ``length`` on. Nothing is ever
    concatenated, so a decode step allocates no cache memory.

    ``visible`` (``[batch, max_len]``, True = a real position) exists only for left-padded batches:
    padded key positions must stay invisible to every later query. ``None`` means all positions
    are real and the decode step can attend without a mask.

    ``stored`` (default: ``dtype``) is the format the keys and values are held in, when narrower
    than the ``dtype`` attention computes in: float16 on a CPU (``GSV_GPT_CACHE_DTYPE``, lossy)
    halves what every decode step reads. Each position is rounded once, when written (to nearest
    even), and :meth:`write` hands attention the filled positions widened back to ``dtype``; the
    fused step (decode_layers.cpp) reads the float16 values itself.
    """

    def __init__(
        self,
        n_layer: int,
        batch: int,
        n_head: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device | str,
        stored: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.dtype = dtype
        # Uninitialised on purpose: reads never go past ``length``, so zeroing would be wasted work.
        self.register_buffer("k", torch.empty(shape, dtype=stored or dtype, device=device), persistent=False)
        self.register_buffer("v", torch.empty(shape, dtype=stored or dtype, device=device), persistent=False)
        self.visible: torch.Tensor | None = None
        self.length = 0
        self.batch = batch  # rows in use; shrinks when finished rows are dropped

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def reset(self, batch: int | None = None) -> None:
        """Forget every position (and the padding mask), keeping the allocation."""
        if batch is not None and not 0 < batch <= self.k.shape[1]:
            raise ValueError(f"batch {batch} does not fit a cache allocated for {self.k.shape[1]} rows")
        self.length, self.visible = 0, None
        self.batch = self.k.shape[1] if batch is None else batch

    def mark_padding(self, pad: torch.Tensor) -> None:
        """Hide the first ``pad[b]`` positions of row ``b`` (left padding) from every query."""
        self.visible = torch.arange(self.max_len, device=pad.device)[None, :] >= pad[: self.batch, None]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``/``v`` (``[batch, n_head, t, head_dim]``) at the next ``t`` positions of one layer.

        Returns that layer's keys and values up to and including the new positions: views, or
        copies widened to ``dtype`` when the cache is stored narrower.
        """
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        self.k[layer, : self.batch, :, self.length : end] = k
        self.v[layer, : self.batch, :, self.length : end] = v
        filled = self.k[layer, : self.batch, :, :end], self.v[layer, : self.batch, :, :end]
        return filled if self.k.dtype == self.dtype else tuple(t.to(self.dtype) for t in filled)

    def advance(self, n: int) -> None:
        self.length += n

    def step_mask(self) -> torch.Tensor | None:
        """Key mask for a one-position query after the prefill: ``[batch, 1, 1, length + 1]``."""
        if self.visible is None:
            return None
        return self.visible[: self.batch, None, None, : self.length + 1]

    def keep_rows(self, rows: list[int]) -> None:
        """Compact the cache to the given rows (in that order) so finished rows cost nothing more."""
        if rows == list(range(len(rows))):
            self.batch = len(rows)
            return
        index = torch.tensor(rows, device=self.k.device)
        filled = slice(0, self.length)
        self.k[:, : len(rows), :, filled] = self.k[:, index, :, filled]
        self.v[:, : len(rows), :, filled] = self.v[:, index, :, filled]
        if self.visible is not None:
            self.visible[: len(rows)] = self.visible[index]
        self.batch = len(rows)
