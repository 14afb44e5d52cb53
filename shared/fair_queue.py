"""Which queued message a stage handles next, so that no utterance waits behind another's backlog.

dora hands a node its messages first in, first out. A stage that works one message at a time (bert
per segment, the vocoder per token chunk) then serves a short request's first segment only after
every segment of a long request queued before it: that request's first audio waits for the whole
long text (docs/performance.md, "Fairness").

A stage names the inputs whose messages may overtake each other (``fair_inputs``). Before the node
loop handles a message on one of them it pulls what dora has already queued locally, and
``FairPick`` chooses among the queued messages on those inputs: the oldest message of the utterance
served least recently (one never served counts as least recent, so a newcomer's first segment goes
next; utterances never served go in arrival order). Each utterance's own messages keep their order.

Every other event is a **barrier**: a message on another input (a voice's spectrogram, a
``segment_complete``), a restart marker, a health probe, a message without an utterance id, an
input's close, ``STOP``. Only the messages queued before the first barrier are candidates, and the
barrier is handled once they all have been. So a stage sees each non-fair event at the same place
among the data as it would without the picker; only data between two barriers changes order, one
utterance against another. The vocoder relies on this: it holds a voice's token chunks until the
voice's parts arrive, and a part never moves relative to the chunks. Control messages (stops) never
queue here: the loop handles them the moment it pulls them.

This reorders the utterances' audio against each other, so it suits graphs whose consumer separates
the audio by utterance (the HTTP server streams each request its own audio); a graph that plays
whatever arrives on one speaker (dora-pyaudio) keeps first in, first out. Hence opt-in:
``GSV_FAIR_SCHEDULING=1`` (``dataflows/openai-server.yml``).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from . import health
from .messages import UTTERANCE_ID, restarted_node

REMEMBERED_UTTERANCES = 1024  # when each was last served; an utterance forgotten counts as new


class FairPick:
    """Picks the next event to handle from a local queue of dora events (see the module doc)."""

    def __init__(self, inputs: frozenset[str]):
        self.inputs = inputs
        self.last_served: OrderedDict[str, int] = OrderedDict()  # utterance -> turn, oldest first
        self.turn = 0

    def utterance(self, event: dict[str, Any]) -> str | None:
        """The utterance of a data message on a fair input; None for a barrier."""
        if event.get("type") != "INPUT" or event.get("id") not in self.inputs:
            return None
        metadata = event.get("metadata") or {}
        if health.is_probe(metadata) or restarted_node(metadata) is not None:
            return None
        utterance = metadata.get(UTTERANCE_ID)
        return str(utterance) if utterance else None

    def pick(self, queue: deque[dict[str, Any]]) -> dict[str, Any]:
        """Remove and return the event to handle next from a non-empty ``queue``."""
        best, best_turn, best_utterance = 0, None, None
        seen: set[str] = set()
        for i, event in enumerate(queue):
            utterance = self.utterance(event)
            if utterance is None:
                break  # a barrier: nothing behind it may go first
            if utterance in seen:
                continue  # only an utterance's oldest message is a candidate: its order is kept
            seen.add(utterance)
            turn = self.last_served.get(utterance, -1)
            if best_turn is None or turn < best_turn:
                best, best_turn, best_utterance = i, turn, utterance
        event = queue[best]
        del queue[best]
        if best_utterance is not None:
            self.served(best_utterance)
        return event

    def served(self, utterance: str) -> None:
        self.turn += 1
        self.last_served.pop(utterance, None)
        self.last_served[utterance] = self.turn
        while len(self.last_served) > REMEMBERED_UTTERANCES:
            self.last_served.popitem(last=False)
