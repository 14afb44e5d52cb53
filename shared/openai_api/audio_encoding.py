"""Streamed audio as response bytes in OpenAI's six formats, each sent while it is produced.

``mp3``, ``opus``, ``aac`` and ``flac`` are encoded by :mod:`.codec_stream` (PyAV); ``wav`` and
``pcm`` are written here. The length of a streamed utterance is unknown when its first bytes leave, so the WAV header gives
the RIFF and data sizes as 0xFFFFFFFF ("until the end of the stream"), which browsers, ffmpeg,
soundfile and OpenAI's own streamed WAV use the same way. ``pcm`` is OpenAI's raw format: 24 kHz,
mono, signed 16-bit little-endian, no header. Audio arriving at another rate is converted on the
way with a streaming resampler whose filter state carries across chunks.
"""

from __future__ import annotations

import struct

import numpy as np

from dora_gpt_sovits.audio.resample import StreamResampler

from .codec_stream import CODECS, CodecStream, codec_rate

OPENAI_PCM_RATE = 24000
UNKNOWN_SIZE = 0xFFFFFFFF
# The Content-Type OpenAI's API sends for each response_format (mp3 is the default).
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
FORMATS = tuple(CONTENT_TYPES)


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

    def __init__(self, response_format: str, sample_rate: int = OPENAI_PCM_RATE, gain: float = 1.0):
        if response_format not in CONTENT_TYPES:
            raise ValueError(f"unsupported response format {response_format!r}")
        self.response_format = response_format
        self.sample_rate = codec_rate(response_format, sample_rate) if response_format in CODECS else sample_rate
        self.gain = gain  # Kokoro's volume_multiplier; the product is clipped to [-1, 1]
        self.resampler: StreamResampler | None = None
        self.codec = CodecStream(response_format, self.sample_rate) if response_format in CODECS else None
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
        """The resampler's and the encoder's tail (and the WAV header, if no audio came at all)."""
        tail = self._bytes(self.resampler.flush() if self.resampler else np.zeros(0, np.float32))
        return tail + (self.codec.finish() if self.codec else b"")

    def close(self) -> None:
        """Free the encoder when the stream ends early (a client that left, an error)."""
        if self.codec:
            self.codec.close()

    def _bytes(self, samples: np.ndarray) -> bytes:
        self.samples_out += len(samples)
        pcm = pcm16(samples if self.gain == 1.0 else np.asarray(samples, np.float32) * self.gain)
        if self.codec:
            return self.codec.write(np.frombuffer(pcm, "<i2"))
        head = b""
        if not self.started:
            self.started = True
            head = wav_header(self.sample_rate) if self.response_format == "wav" else b""
        return head + pcm
