"""pyaudio-feed node: our ``audio`` on its way to dora-pyaudio, emptied at a barge-in.

Input:  ``audio`` (the vocoder's Float32 chunks), ``control`` (text-frontend's stamped stops; any
        other message there, e.g. dora-vad's ``timestamp_start``, is a stop-all stamped on arrival).
Output: ``audio``, the same messages, for dora-pyaudio's ``audio`` input.

dora-pyaudio (node-hub 0.5) plays every queued message in turn with a blocking write and clears only
the message in hand when its ``timestamp_start`` input fires, so whatever the vocoder's real-time
lead (``GSV_MAX_LEAD_SECONDS``) has queued at its input still plays after the user started to speak:
~2 s in the voice-assistant graph. At a stop-all this node sends one empty audio message with
dora's ``flush: True``; dora then drops every message still queued at dora-pyaudio's input before
delivering it, and dora-pyaudio, handed an empty buffer, falls silent once the write in progress
ends — at most one message, ``GSV_MAX_CHUNK_SECONDS`` on the vocoder. Audio of stopped utterances
still on its way from the vocoder is dropped here (the same cancellation watermark every stage
keeps), so nothing stale slips in behind the marker. A stop naming one utterance only drops its
later audio: a flush would also drop the other utterances queued with it.

Audio without our utterance metadata (another producer) passes unchanged: what of it is stale is
unknowable here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.cancellation import Cancellations
from dora_gpt_sovits.node_runtime import Outgoing, StageBase, connect, serve

log = logging.getLogger("gsv.pyaudio-feed")


class PyaudioFeedStage(StageBase):
    name = "pyaudio-feed"
    primary_inputs = frozenset({m.AUDIO})

    def __init__(self, clock: Callable[[], float] = m.now) -> None:
        self.clock = clock  # stamps a stop that comes unstamped (dora-vad's timestamp_start wired here directly)
        self.cancelled = Cancellations()
        self.sample_rate: int | None = None  # of the audio passed on: dora-pyaudio never reopens its stream
        self.sent_since_flush = False

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing]:
        if input_id == m.CONTROL:
            command = m.ControlCommand.from_event(value, metadata, stamp=self.clock())
            self.cancelled.apply(command)
            if not command.utterance_id and self.sent_since_flush:
                yield self.flush_marker()
            return
        chunk = m.AudioChunk.from_event(value, metadata)  # the contract: a clear error, not a crash downstream
        if m.UTTERANCE_ID in metadata and self.cancelled.cancels(chunk.key):
            return
        self.sample_rate = chunk.sample_rate
        self.sent_since_flush = self.sent_since_flush or len(chunk.samples) > 0
        yield Outgoing(m.AUDIO, value, metadata)

    def flush_marker(self) -> Outgoing:
        self.sent_since_flush = False
        # A real bool: dora reads `flush` with get_bool_param. The rate is the stream's own, in case
        # this is the first message dora-pyaudio sees (it opens its stream at that rate).
        return Outgoing(m.AUDIO, m.empty_array("float32"), {m.SAMPLE_RATE: self.sample_rate, m.FLUSH: True})


def main() -> None:
    node = connect()
    log.info("pyaudio-feed: a barge-in empties dora-pyaudio's queue (dora flush)")
    serve(node, PyaudioFeedStage())


if __name__ == "__main__":
    main()
