"""An utterance's segments leave a stage in the order they came, whatever order they finish in.

The vocoder and the sinks take an utterance's segments one after another (docs/messages.md). A
stage that works on several segments of one utterance at once (the gpt node decoding the next
segment ahead, gpt/batching.py) passes what it sends through :class:`UtteranceOrder`: the messages
of the utterance's oldest open segment go out at once; a later segment's are held until every
segment before it has sent its final message, then released in the order they were made.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

Message = TypeVar("Message")


class UtteranceOrder(Generic[Message]):
    def __init__(self) -> None:
        self.open: dict[Hashable, deque[Hashable]] = {}  # utterance -> its open segments, oldest first
        self.held: dict[Hashable, list[Message]] = {}  # a segment not yet first in line -> its messages
        self.ended: set[Hashable] = set()  # segments not first in line whose final message is held

    def opened(self, utterance: Hashable, segment: Hashable) -> None:
        """A segment starts: it goes after the utterance's segments opened before it."""
        self.open.setdefault(utterance, deque()).append(segment)

    def first_in_line(self, utterance: Hashable, segment: Hashable) -> bool:
        line = self.open.get(utterance)
        return bool(line) and line[0] == segment

    def send(
        self, utterance: Hashable, segment: Hashable, message: Message | None, final: bool = False
    ) -> Iterator[Message]:
        """What may leave now, in order, once ``segment`` made ``message`` (None: nothing yet);
        ``final``: it is the segment's last one."""
        if not self.first_in_line(utterance, segment):
            if message is not None:
                self.held.setdefault(segment, []).append(message)
            if final:
                self.ended.add(segment)
            return
        if message is not None:
            yield message
        if final:
            yield from self.advance(utterance, self.open[utterance])

    def advance(self, utterance: Hashable, line: deque[Hashable]) -> Iterator[Message]:
        line.popleft()
        while line:
            yield from self.held.pop(line[0], [])
            if line[0] not in self.ended:
                return
            self.ended.discard(line.popleft())
        del self.open[utterance]

    def forget(self, utterance: Hashable) -> None:
        """A cancelled utterance: its held messages are dropped."""
        for segment in self.open.pop(utterance, ()):
            self.held.pop(segment, None)
            self.ended.discard(segment)
