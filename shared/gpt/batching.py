"""Continuous batching: segments of different utterances decoded together, each as it would be alone.

A :class:`Scheduler` holds a FIFO of waiting :class:`Job` s and the rows being decoded. Each
:meth:`Scheduler.step`

1. admits the oldest waiting job whose group (an utterance) has nothing running, if a row is free
   (else, with ``ahead``, the oldest next job of a group that is running: see below): its
   ``[text ; prompt]`` is prefilled on its own (a prefill is compute-bound: batching prefills of
   unequal length would buy nothing) and its first token drawn;
2. runs one decode step for every running row at once (``decoder.step_rows``: the fused CPU step
   reads the weights once for all rows, and a CPU decode step is bound by reading them), on fewer
   threads once every row has drawn its first chunk if ``threads`` says so and the decoder's
   results do not depend on its thread count (decode_threads.py);
3. reports each row's token, and takes a finished row out at once.

Every row keeps its own cache and length, sampling settings, random generator and stop rules
(module_decoder.Row, decoder.KeptTokens), and its arithmetic does not depend on the other rows, so
**a row draws exactly the tokens it draws alone with the same seed** (tests/test_batching.py).
Jobs of one group start in submission order (an utterance's segments must reach the vocoder in
order); jobs of other groups pass a blocked one, so nothing waits behind a group that is busy, and
the oldest admissible job always goes first, so nothing starves.

**Decoding ahead** (``ahead`` > 0): a group's next job may start while the one before it still runs,
so the next segment's prefill and first tokens are ready when the current one ends, instead of
being paid then (a gap in the audio of a real-time listener). The rows are independent, so its
tokens are the ones it draws alone; the caller holds its output until the jobs before it are done
(``utterance_order.UtteranceOrder`` in the gpt node). It only uses spare capacity: at most
``ahead`` such rows in all, one per group, admitted only while fewer than ``max(max_rows, 1 + ahead)``
rows run and every running row has drawn ``ahead_after`` tokens (a prefill stalls the step of every
row: not while one is young, its listener with little audio in hand), and a new group's first job never waits for them (it
may take a row beyond ``max_rows`` that an ahead row holds, up to the decoder's own row limit).

Decoders that cannot join rows (``joins_rows`` False: the static CUDA-graph decoder, the ONNX and
TensorRT graphs, whose state is one utterance's) are run one job at a time through the ordinary
loop (decoder.decode); the scheduler logs that once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .decode_threads import DecodeThreads, thread_count_invariant
from .decoder import Decoder, KeptTokens, Utterance, decode
from .module_decoder import Row
from .sampling import SamplingParams
from .stopping import GenerationResult, StopRules

log = logging.getLogger("gsv.gpt")


@dataclass(eq=False)
class Job:
    """One utterance (a segment) to decode; ``key`` is the caller's, ``group`` orders jobs (see above)."""

    key: Hashable
    group: Hashable
    utterance: Utterance
    params: SamplingParams = SamplingParams()


class Token(NamedTuple):
    job: Job
    token: int


class Done(NamedTuple):
    job: Job
    result: GenerationResult


class Failed(NamedTuple):
    job: Job
    error: Exception


Event = Token | Done | Failed


@dataclass(eq=False)
class BatchRow:
    """A running job of a decoder that joins rows: its row state and its kept tokens."""

    job: Job
    row: Row
    kept: KeptTokens

    def outcome(self) -> tuple[int, int]:
        """The step of the row's last draw and its token (-1 = EOS), still on the device."""
        return self.row.k - 1, torch.where(self.row.draw.ended, -1, self.row.draw.tokens)


@dataclass(eq=False)
class SoloRow:
    """A running job of a decoder that decodes one utterance at a time: the generation loop."""

    job: Job
    steps: Generator[tuple[int, int], None, list[GenerationResult]] = field(repr=False)
    drawn: int = 0  # tokens drawn so far


class Scheduler:
    """Decodes jobs of different groups together on one decoder, at most ``max_rows`` at once."""

    def __init__(
        self,
        decoder: Decoder,
        max_rows: int = 4,
        ahead: int = 0,
        ahead_after: int = 1,
        threads: DecodeThreads = DecodeThreads(),
    ) -> None:
        self.decoder = decoder
        self.threads = threads if thread_count_invariant(decoder) else DecodeThreads()
        self.joins = bool(getattr(decoder, "joins_rows", False))
        self.row_limit = max(1, getattr(decoder, "max_rows", 1)) if self.joins else 1
        self.max_rows = min(max(1, max_rows), self.row_limit)
        self.ahead = max(0, ahead) if self.joins else 0
        self.ahead_after = ahead_after
        if max_rows > 1 and not self.joins:
            log.info("GPT decoder %s cannot join rows of different utterances: one segment at a time", decoder.name)
        elif max_rows > self.max_rows:
            log.info(
                "GPT decoder %s decodes at most %d rows together (asked: %d)", decoder.name, self.max_rows, max_rows
            )
        self.waiting: deque[Job] = deque()
        self.running: list[BatchRow | SoloRow] = []

    def submit(self, job: Job) -> None:
        self.waiting.append(job)

    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def cancel(self, drop: Callable[[Job], bool]) -> list[Job]:
        """Remove the waiting and running jobs ``drop`` names, at once; returns them."""
        dropped = [job for job in self.waiting if drop(job)]
        self.waiting = deque(job for job in self.waiting if not drop(job))
        for lane in [lane for lane in self.running if drop(lane.job)]:
            self.leave(lane)
            dropped.append(lane.job)
        return dropped

    @torch.inference_mode()
    def step(self) -> list[Event]:
        """Admit at most one waiting job, then one decode step for every running row."""
        events: list[Event] = []
        job = self.admissible()
        if job is not None:
            self.waiting.remove(job)
            events += self.admit(job)
        if self.joins:
            lanes = [lane for lane in self.running if lane.job is not job]
            with self.threads.step(lane.row.k for lane in lanes):
                events += self.step_batch(lanes)
        elif self.running and job is None:
            with self.threads.step([self.running[0].drawn]):
                events += self.step_solo(self.running[0])
        return events

    def admissible(self) -> Job | None:
        """The oldest waiting job whose group has nothing running, if a row is free; else a job to
        decode ahead, if any (see the module's docstring)."""
        rows = {}  # group -> its running rows
        for lane in self.running:
            rows[lane.job.group] = rows.get(lane.job.group, 0) + 1
        if len(rows) < self.max_rows and len(self.running) < self.row_limit:
            job = next((job for job in self.waiting if job.group not in rows), None)
            if job is not None:
                return job
        return self.ahead_job(rows)

    def ahead_job(self, rows: dict[Hashable, int]) -> Job | None:
        """The oldest next job of a group with one running row, while there is spare capacity."""
        ahead_rows = len(self.running) - len(rows)
        if (
            ahead_rows >= self.ahead
            or len(self.running) >= min(max(self.max_rows, 1 + self.ahead), self.row_limit)
            or any(isinstance(lane, BatchRow) and lane.row.k < self.ahead_after for lane in self.running)
        ):
            return None
        seen: set[Hashable] = set()  # groups whose next job was passed: their later jobs must wait
        for job in self.waiting:
            if rows.get(job.group) == 1 and job.group not in seen:
                return job
            seen.add(job.group)
        return None

    def admit(self, job: Job) -> list[Event]:
        if not self.joins:
            self.running.append(SoloRow(job, decode(self.decoder, [job.utterance], job.params)))
            return self.step_solo(self.running[-1])
        rules = StopRules.of(job.params.early_stop_num, self.decoder.early_stop_num)
        try:
            lane = BatchRow(
                job,
                self.decoder.prefill_row(job.utterance, job.params, rules.max_steps),
                KeptTokens(job.utterance.prompt, rules),
            )
        except Exception as error:  # this job's inputs or state: the running rows are untouched
            return [Failed(job, error)]
        self.running.append(lane)
        return self.read([lane])

    def step_batch(self, lanes: list[BatchRow]) -> list[Event]:
        if not lanes:
            return []
        before = [lane.row.k for lane in lanes]
        try:
            self.decoder.step_rows([lane.row for lane in lanes])
        except Exception as error:
            if len(lanes) == 1:
                self.leave(lanes[0])
                return [Failed(lanes[0].job, error)]
            # Which row failed? Rows that drew keep their draw; the others step alone, and only a
            # failing one leaves (a step writes its key/value at the row's position: a retry rewrites it).
            events = self.read([lane for lane, k in zip(lanes, before) if lane.row.k > k])
            for lane in [lane for lane, k in zip(lanes, before) if lane.row.k == k]:
                events += self.step_batch([lane])
            return events
        return self.read(lanes)

    def read(self, lanes: list[BatchRow]) -> list[Event]:
        """The lanes' last draws as events (one host read for all); finished lanes leave."""
        if not lanes:
            return []
        steps, tokens = zip(*(lane.outcome() for lane in lanes))
        events: list[Event] = []
        for lane, step, token in zip(lanes, steps, torch.stack(tokens).view(-1).tolist()):
            result = lane.kept.add(step, token)
            if token >= 0:
                events.append(Token(lane.job, token))
            if result is not None:
                events.append(Done(lane.job, result))
                self.leave(lane)
        return events

    def step_solo(self, lane: SoloRow) -> list[Event]:
        try:
            token = next(lane.steps)[1]
            lane.drawn += 1
            return [Token(lane.job, token)]
        except StopIteration as stop:
            self.running.remove(lane)
            return [Done(lane.job, stop.value[0])]
        except Exception as error:
            self.leave(lane)
            return [Failed(lane.job, error)]

    def leave(self, lane: BatchRow | SoloRow) -> None:
        self.running.remove(lane)
        if isinstance(lane, SoloRow):
            lane.steps.close()  # the loop's finally resets the decoder
