"""Which HTTP request waits for which utterance: audio chunks routed by ``utterance_id``.

The dora thread calls :meth:`UtteranceRouter.route` for every ``audio`` message; each open request
registered a ``deliver`` callback (thread-safe on its side) under its utterance id. An utterance is
complete at the chunk that closes its final segment (``utterance_final`` and ``segment_final``):
stages keep order within an utterance, so nothing of it can arrive later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dora_gpt_sovits import messages as m

log = logging.getLogger("gsv.http-server")


@dataclass(frozen=True)
class AudioEvent:
    """What a request receives: a piece of its audio (owned, not a view), an error, or its end."""

    samples: np.ndarray  # float32 [n]
    sample_rate: int
    segment_index: int
    error: str = ""
    final: bool = False  # the utterance is complete; nothing more will come


Deliver = Callable[[AudioEvent], None]


class UtteranceRouter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, Deliver] = {}

    def open(self, utterance_id: str, deliver: Deliver) -> None:
        with self._lock:
            if utterance_id in self._routes:
                raise ValueError(f"utterance {utterance_id} is already being served")
            self._routes[utterance_id] = deliver

    def close(self, utterance_id: str) -> None:
        """Forget a request (finished, or its client left); later chunks of it are dropped."""
        with self._lock:
            self._routes.pop(utterance_id, None)

    def active(self) -> int:
        with self._lock:
            return len(self._routes)

    def route(self, chunk: m.AudioChunk) -> bool:
        """Hand one chunk to its request; False when nobody waits for that utterance (any more)."""
        final = chunk.key.utterance_final and chunk.segment_final
        with self._lock:
            deliver = (
                self._routes.pop(chunk.key.utterance_id, None) if final else self._routes.get(chunk.key.utterance_id)
            )
        if deliver is None:
            log.debug("audio for utterance %s, which no request waits for: dropped", chunk.key.utterance_id)
            return False
        # The payload is a view over dora's shared memory, released after this event: copy it.
        samples = np.array(chunk.samples, dtype=np.float32).reshape(-1)
        deliver(AudioEvent(samples, chunk.sample_rate, chunk.key.segment_index, chunk.error, final))
        return True

    def fail_all(self, reason: str) -> None:
        """End every open request with ``reason`` (the graph is stopping or the audio input closed)."""
        with self._lock:
            routes, self._routes = self._routes, {}
        for deliver in routes.values():
            deliver(AudioEvent(np.zeros(0, np.float32), 0, -1, reason, final=True))
