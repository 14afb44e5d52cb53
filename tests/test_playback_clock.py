"""The sink's model of real-time playback: stalls are counted only where audio ran out."""

import pytest

from dora_gpt_sovits.audio.playback_clock import PlaybackClock


def test_chunks_arriving_ahead_of_playback_never_stall():
    clock = PlaybackClock(prebuffer_s=0.1)
    for i in range(10):
        clock.arrive(at=i * 0.5, seconds=1.0)  # twice as fast as real time
    assert clock.stalls == 0 and clock.stall_s == 0.0
    assert clock.ends_at == pytest.approx(0.1 + 10.0)


def test_a_late_chunk_is_a_stall_of_the_gap_and_playback_reprimes():
    clock = PlaybackClock(prebuffer_s=0.1)
    clock.arrive(at=0.0, seconds=0.4)  # plays 0.1 .. 0.5
    clock.arrive(at=0.8, seconds=1.0)  # 0.3 s of silence, then re-primed: plays 0.9 .. 1.9
    clock.arrive(at=1.0, seconds=0.5)  # in time
    assert clock.stalls == 1
    assert clock.stall_s == pytest.approx(0.3)
    assert clock.ends_at == pytest.approx(2.4)


def test_the_prebuffer_absorbs_a_small_delay():
    clock = PlaybackClock(prebuffer_s=0.15)
    clock.arrive(at=0.0, seconds=0.32)  # plays until 0.47
    clock.arrive(at=0.45, seconds=1.0)
    assert clock.stalls == 0
