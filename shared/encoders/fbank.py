"""Kaldi-compatible log-mel filterbank features in plain torch.

ERes2NetV2 (the v2Pro speaker-verification model) was trained on Kaldi ``compute-fbank-feats``
features, and upstream computes them with a copy of ``torchaudio.compliance.kaldi.fbank``. This module
reproduces that computation for the settings upstream uses, defaults included:

* frames: 25 ms windows every 10 ms, only frames that fit entirely (``snip_edges``), so
  ``T = 1 + (n − 400) // 160`` at 16 kHz;
* per frame: subtract the frame mean (DC), pre-emphasis ``x[i] − 0.97·x[i−1]`` (the first sample
  uses itself as predecessor), Povey window (``hann^0.85``, zero at both ends), zero-pad to 512;
* power spectrum ``|rfft|²`` → 80 triangular filters equally spaced on the mel scale
  ``1127·ln(1 + f/700)`` between 20 Hz and Nyquist (the Nyquist bin gets no weight) →
  ``ln(max(energy, FLT_EPSILON))``; no dither, no mean subtraction, no energy column.

Kaldi's ``energy_floor`` only affects the optional log-energy column, which this recipe does not
produce, so it has nothing to do here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

FLT_EPSILON = torch.finfo(torch.float32).eps  # Kaldi floors mel energies at float epsilon


@dataclass(frozen=True)
class FbankOptions:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 counts back from Nyquist, as in Kaldi

    @property
    def window_size(self) -> int:
        # int() truncation as Kaldi/torchaudio (16000·25 ms = 400.00000000000006 → 400).
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    @property
    def fft_size(self) -> int:
        return 1 << (self.window_size - 1).bit_length()

    @property
    def upper_freq(self) -> float:
        return self.high_freq if self.high_freq > 0 else self.sample_rate / 2 + self.high_freq


DEFAULT_OPTIONS = FbankOptions()


def mel_scale(freq_hz: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale (natural log form)."""
    if isinstance(freq_hz, torch.Tensor):
        return 1127.0 * torch.log1p(freq_hz / 700.0)
    return 1127.0 * math.log1p(freq_hz / 700.0)


def num_frames(num_samples: int, opts: FbankOptions = DEFAULT_OPTIONS) -> int:
    """Frames that fit entirely inside ``num_samples`` samples (Kaldi ``snip_edges=true``)."""
    if num_samples < opts.window_size:
        return 0
    return 1 + (num_samples - opts.window_size) // opts.window_shift


@lru_cache(maxsize=8)
def povey_window(size: int) -> torch.Tensor:
    """Symmetric Hann window raised to 0.85 (float32, CPU)."""
    return torch.hann_window(size, periodic=False, dtype=torch.float64).pow(0.85).to(torch.float32)


@lru_cache(maxsize=8)
def mel_filterbank(opts: FbankOptions = DEFAULT_OPTIONS) -> torch.Tensor:
    """Triangular filters ``[num_mel_bins, fft_size // 2 + 1]`` (float32, CPU); the last column is zero."""
    nyquist = opts.sample_rate / 2
    if not (0 <= opts.low_freq < opts.upper_freq <= nyquist) or opts.num_mel_bins < 4:
        raise ValueError(f"bad mel range {opts.low_freq}..{opts.upper_freq} Hz for {opts.sample_rate} Hz audio")
    mel_lo, mel_hi = mel_scale(opts.low_freq), mel_scale(opts.upper_freq)
    step = (mel_hi - mel_lo) / (opts.num_mel_bins + 1)  # +1: outer filters spread past the edges
    edges = mel_lo + step * torch.arange(opts.num_mel_bins + 2, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    half = opts.fft_size // 2
    bin_mel = mel_scale(torch.arange(half, dtype=torch.float64) * (opts.sample_rate / opts.fft_size))[None]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    # Kaldi builds filters over fft_size/2 bins; the Nyquist bin is appended with zero weight.
    return torch.nn.functional.pad(weights, (0, 1)).to(torch.float32)


def frame_signal(wav: torch.Tensor, opts: FbankOptions = DEFAULT_OPTIONS) -> torch.Tensor:
    """DC-removed, pre-emphasised, windowed frames zero-padded to ``fft_size``: ``[T, fft_size]``."""
    if wav.dim() != 1:
        raise ValueError(f"fbank expects a 1-D waveform, got shape {tuple(wav.shape)}")
    if wav.numel() < opts.window_size:
        raise ValueError(f"waveform of {wav.numel()} samples is shorter than one {opts.window_size}-sample frame")
    frames = wav.unfold(0, opts.window_size, opts.window_shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - opts.preemphasis * previous
    frames = frames * povey_window(opts.window_size).to(frames.device, frames.dtype)
    return torch.nn.functional.pad(frames, (0, opts.fft_size - opts.window_size))


def fbank(wav: torch.Tensor, opts: FbankOptions = DEFAULT_OPTIONS) -> torch.Tensor:
    """Log-mel filterbank ``[T, num_mel_bins]`` of a mono waveform at ``opts.sample_rate``.

    Computed in float32 (float64 input stays float64) whatever the input dtype, because half
    precision FFTs lose the low-energy bands; callers cast the result to the model dtype.
    """
    work = torch.float64 if wav.dtype == torch.float64 else torch.float32
    frames = frame_signal(wav.to(work), opts)
    power = torch.fft.rfft(frames).abs().pow(2)
    energies = power @ mel_filterbank(opts).to(power.device, work).T
    return energies.clamp(min=FLT_EPSILON).log()
