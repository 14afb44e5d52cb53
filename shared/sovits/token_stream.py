"""Vocoding a segment whose semantic tokens arrive a chunk at a time.

The GPT streams tokens; waiting for the whole segment would delay the first sound by the full
decode time. :class:`SegmentStream` decodes each run of new tokens as soon as enough of them are
there, keeping ``lookahead_tokens`` back so the run's right edge is decoded with a glimpse of what
follows (``streaming.decode_chunk``), and cross-fades every run into the previous one's tail.
Joins are therefore inaudible and the concatenated pieces stay close to a one-shot decode
(tests/test_vocoder_streaming.py measures how close).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import Tensor

from .streaming import crossfade


@dataclass(frozen=True)
class StreamPolicy:
    lookahead_tokens: int = 4  # 160 ms of right context for each run
    history_tokens: int = 50  # left context given to the text encoder window
    min_run_tokens: int = 8  # later runs shorter than this wait for the next chunk (unless final)


class RunDecoder(Protocol):
    """Decodes one run of a segment's tokens with its left and right context (a voice's SoVITS)."""

    def __call__(
        self, history: np.ndarray, run: np.ndarray, lookahead: np.ndarray, position: int
    ) -> tuple[Tensor, Tensor]:
        """Audio [n] of ``run`` (tokens from global index ``position``) and the tail [k] after it."""


class SegmentStream:
    """One segment's semantic tokens in, its audio out while they arrive: picks each run (keeping
    ``lookahead_tokens`` back, waiting for ``min_run_tokens``, holding when asked), has the
    :class:`RunDecoder` decode it with its history, and cross-fades the joins."""

    def __init__(self, decode: RunDecoder, policy: StreamPolicy = StreamPolicy()):
        self.decode = decode
        self.policy = policy
        self.tokens = np.zeros(0, dtype=np.int64)
        self.decoded = 0  # tokens [0, decoded) have been turned into audio
        self.tail: Tensor | None = None

    def push(self, tokens: np.ndarray, final: bool, hold: bool = False) -> list[Tensor]:
        """Add newly decoded tokens; return the audio that can be produced now (possibly none).

        ``hold``: keep the new tokens for a later, longer run (the caller has audio enough in hand):
        fewer runs cost less, since every run decodes its context margins again. Ignored for the
        final chunk.
        """
        self.tokens = np.concatenate([self.tokens, np.asarray(tokens, dtype=np.int64)])
        if hold and not final:
            return []
        stop = len(self.tokens) if final else len(self.tokens) - self.policy.lookahead_tokens
        # The segment's first run goes out however short it is: it sets the time to first audio,
        # and the GPT's chunk policy already decided how many tokens that should be.
        too_short = self.decoded > 0 and stop - self.decoded < self.policy.min_run_tokens
        if stop - self.decoded <= 0 or (not final and too_short):
            return []
        history = self.tokens[max(0, self.decoded - self.policy.history_tokens) : self.decoded]
        run = self.tokens[self.decoded : stop]
        lookahead = self.tokens[stop : stop + self.policy.lookahead_tokens]
        samples, tail = self.decode(history, run, lookahead, self.decoded)
        out = crossfade(self.tail, samples)
        self.decoded, self.tail = stop, tail
        return [out]
