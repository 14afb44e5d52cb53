"""How far one waveform is from another: SNR, largest sample difference, log-spectral distance.

The log-spectral distance compares short-time power spectra only, so it stays meaningful where the
two waveforms have the same sound with other phases (where SNR says little); the SNR and the
largest difference are sample for sample.
"""

from __future__ import annotations

import torch

LSD_FFT = 1024
LSD_FLOOR = 1e-10  # power floor of the log (silence would otherwise dominate)


def log_spectral_distance_db(reference: torch.Tensor, other: torch.Tensor, n_fft: int = LSD_FFT) -> float:
    """Root mean square over frames of each frame's RMS log-power difference (dB)."""
    window = torch.hann_window(n_fft)

    def log_power(x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x.reshape(-1).float(), n_fft, n_fft // 4, window=window, return_complex=True)
        return 10 * torch.log10(spec.abs().pow(2) + LSD_FLOOR)

    per_frame = (log_power(reference) - log_power(other)).pow(2).mean(0)
    return float(per_frame.mean().sqrt())


def distance(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Both cut to the shorter; SNR of ``other`` against ``reference`` (dB), max |Δ|, the reference's
    peak and the log-spectral distance (dB)."""
    n = min(len(reference), len(other))
    a, b = reference[:n].float(), other[:n].float()
    error = (b - a).pow(2).mean()
    return {
        "snr_db": round(float(10 * torch.log10(a.pow(2).mean() / error.clamp_min(1e-20))), 2),
        "max_abs_diff": round(float((b - a).abs().max()), 5),
        "peak": round(float(a.abs().max()), 5),
        "lsd_db": round(log_spectral_distance_db(a, b), 3) if n >= LSD_FFT else None,
    }
