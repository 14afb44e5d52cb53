"""Compressed audio as a byte stream: mp3, opus, aac and flac encoded and muxed while audio arrives.

PyAV (ffmpeg's libavcodec/libavformat in a wheel) encodes; the muxer writes into a collector that
hands over whatever it holds after each chunk, so bytes leave as the graph produces audio. Each
format is a container that needs no seek back at its end:

* mp3: bare MPEG audio frames (no ID3 tag, no Xing/LAME frame, which would be rewritten at the end);
* opus: Ogg pages of libopus packets, one page per ~20 ms packet instead of the muxer's 1 s pages;
* aac: ADTS, every AAC frame behind its own header;
* flac: the native stream; its STREAMINFO says "length unknown" (0 samples, no MD5), as the FLAC
  format allows, because the muxer cannot go back and fill them in.

An encoder delays its output by a frame or two (its frame size and look-ahead); the rest comes out
at :meth:`CodecStream.finish`. Lossy decoders may also start with the encoder's priming samples
(mp3 1105, aac 1024 at 24 kHz): no container here carries the gapless-playback tags that would say so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import av
import numpy as np

log = logging.getLogger("gsv.http-server")


@dataclass(frozen=True)
class CodecSpec:
    container: str  # libavformat muxer
    codec: str  # libavcodec encoder
    bit_rate: int  # 0: the encoder's own choice (lossless)
    options: dict[str, str] = field(default_factory=dict)  # muxer options


# Bit rates for 24 kHz mono speech: transparent enough that decoded band energies stay within a
# dB or two of the source (tests/test_openai_formats.py), small next to 384 kbit/s of PCM.
CODECS = {
    "mp3": CodecSpec("mp3", "libmp3lame", 64_000, {"id3v2_version": "0", "write_xing": "0"}),
    "opus": CodecSpec("ogg", "libopus", 32_000, {"page_duration": "20000"}),
    "aac": CodecSpec("adts", "aac", 64_000),
    "flac": CodecSpec("flac", "flac", 0),
}


def codec_rate(response_format: str, wanted: int) -> int:
    """The sample rate the format is served at: ``wanted`` when its encoder takes it, else the
    nearest rate above that it does take (opus knows only 8/12/16/24/48 kHz), else its highest."""
    rates = av.Codec(CODECS[response_format].codec, "w").audio_rates
    if not rates or wanted in rates:
        return wanted
    above = [r for r in rates if r >= wanted]
    return min(above) if above else max(rates)


class _Collector:
    """The muxer's output file: keeps what is written until :meth:`take`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


class CodecStream:
    """One response's encoder and muxer: 16-bit samples in, container bytes out as they are ready."""

    def __init__(self, response_format: str, sample_rate: int):
        if response_format not in CODECS:
            raise ValueError(f"no codec for response format {response_format!r}; codecs: {sorted(CODECS)}")
        spec = CODECS[response_format]
        self.sample_rate = sample_rate
        self.samples_in = 0
        self._out = _Collector()
        self._container = av.open(self._out, "w", format=spec.container, options=dict(spec.options))
        self._stream = self._container.add_stream(spec.codec, rate=sample_rate, layout="mono")
        if spec.bit_rate:
            self._stream.bit_rate = spec.bit_rate
        self._closed = False

    def write(self, pcm: np.ndarray) -> bytes:
        """Encode int16 samples; returns the bytes the muxer has ready (possibly none yet)."""
        pcm = np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1)
        if pcm.shape[1] == 0:
            return b""
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts = self.sample_rate, self.samples_in
        self.samples_in += pcm.shape[1]
        self._mux(self._stream.encode(frame))  # PyAV cuts the frames to the encoder's frame size
        return self._out.take()

    def finish(self) -> bytes:
        """Drain the encoder, write the container's end; the stream's last bytes."""
        if self._closed:
            return b""
        if self.samples_in:
            self._mux(self._stream.encode(None))
        self.close()
        return self._out.take()

    def close(self) -> None:
        """Free the encoder (also when the client left mid-stream)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except av.FFmpegError as e:  # an aborted stream's trailer: nobody reads it any more
            log.warning("closing the %s encoder: %s", self._stream.codec_context.name, e)

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)
