"""Writing audio files: 16-bit PCM WAV, the format every player opens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples in [-1, 1] as 16-bit PCM; returns the absolute path written."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), int(sample_rate), subtype="PCM_16")
    return path


def numbered_path(base: str | Path, n: int) -> Path:
    """``speech.wav`` for the first utterance, ``speech-2.wav``, ``speech-3.wav``... after it."""
    base = Path(base)
    return base if n == 1 else base.with_name(f"{base.stem}-{n}{base.suffix or '.wav'}")
