"""A deterministic, speech-like test signal standing in for a reference recording.

No real voice recordings ship with the project, yet development bundles and tests need a reference
that exercises the same code paths as speech: a pitched harmonic source with formant colouring,
pitch movement, syllable-rate loudness changes and a little breath noise. Two calls with different
``f0`` behave like two different speakers to every feature extractor we use (fbank, STFT, HuBERT).
"""

from __future__ import annotations

import numpy as np

# Formant centres/bandwidths (Hz) of a neutral adult vowel; the syllable loop shifts them a little so
# that the spectrum envelope moves like successive vowels.
_FORMANTS_HZ = (500.0, 1500.0, 2500.0, 3500.0)
_FORMANT_BW_HZ = (120.0, 180.0, 250.0, 300.0)
_FORMANT_GAIN = (1.0, 0.6, 0.35, 0.15)
_SYLLABLE_RATE_HZ = 4.0
_VIBRATO_HZ = 5.5
# Voiced energy above ~6 kHz is negligible in speech; the broadband noise covers that region.
_HARMONIC_CEILING_HZ = 6000.0
_CONTROL_STEP_S = 0.002


def speech_like_signal(
    seconds: float,
    sample_rate: int,
    f0: float = 140.0,
    seed: int = 0,
    peak: float = 0.6,
) -> np.ndarray:
    """Return a mono float32 signal of ``round(seconds * sample_rate)`` samples whose peak is ``peak``."""
    if seconds <= 0 or sample_rate <= 0 or f0 <= 0:
        raise ValueError("seconds, sample_rate and f0 must be positive")
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    f_inst = _pitch_contour(t, f0, rng)
    phase = 2 * np.pi * np.cumsum(f_inst) / sample_rate
    voiced = _harmonic_stack(phase, f_inst, t, sample_rate, rng)
    envelope = _syllable_envelope(t, rng)
    noise = rng.standard_normal(n) * (0.03 * envelope + 0.002)
    x = voiced * envelope + noise
    x *= peak / max(np.max(np.abs(x)), 1e-12)
    return x.astype(np.float32)


def _pitch_contour(t: np.ndarray, f0: float, rng: np.random.Generator) -> np.ndarray:
    """Instantaneous f0: vibrato plus a slow random intonation drift of a few percent."""
    vibrato = 0.025 * np.sin(2 * np.pi * _VIBRATO_HZ * t + rng.uniform(0, 2 * np.pi))
    knots = rng.uniform(-0.08, 0.08, size=int(t[-1] * 2) + 3)
    drift = np.interp(t * 2, np.arange(len(knots)), knots)
    return f0 * (1.0 + vibrato + drift)


def _harmonic_stack(
    phase: np.ndarray, f_inst: np.ndarray, t: np.ndarray, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Sum of harmonics weighted by a spectral tilt and moving formant bumps, kept below Nyquist."""
    # Harmonic amplitudes change slowly, so they are computed on a 2 ms control grid and interpolated.
    t_ctrl = np.arange(0.0, t[-1] + _CONTROL_STEP_S, _CONTROL_STEP_S)
    f_ctrl = np.interp(t_ctrl, t, f_inst)
    # One formant shift per syllable makes the envelope move like successive vowels.
    n_syll = int(t[-1] * _SYLLABLE_RATE_HZ) + 2
    shifts = rng.uniform(0.85, 1.15, size=(n_syll, len(_FORMANTS_HZ)))
    syllable = np.minimum((t_ctrl * _SYLLABLE_RATE_HZ).astype(int), n_syll - 1)
    centres = np.asarray(_FORMANTS_HZ) * shifts[syllable]
    ceiling = min(0.45 * sample_rate, _HARMONIC_CEILING_HZ)
    k = np.arange(1, max(int(ceiling / f_inst.min()), 1) + 1)[:, None]
    fk = k * f_ctrl[None]  # [K, n_ctrl]
    bumps = np.exp(-0.5 * ((fk[..., None] - centres[None]) / np.asarray(_FORMANT_BW_HZ)) ** 2)
    formant = bumps @ np.asarray(_FORMANT_GAIN)
    # Fade harmonics out over 200 Hz below the ceiling: nothing reaches Nyquist, so nothing aliases.
    fade = np.clip((ceiling - fk) / 200.0, 0.0, 1.0)
    amps = fade * (1.0 / k + 2.0 * formant * k**-0.3)
    out = np.zeros_like(t)
    carrier = np.exp(1j * phase)
    harmonic = carrier.copy()  # exp(i·k·phase) by repeated multiplication: cheaper than sin()
    for i in range(len(k)):
        out += np.interp(t, t_ctrl, amps[i]) * harmonic.imag
        harmonic *= carrier
    return out


def _syllable_envelope(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Syllable-rate loudness: raised-cosine bumps with random depth and wandering timing."""
    knots = np.cumsum(rng.uniform(-0.6, 0.6, size=int(t[-1] * 5) + 3))
    timing_jitter = np.interp(t * 5, np.arange(len(knots)), knots)
    bump = 0.5 - 0.5 * np.cos(2 * np.pi * _SYLLABLE_RATE_HZ * t + timing_jitter)
    depth = rng.uniform(0.5, 1.0, size=int(t[-1] * _SYLLABLE_RATE_HZ) + 2)
    per_syll = depth[np.minimum((t * _SYLLABLE_RATE_HZ).astype(int), len(depth) - 1)]
    return 0.15 + 0.85 * per_syll * bump**1.5
