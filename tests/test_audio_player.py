"""The speaker's jitter buffer, without sound hardware."""

import numpy as np

from dora_gpt_sovits.audio.player import JitterBuffer


def test_playback_starts_after_the_prebuffer_and_keeps_sample_order():
    buffer = JitterBuffer(prebuffer_samples=100)
    assert buffer.write(np.arange(60, dtype=np.float32), complete=False) is False
    assert buffer.write(np.arange(60, 120, dtype=np.float32), complete=False) is True
    out = np.empty(50, np.float32)
    buffer.read(out)
    assert out.tolist() == list(range(50)) and buffer.underruns == 0
    buffer.read(out)
    buffer.read(out)  # only 20 samples left: an underrun mid-utterance
    assert out[:20].tolist() == list(range(100, 120)) and not out[20:].any()
    assert buffer.underruns == 1 and buffer.first_played_at is not None


def test_running_dry_after_the_utterance_is_complete_is_not_an_underrun():
    buffer = JitterBuffer(prebuffer_samples=1000)
    assert buffer.write(np.ones(10, np.float32), complete=True) is True  # short utterance starts at once
    out = np.empty(64, np.float32)
    buffer.read(out)
    assert out[:10].tolist() == [1.0] * 10 and buffer.underruns == 0
