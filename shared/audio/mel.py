"""Log-mel spectrograms of the v3/v4 flow-matching models, and their [-1, 1] normalisation.

The DiT draws 100-band log-mels and the reference clip prompts it with the same kind of mel, so
the reference's mel must be computed exactly as the models were trained:

* the magnitude STFT of ``spectrogram.reference_spectrogram`` (reflect pad (n_fft - hop) / 2,
  periodic Hann, no centring, ``sqrt(re^2 + im^2 + 1e-8)``) with the settings of :data:`MEL_SETTINGS`;
* a Slaney-style mel filter bank (linear below 1 kHz, logarithmic above, each triangle scaled to
  unit area), built as librosa builds it (``librosa.filters.mel`` defaults: float64 arithmetic,
  float32 weights), fmin 0, fmax = Nyquist;
* ``log(max(mel, 1e-5))``;
* :func:`normalise_mel` maps the range [-12, 2] to [-1, 1] (what the DiT sees), and
  :func:`denormalise_mel` maps the DiT's output back for the vocoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from .spectrogram import reference_spectrogram

LOG_MEL_MIN, LOG_MEL_MAX = -12.0, 2.0
LOG_FLOOR = 1e-5


@dataclass(frozen=True)
class MelSettings:
    sample_rate: int
    n_fft: int
    hop: int
    n_mels: int = 100

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop


# v3 prompts with 24 kHz mels (BigVGAN's input), v4 with 32 kHz ones.
MEL_SETTINGS = {
    "v3": MelSettings(sample_rate=24000, n_fft=1024, hop=256),
    "v4": MelSettings(sample_rate=32000, n_fft=1280, hop=320),
}


def hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1000.0) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


@lru_cache(maxsize=8)
def mel_filter_bank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] float32 triangles between mel-spaced edges, unit area each."""
    bins = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    low, high = hz_to_slaney_mel(0.0), hz_to_slaney_mel(sample_rate / 2.0)
    edges = slaney_mel_to_hz(np.linspace(low, high, n_mels + 2))
    widths = np.diff(edges)
    distance = edges[:, None] - bins[None, :]
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area_scale = 2.0 / (edges[2:] - edges[:-2])
    return (weights * area_scale[:, None]).astype(np.float32)


def log_mel(wav: Tensor, settings: MelSettings) -> Tensor:
    """wav [B, samples] at ``settings.sample_rate`` -> log-mel [B, n_mels, frames] float32."""
    s = settings
    spec = reference_spectrogram(wav, n_fft=s.n_fft, hop=s.hop, win=s.n_fft)
    bank = torch.from_numpy(mel_filter_bank(s.sample_rate, s.n_fft, s.n_mels)).to(spec.device)
    return torch.log(torch.clamp(torch.matmul(bank, spec), min=LOG_FLOOR))


def normalise_mel(mel: Tensor) -> Tensor:
    return (mel - LOG_MEL_MIN) / (LOG_MEL_MAX - LOG_MEL_MIN) * 2 - 1


def denormalise_mel(x: Tensor) -> Tensor:
    return (x + 1) / 2 * (LOG_MEL_MAX - LOG_MEL_MIN) + LOG_MEL_MIN
