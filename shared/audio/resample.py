"""Sample-rate conversion: one-shot for reference audio, streaming for the audio output path.

``resample`` reproduces ``torchaudio.transforms.Resample`` with its defaults (Hann-windowed sinc,
``lowpass_filter_width=6``, ``rolloff=0.99``) in plain torch. Upstream GPT-SoVITS builds the 32 kHz
reference spectrogram and the 16 kHz speaker-verification input with that transform, so matching its
filter (not just "some good resampler") keeps our conditioning vectors on the distribution the models
saw. The math, in our words:

* reduce the rates by their gcd to ``L`` (input) and ``M`` (output) samples per period;
* output sample ``j`` sits at input position ``j·L/M``; it is a windowed-sinc interpolation of the
  input with the cutoff at ``0.99·min(L, M)/2`` cycles per period (anti-aliasing when downsampling);
* outputs ``j`` and ``j+M`` use the same taps shifted by ``L`` input samples, so the whole resampler is
  one ``conv1d`` with ``M`` output channels (one polyphase filter per output phase) and stride ``L``,
  over the input zero-padded by ``width`` on the left and ``width + L`` on the right;
* the output is cut to ``ceil(n·M/L)`` samples.

That filter bank has ``M·(2·width + L)`` taps and each output reads ``2·width + L`` inputs, which is
small for the rates people record at (44.1 kHz → 32 kHz: ``L = 441, M = 320``, 147 k taps) but not
for coprime rates: 44,101 Hz → 32 kHz has ``L = 44101, M = 32000`` and would need a 1.4 G-tap bank
(11.3 GB in float64 while it is built) and 44 k multiplications per output sample. Above
:data:`EXACT_MAX_TAPS` taps (or :data:`EXACT_MAX_TAPS_PER_OUTPUT`) the same filter is evaluated
directly instead: output ``j`` reads only the ``2·width + 2`` inputs around position ``j·L/M``
(the rest of its polyphase row is zero outside the window) and computes their weights from the
same formula, with the same float32 phase rounding, in blocks of bounded size. Time and memory
then grow with the signal length and ``width`` (≈ 6·max(1, L/M)), never with ``L·M``; the output
equals the exact path's up to float32 summation order (within 1e-6 on unit-level audio,
``tests/test_resample.py``). Every rate people record at stays on the exact path, bit-identical
to torchaudio.

``StreamResampler`` is for audio leaving the model in chunks (e.g. 32 kHz → 24/16 kHz playback). It
wraps soxr's stateful stream so filter history carries across chunk boundaries: the concatenated
output equals soxr's one-shot conversion of the whole utterance, with no clicks at chunk joins.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import soxr
import torch

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
# The exact polyphase bank is built only below these sizes: 2 M float32 taps (8 MB, ~16 MB per
# float64 temporary while it is built) and 2048 inputs per output. Every common rate to or from
# 32/16 kHz is far below (the largest, 11.025 kHz → 32 kHz, has 582 k taps and 455 per output).
EXACT_MAX_TAPS = 1 << 21
EXACT_MAX_TAPS_PER_OUTPUT = 1 << 11
# Weights computed at once on the direct path (each temporary: 2 MB in float64).
DIRECT_BLOCK_TAPS = 1 << 18


def filter_geometry(from_sr: int, to_sr: int) -> tuple[int, int, float, int]:
    """``(L, M, cutoff, width)``: the reduced periods, the cutoff in cycles per period, the half-width."""
    g = math.gcd(from_sr, to_sr)
    period_in, period_out = from_sr // g, to_sr // g
    cutoff = min(period_in, period_out) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * period_in / cutoff)
    return period_in, period_out, cutoff, width


def exact_path_fits(from_sr: int, to_sr: int) -> bool:
    """Whether the polyphase bank of this rate pair is small enough to build (see the module doc)."""
    period_in, period_out, _, width = filter_geometry(from_sr, to_sr)
    per_output = 2 * width + period_in
    return per_output <= EXACT_MAX_TAPS_PER_OUTPUT and period_out * per_output <= EXACT_MAX_TAPS


def sinc_weights(phases: torch.Tensor, taps: torch.Tensor, cutoff: float, period_in: int) -> torch.Tensor:
    """torchaudio's Hann-windowed sinc at ``phase + tap`` (float64 in, float32 out)."""
    t = ((phases + taps) * cutoff).clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * (window * (cutoff / period_in))).to(torch.float32)  # scale: about unit DC gain


@lru_cache(maxsize=32)
def polyphase_kernel(from_sr: int, to_sr: int) -> tuple[torch.Tensor, int]:
    """The ``[M, 1, 2·width + L]`` float32 filter bank and ``width`` for a rate pair (CPU, cached)."""
    if not exact_path_fits(from_sr, to_sr):
        raise ValueError(f"the polyphase bank for {from_sr} -> {to_sr} Hz is too large to build; use resample()")
    period_in, period_out, cutoff, width = filter_geometry(from_sr, to_sr)
    taps = torch.arange(-width, width + period_in, dtype=torch.float64)[None, None] / period_in
    # torchaudio forms the phase offsets j/M in float32 before adding the float64 tap grid; doing
    # the same keeps the kernel bit-identical to the transform upstream uses.
    phases = (torch.arange(0, -period_out, -1)[:, None, None] / period_out).to(torch.float64)
    return sinc_weights(phases, taps, cutoff, period_in), width


def resample_length(num_samples: int, from_sr: int, to_sr: int) -> int:
    """Output length of :func:`resample`: ``ceil(n · to_sr / from_sr)``."""
    return -(-num_samples * to_sr // from_sr)


def resample(wav: np.ndarray | torch.Tensor, from_sr: int, to_sr: int) -> np.ndarray | torch.Tensor:
    """Resample along the last axis like ``torchaudio.transforms.Resample(from_sr, to_sr)``.

    Accepts numpy arrays or tensors of any leading shape and returns the same kind; floating point
    input keeps its dtype (numpy input is processed in float32 unless it is float64).
    """
    from_sr, to_sr = _as_rate(from_sr), _as_rate(to_sr)
    if isinstance(wav, np.ndarray):
        dtype = np.float64 if wav.dtype == np.float64 else np.float32
        return resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=dtype)), from_sr, to_sr).numpy()
    if not wav.is_floating_point():
        raise TypeError(f"resample expects floating point audio, got {wav.dtype}")
    if from_sr == to_sr:
        return wav
    shape = wav.shape
    flat = wav.reshape(-1, shape[-1])
    convert = polyphase_resample if exact_path_fits(from_sr, to_sr) else direct_resample
    out = convert(flat, from_sr, to_sr)
    return out.reshape(*shape[:-1], out.shape[-1])


def polyphase_resample(flat: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """``[B, n] -> [B, ceil(n·M/L)]`` with the whole filter bank as one strided ``conv1d``."""
    kernel, width = polyphase_kernel(from_sr, to_sr)
    period_in = from_sr // math.gcd(from_sr, to_sr)
    padded = torch.nn.functional.pad(flat, (width, width + period_in))
    out = torch.nn.functional.conv1d(padded[:, None], kernel.to(flat.device, flat.dtype), stride=period_in)
    return out.transpose(1, 2).reshape(flat.shape[0], -1)[:, : resample_length(flat.shape[-1], from_sr, to_sr)]


def direct_resample(flat: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """The same filter as :func:`polyphase_resample`, each output from only the inputs it weighs.

    Output ``j = q·M + i`` reads inputs ``n`` around ``c = floor(j·L/M)``; its weight for ``n`` is
    the bank's row ``i`` at tap ``n - q·L``. Inputs outside ``c ± (width + 1)`` have zero weight
    (their window argument is clamped to its end), so ``2·width + 2`` inputs per output suffice.
    """
    period_in, period_out, cutoff, width = filter_geometry(from_sr, to_sr)
    n_out = resample_length(flat.shape[-1], from_sr, to_sr)
    pad = width + 1
    padded = torch.nn.functional.pad(flat, (pad, pad + 1))
    offsets = torch.arange(-width, width + 2, device=flat.device)
    block = max(1, DIRECT_BLOCK_TAPS // len(offsets))
    out = flat.new_empty(flat.shape[0], n_out)
    for start in range(0, n_out, block):
        j = torch.arange(start, min(n_out, start + block), device=flat.device)
        centre = j * period_in // period_out
        inputs = centre[:, None] + offsets  # [block, taps], input sample indices
        taps = (inputs - (j // period_out * period_in)[:, None]).to(torch.float64) / period_in
        phases = (-(j % period_out)[:, None] / period_out).to(torch.float64)  # float32 first, as torchaudio
        weights = sinc_weights(phases, taps, cutoff, period_in).to(flat.dtype)
        out[:, start : start + len(j)] = (padded[:, inputs + pad] * weights).sum(-1)
    return out


def _as_rate(sr: int | float) -> int:
    if int(sr) != sr or sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {sr}")
    return int(sr)


class StreamResampler:
    """Chunk-by-chunk mono resampler whose output is independent of how the input was chunked.

    Call :meth:`process` for each chunk and :meth:`flush` once at the end of an utterance; flush
    returns the filter's tail and leaves the resampler ready for the next utterance. Equal rates pass
    audio through untouched. Chunks are float32 numpy arrays or tensors; outputs are float32 numpy.
    """

    def __init__(self, from_sr: int, to_sr: int, quality: str = "HQ") -> None:
        self.from_sr, self.to_sr = _as_rate(from_sr), _as_rate(to_sr)
        self.quality = quality
        self._stream = None
        if self.from_sr != self.to_sr:
            self._stream = soxr.ResampleStream(self.from_sr, self.to_sr, 1, "float32", quality)

    def process(self, chunk: np.ndarray | torch.Tensor) -> np.ndarray:
        """Resample one chunk; the output may be shorter than ``len·ratio`` while the filter fills."""
        x = _as_mono_float32(chunk)
        if self._stream is None:
            return x.copy()
        return self._stream.resample_chunk(x, last=False)

    def flush(self) -> np.ndarray:
        """End the utterance: return the remaining samples and reset the filter state."""
        if self._stream is None:
            return np.zeros(0, np.float32)
        tail = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """Drop any buffered input (e.g. an utterance was cancelled)."""
        if self._stream is not None:
            self._stream.clear()


def _as_mono_float32(chunk: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(chunk, torch.Tensor):
        chunk = chunk.detach().to("cpu", torch.float32).numpy()
    x = np.ascontiguousarray(chunk, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"StreamResampler expects mono 1-D chunks, got shape {x.shape}")
    return x
