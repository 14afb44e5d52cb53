"""Streamed audio as response bytes: WAV with an open-ended header, or raw 16-bit PCM.

The length of a streamed utterance is unknown when its first bytes leave, so the WAV header gives
the RIFF and data sizes as 0xFFFFFFFF ("until the end of the stream"), which browsers, ffmpeg,
soundfile and OpenAI's own streamed WAV use the same way. ``pcm`` is OpenAI's raw format: 24 kHz,
mono, signed 16-bit little-endian, no header. Audio arriving at another rate is converted on the
way with a streaming resampler whose filter state carries across chunks.
"""

from __future__ import annotations

import struct

import numpy as np

from dora_gpt_sovits.audio.resample import StreamResampler

OPENAI_PCM_RATE = 24000
UNKNOWN_SIZE = 0xFFFFFFFF
CONTENT_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm"}


def wav_header(sample_rate: int, channels: int = 1, bits: int = 16) -> bytes:
    """A 44-byte PCM WAV header whose sizes say "unknown": the data runs to the end of the stream."""
    block = channels * bits // 8
    return (
        b"RIFF"
        + struct.pack("<I", UNKNOWN_SIZE)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, bits)
        + b"data"
        + struct.pack("<I", UNKNOWN_SIZE)
    )


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as little-endian int16 (clipped, rounded)."""
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return np.round(x * 32767.0).astype("<i2").tobytes()


class StreamEncoder:
    """One response's encoder: feed float chunks as they come, get the bytes to send."""

    def __init__(self, response_format: str, sample_rate: int = OPENAI_PCM_RATE):
        if response_format not in CONTENT_TYPES:
            raise ValueError(f"unsupported response format {response_format!r}")
        self.response_format = response_format
        self.sample_rate = sample_rate
        self.resampler: StreamResampler | None = None
        self.started = False
        self.samples_out = 0

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.response_format]

    def encode(self, samples: np.ndarray, rate: int) -> bytes:
        if self.resampler is None:
            self.resampler = StreamResampler(rate, self.sample_rate)
        elif self.resampler.from_sr != rate:
            raise ValueError(f"sample rate changed within an utterance: {self.resampler.from_sr} -> {rate}")
        return self._bytes(self.resampler.process(samples))

    def finish(self) -> bytes:
        """The resampler's tail (and the header, if no audio came at all)."""
        return self._bytes(self.resampler.flush() if self.resampler else np.zeros(0, np.float32))

    def _bytes(self, samples: np.ndarray) -> bytes:
        head = b""
        if not self.started:
            self.started = True
            head = wav_header(self.sample_rate) if self.response_format == "wav" else b""
        self.samples_out += len(samples)
        return head + pcm16(samples)
