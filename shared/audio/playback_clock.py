"""Would this stream have played without a gap? A wall-clock model of real-time playback.

Arrival of a chunk is not the same as continuous sound: if the next chunk arrives after the
previous one has finished playing, a listener hears a gap (a stall), however short the time to
first audio was. The sink keeps one clock per utterance in every mode (speaker, WAV, null), so
benchmarks without a sound card still report how smooth the stream would have been.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREBUFFER_S = 0.15  # the speaker player's jitter buffer (audio.player.Player)


@dataclass
class PlaybackClock:
    prebuffer_s: float = DEFAULT_PREBUFFER_S
    ends_at: float | None = None  # wall time at which the audio received so far has played out
    stall_s: float = 0.0  # total silence a listener would have heard inside the stream
    stalls: int = 0

    def arrive(self, at: float, seconds: float) -> None:
        """A chunk of ``seconds`` of audio arrived at wall time ``at``."""
        if self.ends_at is None:
            self.ends_at = at + self.prebuffer_s + seconds  # playback starts once the buffer is primed
            return
        if at > self.ends_at:
            self.stall_s += at - self.ends_at
            self.stalls += 1
            self.ends_at = at + self.prebuffer_s  # the player re-primes its buffer after an underrun
        self.ends_at += seconds
