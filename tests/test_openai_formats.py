"""OpenAI's six response formats, streamed: the encoders alone (no graph), then every format through
the official ``openai`` client against the stand-in graph, decoded and compared with the WAV of
the same request, and OpenAI's SSE events.

How close is close enough: flac, wav and pcm carry the same 16-bit samples, so they must be equal
sample for sample. mp3 (64 kbit/s), aac (64 kbit/s) and opus (32 kbit/s) are perceptual codecs: they
keep each band's short-time energy, not the waveform (aac's noise substitution alone puts the
waveform SNR near 15 dB on speech). So a lossy stream is compared, after its encoder delay is
found by cross-correlation, on 24 log-spaced bands from 100 Hz to 8 kHz, 21 ms frames, over every
band within 50 dB of the loudest: mean |error| < 1.5 dB and 95th percentile < 4 dB (measured on
the speech-like signal: 0.5-0.6 dB and 1.2-1.9 dB). A dropped, doubled or misplaced 100 ms chunk, a
wrong sample rate or a wrong channel count each give errors of 10 dB and more; its length may
exceed the source only by the encoder's priming and last frame (mp3 1105 + 1152, aac 1024 + 1024).
"""

from __future__ import annotations

import base64
import io
import json

import av
import numpy as np
import pytest
from test_openai_server import SR, client, served, stream_speech  # noqa: F401  (served: the fixture)

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.audio.synthetic_voice import speech_like_signal
from dora_gpt_sovits.openai_api import sse
from dora_gpt_sovits.openai_api.audio_encoding import CONTENT_TYPES, FORMATS, StreamEncoder

RATE = 24000
LOSSY = ("mp3", "aac", "opus")
LOSSLESS = ("flac", "wav", "pcm")
MAX_EXTRA_SAMPLES = {"mp3": 1105 + 1152, "aac": 1024 + 1024, "opus": 0}
SIGNATURES = {  # how each stream starts: the container's first bytes
    "mp3": lambda b: b[0] == 0xFF and b[1] & 0xE0 == 0xE0,  # an MPEG audio frame header, no ID3 tag
    "opus": lambda b: b[:4] == b"OggS" and b[28:36] == b"OpusHead",
    "aac": lambda b: b[0] == 0xFF and b[1] & 0xF6 == 0xF0,  # ADTS sync word, layer 0
    "flac": lambda b: b[:4] == b"fLaC",
    "wav": lambda b: b[:4] == b"RIFF",
    "pcm": lambda b: True,
}


def decode(data: bytes, response_format: str) -> np.ndarray:
    """Float32 mono samples at 24 kHz (opus decodes at 48 kHz: resampled)."""
    if response_format == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768
    with av.open(io.BytesIO(data)) as container:
        to_24k = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        frames = [f for frame in container.decode(audio=0) for f in to_24k.resample(frame)]
        frames += to_24k.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def band_db(x: np.ndarray, n: int = 512) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    edges = np.geomspace(100, 8000, 25)
    bands = [power[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])]
    return 10 * np.log10(np.stack(bands, 1) + 1e-10)


def assert_same_sound(decoded: np.ndarray, reference: np.ndarray, response_format: str) -> None:
    if response_format in LOSSLESS:
        assert len(decoded) == len(reference) and np.array_equal(decoded, reference), response_format
        return
    extra = len(decoded) - len(reference)
    assert 0 <= extra <= MAX_EXTRA_SAMPLES[response_format] + 960, (response_format, extra)
    probe = min(len(reference), 12000)
    lags = range(0, extra + 1)
    lag = max(lags, key=lambda k: float(np.dot(reference[:probe], decoded[k : k + probe])))
    want, got = band_db(reference), band_db(decoded[lag : lag + len(reference)])
    loud = want > want.max() - 50
    error = np.abs(want - got)[loud]
    assert error.mean() < 1.5 and np.percentile(error, 95) < 4.0, (response_format, error.mean())


# ---- the encoders alone -------------------------------------------------------------------------
@pytest.mark.parametrize("response_format", FORMATS)
def test_each_format_streams_chunk_by_chunk_and_decodes_to_the_same_sound(response_format):
    speech = speech_like_signal(2.0, RATE)
    encoder = StreamEncoder(response_format, RATE)
    pieces = [encoder.encode(chunk, RATE) for chunk in np.array_split(speech, 20)]  # 100 ms each
    pieces.append(encoder.finish())
    # Streaming: bytes leave with the chunks, not at the end; at most the codec's first frame waits.
    assert sum(1 for p in pieces[:-1] if p) >= 18, [len(p) for p in pieces]
    data = b"".join(pieces)
    assert SIGNATURES[response_format](data), data[:40]
    reference = np.frombuffer(StreamEncoder("pcm", RATE).encode(speech, RATE), "<i2").astype(np.float32) / 32768
    assert_same_sound(decode(data, response_format), reference, response_format)


def test_content_types_are_openais_and_opus_is_served_at_a_rate_libopus_takes():
    as_sent = " ".join(f"{f}={t}" for f, t in CONTENT_TYPES.items())  # OpenAI's, mp3 first (its default)
    assert as_sent == "mp3=audio/mpeg opus=audio/opus aac=audio/aac flac=audio/flac wav=audio/wav pcm=audio/pcm"
    assert StreamEncoder("opus", 32000).sample_rate == 48000 and StreamEncoder("mp3", 32000).sample_rate == 32000
    encoder = StreamEncoder("flac", RATE, gain=2.0)
    loud = np.frombuffer(
        decode(encoder.encode(np.full(4800, 0.75, np.float32), RATE) + encoder.finish(), "flac"), "<f4"
    )
    assert np.allclose(loud, 32767 / 32768, atol=1e-4)  # volume_multiplier, clipped at full scale


def test_an_encoder_left_mid_stream_is_closed_without_output():
    encoder = StreamEncoder("mp3", RATE)
    encoder.encode(speech_like_signal(0.3, RATE), RATE)
    encoder.close()
    assert encoder.finish() == b""  # a closed encoder has nothing more to say, and says it quietly


# ---- every format through the official client --------------------------------------------------
def test_every_format_through_the_openai_client_matches_the_wav_of_the_same_request(served):
    base, graph = served
    graph.wave = lambda seconds: speech_like_signal(seconds, SR)
    wav, _ = stream_speech(base, "One. Two.", response_format="wav")
    reference = decode(wav, "wav")
    assert abs(len(reference) - RATE) <= 4  # two sentences of 0.5 s
    for response_format in FORMATS:
        data, headers = stream_speech(base, "One. Two.", response_format=response_format)
        assert headers["content-type"] == CONTENT_TYPES[response_format], response_format
        assert headers["x-audio-format"] == response_format and headers["x-sample-rate"] == str(RATE)
        assert SIGNATURES[response_format](data), (response_format, data[:40])
        assert_same_sound(decode(data, response_format), reference, response_format)


def test_without_response_format_the_client_gets_mp3_as_from_openai(served):
    base, _ = served
    with client(base).audio.speech.with_streaming_response.create(
        model="tts-1", voice="default", input="Hello."
    ) as response:
        data = response.read()
        assert response.headers["content-type"] == "audio/mpeg"
    assert SIGNATURES["mp3"](data) and len(decode(data, "mp3")) >= 0.5 * RATE


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac"])
def test_first_bytes_arrive_while_the_graph_is_still_speaking(served, response_format):
    base, graph = served
    graph.seconds, graph.pause_after = 3.0, 10  # 30 chunks; the graph waits after 1 s of audio
    with client(base).audio.speech.with_streaming_response.create(
        model="gpt-sovits", voice="default", input="Long.", response_format=response_format
    ) as response:
        parts = response.iter_bytes(256)
        early = b""
        while len(early) < 2048:  # more than any container header: encoded audio
            early += next(parts)
        chunks_sent_before = len(graph.emitted_at)
        graph.resume.set()
        rest = b"".join(parts)
    # Had the server held the encoded stream back, these bytes could only come after all 30 chunks,
    # i.e. after the graph's 30 s wait: they came while it was paused at chunk 10.
    assert rest and chunks_sent_before <= 10, chunks_sent_before


# ---- SSE ------------------------------------------------------------------------------------------
def sse_events(data: bytes) -> list[dict]:
    blocks = [b for b in data.decode("ascii").split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), blocks[:3]
    return [json.loads(b.removeprefix("data: ")) for b in blocks]


@pytest.mark.parametrize("response_format", ["mp3", "pcm"])
def test_sse_carries_the_same_audio_as_base64_deltas_and_ends_with_usage(served, response_format):
    base, _ = served
    raw, _ = stream_speech(base, "One. Two.", response_format=response_format)
    with client(base).audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="default",
        input="One. Two.",
        response_format=response_format,
        stream_format="sse",
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        events = sse_events(response.read())
    *deltas, done = events
    assert len(deltas) > 1 and {e["type"] for e in deltas} == {"speech.audio.delta"}
    assert b"".join(base64.b64decode(e["audio"]) for e in deltas) == raw  # the encoders are deterministic
    assert done == {"type": "speech.audio.done", "usage": sse.usage(len("One. Two."), 1.0)}
    assert done["usage"] == {"input_tokens": 9, "output_tokens": 25, "total_tokens": 34}


def test_sse_reports_a_failure_after_audio_as_an_error_event_without_done(served):
    base, graph = served
    graph.fail_texts["Fine. Broken."], graph.fail_from_segment = "GPT decoding failed: boom", 1
    with client(base).audio.speech.with_streaming_response.create(
        model="gpt-sovits", voice="default", input="Fine. Broken.", response_format="pcm", stream_format="sse"
    ) as response:
        events = sse_events(response.read())
    assert events[0]["type"] == "speech.audio.delta" and events[-1]["type"] == "error"
    assert "boom" in events[-1]["error"]["message"] and all(e["type"] != "speech.audio.done" for e in events)
    assert graph.texts[-1][1][m.UTTERANCE_ID]  # the request did reach the graph
