"""Live playback through PortAudio (sounddevice) with a small jitter buffer.

Playback starts once ``prebuffer_seconds`` of audio are queued (or the utterance is complete), so
chunks that arrive a little late do not cause gaps; when the queue runs dry mid-utterance the
device plays silence and an underrun is counted. :class:`JitterBuffer` holds that logic without
any audio device, so it is tested on machines without sound hardware.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np


class SpeakerUnavailable(RuntimeError):
    """No PortAudio library or no output device: the caller falls back to a WAV file."""


def open_speaker_check() -> None:
    try:
        import sounddevice as sd
    except OSError as e:  # sounddevice raises OSError when libportaudio is missing
        raise SpeakerUnavailable(f"PortAudio is not installed ({e})") from None
    try:
        sd.query_devices(kind="output")
    except Exception as e:
        raise SpeakerUnavailable(f"no audio output device ({e})") from None


class JitterBuffer:
    """Queue between the graph (writer) and the audio device callback (reader)."""

    def __init__(self, prebuffer_samples: int):
        self.prebuffer = prebuffer_samples
        self.queue: collections.deque[np.ndarray] = collections.deque()
        self.queued = 0
        self.lock = threading.Lock()
        self.started = False
        self.complete = False  # the producer has sent everything queued so far
        self.underruns = 0
        self.first_played_at: float | None = None

    def write(self, samples: np.ndarray, complete: bool) -> bool:
        """Queue samples; True when playback should start now."""
        with self.lock:
            self.queue.append(np.asarray(samples, dtype=np.float32))
            self.queued += len(samples)
            self.complete = complete
            if not self.started and (self.queued >= self.prebuffer or complete):
                self.started = True
                return True
            return False

    def read(self, out: np.ndarray) -> None:
        """Fill ``out`` (1-D) with queued samples, silence for the rest; count underruns."""
        filled = 0
        with self.lock:
            while filled < len(out) and self.queue:
                head = self.queue[0]
                take = min(len(out) - filled, len(head))
                out[filled : filled + take] = head[:take]
                filled += take
                if take == len(head):
                    self.queue.popleft()
                else:
                    self.queue[0] = head[take:]
            self.queued -= filled
            if filled and self.first_played_at is None:
                self.first_played_at = time.time()
            if filled < len(out) and not self.complete:
                self.underruns += 1
        out[filled:] = 0.0


class Player:
    def __init__(self, sample_rate: int, prebuffer_seconds: float = 0.15):
        import sounddevice as sd

        self.sample_rate = sample_rate
        self.buffer = JitterBuffer(int(prebuffer_seconds * sample_rate))
        self.stream = sd.OutputStream(
            samplerate=sample_rate, channels=1, dtype="float32", callback=lambda out, *_: self.buffer.read(out[:, 0])
        )

    @property
    def underruns(self) -> int:
        return self.buffer.underruns

    def write(self, samples: np.ndarray, complete: bool) -> None:
        if self.buffer.write(samples, complete):
            self.stream.start()

    def drain(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while self.buffer.queued > 0 and time.time() < deadline:
            time.sleep(0.02)
        self.stream.stop()
        self.stream.close()
