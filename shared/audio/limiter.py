"""A streaming-safe output level limit for sinks that cannot take full-scale floats.

dora-pyaudio scales float samples by 70000 into int16 without clipping, so any |x| > 0.468 wraps
around and crackles. A streamed utterance cannot be peak-normalised (its loudest sample may come
later), so the limit is a fixed gain followed by a memoryless soft knee:

* below ``knee * limit`` samples pass through unchanged (after the gain);
* above it they approach ``limit`` along a tanh curve whose slope matches 1 at the knee, so the
  transfer curve is smooth (no abrupt clipping) and the output never exceeds ``limit`` (float rounding may reach it exactly).

Being memoryless it needs no state across chunks: chunk boundaries cannot introduce artefacts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PYAUDIO_SAFE_PEAK = 32767 / 70000  # 0.468: the largest float dora-pyaudio turns into int16 intact


@dataclass(frozen=True)
class PeakLimiter:
    limit: float  # output peak never exceeds this
    gain: float = 1.0  # fixed gain applied first (e.g. `limit` so full scale maps near the limit)
    knee: float = 0.6  # fraction of `limit` below which samples pass unchanged

    def __post_init__(self) -> None:
        if not 0 < self.limit <= 1:
            raise ValueError(f"peak limit must be in (0, 1], got {self.limit}")
        if self.gain <= 0:
            raise ValueError(f"output gain must be positive, got {self.gain}")
        if not 0 <= self.knee < 1:
            raise ValueError(f"knee must be in [0, 1), got {self.knee}")

    def __call__(self, samples: torch.Tensor) -> torch.Tensor:
        x = samples.float() * self.gain
        start = self.knee * self.limit
        headroom = self.limit - start
        magnitude = x.abs()
        over = (magnitude - start).clamp(min=0)
        # tanh saturates at 1, so start + headroom*tanh(...) <= limit for every sample.
        limited = torch.where(magnitude > start, start + headroom * torch.tanh(over / headroom), magnitude)
        return torch.sign(x) * limited


def limiter_from_env(env: dict[str, str]) -> PeakLimiter | None:
    """``GSV_PEAK_LIMIT`` (off when unset or 0) and ``GSV_OUTPUT_GAIN`` (default: the limit itself,
    so a full-scale model output lands at the knee's top rather than being squashed)."""
    from ..settings import VocoderSettings

    limit = VocoderSettings.var("peak_limit").read(env)
    if limit <= 0:
        return None
    return PeakLimiter(limit, gain=VocoderSettings.var("output_gain").read(env) or limit)


def pyaudio_int16(samples: np.ndarray) -> np.ndarray:
    """What dora-pyaudio does to a float chunk (scale by 70000, cast without clipping)."""
    return (samples * 70_000).astype(np.int16)
