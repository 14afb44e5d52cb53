"""Real-time pacing: never get more than ``max_lead`` seconds of audio ahead of its playback.

A sink that gives no acknowledgements (dora-pyaudio: a 10-message drop-oldest queue that plays one
second per message) loses audio when a producer runs far ahead of real time. The pacer assumes
the consumer plays every message in real time from the moment it is sent, keeps the time at which
the audio sent so far will have been played (``play_end``), and holds a message back while that lies
more than ``max_lead`` seconds in the future. It also bounds the *messages* waiting there: short
messages (a segment's tail, 0.1 s chunks after a barge-in setting) could fit more than the consumer's
queue holds into ``max_lead`` seconds, so at most ``max_queued`` sent messages may still be waiting
to start playing (8 by default: under dora-pyaudio's 10, leaving room for the one it plays).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Held(Generic[T]):
    message: T
    seconds: float
    tag: Any  # lets a caller discard held messages (e.g. of a cancelled utterance)


class Pacer(Generic[T]):
    def __init__(self, max_lead: float, clock: Callable[[], float] = time.monotonic, max_queued: int = 8):
        self.max_lead = max_lead
        self.max_queued = max_queued
        self.clock = clock
        self.held: deque[Held[T]] = deque()
        self.play_end = float("-inf")
        self.starts: deque[float] = deque()  # when each sent message not yet playing will start

    def offer(self, message: T, seconds: float, tag: Any = None) -> list[T]:
        """Queue a message; returns the messages that may leave now, in order."""
        self.held.append(Held(message, seconds, tag))
        return self.release()

    def release(self) -> list[T]:
        out, now = [], self.clock()
        while self.starts and self.starts[0] <= now:
            self.starts.popleft()
        while self.held and max(self.play_end, now) - now <= self.max_lead and len(self.starts) < self.max_queued:
            item = self.held.popleft()
            start = max(self.play_end, now)
            if start > now:
                self.starts.append(start)
            self.play_end = start + item.seconds
            out.append(item.message)
        return out

    def next_deadline(self) -> float | None:
        """When the head of the queue may leave: the consumer will have played enough seconds, and
        started enough of the messages waiting in its queue, by then."""
        if not self.held:
            return None
        by_seconds = self.play_end - self.max_lead
        if len(self.starts) < self.max_queued:
            return by_seconds
        return max(by_seconds, self.starts[len(self.starts) - self.max_queued])

    def discard(self, drop: Callable[[Any], bool]) -> int:
        kept = deque(h for h in self.held if not drop(h.tag))
        dropped = len(self.held) - len(kept)
        self.held = kept
        return dropped

    def restart(self) -> None:
        """The consumer was cleared (a barge-in flushed it): nothing of ours is waiting there."""
        self.play_end = float("-inf")
        self.starts.clear()
