"""Per-request timings the server measures itself: TTFA, real-time factor, audio length.

TTFA here is request received -> first audio bytes handed to the connection; RTF is the request's
wall time divided by the seconds of audio it produced (< 1: faster than real time).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class RequestMetrics:
    id: str
    voice: str
    response_format: str
    input_chars: int
    received_at: float  # time.time()
    first_audio_at: float | None = None
    finished_at: float | None = None
    audio_seconds: float = 0.0
    status: str = "running"  # running | completed | failed | cancelled
    error: str = ""

    @property
    def ttfa_seconds(self) -> float | None:
        return None if self.first_audio_at is None else self.first_audio_at - self.received_at

    @property
    def rtf(self) -> float | None:
        if self.finished_at is None or self.audio_seconds <= 0:
            return None
        return (self.finished_at - self.received_at) / self.audio_seconds

    def first_audio(self) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = time.time()

    def finish(self, status: str, error: str = "") -> None:
        self.finished_at, self.status, self.error = time.time(), status, error or self.error

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"ttfa_seconds": self.ttfa_seconds, "rtf": self.rtf, "object": "speech.request"}


class MetricsLog:
    """The most recent requests' metrics by id (bounded), plus the last one started."""

    def __init__(self, keep: int = 100):
        self.keep = keep
        self._lock = threading.Lock()
        self._items: OrderedDict[str, RequestMetrics] = OrderedDict()

    def add(self, metrics: RequestMetrics) -> None:
        with self._lock:
            self._items[metrics.id] = metrics
            while len(self._items) > self.keep:
                self._items.popitem(last=False)

    def get(self, request_id: str) -> RequestMetrics | None:
        with self._lock:
            return self._items.get(request_id)

    def last(self) -> RequestMetrics | None:
        with self._lock:
            return next(reversed(self._items.values()), None)
