"""Chunked SoVITS decoding for streaming: audio for a few new tokens at a time.

Idea (as upstream's ``decode_streaming``): run the text encoder on a token *window* and the flow
and generator only on the frames that are needed. Differences from upstream:

* The window is ``history + chunk + lookahead``. The lookahead lets the chunk's last frames see
  what follows, so the chunk's right edge is close to what a one-shot decode produces there.
* The flow runs on the chunk's frames plus its whole receptive field on each side (32 frames;
  cheap at 50 Hz), the generator on the chunk plus ``margin_frames`` on each side (it dominates
  the cost, and its influence decays well within ~12 frames), and only the chunk's own samples
  are returned. Given the same encoder output, consecutive chunks line up sample for sample.
* The audio just past the chunk (from the lookahead) comes back as ``tail``; :func:`crossfade`
  blends it into the next chunk's head, hiding what small mismatch is left.
* Prior noise is a deterministic function of (seed, global frame index), so overlapping windows
  draw identical noise and chunking does not change the random part of the sample.
* Speed uses a global time warp (output frame ``j`` reads source frame ``(j + 0.5) * speed - 0.5``)
  so every chunk resamples consistently. One-shot :meth:`Synthesizer.decode` instead resizes the
  whole utterance to ``int(T / speed) + 1`` frames (upstream's rule); at speed 1 both are identical.

A chunk decoded with no history and no lookahead is exactly a one-shot decode.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .synthesizer import Conditioning, Synthesizer

DEFAULT_MARGIN_FRAMES = 8  # generator context either side of a chunk: 160 ms
DEFAULT_TAIL_SAMPLES = 640  # 20 ms cross-fade at 32 kHz
NOISE_BLOCK_FRAMES = 64


@dataclass(frozen=True)
class ChunkAudio:
    samples: Tensor  # [1, 1, n]: audio of the chunk's own tokens
    tail: Tensor  # [1, 1, k]: audio just after the chunk (from the lookahead), for the next cross-fade


def output_frame(tokens: int, speed: float) -> int:
    """Index of the first 50 Hz output frame of token ``tokens`` after the speed warp."""
    return math.floor(2 * tokens / speed + 0.5)


def frame_noise(seed: int, start: int, stop: int, channels: int) -> Tensor:
    """Standard normal noise for global frames [start, stop): [1, channels, stop - start].

    Drawn in fixed blocks seeded by (seed, block index), so any window sees the same values.
    """
    first, last = start // NOISE_BLOCK_FRAMES, (stop - 1) // NOISE_BLOCK_FRAMES
    blocks = [
        torch.randn(channels, NOISE_BLOCK_FRAMES, generator=torch.Generator().manual_seed((seed << 24) + b))
        for b in range(first, last + 1)
    ]
    offset = first * NOISE_BLOCK_FRAMES
    return torch.cat(blocks, dim=1)[:, start - offset : stop - offset].unsqueeze(0)


def warp_frames(content: Tensor, first: int, stop: int, speed: float, content_start: int) -> Tensor:
    """Output frames [first, stop) of the global speed warp, read from ``content`` whose frame 0
    is global source frame ``content_start``; linear interpolation, clamped at the window edges."""
    t = content.shape[-1]
    if speed == 1:
        idx = (torch.arange(first, stop) - content_start).clamp(0, t - 1)
        return content[..., idx.to(content.device)]
    pos = ((torch.arange(first, stop, dtype=torch.float64) + 0.5) * speed - 0.5 - content_start).clamp(0, t - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=t - 1)
    w = (pos - lo).to(content.device, content.dtype)
    lo, hi = lo.to(content.device), hi.to(content.device)
    return content[..., lo] * (1 - w) + content[..., hi] * w


class StreamingSynthesis(Protocol):
    """The two model calls a chunk needs; :class:`TorchStreamingSynthesis` runs them in PyTorch, the ONNX
    backends (``backends.sovits_runtime``) run the exported graphs. The frame arithmetic around
    them lives in :func:`decode_chunk` only."""

    device: torch.device
    receptive_field: int  # flow frames that influence one output frame, each side
    samples_per_frame: int
    inter_channels: int

    def content(self, codes: Tensor, phone_ids: Tensor, cond: Conditioning) -> Tensor:
        """codes [1, 1, N] -> text-encoder content [1, C, 2N] (50 Hz)."""

    def window_audio(
        self, window: Tensor, eps: Tensor | None, noise_scale: float, cond: Conditioning, keep: slice
    ) -> Tensor:
        """Content frames [1, C, F] -> prior (+ eps * exp(logs) * noise_scale) -> flow -> the
        generator on flow frames ``keep`` -> waveform [1, 1, (keep.stop - keep.start) * hop]."""


class TorchStreamingSynthesis:
    def __init__(self, model: Synthesizer):
        self.model = model
        self.device = model.device
        self.receptive_field = model.flow.receptive_field
        self.samples_per_frame = model.config.samples_per_frame
        self.inter_channels = model.config.inter_channels

    def content(self, codes: Tensor, phone_ids: Tensor, cond: Conditioning) -> Tensor:
        return self.model.enc_p.content(self.model.semantic_frames(codes), phone_ids, cond.ge_text)

    def window_audio(
        self, window: Tensor, eps: Tensor | None, noise_scale: float, cond: Conditioning, keep: slice
    ) -> Tensor:
        model = self.model
        m, logs, _ = model.enc_p.prior(window)
        if eps is not None:
            m = m + eps.to(m.dtype) * torch.exp(logs) * noise_scale
        return model.dec(model.flow.reverse(m, cond.ge)[..., keep], cond.ge)


@torch.inference_mode()
def decode_chunk(
    model: Synthesizer | StreamingSynthesis,
    cond: Conditioning,
    phone_ids: Tensor,
    history: Tensor,
    chunk: Tensor,
    lookahead: Tensor,
    *,
    position: int | None = None,
    speed: float = 1.0,
    noise_scale: float = 0.5,
    noise_seed: int = 0,
    margin_frames: int = DEFAULT_MARGIN_FRAMES,
    tail_samples: int = DEFAULT_TAIL_SAMPLES,
) -> ChunkAudio:
    """Audio of ``chunk`` (semantic ids) given the ids before it and up to a few after it.

    ``phone_ids`` [1, N]: the target phones of the whole segment (MRTE attends to all of them).
    ``history``/``lookahead``: ids just before/after the chunk (either may be empty; an empty
    lookahead means the chunk ends the segment). Give at least ``margin_frames / 2`` history
    tokens when there are any. ``position``: global index of the chunk's first token (default
    ``len(history)``, i.e. the whole history was given); it only places the noise and the speed
    warp. Returns ``ChunkAudio(samples, tail)``; samples cover output frames
    ``[output_frame(position), output_frame(position + len(chunk)))``.
    """
    if isinstance(model, Synthesizer):
        model = TorchStreamingSynthesis(model)
    history, chunk, lookahead = (t.reshape(-1).to(model.device) for t in (history, chunk, lookahead))
    if chunk.numel() == 0:
        raise ValueError("empty chunk")
    start = history.numel() if position is None else position
    context = torch.cat([history, chunk, lookahead])
    content_start = 2 * (start - history.numel())  # global source frame of the window's first frame
    content = model.content(context[None, None], phone_ids.to(model.device), cond)

    first, last = output_frame(start, speed), output_frame(start + chunk.numel(), speed)
    # Output frames whose source position still lies inside the window (none past the end of
    # the segment when there is no lookahead: the one-shot decode sees zero padding there).
    reachable = math.floor((content_start + content.shape[-1] - 0.5) / speed - 0.5) + 1
    reachable = max(last, reachable) if lookahead.numel() else last

    def frames_around(margin: int) -> tuple[int, int]:
        return max(0, first - margin), min(last + margin, reachable)

    flow_lo, flow_hi = frames_around(model.receptive_field)
    gen_lo, gen_hi = frames_around(margin_frames)
    eps = frame_noise(noise_seed, flow_lo, flow_hi, model.inter_channels).to(model.device) if noise_scale else None
    window = warp_frames(content, flow_lo, flow_hi, speed, content_start)
    wav = model.window_audio(window, eps, noise_scale, cond, slice(gen_lo - flow_lo, gen_hi - flow_lo))

    hop = model.samples_per_frame
    a, b = (first - gen_lo) * hop, (last - gen_lo) * hop
    return ChunkAudio(wav[..., a:b], wav[..., b : b + tail_samples])


def crossfade(previous_tail: Tensor | None, samples: Tensor) -> Tensor:
    """Blend the previous chunk's ``tail`` into the head of ``samples`` (raised-cosine ramp)."""
    if previous_tail is None or previous_tail.shape[-1] == 0:
        return samples
    n = min(previous_tail.shape[-1], samples.shape[-1])
    k = torch.arange(n, device=samples.device, dtype=torch.float32)
    rise = (0.5 - 0.5 * torch.cos(math.pi * (k + 0.5) / n)).to(samples.dtype)
    head = samples[..., :n] * rise + previous_tail[..., :n] * (1 - rise)
    return torch.cat([head, samples[..., n:]], dim=-1)


def decode_in_chunks(
    model: Synthesizer,
    cond: Conditioning,
    phone_ids: Tensor,
    codes: Tensor,
    chunk_tokens: int = 25,
    lookahead_tokens: int = 4,
    history_tokens: int | None = None,
    **chunk_kwargs,
) -> Iterator[Tensor]:
    """Decode a known token sequence chunk by chunk, yielding cross-faded audio pieces.

    What a streaming consumer does as tokens arrive; the concatenated pieces approximate
    :meth:`Synthesizer.decode`. ``history_tokens``: how many earlier ids each window keeps
    (None = all).
    """
    codes = codes.reshape(-1)
    tail = None
    for start in range(0, codes.numel(), chunk_tokens):
        stop = min(start + chunk_tokens, codes.numel())
        h0 = 0 if history_tokens is None else max(0, start - history_tokens)
        out = decode_chunk(
            model,
            cond,
            phone_ids,
            codes[h0:start],
            codes[start:stop],
            codes[stop : stop + lookahead_tokens],
            position=start,
            **chunk_kwargs,
        )
        yield crossfade(tail, out.samples)
        tail = out.tail
