"""Live playback through PortAudio (sounddevice) with a small jitter buffer.

Playback starts once ``prebuffer_seconds`` of audio are queued (or the utterance is complete), so
chunks that arrive a little late do not cause gaps; when the queue runs dry mid-utterance the
device plays silence and an underrun is counted. :class:`JitterBuffer` holds that logic without
any audio device, so it is tested on machines without sound hardware.

Each write carries a tag (the utterance it belongs to) so a barge-in can silence one utterance or
all of them at once (:meth:`JitterBuffer.discard`), and ``consumed`` counts the samples that left
the buffer (played or discarded), so a writer knows when a segment has really been heard.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

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
        self.queue: collections.deque[tuple[np.ndarray, Any]] = collections.deque()
        self.queued = 0
        self.written = 0  # samples ever written
        self.consumed = 0  # samples that left the queue: played or discarded
        self.lock = threading.Lock()
        self.started = False
        self.complete = False  # the producer has sent everything queued so far
        self.underruns = 0
        self.first_played_at: float | None = None

    def write(self, samples: np.ndarray, complete: bool, tag: Any = None) -> bool:
        """Queue samples; True when playback should start now."""
        with self.lock:
            self.queue.append((np.asarray(samples, dtype=np.float32), tag))
            self.queued += len(samples)
            self.written += len(samples)
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
                head, tag = self.queue[0]
                take = min(len(out) - filled, len(head))
                out[filled : filled + take] = head[:take]
                filled += take
                if take == len(head):
                    self.queue.popleft()
                else:
                    self.queue[0] = (head[take:], tag)
            self.queued -= filled
            self.consumed += filled
            if filled and self.first_played_at is None:
                self.first_played_at = time.time()
            if filled < len(out) and not self.complete:
                self.underruns += 1
        out[filled:] = 0.0

    def discard(self, drop: Callable[[Any], bool]) -> int:
        """Remove queued audio whose tag ``drop`` selects; the device plays silence at its next
        callback (at most one device block later). Returns the number of samples removed."""
        with self.lock:
            kept = collections.deque(item for item in self.queue if not drop(item[1]))
            removed = self.queued - sum(len(a) for a, _ in kept)
            self.queue = kept
            self.queued -= removed
            self.consumed += removed
            if not kept:
                self.complete = True  # silence from here on is intended, not an underrun
            return removed


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

    @property
    def consumed(self) -> int:
        return self.buffer.consumed

    @property
    def written(self) -> int:
        return self.buffer.written

    def write(self, samples: np.ndarray, complete: bool, tag: Any = None) -> None:
        if self.buffer.write(samples, complete, tag):
            self.stream.start()

    def discard(self, drop: Callable[[Any], bool]) -> int:
        return self.buffer.discard(drop)

    def drain(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while self.buffer.queued > 0 and time.time() < deadline:
            time.sleep(0.02)
        self.stream.stop()
        self.stream.close()
