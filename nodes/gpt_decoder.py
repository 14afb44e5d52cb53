"""gpt node: phone features + the voice's prompt tokens -> semantic tokens, streamed in chunks.

Inputs:  ``phone_features`` (Float32[1024*T] from bert), ``prompt_semantic`` (Int64[P] from reference),
         ``control`` (stop, from text-frontend: cancels held segments and the one being decoded).
Output:  ``semantic_tokens`` (Int64[n] chunks; metadata chunk_index, segment_final, phone_ids).

Tokens leave as soon as a chunk is full — a small first chunk for a short time to first audio,
growing by half up to a cap afterwards (``GSV_FIRST_CHUNK_TOKENS`` 8, ``GSV_CHUNK_GROWTH`` 1.5,
``GSV_CHUNK_TOKENS`` 40) — while decoding goes on.
Sampling: ``GSV_TOP_K`` (15), ``GSV_TOP_P`` (1.0), ``GSV_TEMPERATURE`` (1.0),
``GSV_REPETITION_PENALTY`` (1.35), ``GSV_SEED`` (segment i of an utterance uses seed + i; unset =
random); a segment's ``top_k``/``top_p``/``temperature`` metadata (set per request, see
docs/messages.md) override them for that segment. Segments whose voice has no prompt tokens yet
wait here until they arrive. A voice with its own GPT weights (metadata ``weights`` on its prompt
tokens) is decoded with them (``model_cache``).

Concurrent utterances (``GSV_MAX_BATCH`` > 1; the default 1 decodes one segment after another): segments of
different utterances decode together, continuously batched (gpt/batching.py): a new segment is
prefilled and joins the running rows at the next step, a finished one leaves at once, and each row
draws the tokens it would draw alone. Decoding then runs in ``tick`` one step at a time, so new
segments and stops are read between steps.

Decoding ahead (``GSV_DECODE_AHEAD``, rows): an utterance's next segment may start decoding while
the one before it still runs (once that one has sent 3 chunks), with capacity the batch has spare,
so its first chunk is ready when the earlier segment ends instead of a prefill later. Its chunks are
held until then (``utterance_order``): every utterance's segments still leave in order, with the
chunks they have alone. It needs the batched loop, which it turns on with ``GSV_MAX_BATCH`` 1 too (utterances
then still decode one after another: only one utterance's segments share the batch).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.benchmark import stage_trace
from dora_gpt_sovits.cancellation import Cancellations
from dora_gpt_sovits.gpt.batching import Event, Failed, Job, Scheduler, Token
from dora_gpt_sovits.gpt.decode_threads import DecodeThreads, thread_count_invariant
from dora_gpt_sovits.model_cache import model_choice
from dora_gpt_sovits.node_runtime import Outgoing, StageBase
from dora_gpt_sovits.settings import GPTSettings, from_env_or_exit
from dora_gpt_sovits.utterance_order import UtteranceOrder

log = logging.getLogger("gsv.gpt")

# (phone_ids [T], features [1024, T], prompt tokens [P] (empty = reference-free), seed,
#  the request's sampling overrides) -> tokens as they are decoded: what the stage calls per segment
DecodeTokens = Callable[[np.ndarray, np.ndarray, np.ndarray, int | None, m.RequestOptions], Iterator[int]]


# Decoding ahead starts once the running segments have sent this many chunks (38 tokens, 1.5 s of
# audio with the default policy): a prefill stops every row's step for ~0.1-0.2 s on 2 cores and
# takes CPU from the vocoder, which a listener with only the first chunk or two in hand hears as a
# stall (docs/performance.md, "Decoding an utterance's next segment ahead").
AHEAD_AFTER_CHUNKS = 3


@dataclass(frozen=True)
class ChunkPolicy:
    """Chunk sizes grow geometrically from a small first chunk up to ``chunk_tokens``.

    The first chunk sets the time to first audio; each later chunk must be decoded and vocoded
    while the audio before it plays. In the graph the GPT and the vocoder share the CPU, so a token
    costs ~26 ms of the two together on 2 cores (RTF ~0.65) and plays for 40 ms: a chunk may be at
    most 40 / 26 ~ 1.5 times the one before it, or the listener waits. Measured on 2 cores
    (docs/performance.md): first chunk 10 doubling gave TTFA 0.69 s and 0.37 s of stall per
    utterance; 8 growing by 1.5 gives 0.58 s and 0.21 s, for ~4% more vocoding. The cap keeps the
    vocoder's runs long enough to amortise their fixed cost.
    """

    first_chunk_tokens: int = 8  # 0.32 s of audio at 25 tokens/s
    chunk_tokens: int = 40
    growth: float = 1.5

    def boundaries(self) -> Iterator[int]:
        """Token counts at which a chunk is emitted: 8, 20, 38, 65, 105, 145, ... for the defaults."""
        n, size = 0, self.first_chunk_tokens
        while True:
            n += size
            yield n
            size = min(self.chunk_tokens, max(size, round(size * self.growth)))

    def tokens_in(self, chunks: int) -> int:
        """Tokens in the first ``chunks`` chunks."""
        return next(itertools.islice(self.boundaries(), chunks - 1, None))


class GPTStage(StageBase):
    probe_output, probe_payload = m.SEMANTIC_TOKENS, "int64"  # health probes pass (shared/health.py)
    name = "gpt"
    primary_inputs = frozenset({m.PHONE_FEATURES})

    def __init__(
        self,
        decode: DecodeTokens | None,
        policy: ChunkPolicy = ChunkPolicy(),
        seed: int | None = None,
        batch: BatchedDecode | None = None,
        threads: DecodeThreads = DecodeThreads(),
    ):
        self.decode = decode  # one segment at a time, inside handle (when batch is None)
        self.batch = batch  # continuous batching: segments decode in tick, a step at a time
        self.threads = threads  # one segment at a time: its steps' threads (batched: the scheduler's)
        self.policy = policy
        self.seed = seed
        self.prompts: dict[str, np.ndarray] = {}
        self.weights: dict[str, str] = {}  # voice -> its own GPT weights ("" = the graph's model)
        self.waiting: dict[str, list[m.PhoneFeatures]] = defaultdict(list)
        self.cancelled = Cancellations()
        self.decoding: dict[Job, ChunkedSegment] = {}  # batched mode: submitted segments
        self.order: UtteranceOrder[Outgoing] = UtteranceOrder()  # batched mode: segments leave in order

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing | None]:
        if input_id == m.CONTROL:
            self.cancel(m.ControlCommand.from_event(value, metadata))
        elif input_id == m.PROMPT_SEMANTIC:
            voice = str(metadata.get(m.VOICE, m.DEFAULT_VOICE))
            if metadata.get(m.ERROR):  # the reference cannot provide this voice
                for segment in self.waiting.pop(voice, []):
                    segment.error = str(metadata[m.ERROR])
                    yield from self.decode_segment(segment)
                return
            part = m.ReferencePart.tokens_from_event(value, metadata, input_id)
            self.prompts[part.voice] = np.array(part.payload)  # kept across messages: own the memory
            self.weights[part.voice] = part.weights
            for segment in self.waiting.pop(part.voice, []):
                yield from self.decode_segment(segment)
        elif input_id == m.PHONE_FEATURES:
            segment = m.PhoneFeatures.from_event(value, metadata)
            if self.cancelled.cancels(segment.key):
                log.info(
                    "utterance %s segment %d: cancelled, dropped", segment.key.utterance_id, segment.key.segment_index
                )
            elif segment.error or segment.key.voice in self.prompts:
                yield from self.decode_segment(segment)
            else:
                segment.features = np.array(segment.features)  # outlives the event buffer
                if segment.key.voice not in self.waiting:
                    # Normally the voice is already here; after a restart of this node it is not.
                    yield self.voice_request(segment.key.voice)
                self.waiting[segment.key.voice].append(segment)

    def cancel(self, command: m.ControlCommand) -> None:
        """Drop held segments now; a segment being decoded stops at its next token (batched: its
        row and its utterance's queued segments leave the scheduler at once)."""
        self.cancelled.apply(command)
        for voice, segments in self.waiting.items():
            self.waiting[voice] = [s for s in segments if not self.cancelled.cancels(s.key)]
        if self.batch is not None:
            for job in self.batch.cancel(lambda job: self.cancelled.cancels(job.key)):
                segment = self.decoding.pop(job)
                self.order.forget(segment.name[0])
                log.info("utterance %s segment %d: cancelled after %d tokens", *segment.name, len(segment.tokens))

    @staticmethod
    def voice_request(voice: str) -> Outgoing:
        return Outgoing(m.VOICE_REQUEST, m.text_array(voice), {m.VOICE: voice})

    def upstream_restarted(self, node: str, inputs: frozenset[str] | None = None) -> Iterable[Outgoing]:
        if inputs is None or m.PROMPT_SEMANTIC in inputs:
            # A restarted reference may have lost our request: ask again for what we wait on.
            yield from (self.voice_request(voice) for voice, segments in self.waiting.items() if segments)
        if inputs is None or m.PHONE_FEATURES in inputs:
            yield Outgoing(m.SEMANTIC_TOKENS, *m.restart_marker(node, "int64"))

    def pending(self) -> bool:
        return any(self.waiting.values()) or bool(self.decoding)

    def next_deadline(self) -> float | None:
        # Batched decoding is always due: the loop runs a step, reads what arrived, runs the next.
        return time.monotonic() if self.decoding else None

    def tick(self) -> Iterator[Outgoing | None]:
        """One batched decode step: admit a waiting segment, step every row, send full chunks."""
        for event in self.batch.step():
            segment = self.decoding.get(event.job)
            if segment is None:
                continue  # cancelled while this step's messages were being sent
            if isinstance(event, Token):
                segment.ahead = segment.ahead or not self.order.first_in_line(segment.name[0], segment)
                yield from self.send(segment, segment.add(event.token))
            else:
                del self.decoding[event.job]
                yield from self.send(
                    segment, segment.close(event.error if isinstance(event, Failed) else None), final=True
                )

    def send(self, segment: ChunkedSegment, message: Outgoing | None, final: bool = False) -> Iterable[Outgoing]:
        """Batched mode: what leaves now, a segment's chunks only after its utterance's earlier segments'."""
        return self.order.send(segment.name[0], segment, message, final)

    def finish(self) -> Iterable[Outgoing]:
        for voice, segments in self.waiting.items():
            for segment in segments:
                segment.error = f"no prompt tokens arrived for voice {voice!r}"
                yield from self.decode_segment(segment)
        self.waiting.clear()

    def decode_segment(self, segment: m.PhoneFeatures) -> Iterator[Outgoing | None]:
        chunks = ChunkedSegment(segment, self.policy)
        if self.batch is not None:
            self.order.opened(chunks.name[0], chunks)
        if segment.error:
            error = chunks.error(segment.error)
            yield from self.send(chunks, error, final=True) if self.batch is not None else [error]
            return
        seed = None if self.seed is None else self.seed + segment.key.segment_index
        prompt = self.prompts[segment.key.voice]
        phone_ids = np.asarray(segment.phone_ids, dtype=np.int64)
        voice_model = model_choice(self.weights.get(segment.key.voice))
        if self.batch is not None:
            yield from self.submit(chunks, phone_ids, prompt, seed, voice_model)
            return
        try:
            tokens = iter(self.decode(phone_ids, segment.features, prompt, seed, segment.key.options, **voice_model))
            while True:
                with self.threads.step([len(chunks.tokens)]):  # the first next() prefills
                    token = next(tokens, None)
                if token is None:
                    break
                yield None  # a poll point: a stop that arrived meanwhile is handled now
                if self.cancelled.cancels(segment.key):
                    log.info("utterance %s segment %d: cancelled after %d tokens", *chunks.name, len(chunks.tokens))
                    return  # later stages drop this utterance too: nothing needs closing
                yield chunks.add(token)
        except Exception as e:  # a failing segment must still close, with the reason attached
            yield chunks.close(e)
            return
        yield chunks.close()

    def submit(self, chunks: ChunkedSegment, phone_ids, prompt, seed, voice_model) -> Iterator[Outgoing]:
        """Batched mode: queue the segment for tick (its features copied: they outlive the event)."""
        segment = chunks.segment
        try:
            job = self.batch.job(segment.key, phone_ids, np.array(segment.features), prompt, seed, **voice_model)
        except Exception as e:  # malformed inputs, or its voice's weights failed to load
            yield from self.send(chunks, chunks.close(e), final=True)
            return
        self.decoding[job] = chunks


class ChunkedSegment:
    """One segment's tokens cut into chunks by the policy, as :class:`Outgoing` messages."""

    def __init__(self, segment: m.PhoneFeatures, policy: ChunkPolicy) -> None:
        self.segment = segment
        self.name = (segment.key.utterance_id, segment.key.segment_index)
        self.tokens: list[int] = []
        self.sent = self.index = 0
        self.boundaries = policy.boundaries()
        self.next_boundary = next(self.boundaries)
        self.started = time.perf_counter()
        self.ahead = False  # decoded (partly) while an earlier segment of its utterance ran

    def add(self, token: int) -> Outgoing | None:
        """Keep a token; the chunk it completes, if any."""
        self.tokens.append(token)
        if len(self.tokens) == 1:
            stage_trace.mark("first_token", self.segment.key)  # the prefill's end, for the TTFA breakdown
        if len(self.tokens) < self.next_boundary:
            return None
        chunk = self.chunk(False)
        self.next_boundary = next(self.boundaries)
        return chunk

    def close(self, failure: Exception | None = None) -> Outgoing:
        """The final chunk: the tokens not sent yet, or (``failure``) the reason the segment failed."""
        if failure is not None:
            log.error("utterance %s segment %d: decoding failed: %s", *self.name, failure, exc_info=failure)
            return self.error(f"GPT decoding failed: {failure}")
        elapsed = time.perf_counter() - self.started
        n = len(self.tokens)
        log.info(
            "utterance %s segment %d: %d tokens in %.2f s (%.1f ms/token)%s",
            *self.name,
            n,
            elapsed,
            1000 * elapsed / max(1, n),
            ", decoded ahead" if self.ahead else "",
        )
        return self.chunk(True)

    def error(self, reason: str) -> Outgoing:
        return self.chunk(True, reason, tokens=[])

    def chunk(self, final: bool, error: str = "", tokens: list[int] | None = None) -> Outgoing:
        tokens = self.tokens[self.sent :] if tokens is None else tokens
        split = self.segment.n_prompt_phones
        msg = m.SemanticChunk(
            self.segment.key,
            np.asarray(tokens, dtype=np.int64),
            self.index,
            final,
            self.segment.phone_ids[split:],
            error,
            prompt_phone_ids=self.segment.phone_ids[:split],  # what a v3/v4 vocoder prompts with
        )
        self.sent, self.index = len(self.tokens), self.index + 1
        return Outgoing(m.SEMANTIC_TOKENS, *msg.to_message())


class BatchedDecode:
    """Batched mode's model side: a segment's job on the scheduler of its model (voices with GPT
    weights of their own have their own model), and the steps of every scheduler."""

    def __init__(
        self,
        model: Callable[[str], Any],
        base: Any,
        max_rows: int,
        ahead: int = 0,
        ahead_after: int = 1,
        threads: DecodeThreads = DecodeThreads(),
    ) -> None:
        self.model = model  # weights ("" = the graph's model) -> its Decoder
        self.base = base  # SamplingParams from the settings
        self.max_rows = max_rows
        self.ahead, self.ahead_after = ahead, ahead_after  # decoding ahead: gpt/batching.py
        self.threads = threads
        self.schedulers: dict[str, Scheduler] = {}

    def job(self, key: m.SegmentKey, phone_ids, features, prompt, seed, weights: str = "") -> Job:
        import torch

        decoder = self.model(weights)
        scheduler = self.schedulers.get(weights)
        if scheduler is None or (scheduler.decoder is not decoder and not scheduler.busy()):
            scheduler = Scheduler(decoder, self.max_rows, self.ahead, self.ahead_after, self.threads)
            self.schedulers[weights] = scheduler
        params = dataclasses.replace(self.base, seed=seed, **key.options.sampling())
        tensors = (
            torch.as_tensor(phone_ids),
            torch.as_tensor(features),
            torch.as_tensor(prompt) if len(prompt) else None,
        )
        job = Job(key, key.utterance_id, scheduler.decoder.prepare(*tensors), params)
        scheduler.submit(job)
        return job

    def step(self) -> list[Event]:
        return [event for scheduler in self.schedulers.values() if scheduler.busy() for event in scheduler.step()]

    def cancel(self, drop: Callable[[Job], bool]) -> list[Job]:
        return [job for scheduler in self.schedulers.values() for job in scheduler.cancel(drop)]


def policy_from_env(env: dict[str, str] | GPTSettings) -> ChunkPolicy:
    settings = env if isinstance(env, GPTSettings) else GPTSettings.from_env(env)
    return ChunkPolicy(settings.first_chunk_tokens, settings.chunk_tokens, settings.chunk_growth)


def load() -> tuple[GPTStage, str]:
    """The stage with its model loaded and warmed up (before the node joins the graph), and the line
    saying what was loaded. gsv-tts loads it too."""
    from dora_gpt_sovits.backends.stages import gpt_builders, open_or_exit
    from dora_gpt_sovits.gpt.sampling import SamplingParams
    from dora_gpt_sovits.model_cache import ModelCache
    from dora_gpt_sovits.runtime_config import load_or_exit

    settings = from_env_or_exit(GPTSettings)
    paths = load_or_exit(need=("gpt",))
    stream, choice = open_or_exit(
        "gpt", gpt_builders, paths.gpt, paths.model_dir
    )  # GSV_BACKEND / GSV_DEVICE / GSV_DTYPE
    base = SamplingParams(**settings.sampling())

    # A voice's own weights open on the same backend (an ONNX backend needs their export: see docs/backends.md).
    models = ModelCache(
        lambda p: gpt_builders(p)[choice.backend](choice), stream, paths.gpt, settings.max_models, kind="GPT"
    )

    def decode(
        phone_ids: np.ndarray,
        features: np.ndarray,
        prompt: np.ndarray,
        seed: int | None,
        options: m.RequestOptions,
        weights: str = "",
    ) -> Iterator[int]:
        params = dataclasses.replace(base, seed=seed, **options.sampling())
        features = m.tensor_view(np.asarray(features))  # [1024, T], shared with the message buffer
        yield from models.get(weights)(np.asarray(phone_ids), features, prompt if len(prompt) else None, params)

    seed = settings.seed
    # The first decode pays one-off costs (allocator, kernels): pay them before serving.
    ids = np.arange(8)
    for _ in stream(ids, np.zeros((m.FEATURE_DIM, 8), np.float32), ids, SamplingParams(early_stop_num=4, seed=0)):
        pass
    # GSV_MAX_BATCH > 1: segments of concurrent utterances decode together (gpt/batching.py);
    # GSV_DECODE_AHEAD > 0: an utterance's next segment too.
    policy = policy_from_env(settings)
    # Only a decoder whose results do not depend on its thread count steps lean (gpt/decode_threads.py).
    lean = settings.decode_threads if thread_count_invariant(getattr(models.get(""), "decoder", None)) else 0
    threads = DecodeThreads(lean, policy.first_chunk_tokens)
    batch = None
    if settings.max_batch > 1 or settings.decode_ahead > 0:
        decoders = lambda w: models.get(w).decoder  # noqa: E731
        batch = BatchedDecode(
            decoders, base, settings.max_batch, settings.decode_ahead, policy.tokens_in(AHEAD_AFTER_CHUNKS), threads
        )
    loaded = (
        f"GPT loaded from {paths.gpt} on {choice.label}; up to {settings.max_batch} utterances decoded together,"
        f" {settings.decode_ahead} segment(s) ahead"
    )
    if lean:
        loaded += f"; decode steps on {lean} thread(s) once a segment's first chunk is out"
    elif settings.decode_threads:
        loaded += f"; GSV_DECODE_THREADS ignored: the {choice.label} decoder's results may depend on its thread count"
    return GPTStage(decode, policy, seed, batch, threads), loaded


def main() -> None:
    from dora_gpt_sovits.node_runtime import serve_model_node

    serve_model_node(load, log)


if __name__ == "__main__":
    main()
