"""vocoder node: semantic tokens + target phones + the voice's spectrogram -> streamed audio.

Inputs:  ``semantic_tokens`` (Int64[n] chunks from gpt), ``reference_spectrogram`` (Float32[1025*F]),
         ``speaker_embedding`` (Float32[20480], v2Pro/v2ProPlus).
Output:  ``audio`` (Float32[n] mono, metadata sample_rate + segment keys; the dora-kokoro-tts contract).

Audio is produced while the GPT is still decoding: every token chunk is vocoded as it arrives
(keeping a few tokens of lookahead, cross-faded at the joins; see ``sovits.token_stream``). Each
segment ends with ``GSV_FRAGMENT_INTERVAL`` seconds of silence (0.3, as upstream), and audio leaves
in messages of at most ``GSV_MAX_CHUNK_SECONDS`` (1.0) so dora-pyaudio-style sinks that play one
second per message lose nothing. ``GSV_NOISE_SCALE`` (0.5) and ``GSV_SPEED`` (1.0) are upstream's
decode knobs (a segment's ``speed`` metadata, set per request, overrides ``GSV_SPEED``);
``GSV_LOOKAHEAD_TOKENS`` (4) trades latency for smoother joins. A voice with its own SoVITS weights
(metadata ``weights`` on its spectrogram) is vocoded with them (``model_cache``).
``GSV_OUTPUT_SAMPLE_RATE`` (default: the model's 32000) resamples the output per chunk, with the
filter state carried across chunks (e.g. 24000 for OpenAI-Realtime-style consumers, 16000 for ASR).

Input ``control`` (stop, from text-frontend): open and held segments of cancelled utterances are
dropped, token chunks that still arrive for them are discarded, and the first audio message of the
next utterance carries ``flush: True`` so that a sink's dora queue drops stale chunks too.
``GSV_MAX_LEAD_SECONDS`` (unset: no pacing) holds audio back so this node never runs more than that
far ahead of real-time playback, for sinks without acknowledgements (dora-pyaudio's 10-deep queue).
``GSV_COALESCE_LEAD_SECONDS`` (1.0; 0 = off): a segment's non-final token chunks are held and
vocoded together with the next ones while the utterance's audio already sent reaches that far past
real-time playback *after* paying for the held run (its tokens × this node's measured vocoding
seconds per token): fewer runs re-decode fewer context margins, so later segments of a long text
cost less CPU (that the GPT beside this node gets), and a held run never eats the audio in hand.
``GSV_COALESCE_QUEUED`` (1; 0 = off): when the segment's next chunks have already arrived (the GPT
is ahead of this node: a backlog), they are taken out of the queue and vocoded in the same run —
when the audio in hand pays for the longer run, or when other utterances' chunks wait too (this
node is the bottleneck: every margin not re-decoded serves all streams sooner) and neither this
chunk nor one of theirs starts a segment (a segment's first audio never waits for a longer run).
Both rules make the run boundaries, and so the samples, depend on timing (within the streaming
tolerance); ``scripts/load_test.py``, which compares each stream with its solo run byte for
byte, turns both off.
``GSV_VOCODER_FFT`` (``auto``: on a CPU in float32, the generator's long convolutions in the frequency domain,
``sovits.spectral_conv``; 1 | 0) picks how the torch backend convolves.
``GSV_PEAK_LIMIT`` (off by default; 0.45 for dora-pyaudio, which wraps floats above 0.468) applies a
fixed gain (``GSV_OUTPUT_GAIN``, default the limit) and a smooth soft knee that never exceeds the
limit (``audio.limiter``).
``GSV_DIT_COMPILE`` (``off``; ``inductor`` | ``cudagraphs``) runs a v3/v4 DiT's flow step under
``torch.compile`` (``sovits.dit_compile``; meant for GPUs: slower than eager on the CPU measured).
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.audio.limiter import PeakLimiter
from dora_gpt_sovits.audio.pacing import Pacer
from dora_gpt_sovits.audio.playback_clock import PlaybackClock
from dora_gpt_sovits.audio.resample import StreamResampler
from dora_gpt_sovits.cancellation import Cancellations
from dora_gpt_sovits.finite_guard import NonFiniteOutput, all_finite
from dora_gpt_sovits.model_cache import model_choice
from dora_gpt_sovits.node_runtime import Outgoing, StageBase
from dora_gpt_sovits.sovits.token_stream import RunDecoder, SegmentStream, StreamPolicy
from dora_gpt_sovits.sovits.version import FLOW_MATCHING_VERSIONS

log = logging.getLogger("gsv.vocoder")

MAX_TRACKED_UTTERANCES = 64  # playback clocks kept for coalescing; older utterances have ended

# (spectrogram [1025, F], speaker embedding [20480] or None[, weights=the voice's own SoVITS file])
#   -> the model's conditioning for a voice
Condition = Callable[[np.ndarray, np.ndarray | None], Any]
# (conditioning, target phone ids [N], noise seed, the request's speed or None = node default)
#   -> a decoder for one segment's token runs
MakeDecoder = Callable[[Any, np.ndarray, int, float | None], RunDecoder]


@dataclass
class OpenSegment:
    key: m.SegmentKey
    vocoder: SegmentStream
    resampler: StreamResampler
    audio_chunks_sent: int = 0
    samples: int = 0
    seconds_decoding: float = 0.0
    chunks_held: int = 0


class VocoderStage(StageBase):
    probe_output, probe_payload = m.AUDIO, "float32"  # health probes pass (shared/health.py)
    name = "vocoder"
    primary_inputs = frozenset({m.SEMANTIC_TOKENS})
    fair_inputs = frozenset({m.SEMANTIC_TOKENS})  # GSV_FAIR_SCHEDULING: chunks of utterances take turns (fair_queue)

    def __init__(
        self,
        condition: Condition,
        make_decoder: MakeDecoder,
        sample_rate: int,
        needs_speaker_embedding: bool,
        policy: StreamPolicy = StreamPolicy(),
        max_chunk_seconds: float = 1.0,
        fragment_interval: float = 0.3,
        seed: int | None = None,
        development_model: bool = False,
        output_rate: int | None = None,
        max_lead_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        limiter: PeakLimiter | None = None,
        coalesce_lead_seconds: float = 0.0,
        coalesce_queued: bool = False,
        extra_voice_ports: tuple[str, ...] = (),
    ):
        self.condition = condition
        self.make_decoder = make_decoder
        self.model_rate = sample_rate
        self.sample_rate = output_rate or sample_rate  # what leaves this node
        self.needs_speaker_embedding = needs_speaker_embedding
        self.policy = policy
        self.max_chunk = max(1, int(max_chunk_seconds * self.sample_rate))
        self.silence = torch.zeros(int(fragment_interval * sample_rate))
        self.seed = seed
        self.development_model = development_model
        self.limiter = limiter
        self.spectrograms: dict[str, np.ndarray] = {}
        self.embeddings: dict[str, np.ndarray] = {}
        # v3/v4: the prompt tokens and reference mel of each voice (port -> voice -> payload).
        self.extra_parts: dict[str, dict[str, np.ndarray]] = {port: {} for port in extra_voice_ports}
        self.conditions: dict[str, Any] = {}
        self.weights: dict[str, str] = {}  # voice -> its own SoVITS weights ("" = the graph's model)
        self.open: dict[tuple[str, int], OpenSegment] = {}
        self.waiting: dict[str, list[m.SemanticChunk]] = defaultdict(list)
        self.cancelled = Cancellations()
        self.flush_next = False  # mark the next utterance's first audio with dora's flush
        self.pacer: Pacer[Outgoing] | None = None if max_lead_seconds is None else Pacer(max_lead_seconds, clock)
        self.clock = clock
        self.coalesce_lead = coalesce_lead_seconds
        self.coalesce_queued = coalesce_queued
        # Vocoding seconds per token of the last runs (running mean; None until a run was timed):
        # what a held run will cost when it goes. Runs of few tokens cost more per token (their
        # context margins), so the estimate errs on the long side for the long runs holding makes.
        self.seconds_per_token: float | None = None
        # Per utterance (each is its own stream: an HTTP request, a sentence for the speaker): when
        # the audio sent so far will have played, if played in real time from when it left.
        self.playback: OrderedDict[str, PlaybackClock] = OrderedDict()
        # Segments already reported failed (voice model unusable, start lost in a restart): later
        # chunks of them are dropped. Bounded: a segment whose final chunk never comes is forgotten eventually.
        self.lost: OrderedDict[tuple[str, int], None] = OrderedDict()

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing | None]:
        if input_id == m.CONTROL:
            self.cancel(m.ControlCommand.from_event(value, metadata))
            return
        for message in self.route(input_id, value, metadata):
            yield from self.pace(message)

    def route(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterator[Outgoing | None]:
        if input_id in (m.REFERENCE_SPECTROGRAM, m.SPEAKER_EMBEDDING, *self.extra_parts) and metadata.get(m.ERROR):
            # The reference cannot provide this voice: its waiting segments end with the reason.
            for chunk in self.waiting.pop(str(metadata.get(m.VOICE, m.DEFAULT_VOICE)), []):
                if chunk.segment_final:
                    yield self.audio(chunk.key, torch.zeros(0), 0, True, str(metadata[m.ERROR]))
            return
        if input_id == m.REFERENCE_SPECTROGRAM:
            part = m.ReferencePart.floats_from_event(value, metadata, input_id)
            self.spectrograms[part.voice] = np.array(part.payload)  # kept for the voice's lifetime
            self.weights[part.voice] = part.weights
            self.conditions.pop(part.voice, None)
            yield from self.release(part.voice)
        elif input_id == m.SPEAKER_EMBEDDING:
            part = m.ReferencePart.floats_from_event(value, metadata, input_id)
            self.embeddings[part.voice] = np.array(part.payload)
            self.conditions.pop(part.voice, None)
            yield from self.release(part.voice)
        elif input_id in self.extra_parts:
            part = (
                m.ReferencePart.tokens_from_event(value, metadata, input_id)
                if input_id == m.PROMPT_SEMANTIC
                else m.ReferencePart.floats_from_event(value, metadata, input_id)
            )
            self.extra_parts[input_id][part.voice] = np.array(part.payload)
            self.conditions.pop(part.voice, None)
            yield from self.release(part.voice)
        elif input_id == m.SEMANTIC_TOKENS:
            chunk = m.SemanticChunk.from_event(value, metadata)
            chunk = self.join_queued(chunk)  # before the check below: a stop queued meanwhile is applied
            if self.cancelled.cancels(chunk.key):
                log.debug(
                    "utterance %s segment %d: cancelled, chunk dropped", chunk.key.utterance_id, chunk.key.segment_index
                )
            elif chunk.error or self.ready(chunk.key.voice):
                yield from self.vocode(chunk)
            else:
                chunk.tokens = np.array(chunk.tokens)  # outlives the event buffer
                if chunk.key.voice not in self.waiting:
                    # Normally the voice is already here; after a restart of this node it is not.
                    yield self.voice_request(chunk.key.voice)
                self.waiting[chunk.key.voice].append(chunk)

    @staticmethod
    def voice_request(voice: str) -> Outgoing:
        return Outgoing(m.VOICE_REQUEST, m.text_array(voice), {m.VOICE: voice})

    def upstream_restarted(self, node: str, inputs: frozenset[str] | None = None) -> Iterable[Outgoing]:
        if inputs is None or inputs & {m.REFERENCE_SPECTROGRAM, m.SPEAKER_EMBEDDING, *self.extra_parts}:
            # A restarted reference may have lost our request: ask again for what we wait on.
            yield from (self.voice_request(voice) for voice, chunks in self.waiting.items() if chunks)
        if inputs is None or m.SEMANTIC_TOKENS in inputs:
            if self.pacer:  # audio held back for pacing goes first: the marker must come last
                yield from (h.message for h in self.pacer.held)
                self.pacer.held.clear()
            # Segments mid-stream will get no more tokens: close them with the reason.
            for ident, segment in list(self.open.items()):
                del self.open[ident]
                self.forget_later_chunks(ident)
                yield self.audio(
                    segment.key,
                    torch.zeros(0),
                    segment.audio_chunks_sent,
                    True,
                    f"node {node} restarted mid-segment; the rest of this segment was lost",
                )
            yield Outgoing(m.AUDIO, *m.restart_marker(node, "float32", **{m.SAMPLE_RATE: self.sample_rate}))

    def forget_later_chunks(self, ident: tuple[str, int]) -> None:
        self.lost[ident] = None
        while len(self.lost) > 1000:
            self.lost.popitem(last=False)

    def ready(self, voice: str) -> bool:
        return (
            voice in self.spectrograms
            and (not self.needs_speaker_embedding or voice in self.embeddings)
            and all(voice in parts for parts in self.extra_parts.values())
        )

    def release(self, voice: str) -> Iterator[Outgoing]:
        if self.ready(voice):
            for chunk in self.waiting.pop(voice, []):
                yield from self.vocode(chunk)

    def cancel(self, command: m.ControlCommand) -> None:
        self.cancelled.apply(command)
        self.playback.clear()  # cancelled audio will not play; the rest count afresh (less holding, never more)
        for ident in [i for i, seg in self.open.items() if self.cancelled.cancels(seg.key)]:
            del self.open[ident]
        for voice, chunks in self.waiting.items():
            self.waiting[voice] = [c for c in chunks if not self.cancelled.cancels(c.key)]
        if self.pacer:
            self.pacer.discard(self.cancelled.cancels)
        if not command.utterance_id:
            # Everything was stopped: a sink's queue holds only stale audio, and its player was
            # cleared, so the next utterance starts with flush and pacing starts afresh.
            self.flush_next = True
            if self.pacer:
                self.pacer.restart()

    def pace(self, message: Outgoing | None) -> Iterable[Outgoing | None]:
        if self.pacer is None or message is None or message.output_id != m.AUDIO:
            return (message,)
        seconds = len(message.data) / self.sample_rate
        return self.pacer.offer(message, seconds, m.SegmentKey.from_metadata(message.metadata, m.AUDIO))

    def next_deadline(self) -> float | None:
        return self.pacer.next_deadline() if self.pacer else None

    def tick(self) -> Iterable[Outgoing]:
        return self.pacer.release() if self.pacer else ()

    def pending(self) -> bool:
        return any(self.waiting.values()) or bool(self.pacer and self.pacer.held)

    def finish(self) -> Iterable[Outgoing]:
        if self.pacer:  # the node is ending: what is held leaves now rather than never
            yield from (h.message for h in self.pacer.held)
            self.pacer.held.clear()
        for chunks in self.waiting.values():
            for chunk in chunks:
                if chunk.segment_final:
                    yield self.audio(chunk.key, torch.zeros(0), 0, True, "the voice's reference never arrived")
        for segment in self.open.values():
            yield self.audio(
                segment.key,
                torch.zeros(0),
                segment.audio_chunks_sent,
                True,
                "the GPT stopped before finishing this segment",
            )
        self.waiting.clear()
        self.open.clear()

    def join_queued(self, chunk: m.SemanticChunk) -> m.SemanticChunk:
        """``chunk`` joined with the segment's next chunks already waiting in this node's queue, taken
        out of it, while that is worth it (``worth_joining``): one run instead of several."""
        if not self.coalesce_queued or chunk.segment_final or chunk.error:
            return chunk
        events, last = self.queued_events(), chunk.chunk_index
        while not chunk.segment_final:
            queued = m.TokenBacklog.of(events, chunk.key, last)
            if queued.next_chunk is None or not self.worth_joining(chunk, queued):
                break
            try:
                successor = m.SemanticChunk.from_event(queued.next_chunk["value"], queued.next_chunk["metadata"])
            except m.MessageError:
                break  # left in the queue: the loop reports it when it gets there
            self.take_queued(queued.next_chunk)
            chunk, last = chunk.joined(successor), successor.chunk_index
        return chunk

    def worth_joining(self, chunk: m.SemanticChunk, queued: m.TokenBacklog) -> bool:
        """Join when the utterance's audio in hand pays for the longer run (at the measured cost per
        token), or when other utterances' chunks wait too — this node is the bottleneck, and every
        margin not re-decoded serves all streams sooner — unless one of them, or this chunk, starts a
        segment (that first audio must not wait for a longer run)."""
        if self.seconds_per_token is None:
            return False
        if queued.other_utterances:
            return chunk.chunk_index > 0 and not queued.segment_start_waits
        segment = self.open.get((chunk.key.utterance_id, chunk.key.segment_index))
        held = 0 if segment is None else segment.vocoder.tokens.size - segment.vocoder.decoded
        run = held + len(chunk.tokens) + queued.next_chunk_tokens
        return self.lead_seconds(chunk.key.utterance_id) >= run * self.seconds_per_token

    def vocode(self, chunk: m.SemanticChunk) -> Iterator[Outgoing]:
        ident = (chunk.key.utterance_id, chunk.key.segment_index)
        if ident in self.lost:  # already reported failed
            if chunk.segment_final:
                del self.lost[ident]
            return
        if ident not in self.open and chunk.chunk_index > 0 and not chunk.error:
            # The segment's first tokens went to a process that no longer exists (this node restarted).
            if not chunk.segment_final:
                self.forget_later_chunks(ident)
            yield self.audio(
                chunk.key,
                torch.zeros(0),
                0,
                True,
                f"the start of this segment was lost (token chunk {chunk.chunk_index} arrived first)",
            )
            return
        if chunk.error:
            segment = self.open.pop(ident, None)
            yield self.audio(chunk.key, torch.zeros(0), segment.audio_chunks_sent if segment else 0, True, chunk.error)
            return
        try:
            segment = self.open.get(ident) or self.open_segment(chunk)
        except Exception as e:  # e.g. a voice's own weights that cannot be loaded
            log.exception(
                "utterance %s segment %d: voice setup failed", chunk.key.utterance_id, chunk.key.segment_index
            )
            if not chunk.segment_final:
                self.forget_later_chunks(ident)
            yield self.audio(chunk.key, torch.zeros(0), 0, True, f"voice {chunk.key.voice!r} unusable: {e}")
            return
        hold = not chunk.segment_final and self.worth_holding(
            chunk.key.utterance_id, segment.vocoder, len(chunk.tokens)
        )
        segment.chunks_held += hold
        started = time.perf_counter()
        decoded_before = segment.vocoder.decoded
        try:
            pieces = segment.vocoder.push(chunk.tokens, chunk.segment_final, hold)
            if not all(all_finite(p) for p in pieces):  # never NaN on the speaker (finite_guard)
                raise NonFiniteOutput(
                    "the vocoder computed NaN/inf samples (broken weights, or a half-precision kernel defect: try GSV_DTYPE=float32)"
                )
        except Exception as e:
            log.exception("utterance %s segment %d: vocoding failed", chunk.key.utterance_id, chunk.key.segment_index)
            del self.open[ident]
            if not chunk.segment_final:
                self.forget_later_chunks(ident)  # the GPT goes on sending this segment's tokens
            yield self.audio(chunk.key, torch.zeros(0), segment.audio_chunks_sent, True, f"vocoding failed: {e}")
            return
        elapsed = time.perf_counter() - started
        segment.seconds_decoding += elapsed
        self.time_run(segment.vocoder.decoded - decoded_before, elapsed)
        wav = torch.cat([p.reshape(-1).float().cpu() for p in pieces]) if pieces else torch.zeros(0)
        segment.samples += len(wav)
        if chunk.segment_final:
            del self.open[ident]
            if segment.vocoder.tokens.size == 0:
                yield self.audio(
                    chunk.key, torch.zeros(0), segment.audio_chunks_sent, True, "the GPT produced no semantic tokens"
                )
                return
            wav = torch.cat([wav, self.silence])
            self.log_segment(segment)
        yield from self.slices(segment, self.to_output_rate(segment, wav, chunk.segment_final), chunk.segment_final)

    def worth_holding(self, utterance_id: str, vocoder: SegmentStream, new_tokens: int) -> bool:
        """Hold a non-final chunk for a longer run while the lead stays above the threshold even
        after vocoding everything held so far plus this chunk (at the measured cost per token)."""
        if self.coalesce_lead <= 0 or self.seconds_per_token is None:
            return False
        pending = vocoder.tokens.size + new_tokens - vocoder.decoded
        return self.lead_seconds(utterance_id) >= self.coalesce_lead + pending * self.seconds_per_token

    def time_run(self, tokens: int, seconds: float) -> None:
        if tokens > 0:
            cost = seconds / tokens
            self.seconds_per_token = cost if self.seconds_per_token is None else 0.5 * (self.seconds_per_token + cost)

    def lead_seconds(self, utterance_id: str) -> float:
        """How far the utterance's audio sent so far reaches past real-time playback of it."""
        playback = self.playback.get(utterance_id)
        ends = None if playback is None else playback.ends_at
        return 0.0 if ends is None else max(0.0, ends - self.clock())

    def played(self, key: m.SegmentKey, seconds: float) -> None:
        playback = self.playback.pop(key.utterance_id, None) or PlaybackClock(prebuffer_s=0.0)
        playback.arrive(self.clock(), seconds)
        self.playback[key.utterance_id] = playback  # most recent last
        while len(self.playback) > MAX_TRACKED_UTTERANCES:
            self.playback.popitem(last=False)

    def to_output_rate(self, segment: OpenSegment, wav: torch.Tensor, final: bool) -> torch.Tensor:
        """Per-chunk resampling with filter state carried across chunks: no artefacts at joins."""
        if self.sample_rate == self.model_rate:
            return wav
        out = segment.resampler.process(wav)
        if final:
            out = np.concatenate([out, segment.resampler.flush()])
        return torch.from_numpy(out)

    def open_segment(self, chunk: m.SemanticChunk) -> OpenSegment:
        voice = chunk.key.voice
        if voice not in self.conditions:
            extra = {port: parts[voice] for port, parts in self.extra_parts.items()}
            self.conditions[voice] = self.condition(
                self.spectrograms[voice], self.embeddings.get(voice), **model_choice(self.weights.get(voice)), **extra
            )
        seed = random.randrange(2**31) if self.seed is None else self.seed + chunk.key.segment_index
        phones = np.asarray(chunk.phone_ids, dtype=np.int64)
        options = chunk.key.options
        mel_inputs = {"prompt_phone_ids": chunk.prompt_phone_ids, "sample_steps": options.sample_steps}
        decoder = self.make_decoder(
            self.conditions[voice], phones, seed, options.speed, **(mel_inputs if self.extra_parts else {})
        )
        segment = OpenSegment(
            chunk.key, SegmentStream(decoder, self.policy), StreamResampler(self.model_rate, self.sample_rate)
        )
        self.open[(chunk.key.utterance_id, chunk.key.segment_index)] = segment
        return segment

    def slices(self, segment: OpenSegment, wav: torch.Tensor, final: bool) -> Iterator[Outgoing]:
        if self.limiter is not None:
            wav = self.limiter(wav)
        starts = range(0, len(wav), self.max_chunk)
        for i, start in enumerate(starts):
            if self.cancelled.cancels(segment.key):  # a stop arrived while the previous slice left
                return
            last = final and i == len(starts) - 1
            yield self.audio(segment.key, wav[start : start + self.max_chunk], segment.audio_chunks_sent, last)
            segment.audio_chunks_sent += 1
        if final and not starts:  # nothing left to say, but the segment must still be closed
            yield self.audio(segment.key, torch.zeros(0), segment.audio_chunks_sent, True)

    def log_segment(self, segment: OpenSegment) -> None:
        seconds = segment.samples / self.model_rate
        log.info(
            "utterance %s segment %d: %.2f s of audio, %.2f s vocoding (RTF %.3f), %d token chunks held for longer runs",
            segment.key.utterance_id,
            segment.key.segment_index,
            seconds,
            segment.seconds_decoding,
            segment.seconds_decoding / max(1e-9, seconds),
            segment.chunks_held,
        )

    def audio(self, key: m.SegmentKey, samples: torch.Tensor, index: int, final: bool, error: str = "") -> Outgoing:
        if len(samples):
            self.played(key, len(samples) / self.sample_rate)
        chunk = m.AudioChunk(key, samples, self.sample_rate, index, final, self.development_model, error)
        data, metadata = chunk.to_message()
        if self.flush_next and key.segment_index == 0 and index == 0:
            metadata[m.FLUSH] = True  # a real bool: dora reads it with get_bool_param
            self.flush_next = False
        return Outgoing(m.AUDIO, data, metadata)


def load() -> tuple[VocoderStage, str]:
    """The stage with its model loaded and warmed up (before the node joins the graph), and the line
    saying what was loaded. gsv-tts loads it too."""
    from dora_gpt_sovits.runtime_config import load_or_exit
    from dora_gpt_sovits.settings import VocoderSettings, from_env_or_exit

    settings = from_env_or_exit(VocoderSettings)
    paths = load_or_exit(need=("sovits",))
    flow_matching = paths.version in FLOW_MATCHING_VERSIONS
    if flow_matching:
        paths = load_or_exit(need=("sovits", "vocoder"))
    engine, label = open_mel_engine(paths, settings) if flow_matching else open_engine(paths, settings)
    # A v3/v4 stream takes a run without lookahead as the segment's end: keep at least one token back.
    lookahead = max(1, settings.lookahead_tokens) if flow_matching else settings.lookahead_tokens
    stage = VocoderStage(
        engine.condition,
        engine.make_decoder,
        sample_rate=engine.sample_rate,
        needs_speaker_embedding=engine.needs_speaker_embedding,
        policy=StreamPolicy(lookahead_tokens=lookahead),
        max_chunk_seconds=settings.max_chunk_seconds,
        fragment_interval=settings.fragment_interval,
        seed=settings.seed,
        development_model=paths.development,
        output_rate=settings.output_sample_rate,
        max_lead_seconds=settings.max_lead_seconds,
        limiter=settings.limiter(),
        coalesce_lead_seconds=settings.coalesce_lead_seconds,
        coalesce_queued=settings.coalesce_queued,
        extra_voice_ports=engine.extra_voice_ports,
    )
    if flow_matching:  # the first run's shape: the gpt's first chunk (ChunkPolicy, 8 tokens) less the lookahead
        engine.warm_up(lookahead_tokens=lookahead)
    else:
        engine.warm_up()
    return stage, f"SoVITS {engine.model_version} loaded from {paths.sovits} on {label}"


def main() -> None:
    from dora_gpt_sovits.node_runtime import serve_model_node

    serve_model_node(load, log)


def open_engine(paths: Any, settings: Any) -> tuple[Any, str]:
    """v1/v2/v2Pro/v2ProPlus: the SoVITS vocoder on the configured backend (GSV_BACKEND/DEVICE/DTYPE)."""
    from dora_gpt_sovits.backends.stages import open_or_exit, vocoder_builders
    from dora_gpt_sovits.sovits.engine import VocoderEngine

    vocoder, choice = open_or_exit("vocoder", vocoder_builders, paths.sovits, paths.model_dir)
    engine = VocoderEngine.for_backend(
        vocoder, choice, paths.sovits, settings.noise_scale, settings.speed, settings.max_models
    )
    return engine, choice.label


def open_mel_engine(paths: Any, settings: Any) -> tuple[Any, str]:
    """v3/v4: SoVITS + its mel vocoder on the configured backend (GSV_BACKEND/DEVICE/DTYPE): torch, or
    the exported DiT and vocoder graphs (gsv-export-onnx) with the SoVITS feature part on torch."""
    import dataclasses

    from dora_gpt_sovits.backends.stages import mel_vocoder_builders, open_or_exit
    from dora_gpt_sovits.sovits.mel_synthesis import FirstRun

    def builders(sovits: Any):
        return mel_vocoder_builders(dataclasses.replace(paths, sovits=sovits), settings)

    engine, choice = open_or_exit("vocoder", builders, paths.sovits, paths.model_dir)
    engine.first_run = FirstRun(settings.first_run_prompt_frames or None, settings.first_run_steps)
    if settings.first_run_threads is not None and engine.short_call_threads is not None:
        engine.short_call_threads = settings.first_run_threads or None  # 0: the node's GSV_THREADS
    return engine, f"{choice.label}, {engine.sample_steps} flow-matching steps, first run {engine.first_run.label()}"


if __name__ == "__main__":
    main()
