"""Which utterances a barge-in has cancelled, as every stage sees it.

The text-frontend stamps each stop with the clock that stamps ``text_received_at`` and fans it out
to every stage. A stage keeps the highest stamp as a *watermark*: any work whose utterance entered
the graph before it is dropped, whether it is held now or arrives later. Comparing with the
frontend's stamp instead of each stage's arrival time keeps a new utterance that was submitted right
after the stop alive in every stage. A stop that names an utterance cancels only that one.
"""

from __future__ import annotations

from collections import OrderedDict

from .messages import ControlCommand, SegmentKey

REMEMBERED_IDS = 4096  # named cancels kept; far more than the utterances a graph has in flight


class Cancellations:
    def __init__(self) -> None:
        self.before = float("-inf")
        self.ids: OrderedDict[str, None] = OrderedDict()

    def apply(self, command: ControlCommand) -> None:
        if command.utterance_id:
            self.ids[command.utterance_id] = None
            while len(self.ids) > REMEMBERED_IDS:
                self.ids.popitem(last=False)
        else:
            self.before = max(self.before, command.cancel_before)

    def cancels(self, key: SegmentKey) -> bool:
        return key.text_received_at < self.before or key.utterance_id in self.ids

    def cancels_utterance(self, utterance_id: str, text_received_at: float) -> bool:
        return text_received_at < self.before or utterance_id in self.ids
