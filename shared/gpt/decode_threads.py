"""Fewer torch threads for the GPT's decode steps once its listeners have their first audio.

In the graph the GPT and the vocoder are separate processes on the same cores, each with the
node's threads (``GSV_THREADS``). A decode step is bound by reading the weights, and on the 2-core
machines measured one thread reads most of what two read (AMD EPYC: 22.7 of 30.8 GB/s), while
the vocoder beside it is bound by arithmetic: two threads each in both processes make the
vocoder's convolutions wait at their barriers for a thread the decode step holds. So once every
running segment has drawn its first chunk (the vocoder then has work: that chunk), the steps run
on ``lean`` threads and leave the rest of the cores to the vocoder; a prefill and a new segment's
first chunk, which set the time to first audio while the vocoder has nothing to do, keep them
all. docs/performance.md ("Decode steps on one thread beside the vocoder") has the figures. The
thread count must not change the tokens (a stream must equal its solo run whatever runs beside
it), so only a decoder that says so by construction (``thread_count_invariant``: the fused step,
which splits output rows between threads, each output one thread's sum in a fixed order,
gpt/decode_layers.cpp) runs lean; the module path's products go through MKL/oneDNN, whose
splitting of a sum may follow the thread count on some CPU, so it keeps its threads.
tests/test_decode_threads.py checks the fused step draws the same tokens on one thread as on two.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from ..intra_op_threads import intra_op_threads


def thread_count_invariant(decoder: object) -> bool:
    """Whether ``decoder``'s steps compute the same values on any number of threads."""
    return bool(getattr(decoder, "thread_count_invariant", False))


@dataclass(frozen=True)
class DecodeThreads:
    lean: int = 0  # threads of a step once every row has drawn ``after`` tokens (0 = unchanged)
    after: int = 0  # tokens a row draws on all threads: the first chunk

    def step(self, drawn: Iterable[int]) -> AbstractContextManager[None]:
        """The block of one decode step of rows that have drawn ``drawn`` tokens so far."""
        lean = self.lean and min(drawn, default=-1) >= self.after
        return intra_op_threads(self.lean if lean else None)
