"""Stall watchdog: work is in flight and nothing has come back for too long.

dora can stop delivering messages between two machines without any error (after both daemons lost
and regained the coordinator, docs/reliability.md "Across machines"): every node then idles, and an
utterance would wait forever. The text-frontend knows which segments it released and hears the
sink's ``segment_complete`` for each, so it keeps this watchdog: while segments are out, each report
from the sink is progress; ``timeout_s`` without any fails the utterances in flight with a reason
that names the path that stalled and what to do, instead of leaving them unanswered.

The timeout must exceed the longest a segment can take from release to its sink report (its GPT
decode, and with a speaker the playback of its audio): 0 turns the watchdog off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StallWatchdog:
    timeout_s: float
    last_progress: float | None = None  # monotonic seconds; None while nothing is in flight

    @property
    def enabled(self) -> bool:
        return self.timeout_s > 0

    def progress(self, now: float, in_flight: bool) -> None:
        """Something came back (or work went out into an idle path): restart the count."""
        self.last_progress = now if in_flight else None

    def deadline(self) -> float | None:
        if not self.enabled or self.last_progress is None:
            return None
        return self.last_progress + self.timeout_s

    def expired(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def stalled_for(self, now: float) -> float:
        return 0.0 if self.last_progress is None else now - self.last_progress


def stall_reason(timeout_s: float, segments: int) -> str:
    """The error an utterance reports when the watchdog fails it."""
    return (
        f"stalled: no segment came back from the path text-frontend -> bert -> gpt -> vocoder -> audio-sink "
        f"for {timeout_s:g} s with {segments} segment(s) in flight (the segments went out to bert; audio-sink "
        f"reported none). Across machines this is dora no longer delivering between the daemons after a "
        f"reconnect to the coordinator; check the path with `gsv-say --health`, then restart the dataflow "
        f"(dora stop, dora start) (docs/reliability.md, 'Across machines')"
    )
