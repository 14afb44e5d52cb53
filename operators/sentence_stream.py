"""sentence-stream operator: streamed LLM text deltas in, one message per sentence out.

Input ``text`` (Utf8[1]: a delta of the LLM's reply); output ``text`` (Utf8[1]: a sentence, ready for
text-frontend). A sentence leaves as soon as its end is certain (Chinese or English marks, see
``text.sentence_split.StreamingSplitter``), so the TTS speaks the first sentence while the LLM is
still writing the next. ``<tool_call>`` blocks are removed, also when split across deltas.

A turn ends — and its unterminated remainder is released — on any of: a delta with metadata
``final: true``, an empty delta, a message on the optional input ``end``, or the ``text`` input
closing. No timer is involved. Each sentence carries the turn's metadata (``voice``, ``language``,
...) plus ``turn_id``, ``sentence_index`` and ``utterance_id`` = ``<turn_id>.<sentence_index>``.
``GSV_STREAM_MIN_CHARS`` (5) / ``GSV_STREAM_MAX_CHARS`` (80) tune the splitter.

For LLM nodes that send one whole reply per message (dora-qwen), this operator is not needed:
text-frontend splits whole texts itself.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from dora import DoraStatus

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.settings import SentenceStreamSettings
from dora_gpt_sovits.text.llm_stream import TurnSentences

log = logging.getLogger("gsv.sentence-stream")

END = "end"
# Keys that describe one sentence, not the turn: never copied from a delta onto a sentence.
_PER_MESSAGE_KEYS = {"timestamp", m.FINAL, m.UTTERANCE_ID, m.TEXT_RECEIVED_AT, m.SENTENCE_INDEX}


class SentenceStream:
    """The operator's logic without dora: deltas in, (sentence, metadata) out."""

    def __init__(self, min_chars: int = 5, max_chars: int = 80):
        self.min_chars, self.max_chars = min_chars, max_chars
        self.turn: TurnSentences | None = None
        self.metadata: dict[str, Any] = {}
        self.sentences_sent = 0

    def delta(self, text: str, metadata: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        if self.turn is None:
            self.turn, self.sentences_sent = TurnSentences(self.min_chars, self.max_chars), 0
            self.metadata = {m.TURN_ID: str(metadata.get(m.TURN_ID) or m.new_utterance_id())}
        self.metadata.update({k: v for k, v in metadata.items() if k not in _PER_MESSAGE_KEYS})
        out = self.label(self.turn.push(text))
        if not text or metadata.get(m.FINAL):
            out += self.end()
        return out

    def end(self) -> list[tuple[str, dict[str, Any]]]:
        if self.turn is None:
            return []
        out = self.label(self.turn.end())
        log.info("turn %s ended after %d sentences", self.metadata[m.TURN_ID], self.sentences_sent)
        self.turn = None
        return out

    def label(self, sentences: list[str]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for sentence in sentences:
            index = self.sentences_sent
            self.sentences_sent += 1
            turn = self.metadata[m.TURN_ID]
            request = m.TextRequest(
                sentence,
                utterance_id=f"{turn}.{index}",
                text_received_at=m.now(),
                extra=self.metadata | {m.SENTENCE_INDEX: index},
            )
            out.append((sentence, request.metadata()))
            log.info("turn %s sentence %d released: %s", turn, index, sentence[:60])
        return out


class Operator:
    def __init__(self) -> None:
        settings = SentenceStreamSettings.from_env(os.environ)  # a bad value: one line naming the variable
        self.stream = SentenceStream(min_chars=settings.min_chars, max_chars=settings.max_chars)

    def on_event(self, dora_event: dict, send_output) -> DoraStatus:
        kind = dora_event["type"]
        released: list[tuple[str, dict[str, Any]]] = []
        if kind == "INPUT" and dora_event["id"] == m.TEXT:
            try:
                text = m.read_text(dora_event["value"])
            except m.MessageError as e:
                log.error("sentence-stream: dropped a delta: %s", e)
                return DoraStatus.CONTINUE
            released = self.stream.delta(text, dict(dora_event.get("metadata") or {}))
        elif (kind == "INPUT" and dora_event["id"] == END) or (kind == "INPUT_CLOSED" and dora_event["id"] == m.TEXT):
            released = self.stream.end()
        elif kind == "STOP":
            released = self.stream.end()
        for sentence, metadata in released:
            send_output(m.TEXT, m.text_array(sentence), metadata)
        return DoraStatus.CONTINUE
