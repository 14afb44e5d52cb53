"""Text from an LLM, made speakable: tool-call blocks removed, streamed deltas cut into sentences.

LLM nodes emit ``<tool_call>...</tool_call>`` blocks (dora-kokoro-tts drops them, so do we) and,
when they stream, many small deltas per turn. ``TurnSentences`` turns the deltas of one turn into
sentences as soon as each sentence's end is certain (``StreamingSplitter``: Chinese and English
marks), so speech starts on the first sentence while the LLM is still writing the rest. It never
waits on a clock: the end of a turn is a signal (``end()``), not a timeout.
"""

from __future__ import annotations

import re

from .sentence_split import StreamingSplitter

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
_TOOL_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + r".*?(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.S)


def strip_tool_calls(text: str) -> str:
    """A whole message without its tool-call blocks (an unclosed block runs to the end)."""
    return _TOOL_CALL.sub("", text)


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of `text` that could be the start of `tag`."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


class ToolCallFilter:
    """Removes tool-call blocks from streamed text, even when a tag is split across deltas."""

    def __init__(self) -> None:
        self.held = ""  # text that may still turn out to be (part of) a tag
        self.in_call = False

    def push(self, delta: str) -> str:
        text, out = self.held + delta, []
        while True:
            if self.in_call:
                end = text.find(TOOL_CALL_CLOSE)
                if end < 0:
                    self.held = text[len(text) - _partial_tag(text, TOOL_CALL_CLOSE) :]
                    return "".join(out)
                text, self.in_call = text[end + len(TOOL_CALL_CLOSE) :], False
            start = text.find(TOOL_CALL_OPEN)
            if start < 0:
                hold = _partial_tag(text, TOOL_CALL_OPEN)
                out.append(text[: len(text) - hold])
                self.held = text[len(text) - hold :]
                return "".join(out)
            out.append(text[:start])
            text, self.in_call = text[start + len(TOOL_CALL_OPEN) :], True

    def end(self) -> str:
        rest = "" if self.in_call else self.held
        self.held, self.in_call = "", False
        return rest


class TurnSentences:
    """One LLM turn's deltas in, speakable sentences out."""

    def __init__(self, min_chars: int = 5, max_chars: int = 80):
        self.tool_calls = ToolCallFilter()
        self.splitter = StreamingSplitter(min_chars=min_chars, max_chars=max_chars)

    def push(self, delta: str) -> list[str]:
        return self.splitter.push(self.tool_calls.push(delta))

    def end(self) -> list[str]:
        """The turn is over: whatever is left is the last sentence."""
        released = self.splitter.push(self.tool_calls.end())
        return released + self.splitter.flush()
