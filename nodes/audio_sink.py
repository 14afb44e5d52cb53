"""audio-sink node: plays or records the audio, one utterance after another, and reports time to
first audio per utterance.

Input:  ``audio`` (Float32[n] mono with sample_rate; our chunks or any kokoro-style producer),
        ``control`` (stop, from text-frontend: silence the cancelled utterances now).
Output: ``metrics`` (Utf8[1] JSON per finished utterance: ttfa_s, queued_s, audio_s, wall_s, rtf,
        stall_s and stalls (gaps real-time playback would have had, in every mode), underruns
        (speaker), errors, wav_path, development_model; a cancelled one also: cancelled,
        stop_to_silence_s),
        ``segment_complete`` (per segment once its audio was played — consumed by the speaker — or
        written; the text-frontend's flow-control window waits for it).

**One utterance at a time.** With the GPT decoding several utterances together (``GSV_MAX_BATCH``)
their chunks reach the sink interleaved. The utterance whose audio arrives while nothing plays
becomes the *current* one and plays; chunks of other utterances wait here, in memory, and when the
current one has played its last chunk the next takes its turn: the earliest ``text_received_at``
among those waiting (the order the requests were made: an LLM reply's sentences, several requests
of one client), ties by first arrival. The sink never waits for an utterance it has no audio of, so
a lost or slow one holds nothing back. Per utterance:

* ``ttfa_s`` = its first chunk's arrival − ``text_received_at`` (what the pipeline took, as before);
  ``queued_s`` = how long that audio then waited for earlier utterances before a listener could
  hear it (0 when the speaker was free). Heard after ``ttfa_s`` + ``queued_s`` + the 150 ms
  jitter buffer.
* ``stall_s``/``stalls`` count gaps from the moment it starts playing (straight after the previous
  utterance's audio, or after the jitter buffer when the speaker was idle), not while it waited.
* ``segment_complete``: speaker — once the device consumed the segment's last sample, so a waiting
  utterance's segments complete only when played; wav/null — on arrival (the WAV file of each
  utterance holds only its own audio and is written, numbered, in playing order).

Memory: the waiting audio is bounded by the frontend's window (``GSV_MAX_SEGMENTS_AHEAD``, 3 in our
speaker graphs): in speaker mode a waiting segment keeps its slot until played, so at most window − 1
segments of other utterances wait (each ≤ the GPT's 1500-token cap, 60 s; in practice a sentence);
without a window it is what the speaker has yet to play, as the player's own queue would hold.
Null mode keeps only counts. The window cannot deadlock: the frontend releases one utterance's
segments after another, so every utterance before the last released one is fully released, and the
one playing completes its own segments, which frees the slots its next segments need
(``tests/test_sink_order.py`` runs window 3 with two and three utterances decoded together).

A stop drops the cancelled utterances' waiting audio with them; a failed utterance (an ``error``
chunk, the frontend's stall watchdog, a node restart) is reported with its errors, and one that has
not begun playing loses the audio it had here. ``GSV_SINK_LISTENER``: play only utterances whose
text carried that ``listener`` (a room, a device): several sinks share one graph, each on its own
speaker (docs/architecture.md, "Who hears what"); others' audio is ignored here, unreported.

``GSV_SINK``: ``auto`` (default: the speaker when PortAudio and an output device exist, otherwise a
WAV file, saying so), ``speaker``, ``wav``, ``null`` (discard; for benchmarks). ``GSV_WAV_PATH``
(default ``out/speech.wav``, a relative path taken from the repository, not the YAML's folder:
audio/output_path.py; later utterances get ``-2``, ``-3``... suffixes). The log names the absolute path.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dora_gpt_sovits import health
from dora_gpt_sovits import messages as m
from dora_gpt_sovits.audio.output_path import output_path
from dora_gpt_sovits.audio.playback_clock import PlaybackClock
from dora_gpt_sovits.audio.wav import numbered_path, write_wav
from dora_gpt_sovits.cancellation import Cancellations
from dora_gpt_sovits.node_runtime import Outgoing, StageBase, connect, serve
from dora_gpt_sovits.settings import SinkSettings, from_env_or_exit

log = logging.getLogger("gsv.audio-sink")


@dataclass
class Waiting:
    """A chunk that arrived and has not been played: its utterance's turn has not come yet."""

    chunk: m.AudioChunk  # its samples are our own copy (null mode: none kept)
    n_samples: int


@dataclass
class Utterance:
    utterance_id: str
    sample_rate: int
    text_received_at: float
    first_audio_at: float
    arrival: int = 0  # 1, 2, 3... by first arrival: the tie-break of the playing order
    samples: list[np.ndarray] = field(default_factory=list)
    n_samples: int = 0
    errors: list[str] = field(default_factory=list)
    development_model: bool = False
    playback: PlaybackClock = field(default_factory=PlaybackClock)
    last_key: m.SegmentKey | None = None
    next_segment: int = 0  # where the next chunk should be: a jump means audio was lost on the way
    next_chunk: int = 0
    waiting: deque[Waiting] = field(default_factory=deque)
    arrived_all: bool = False  # its last chunk is here: nothing more comes
    started_at: float | None = None  # when a listener hears its first sample (modelled); None: not yet its turn

    def check_continuity(self, key: m.SegmentKey, chunk_index: int, segment_final: bool) -> None:
        if (key.segment_index, chunk_index) != (self.next_segment, self.next_chunk):
            self.errors.append(
                f"audio lost: expected segment {self.next_segment} chunk {self.next_chunk}, "
                f"got segment {key.segment_index} chunk {chunk_index}"
            )
        self.next_segment, self.next_chunk = (
            (key.segment_index + 1, 0) if segment_final else (key.segment_index, chunk_index + 1)
        )

    def queued_s(self) -> float | None:
        """How long its first audio waited for earlier utterances (beyond the jitter buffer)."""
        if self.started_at is None:
            return None
        return max(0.0, self.started_at - self.first_audio_at - self.playback.prebuffer_s)


@dataclass
class Unplayed:
    """A finished segment whose last sample the speaker has not consumed yet."""

    sample_rate: int
    mark: int  # the player's written-sample count after the segment's last chunk
    done: m.SegmentComplete


PLAYBACK_POLL_SECONDS = 0.02  # the shortest wait between two checks of playback progress


class AudioSinkStage(StageBase):
    name = "audio-sink"

    def __init__(
        self,
        mode: str,
        wav_path: str | Path = "out/speech.wav",
        clock=m.now,
        monotonic=time.monotonic,
        listener: str = "",
    ):
        if mode not in ("wav", "speaker", "null"):
            raise ValueError(f"sink mode {mode!r}")
        self.mode = mode
        self.wav_path = Path(wav_path)
        self.clock = clock
        self.listener = listener
        self.utterances: dict[str, Utterance] = {}  # open: playing or waiting for their turn
        self.playing: Utterance | None = None
        self.free_at: float | None = None  # clock() time at which the speaker has played all it was given
        self.arrivals = itertools.count(1)
        self.finished = 0
        self.players: dict[int, Any] = {}
        self.written: list[Path] = []
        self.monotonic = monotonic
        self.cancelled = Cancellations()
        self.unplayed: list[Unplayed] = []
        self.check_at: float | None = None  # time.monotonic() of the next playback-progress check
        self.completed: OrderedDict[str, None] = OrderedDict()  # recent ids, to drop stragglers

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing]:
        if input_id == m.CONTROL:
            yield from self.stop(m.ControlCommand.from_event(value, metadata))
            return
        chunk = m.AudioChunk.from_event(value, metadata)
        key = chunk.key
        if self.listener and key.options.listener != self.listener:
            log.debug("utterance %s is for listener %r, not this sink's", key.utterance_id, key.options.listener)
            return
        if self.cancelled.cancels(key):
            log.debug("utterance %s segment %d: cancelled, audio dropped", key.utterance_id, key.segment_index)
            return
        if key.utterance_id in self.completed:
            # Closed early (a node restarted mid-utterance): what still trickles in is not played.
            log.warning("utterance %s was already reported; dropped a late audio chunk", key.utterance_id)
            if chunk.segment_final:  # its window slot at the frontend is free all the same
                yield Outgoing(m.SEGMENT_COMPLETE, *m.SegmentComplete(key, "utterance already reported").to_message())
            return
        utt = self.utterances.get(key.utterance_id)
        if utt is None:
            arrived = self.clock()
            utt = Utterance(key.utterance_id, chunk.sample_rate, key.text_received_at or arrived, arrived)
            utt.arrival = next(self.arrivals)
            utt.development_model = chunk.development_model
            self.utterances[key.utterance_id] = utt
        if chunk.sample_rate != utt.sample_rate:
            raise m.MessageError(f"sample rate changed from {utt.sample_rate} to {chunk.sample_rate} mid-utterance")
        if m.UTTERANCE_ID in metadata:
            utt.check_continuity(key, chunk.chunk_index, chunk.segment_final)
        if chunk.error:
            utt.errors.append(f"segment {key.segment_index}: {chunk.error}")
            log.error("utterance %s segment %d failed: %s", key.utterance_id, key.segment_index, chunk.error)
        utt.last_key = key
        utt.n_samples += len(chunk.samples)
        if chunk.segment_final and self.mode != "speaker":
            yield Outgoing(m.SEGMENT_COMPLETE, *m.SegmentComplete(key, chunk.error).to_message())
        utt.waiting.append(self.keep(utt, chunk))
        utt.arrived_all = utt.arrived_all or (key.utterance_final and chunk.segment_final)
        yield from self.advance()

    def keep(self, utt: Utterance, chunk: m.AudioChunk) -> Waiting:
        """The chunk as it waits: the one playing plays it within this call; another's samples are
        copied out of dora's buffer, which is released after the call (null mode plays nothing)."""
        n = len(chunk.samples)
        if self.playing is None or utt is self.playing:
            return Waiting(chunk, n)
        log.debug("utterance %s segment %d chunk %d waits for its turn", utt.utterance_id,
                  chunk.key.segment_index, chunk.chunk_index)  # fmt: skip
        samples = np.zeros(0, np.float32) if self.mode == "null" else np.array(chunk.samples)
        return Waiting(dataclasses.replace(chunk, samples=samples), n)

    def advance(self) -> Iterator[Outgoing]:
        """Play what may play now: the current utterance's audio; once it has all played, the next
        utterance in turn."""
        while True:
            if self.playing is None:
                if not self.utterances:
                    return
                self.playing = min(self.utterances.values(), key=lambda u: (u.text_received_at, u.arrival))
                self.begin(self.playing)
            utt = self.playing
            while utt.waiting:
                yield from self.play(utt, utt.waiting.popleft())
            if not utt.arrived_all:
                return
            yield self.complete(utt)

    def begin(self, utt: Utterance) -> None:
        """Its turn: it is heard right after what the speaker still has to play, or, when the
        speaker is idle, once the jitter buffer has filled."""
        now = self.clock()
        if self.free_at is not None and self.free_at > now:
            utt.started_at = utt.playback.ends_at = self.free_at
        else:
            utt.started_at = now + utt.playback.prebuffer_s
        if (utt.queued_s() or 0.0) > 0.001:
            log.info("utterance %s plays after %.2f s in the queue", utt.utterance_id, utt.queued_s())

    def play(self, utt: Utterance, piece: Waiting) -> Iterator[Outgoing]:
        chunk = piece.chunk
        if piece.n_samples:
            self.consume(utt, chunk, piece.n_samples)
            self.free_at = utt.playback.ends_at
        if chunk.segment_final and self.mode == "speaker":
            yield from self.segment_done(chunk)

    def segment_done(self, chunk: m.AudioChunk) -> Iterable[Outgoing]:
        done = m.SegmentComplete(chunk.key, chunk.error)
        if chunk.sample_rate in self.players:
            self.unplayed.append(Unplayed(chunk.sample_rate, self.players[chunk.sample_rate].written, done))
            if self.check_at is None:
                self.schedule_check()
        else:
            yield Outgoing(m.SEGMENT_COMPLETE, *done.to_message())

    def next_deadline(self) -> float | None:
        return self.check_at if self.unplayed else None

    def tick(self) -> Iterable[Outgoing]:
        """Report segments whose last sample the speaker has consumed."""
        played = [u for u in self.unplayed if self.players[u.sample_rate].consumed >= u.mark]
        self.unplayed = [u for u in self.unplayed if u not in played]
        self.schedule_check()
        for u in played:
            yield Outgoing(m.SEGMENT_COMPLETE, *u.done.to_message())

    def schedule_check(self) -> None:
        """Look again when the next unplayed segment should have been played (at real-time speed)."""
        if not self.unplayed:
            self.check_at = None
            return
        remaining = min(max(0, u.mark - self.players[u.sample_rate].consumed) / u.sample_rate for u in self.unplayed)
        self.check_at = self.monotonic() + max(PLAYBACK_POLL_SECONDS, remaining)

    def stop(self, command: m.ControlCommand) -> Iterable[Outgoing]:
        """Barge-in: silence the cancelled utterances now, then report each of them; the next
        utterance in turn plays."""
        self.cancelled.apply(command)
        silent_at = self.clock()
        for rate, player in self.players.items():
            removed = player.discard(lambda utterance: self.cancelled.cancels_utterance(*utterance))
            if removed and self.free_at is not None:  # what was still to play after them moves up
                self.free_at = max(silent_at, self.free_at - removed / rate)
        self.unplayed = [u for u in self.unplayed if not self.cancelled.cancels(u.done.key)]
        self.schedule_check()
        if command.error:
            yield from self.fail(command)
            return
        for utt in [
            u for u in self.utterances.values() if self.cancelled.cancels_utterance(u.utterance_id, u.text_received_at)
        ]:
            stop_to_silence = max(0.0, silent_at - command.cancel_before)
            log.info("utterance %s cancelled: silent %.3f s after the stop", utt.utterance_id, stop_to_silence)
            if utt.last_key is not None:
                # Consumers waiting for the utterance's end learn that nothing more comes for it.
                last = dataclasses.replace(utt.last_key, utterance_final=True)
                yield Outgoing(m.SEGMENT_COMPLETE, *m.SegmentComplete(last, cancelled=True).to_message())
            yield self.complete(utt, cancelled={"cancelled": True, "stop_to_silence_s": round(stop_to_silence, 4)})
        yield from self.advance()

    def fail(self, command: m.ControlCommand) -> Iterable[Outgoing]:
        """The frontend gave up on an utterance (its stall watchdog): report it now with the reason,
        whether or not any of its audio arrived; what arrives later is dropped as cancelled."""
        if command.utterance_id in self.completed:
            return
        utt = self.utterances.get(command.utterance_id)
        if utt is None:
            now = self.clock()
            utt = Utterance(command.utterance_id, 1, now, now)
            self.utterances[utt.utterance_id] = utt
        utt.errors.append(command.error)
        yield self.complete(utt)
        yield from self.advance()

    def probe_reply(self, metadata: dict[str, Any]) -> Outgoing:
        """A health probe reached the end of the path: answer on ``metrics`` (shared/health.py)."""
        report = health.reply_report(metadata)
        log.info("health probe %s: %s", report[health.PROBE], "ok" if report["ok"] else report.get("error"))
        return Outgoing(m.METRICS, health.reply_text(report), {**metadata, m.UTTERANCE_ID: report[health.PROBE]})

    def consume(self, utt: Utterance, chunk: m.AudioChunk, n_samples: int) -> None:
        """Play (speaker), keep for the file (wav) or only time (null) one chunk of the current utterance."""
        log.info(
            "audio chunk: utterance %s segment %d chunk %d, %.2f s%s",
            chunk.key.utterance_id,
            chunk.key.segment_index,
            chunk.chunk_index,
            n_samples / chunk.sample_rate,
            " (DEVELOPMENT MODEL: noise)" if chunk.development_model else "",
        )
        utt.playback.arrive(self.clock(), n_samples / chunk.sample_rate)
        if self.mode == "wav":
            utt.samples.append(np.array(chunk.samples))  # the event buffer is released after this call
        elif self.mode == "speaker":
            tag = (chunk.key.utterance_id, chunk.key.text_received_at)
            self.player(chunk.sample_rate).write(chunk.samples, chunk.key.utterance_final and chunk.segment_final, tag)

    def player(self, sample_rate: int) -> Any:
        if sample_rate not in self.players:
            from dora_gpt_sovits.audio.player import Player

            self.players[sample_rate] = Player(sample_rate)
        return self.players[sample_rate]

    def upstream_restarted(self, node: str, inputs: frozenset[str] | None = None) -> Iterable[Outgoing]:
        # The marker travelled behind everything sent before the crash: what is still open here
        # can no longer complete (an utterance whose last chunk is here waits for its turn as usual).
        reason = f"node {node} restarted mid-utterance; the rest of this utterance was lost"
        for utt in [u for u in self.utterances.values() if not u.arrived_all]:
            utt.errors.append(reason)
            log.error("utterance %s failed: node %s restarted mid-utterance", utt.utterance_id, node)
            if utt.last_key is not None:
                # The frontend frees the utterance's window slots and drops what it still holds of it.
                last = dataclasses.replace(utt.last_key, utterance_final=True)
                yield Outgoing(m.SEGMENT_COMPLETE, *m.SegmentComplete(last, reason).to_message())
            yield self.complete(utt)
        yield from self.advance()
        # Segments lost before they reached us never report: the frontend resets its window.
        yield Outgoing(m.SEGMENT_COMPLETE, *m.restart_marker(node, "utf8"))

    def complete(self, utt: Utterance, cancelled: dict[str, Any] | None = None) -> Outgoing:
        del self.utterances[utt.utterance_id]
        if utt is self.playing:
            self.playing = None
        self.completed[utt.utterance_id] = None
        while len(self.completed) > 1000:
            self.completed.popitem(last=False)
        self.finished += 1
        wall = self.clock() - utt.text_received_at
        audio_s = utt.n_samples / utt.sample_rate
        queued = utt.queued_s()
        report: dict[str, Any] = {
            "utterance_id": utt.utterance_id,
            "seq": self.finished,  # 1, 2, 3...: a consumer on another machine sees a lost report as a gap
            "ttfa_s": round(utt.first_audio_at - utt.text_received_at, 4),
            "queued_s": None if queued is None else round(queued, 4),
            "audio_s": round(audio_s, 4),
            "wall_s": round(wall, 4),
            "rtf": round(wall / audio_s, 4) if audio_s else None,
            "stall_s": round(utt.playback.stall_s, 4),
            "stalls": utt.playback.stalls,
            "errors": utt.errors,
            "development_model": utt.development_model,
        } | (cancelled or {})
        if self.mode == "wav" and utt.samples and not cancelled:
            path = write_wav(numbered_path(self.wav_path, self.finished), np.concatenate(utt.samples), utt.sample_rate)
            self.written.append(path)
            report["wav_path"] = str(path)
        if self.mode == "speaker":
            report["underruns"] = sum(p.underruns for p in self.players.values())
        log.info(
            "utterance %s %s: TTFA %.3f s%s, %.2f s of audio in %.2f s, playback stalls %d (%.2f s)%s%s%s",
            utt.utterance_id,
            "cancelled" if cancelled else "done",
            report["ttfa_s"],
            f" (then {queued:.2f} s in the queue)" if queued else "",
            audio_s,
            wall,
            utt.playback.stalls,
            utt.playback.stall_s,
            f", wrote {report['wav_path']}" if "wav_path" in report else "",
            f", {len(utt.errors)} failed segment(s)" if utt.errors else "",
            " — DEVELOPMENT MODEL: this audio is noise, not speech" if utt.development_model else "",
        )
        return Outgoing(m.METRICS, m.text_array(json.dumps(report)), {m.UTTERANCE_ID: utt.utterance_id})

    def finish(self) -> Iterable[Outgoing]:
        for utt in [u for u in self.utterances.values() if not u.arrived_all]:
            utt.errors.append("the graph stopped before this utterance was complete")
            yield self.complete(utt)
        yield from self.advance()  # the complete ones still waiting play in turn
        for player in self.players.values():
            player.drain()
        yield from self.tick()


def choose_mode(requested: str) -> str:
    if requested not in ("auto", "speaker", "wav", "null"):
        raise SystemExit(f"error: GSV_SINK={requested!r} is not one of auto, speaker, wav, null")
    if requested in ("auto", "speaker"):
        from dora_gpt_sovits.audio.player import SpeakerUnavailable, open_speaker_check

        try:
            open_speaker_check()
            return "speaker"
        except SpeakerUnavailable as e:
            if requested == "speaker":
                raise SystemExit(f"error: GSV_SINK=speaker but {e}") from None
            log.warning("no speaker (%s): writing WAV files instead", e)
            return "wav"
    return requested


def main() -> None:
    settings = from_env_or_exit(SinkSettings)
    node = connect()  # first, so that the log bridge carries choose_mode's message
    mode = choose_mode(settings.sink)
    wav_path = output_path(settings.wav_path, Path.cwd())  # the repository's out/, whichever YAML folder we run in
    heard = f" (only utterances for listener {settings.listener!r})" if settings.listener else ""
    log.info("audio sink: %s%s%s", mode, f" -> {wav_path}" if mode == "wav" else "", heard)
    serve(node, AudioSinkStage(mode, wav_path, listener=settings.listener or ""))


if __name__ == "__main__":
    main()
