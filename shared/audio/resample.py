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


@lru_cache(maxsize=32)
def polyphase_kernel(from_sr: int, to_sr: int) -> tuple[torch.Tensor, int]:
    """The ``[M, 1, 2·width + L]`` float32 filter bank and ``width`` for a rate pair (CPU, cached)."""
    g = math.gcd(from_sr, to_sr)
    period_in, period_out = from_sr // g, to_sr // g
    cutoff = min(period_in, period_out) * ROLLOFF  # in cycles per period
    width = math.ceil(LOWPASS_FILTER_WIDTH * period_in / cutoff)
    taps = torch.arange(-width, width + period_in, dtype=torch.float64)[None, None] / period_in
    # torchaudio forms the phase offsets j/M in float32 before adding the float64 tap grid; doing
    # the same keeps the kernel bit-identical to the transform upstream uses.
    phases = (torch.arange(0, -period_out, -1)[:, None, None] / period_out).to(torch.float64)
    t = ((phases + taps) * cutoff).clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = sinc * (window * (cutoff / period_in))  # scale gives each phase about unit DC gain
    return kernel.to(torch.float32), width


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
    kernel, width = polyphase_kernel(from_sr, to_sr)
    period_in = from_sr // math.gcd(from_sr, to_sr)
    shape = wav.shape
    flat = wav.reshape(-1, shape[-1])
    padded = torch.nn.functional.pad(flat, (width, width + period_in))
    out = torch.nn.functional.conv1d(padded[:, None], kernel.to(wav.device, wav.dtype), stride=period_in)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[:, : resample_length(shape[-1], from_sr, to_sr)]
    return out.reshape(*shape[:-1], out.shape[-1])


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
