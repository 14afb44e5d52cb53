"""GSV_PEAK_LIMIT: a fixed gain plus a smooth soft knee, safe for dora-pyaudio's x70000 int16 cast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.audio.limiter import PYAUDIO_SAFE_PEAK, PeakLimiter, limiter_from_env, pyaudio_int16
from dora_gpt_sovits.nodes.vocoder import VocoderStage
from dora_gpt_sovits.sovits.token_stream import StreamPolicy

SR = 32000


def test_output_never_exceeds_the_limit_and_pyaudio_never_wraps():
    limiter = PeakLimiter(0.45, gain=1.0)
    x = torch.linspace(-5, 5, 100_001)
    y = limiter(x)
    assert y.abs().max() <= 0.45 + 1e-6  # float32 rounding of the limit itself
    as_int16 = pyaudio_int16(y.numpy())
    # No wrap-around: the sign survives the cast and the value is what x70000 means.
    assert np.all(np.sign(as_int16) == np.sign(y.numpy()) * (np.abs(as_int16) > 0))
    assert np.abs(as_int16.astype(np.int64) - np.round(y.numpy() * 70000)).max() <= 1
    assert 0.45 < PYAUDIO_SAFE_PEAK


def test_quiet_samples_pass_with_the_gain_only_and_the_curve_is_smooth_and_monotonic():
    limiter = PeakLimiter(0.45, gain=0.5, knee=0.6)
    quiet = torch.linspace(-0.5, 0.5, 1001)  # x*0.5 <= 0.25 < knee 0.27
    assert torch.allclose(limiter(quiet), quiet * 0.5)
    x = torch.linspace(0, 4, 40_001, dtype=torch.float64)
    y = limiter(x).double()
    slope = torch.diff(y) / torch.diff(x)
    assert (slope >= 0).all()  # monotonic: louder in, never quieter out
    # No corner at the knee (abrupt clipping would be a step in the slope): slope changes gradually.
    assert torch.diff(slope).abs().max() < 1e-3


def test_limiting_chunk_by_chunk_equals_limiting_the_whole_stream():
    limiter = PeakLimiter(0.45)
    wav = torch.sin(torch.linspace(0, 300, 32000)) * torch.linspace(0, 1.5, 32000)
    chunked = torch.cat([limiter(c) for c in torch.split(wav, 777)])
    assert torch.equal(chunked, limiter(wav))


def test_limiter_from_env():
    assert limiter_from_env({}) is None and limiter_from_env({"GSV_PEAK_LIMIT": "0"}) is None
    assert limiter_from_env({"GSV_PEAK_LIMIT": "0.45"}) == PeakLimiter(0.45, gain=0.45)
    assert limiter_from_env({"GSV_PEAK_LIMIT": "0.45", "GSV_OUTPUT_GAIN": "0.8"}).gain == 0.8
    with pytest.raises(ValueError, match="peak limit"):
        limiter_from_env({"GSV_PEAK_LIMIT": "1.5"})


def test_vocoder_with_a_peak_limit_sends_pyaudio_safe_chunks_of_at_most_one_second():
    def loud_decoder(cond, phone_ids, seed, speed=None):
        def decode(history, run, lookahead, position):
            t = (np.arange(len(run) * 640) + position * 640) / SR
            return torch.from_numpy(0.98 * np.sin(2 * np.pi * 220 * t).astype(np.float32)), torch.zeros(0)

        return decode

    stage = VocoderStage(
        lambda spec, sv: "cond",
        loud_decoder,
        SR,
        needs_speaker_embedding=False,
        policy=StreamPolicy(lookahead_tokens=0, min_run_tokens=1),
        output_rate=24000,
        limiter=PeakLimiter(0.45),
    )
    list(
        stage.handle(m.REFERENCE_SPECTROGRAM, *m.ReferencePart("default", np.ones((1025, 8), np.float32)).to_message())
    )
    key = m.SegmentKey("u", 0, True)
    out = []
    for i, final in enumerate([False, True]):
        chunk = m.SemanticChunk(key, np.arange(i * 40, (i + 1) * 40), i, final, [1, 2])
        out += [
            m.AudioChunk.from_event(o.data, o.metadata) for o in stage.handle(m.SEMANTIC_TOKENS, *chunk.to_message())
        ]
    assert out and all(c.sample_rate == 24000 and len(c.samples) <= 24000 for c in out)
    wav = np.concatenate([c.samples for c in out])
    assert 0.3 < np.abs(wav).max() < 0.45  # loud, yet within what dora-pyaudio can play
