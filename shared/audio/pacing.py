"""Real-time pacing: never get more than ``max_lead`` seconds of audio ahead of its playback.

A sink that gives no acknowledgements (dora-pyaudio: a 10-message drop-oldest queue that plays one
second per message) loses audio when a producer runs far ahead of real time. The pacer assumes
the consumer plays every message in real time from the moment it is sent, keeps the time at which
the audio sent so far will have been played (``play_end``), and holds a message back while that lies
more than ``max_lead`` seconds in the future.
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
    def __init__(self, max_lead: float, clock: Callable[[], float] = time.monotonic):
        self.max_lead = max_lead
        self.clock = clock
        self.held: deque[Held[T]] = deque()
        self.play_end = float("-inf")

    def offer(self, message: T, seconds: float, tag: Any = None) -> list[T]:
        """Queue a message; returns the messages that may leave now, in order."""
        self.held.append(Held(message, seconds, tag))
        return self.release()

    def release(self) -> list[T]:
        out, now = [], self.clock()
        while self.held and max(self.play_end, now) - now <= self.max_lead:
            item = self.held.popleft()
            self.play_end = max(self.play_end, now) + item.seconds
            out.append(item.message)
        return out

    def next_deadline(self) -> float | None:
        """When the head of the queue may leave (the consumer will have played enough by then)."""
        return self.play_end - self.max_lead if self.held else None

    def discard(self, drop: Callable[[Any], bool]) -> int:
        kept = deque(h for h in self.held if not drop(h.tag))
        dropped = len(self.held) - len(kept)
        self.held = kept
        return dropped

    def restart(self) -> None:
        """The consumer was cleared (a barge-in flushed it): nothing of ours is waiting there."""
        self.play_end = float("-inf")
