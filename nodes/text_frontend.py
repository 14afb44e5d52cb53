"""text-frontend node: text -> sentence-sized segments of phone ids (prompt phones first).

Inputs:  ``text`` (Utf8[1]), ``voice_prompt`` (Utf8[1] from reference: the voice's prompt text),
         ``control`` (barge-in: ``stop`` [+ ``utterance_id``], or any non-text message = stop all),
         ``segment_complete`` (from the sink: a segment has been played; frees a window slot).
Outputs: ``phonemes`` (Int64[T] per segment, see docs/messages.md), ``voice_request`` (Utf8[1]: a
         voice the reference node should load), ``control`` (the stop, stamped with
         ``cancel_before``, fanned out directly to every later stage).

Segments are emitted one at a time as soon as each is converted, so the GPT can start on the first
sentence while later ones are still being processed. Every segment fits BERT's 512 positions and
the GPT's phone budget (``text.segment_limits``): text beyond them is cut further. Text waits here until its voice's prompt text
is known. Flow control: with ``GSV_MAX_SEGMENTS_AHEAD`` = N > 0, at most N segments are out in the
graph (released, not yet reported by the sink's ``segment_complete``); later ones wait here as text
and are converted when a slot frees, so a 100,000-character text holds only N segments downstream.
Unset or 0 disables the window (for graphs whose sink sends no ``segment_complete``).

Order across utterances. By default segments leave in utterance order: all of one text's, then the
next text's (first in, first out). With ``GSV_FAIR_SCHEDULING=1`` and no window, a new text's first
segment is converted and sent as soon as the text (and its voice's prompt) is here, and the rest of
every text follows lazily, one segment per turn, the texts taking turns (round-robin): each step is
a ``tick`` due at once, and the node loop reads new events between two ticks, so a short request
that arrives while a long text is being released does not wait for all of it (bert and the vocoder
do the same with what is queued at their inputs: ``fair_queue``). This suits the HTTP server graph,
which streams each request its own audio. It is off by default because a graph that plays whatever
arrives on one speaker (dora-pyaudio: the voice-assistant graph, gsv-tts) would interleave
sentences of different texts. With a window the order stays first in, first out, fair or not: the
sink plays one utterance after another and frees a slot only when a segment has played, so
round-robin could fill the window with segments of a later utterance that the sink will not play
before the earlier one ends, while the earlier one's next segments wait for a slot: a deadlock.
As in dora-kokoro-tts, ``<tool_call>...</tool_call>`` blocks are removed and a message with nothing
left (or an empty one) is skipped with a log line. A request picks its voice by name (metadata
``voice``) or brings its own (``ref_audio``, ``prompt_text``, ``prompt_language``).
Environment (``settings.FrontendSettings``): ``GSV_VERSION`` (symbol table), ``GSV_SPLIT_METHOD``
(cut0..cut5, default cut5), ``GSV_LANGUAGE``, ``GSV_MAX_SEGMENTS_AHEAD``, ``GSV_FAIR_SCHEDULING``
(``settings.RuntimeSettings``). The conversion itself is
``text.frontend_engine`` (shared with the benchmark).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.cancellation import Cancellations
from dora_gpt_sovits.node_runtime import Outgoing, StageBase, connect, serve
from dora_gpt_sovits.settings import FrontendSettings, RuntimeSettings, from_env_or_exit
from dora_gpt_sovits.text.frontend import PhoneSegment, text_to_phones
from dora_gpt_sovits.text.frontend_engine import end_with_period as _end_with_period
from dora_gpt_sovits.text.frontend_engine import symbol_version, warm_up
from dora_gpt_sovits.text.llm_stream import strip_tool_calls
from dora_gpt_sovits.text.segment_limits import segment_text
from dora_gpt_sovits.voices import adhoc_voice
from dora_gpt_sovits.watchdog import StallWatchdog, stall_reason

log = logging.getLogger("gsv.text-frontend")

VOICE_REQUEST = m.VOICE_REQUEST


@dataclass
class PendingText:
    text: str
    metadata: dict[str, Any]  # utterance_id and text_received_at always set


@dataclass
class HeldUtterance:
    """An utterance whose segments are released one by one as the window allows."""

    utterance_id: str
    text_received_at: float
    segments: Iterator[Outgoing]  # converted lazily: text waits here, not phone ids
    started: bool = False  # its first segment went out (round-robin: the rest take turns)


class TextFrontendStage(StageBase):
    name = "text-frontend"
    primary_inputs = frozenset({m.TEXT})
    probe_output, probe_payload = m.PHONEMES, "int64"  # health probes pass (shared/health.py)

    def __init__(
        self,
        model_version: str = "v2",
        split_method: str = "cut5",
        default_language: str = "auto",
        max_segments_ahead: int = 0,
        clock: Callable[[], float] = m.now,
        stall_timeout_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
        fair: bool = False,
    ):
        self.version = symbol_version(model_version)
        self.split_method = split_method
        self.default_language = default_language
        self.prompts: dict[str, tuple[str, str]] = {}  # voice -> (prompt text, language)
        self.prompt_runs: dict[tuple[str, str], list[PhoneSegment]] = {}
        self.waiting: dict[str, list[PendingText]] = defaultdict(list)
        self.window = max(0, max_segments_ahead)
        self.round_robin = fair and not self.window  # see the module doc: a window keeps FIFO
        self.held: deque[HeldUtterance] = deque()
        # released, not yet complete (window only): (utterance_id, segment_index) -> text_received_at
        self.in_flight: dict[tuple[str, int], float] = {}
        self.cancelled = Cancellations()
        self.clock = clock  # the clock of text_received_at and of the stops' cancel_before
        # Window only (it needs the sink's reports): in-flight segments that never come back fail.
        self.watchdog = StallWatchdog(stall_timeout_s if self.window else 0.0)
        self.monotonic = monotonic

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing]:
        if input_id == m.CONTROL:
            command = m.ControlCommand.from_event(value, metadata, stamp=self.clock())
            self.cancel(command)
            yield Outgoing(m.CONTROL, *command.to_message())
        elif input_id == m.SEGMENT_COMPLETE:
            done = m.SegmentComplete.from_event(value, metadata)
            freed = self.in_flight.pop((done.key.utterance_id, done.key.segment_index), None) is not None
            log.debug(
                "segment complete: %s %d (slot %s); in flight: %s",
                done.key.utterance_id,
                done.key.segment_index,
                "freed" if freed else "not held",
                sorted(self.in_flight),
            )
            if done.error and done.key.utterance_final:
                self.forget(done.key.utterance_id)  # failed as a whole (a node restarted mid-utterance)
        elif input_id == m.VOICE_PROMPT:
            part = m.ReferencePart.text_from_event(value, metadata, input_id)
            if metadata.get(m.ERROR):
                for pending in self.waiting.pop(part.voice, []):
                    yield self.error_segment(self.key(pending.metadata, 0, True), str(metadata[m.ERROR]))
                self.watch(came_back=False)
                return
            self.prompts[part.voice] = (str(part.payload), part.language or "zh")
            for pending in self.waiting.pop(part.voice, []):
                self.hold(pending)
        elif input_id == m.TEXT:
            text = strip_tool_calls(m.read_text(value))
            pending = PendingText(text, self.stamped(metadata))
            voice = str(pending.metadata.get(m.VOICE, m.DEFAULT_VOICE))
            if not text.strip():
                # As dora-kokoro-tts: an LLM turn that was only a tool call (or nothing) is not speech.
                log.info("skipped a text message with nothing to speak (empty or only tool calls)")
            elif self.cancelled.cancels(self.key(pending.metadata, 0, True)):
                log.info("utterance %s: stopped before it was started", pending.metadata[m.UTTERANCE_ID])
            elif voice in self.prompts:
                self.hold(pending)
            else:
                if voice not in self.waiting:
                    yield Outgoing(VOICE_REQUEST, m.text_array(voice), self.voice_request(pending.metadata))
                self.waiting[voice].append(pending)
        yield from self.release()
        self.watch(came_back=input_id == m.SEGMENT_COMPLETE)

    def watch(self, came_back: bool) -> None:
        """Progress for the stall watchdog: a report came back, or work went out into an idle path."""
        if not self.in_flight or came_back or self.watchdog.last_progress is None:
            self.watchdog.progress(self.monotonic(), bool(self.in_flight))

    def next_deadline(self) -> float | None:
        if self.round_robin and self.held:
            return 0.0  # long past: the next turn is due at once (the loop reads events in between)
        return self.watchdog.deadline()

    def tick(self) -> Iterable[Outgoing]:
        if self.watchdog.expired(self.monotonic()):
            yield from self.fail_stalled()
        if self.round_robin:
            yield from self.next_turn()

    def fail_stalled(self) -> Iterator[Outgoing]:
        """Nothing came back for too long: report every utterance in flight, through the stop
        that goes straight to the sink (the data path is what stalled), and go on serving."""
        reason = stall_reason(self.watchdog.timeout_s, len(self.in_flight))
        for utterance_id in dict.fromkeys(u for u, _ in self.in_flight):
            log.error("utterance %s: %s", utterance_id, reason)
            command = m.ControlCommand(self.clock(), utterance_id, reason)
            self.cancelled.apply(command)
            self.forget(utterance_id)
            yield Outgoing(m.CONTROL, *command.to_message())
        yield from self.release()
        self.watchdog.progress(self.monotonic(), bool(self.in_flight))

    def stamped(self, metadata: dict[str, Any]) -> dict[str, Any]:
        metadata = dict(metadata)
        metadata[m.UTTERANCE_ID] = str(metadata.get(m.UTTERANCE_ID) or m.new_utterance_id())
        metadata[m.TEXT_RECEIVED_AT] = float(metadata.get(m.TEXT_RECEIVED_AT) or self.clock())
        if adhoc := adhoc_voice(metadata):
            # A voice defined by the request itself: named after its definition, so repeating it
            # reuses the reference node's encoding.
            metadata[m.VOICE] = adhoc.name
        return metadata

    @staticmethod
    def voice_request(metadata: dict[str, Any]) -> dict[str, Any]:
        """What the reference node needs to load the request's voice: its name, or its definition."""
        request = {m.VOICE: str(metadata.get(m.VOICE, m.DEFAULT_VOICE))}
        return request | {k: metadata[k] for k in (m.REF_AUDIO, m.PROMPT_TEXT, m.PROMPT_LANGUAGE) if k in metadata}

    def hold(self, pending: PendingText) -> None:
        md = pending.metadata
        self.held.append(HeldUtterance(md[m.UTTERANCE_ID], md[m.TEXT_RECEIVED_AT], self.segments(pending.text, md)))

    def release(self) -> Iterator[Outgoing]:
        if self.round_robin:
            return self.first_segments()
        return self.in_order()

    def first_segments(self) -> Iterator[Outgoing]:
        """Round-robin: the first segment of every text not started yet, at once."""
        for utterance in [h for h in self.held if not h.started]:
            utterance.started = True
            message = next(utterance.segments, None)
            if message is None:
                self.held.remove(utterance)
            else:
                yield message

    def next_turn(self) -> Iterator[Outgoing]:
        """Round-robin: one segment of the text whose turn it is; that text goes to the back."""
        while self.held:
            message = next(self.held[0].segments, None)
            if message is None:
                self.held.popleft()
                continue
            self.held.rotate(-1)
            yield message
            return

    def in_order(self) -> Iterator[Outgoing]:
        """Send held segments, in utterance order, while the window has room."""
        while self.held and (not self.window or len(self.in_flight) < self.window):
            message = next(self.held[0].segments, None)
            if message is None:
                self.held.popleft()
                continue
            if self.window:
                md = message.metadata
                self.in_flight[(md[m.UTTERANCE_ID], md[m.SEGMENT_INDEX])] = md[m.TEXT_RECEIVED_AT]
                log.debug(
                    "released %s %d; in flight: %s", md[m.UTTERANCE_ID], md[m.SEGMENT_INDEX], sorted(self.in_flight)
                )
            yield message

    def cancel(self, command: m.ControlCommand) -> None:
        """Forget held and waiting text of cancelled utterances and free their window slots now."""
        self.cancelled.apply(command)
        for utt in [h for h in self.held if self.cancelled.cancels_utterance(h.utterance_id, h.text_received_at)]:
            log.info("utterance %s cancelled: its remaining segments are dropped", utt.utterance_id)
            self.held.remove(utt)
        for voice, texts in self.waiting.items():
            self.waiting[voice] = [
                t
                for t in texts
                if not self.cancelled.cancels_utterance(t.metadata[m.UTTERANCE_ID], t.metadata[m.TEXT_RECEIVED_AT])
            ]
        # In-flight segments need no report: every later stage drops them on the same stop.
        self.in_flight = {
            k: received
            for k, received in self.in_flight.items()
            if not self.cancelled.cancels_utterance(k[0], received)
        }

    def pending(self) -> bool:
        return any(self.waiting.values()) or bool(self.held)

    def forget(self, utterance_id: str) -> None:
        """The sink reported the utterance failed: free its window slots, drop what is still held."""
        self.held = deque(h for h in self.held if h.utterance_id != utterance_id)
        self.in_flight = {k: v for k, v in self.in_flight.items() if k[0] != utterance_id}

    def upstream_restarted(self, node: str, inputs: frozenset[str] | None = None) -> Iterable[Outgoing]:
        if inputs is None or m.VOICE_PROMPT in inputs:
            # The restarted reference may have lost our requests: ask again for what we wait on.
            for voice, texts in self.waiting.items():
                if texts:
                    yield Outgoing(VOICE_REQUEST, m.text_array(voice), self.voice_request(texts[0].metadata))
        if inputs is None or m.SEGMENT_COMPLETE in inputs:
            # A node restarted downstream (or came back): segments it lost, or that were sent into
            # its downtime, will never be reported. Each utterance still in flight is failed with a
            # closing error segment, which keeps its window slot until the sink reports it (if that
            # one is lost too, the restarted node's ready marker brings us here again).
            yield from self.fail_in_flight(f"node {node} restarted while this utterance was in flight")
            yield from self.release()
            self.watch(came_back=True)

    def fail_in_flight(self, reason: str) -> Iterator[Outgoing]:
        last: dict[str, tuple[int, float]] = {}
        for (utterance_id, index), received in self.in_flight.items():
            last[utterance_id] = (max(index, last.get(utterance_id, (-1, 0.0))[0]), received)
        for utterance_id, (index, received) in last.items():
            self.forget(utterance_id)
            key = m.SegmentKey(utterance_id, index + 1, True, text_received_at=received)
            self.in_flight[(utterance_id, index + 1)] = received
            log.error("utterance %s: %s; reported as failed", utterance_id, reason)
            yield self.error_segment(key, reason)

    def finish(self) -> Iterable[Outgoing]:
        # Text still waiting for a voice that never came: report it instead of dropping it silently.
        for voice, texts in self.waiting.items():
            for pending in texts:
                key = self.key(pending.metadata, 0, True)
                yield self.error_segment(key, f"voice {voice!r} was never provided by the reference node")
        self.waiting.clear()
        for utt in self.held:  # only a `dora stop` ends the node while the window or turns still hold text
            log.warning("utterance %s: the graph stopped before all of its segments were released", utt.utterance_id)
        self.held.clear()

    def key(self, metadata: dict[str, Any], index: int, final: bool) -> m.SegmentKey:
        return m.SegmentKey(
            utterance_id=str(metadata.get(m.UTTERANCE_ID) or m.new_utterance_id()),
            segment_index=index,
            utterance_final=final,
            voice=str(metadata.get(m.VOICE, m.DEFAULT_VOICE)),
            text_received_at=float(metadata.get(m.TEXT_RECEIVED_AT) or m.now()),
            options=m.RequestOptions.from_metadata(metadata, m.TEXT),
        )

    def segments(self, text: str, metadata: dict[str, Any]) -> Iterator[Outgoing]:
        metadata = self.stamped(metadata)
        language = str(metadata.get(m.LANGUAGE) or self.default_language)
        voice = str(metadata.get(m.VOICE, m.DEFAULT_VOICE))
        index = 0  # segments sent: the sink reads a gap in the indices as lost audio
        for segment in segment_text(text, language, self.version, self.split_method):
            key = self.key(metadata, index, segment.final)
            if segment.error:
                log.error("utterance %s segment %d: %s", key.utterance_id, index, segment.error)
                if segment.final:
                    # Close the utterance so downstream stages know nothing more is coming.
                    yield self.error_segment(key, segment.error)
                continue
            index += 1
            prompt = self.prompt_phones(voice)
            yield Outgoing(m.PHONEMES, *self.phoneme_segment(key, segment.text, prompt, segment.runs).to_message())

    def prompt_phones(self, voice: str) -> list[PhoneSegment]:
        text, language = self.prompts[voice]
        if not text.strip():
            return []  # reference-free voice
        cache_key = (text, language)
        if cache_key not in self.prompt_runs:
            self.prompt_runs[cache_key] = text_to_phones(_end_with_period(text, language), language, self.version)
        return self.prompt_runs[cache_key]

    def phoneme_segment(
        self, key: m.SegmentKey, piece: str, prompt: list[PhoneSegment], runs: list[PhoneSegment]
    ) -> m.PhonemeSegment:
        all_runs = prompt + runs
        ids = np.concatenate([np.asarray(r.phone_ids, dtype=np.int64) for r in all_runs])
        return m.PhonemeSegment(
            key=key,
            phone_ids=ids,
            n_prompt_phones=sum(len(r.phone_ids) for r in prompt),
            run_languages=[r.language for r in all_runs],
            run_texts=[r.norm_text for r in all_runs],
            run_phone_counts=[len(r.phone_ids) for r in all_runs],
            word2ph=[n for r in all_runs if r.word2ph for n in r.word2ph],
            segment_text=piece,
        )

    @staticmethod
    def error_segment(key: m.SegmentKey, error: str) -> Outgoing:
        segment = m.PhonemeSegment(key, np.zeros(0, dtype=np.int64), 0, [], [], [], [], error=error)
        return Outgoing(m.PHONEMES, *segment.to_message())


def load() -> TextFrontendStage:
    """The stage with its G2P warmed up (before the node joins the graph). gsv-tts loads it too."""
    settings = from_env_or_exit(FrontendSettings)
    stage = TextFrontendStage(
        settings.version,
        settings.split_method,
        settings.language,
        settings.max_segments_ahead,
        stall_timeout_s=settings.stall_timeout,
        fair=from_env_or_exit(RuntimeSettings).fair_scheduling,
    )
    warm_up(stage.version)
    return stage


def main() -> None:
    stage = load()
    serve(connect(), stage)


if __name__ == "__main__":
    main()
