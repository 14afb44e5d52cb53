"""Linear-magnitude STFT of the 32 kHz reference clip, as the SoVITS style encoder was trained on.

Reflect-pad (n_fft - hop) / 2 samples on each side, frames of 2048 every 640 samples with a
periodic Hann window, no centring, magnitude ``sqrt(re^2 + im^2 + 1e-8)`` (no log, no mel).
Always computed in float32; callers cast the result to the model dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

N_FFT = 2048
HOP = 640
WIN = 2048


def reference_spectrogram(wav32k: Tensor, n_fft: int = N_FFT, hop: int = HOP, win: int = WIN) -> Tensor:
    """wav32k [B, samples] (or [samples]) -> [B, n_fft // 2 + 1, frames] float32."""
    if wav32k.dim() not in (1, 2):
        raise ValueError(f"expected a waveform shaped [samples] or [B, samples], got {tuple(wav32k.shape)}")
    y = wav32k.float().reshape(-1, wav32k.shape[-1])
    pad = (n_fft - hop) // 2
    if y.shape[-1] <= pad:
        raise ValueError(f"reference audio too short for a spectrogram ({y.shape[-1]} samples)")
    y = F.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(win, device=y.device)
    spec = torch.stft(y, n_fft, hop_length=hop, win_length=win, window=window, center=False, return_complex=True)
    return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-8)


def limit_peak(wav: Tensor) -> Tensor:
    """Reference-clip level rule: if the peak exceeds 1, divide by min(2, peak)."""
    peak = wav.abs().max()
    return wav / min(2.0, float(peak)) if peak > 1 else wav
