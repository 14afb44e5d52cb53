"""The audio sink plays utterances one after another whatever order their chunks arrive in (the GPT
decodes several together, issue #19), completes a waiting utterance's segments only once played,
and, with the text-frontend's window, never deadlocks; GSV_SINK_LISTENER plays one listener's
utterances. Stand-in player and clocks: no daemon, no sound card, no weights."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest
import soundfile as sf
from conftest import closed_event, input_event
from test_control_plane import FakePlayer

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.node_runtime import serve
from dora_gpt_sovits.nodes.audio_sink import AudioSinkStage
from dora_gpt_sovits.nodes.text_frontend import TextFrontendStage

SR = 32000
PREBUFFER = 0.15


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class SteppedPlayer(FakePlayer):
    """The speaker's jitter buffer without a device: ``play(n)`` is the device reading n samples;
    ``heard`` keeps the tag of every sample played, in order."""

    def __init__(self):
        super().__init__()
        self.heard: list[str] = []

    def play(self, n: int) -> None:
        with self.buffer.lock:
            left, i = n, 0
            while left and i < len(self.buffer.queue):
                samples, tag = self.buffer.queue[i]
                take = min(left, len(samples))
                self.heard += [tag[0]] * take
                left -= take
                i += 1
        self.buffer.read(np.empty(n, np.float32))


def speaker_sink(clock: Clock, **kw) -> tuple[AudioSinkStage, SteppedPlayer]:
    stage = AudioSinkStage("speaker", clock=clock, monotonic=clock, **kw)
    player = stage.players[SR] = SteppedPlayer()
    return stage, player


def chunk(utt, n, segment=0, index=0, seg_final=True, utt_final=True, received=100.0, value=0.1, **options):
    key = m.SegmentKey(utt, segment, utt_final, "default", received, m.RequestOptions(**options))
    return m.AudioChunk(key, np.full(n, value, np.float32), SR, index, seg_final).to_message()


def reports(outgoing) -> list[dict]:
    return [json.loads(m.read_text(o.data)) for o in outgoing if o.output_id == m.METRICS]


def completions(outgoing) -> list[tuple[str, int]]:
    return [
        (o.metadata[m.UTTERANCE_ID], o.metadata[m.SEGMENT_INDEX]) for o in outgoing if o.output_id == m.SEGMENT_COMPLETE
    ]


def runs(tags: list[str]) -> list[str]:
    """Which utterance played, one entry per uninterrupted stretch."""
    return [t for i, t in enumerate(tags) if i == 0 or tags[i - 1] != t]


def test_a_later_utterance_waits_until_the_current_one_has_played_its_last_chunk():
    clock = Clock(100.0)
    stage, player = speaker_sink(clock)
    out = list(stage.handle(m.AUDIO, *chunk("a", SR, seg_final=False, utt_final=False)))
    clock.t = 100.5
    out += stage.handle(m.AUDIO, *chunk("b", SR // 2, received=100.1))  # all of b, while a plays
    assert player.buffer.queued == SR and reports(out) == []  # b waits, unheard
    clock.t = 101.0
    out += stage.handle(m.AUDIO, *chunk("a", SR, index=1, utt_final=False))  # a's first segment ends
    clock.t = 101.2
    out += stage.handle(m.AUDIO, *chunk("a", SR // 4, segment=1))  # a ends: b follows at once
    a, b = reports(out)
    assert (a["utterance_id"], b["utterance_id"]) == ("a", "b")
    assert a["queued_s"] == 0 and a["stalls"] == 0
    # b's first chunk arrived at 100.5, 0.4 s after its text; a's 2.25 s of audio end at 102.4.
    assert b["ttfa_s"] == pytest.approx(0.4) and b["queued_s"] == pytest.approx(102.4 - 100.5 - PREBUFFER)
    assert b["stalls"] == 0 and b["audio_s"] == pytest.approx(0.5)
    player.play(2 * SR + SR // 4 + SR // 2)
    assert runs(player.heard) == ["a", "b"]


def test_a_waiting_utterances_segments_complete_only_once_the_speaker_played_them():
    clock = Clock(0.0)
    stage, player = speaker_sink(clock)
    list(stage.handle(m.AUDIO, *chunk("a", 1000, utt_final=False)))
    assert completions(stage.handle(m.AUDIO, *chunk("b", 500, segment=0, utt_final=False))) == []
    assert completions(stage.handle(m.AUDIO, *chunk("b", 500, segment=1))) == []
    list(stage.handle(m.AUDIO, *chunk("a", 1000, segment=1)))  # a ends: b is written behind it
    done = []
    for _ in range(4):
        player.play(750)
        done += completions(stage.tick())
    assert done == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert runs(player.heard) == ["a", "b"]


def test_the_next_in_turn_is_the_earliest_request_among_those_waiting():
    stage, player = speaker_sink(Clock(0.0))
    list(stage.handle(m.AUDIO, *chunk("a", 100, utt_final=False, received=1.0)))
    list(stage.handle(m.AUDIO, *chunk("c", 100, received=3.0)))  # decoded faster: arrives first
    list(stage.handle(m.AUDIO, *chunk("b", 100, received=2.0)))
    out = list(stage.handle(m.AUDIO, *chunk("a", 100, segment=1, received=1.0)))
    assert [r["utterance_id"] for r in reports(out)] == ["a", "b", "c"]
    player.play(400)
    assert runs(player.heard) == ["a", "b", "c"]


def test_wav_files_hold_one_utterance_each_numbered_in_playing_order_and_slots_free_on_arrival(tmp_path):
    stage = AudioSinkStage("wav", tmp_path / "speech.wav", clock=Clock(0.0))
    out = list(stage.handle(m.AUDIO, *chunk("a", 100, utt_final=False, value=0.25)))
    out += stage.handle(m.AUDIO, *chunk("b", 300, segment=0, utt_final=False, value=-0.5))
    out += stage.handle(m.AUDIO, *chunk("b", 300, segment=1, value=-0.5))
    assert completions(out) == [("a", 0), ("b", 0), ("b", 1)]  # written: the frontend's slots are free
    out = list(stage.handle(m.AUDIO, *chunk("a", 100, segment=1, value=0.25)))
    a, b = reports(out)
    wav_a, _ = sf.read(a["wav_path"], dtype="float32")
    wav_b, _ = sf.read(b["wav_path"], dtype="float32")
    assert np.allclose(wav_a, 0.25, atol=1e-4) and len(wav_a) == 200
    assert np.allclose(wav_b, -0.5, atol=1e-4) and len(wav_b) == 600
    assert [p.name for p in stage.written] == ["speech.wav", "speech-2.wav"]


def test_null_mode_keeps_no_samples_of_a_waiting_utterance_and_still_times_it():
    clock = Clock(10.0)
    stage = AudioSinkStage("null", clock=clock)
    list(stage.handle(m.AUDIO, *chunk("a", SR, utt_final=False, received=9.5)))
    list(stage.handle(m.AUDIO, *chunk("b", SR, received=9.8)))
    assert not len(stage.utterances["b"].waiting[0].chunk.samples)
    (a, b) = reports(stage.handle(m.AUDIO, *chunk("a", SR, segment=1, received=9.5)))
    assert b["audio_s"] == pytest.approx(1.0) and b["queued_s"] == pytest.approx(10.0 + PREBUFFER + 2 - 10 - PREBUFFER)


def test_a_stop_drops_a_waiting_utterances_audio_and_the_next_plays_when_the_current_is_stopped():
    clock = Clock(200.0)
    stage, player = speaker_sink(clock)
    list(stage.handle(m.AUDIO, *chunk("a", 1000, utt_final=False, received=100.0)))
    list(stage.handle(m.AUDIO, *chunk("b", 400, utt_final=False, received=101.0)))
    list(stage.handle(m.AUDIO, *chunk("c", 300, received=102.0)))
    out = list(stage.handle(m.CONTROL, *m.ControlCommand(150.0, "b").to_message()))
    (cancelled,) = reports(out)
    assert cancelled["utterance_id"] == "b" and cancelled["cancelled"] and cancelled["queued_s"] is None
    assert player.buffer.queued == 1000  # b's audio was never written; a still plays
    out = list(stage.handle(m.CONTROL, *m.ControlCommand(150.0, "a").to_message()))
    assert [r["utterance_id"] for r in reports(out)] == ["a", "c"]  # c had all its audio: it plays and is done
    assert player.buffer.queued == 300
    player.play(300)
    assert runs(player.heard) == ["c"]
    assert completions(stage.tick()) == [("c", 0)]


def test_a_restart_fails_the_waiting_unfinished_utterance_and_keeps_the_finished_ones():
    stage, player = speaker_sink(Clock(0.0))
    list(stage.handle(m.AUDIO, *chunk("a", 100, utt_final=False, received=1.0)))
    list(stage.handle(m.AUDIO, *chunk("b", 100, utt_final=False, received=2.0)))
    list(stage.handle(m.AUDIO, *chunk("c", 100, received=3.0)))
    out = list(stage.upstream_restarted("vocoder"))
    failed = {r["utterance_id"]: r["errors"] for r in reports(out)}
    assert set(failed) == {"a", "b", "c"} and failed["c"] == []
    assert all("vocoder restarted" in e[0] for u, e in failed.items() if u != "c")
    assert (out[-1].output_id, out[-1].metadata.get(m.RESTARTED)) == (m.SEGMENT_COMPLETE, "vocoder")
    player.play(200)
    assert runs(player.heard) == ["a", "c"]  # b's waiting audio was dropped with it


def test_finish_plays_the_finished_waiting_utterances_and_reports_the_unfinished(tmp_path):
    stage = AudioSinkStage("wav", tmp_path / "x.wav", clock=Clock(0.0))
    list(stage.handle(m.AUDIO, *chunk("a", 100, utt_final=False, received=1.0)))
    list(stage.handle(m.AUDIO, *chunk("b", 100, received=2.0)))
    a, b = reports(stage.finish())
    assert "stopped before" in a["errors"][0] and b["errors"] == [] and "wav_path" in b


def test_a_sink_with_a_listener_plays_only_that_listeners_utterances():
    stage, player = speaker_sink(Clock(0.0), listener="kitchen")
    out = list(stage.handle(m.AUDIO, *chunk("office-1", 100, listener="office")))
    out += stage.handle(m.AUDIO, *chunk("anyone", 100))
    assert out == [] and player.buffer.written == 0  # another sink's: not played, not reported
    out = list(stage.handle(m.AUDIO, *chunk("kitchen-1", 100, listener="kitchen")))
    assert [r["utterance_id"] for r in reports(out)] == ["kitchen-1"] and player.buffer.written == 100


def test_the_listener_rides_from_the_text_on_every_segment():
    stage = TextFrontendStage(clock=Clock(0.0))
    stage.prompts["default"] = ("", "zh")
    md = {m.UTTERANCE_ID: "u", m.TEXT_RECEIVED_AT: 1.0, m.LANGUAGE: "zh", m.LISTENER: "kitchen"}
    (out,) = [o for o in stage.handle(m.TEXT, m.text_array("你好。"), md) if o.output_id == m.PHONEMES]
    key = m.SegmentKey.from_metadata(out.metadata, m.PHONEMES)
    assert key.options.listener == "kitchen"
    audio = m.AudioChunk(key, np.zeros(4, np.float32), SR, 0, True).to_message()
    assert m.AudioChunk.from_event(*audio).key.options.listener == "kitchen"


def test_gsv_say_and_text_input_carry_the_listener_into_the_text_metadata():
    from dora_gpt_sovits.nodes.text_input import parse_line
    from dora_gpt_sovits.say import build_parser, request_line

    line = request_line(build_parser().parse_args(["饭好了。", "--listener", "kitchen"]))
    request = parse_line(line.decode(), "auto", "default")
    assert request.to_message()[1][m.LISTENER] == "kitchen"
    assert m.LISTENER not in parse_line('{"text": "hi"}', "auto", "default").to_message()[1]


# ---- the window with batching: no deadlock ----------------------------------------------------------
class BatchedPipeline:
    """bert + gpt (GSV_MAX_BATCH rows) + vocoder, as the sink sees them: a released segment joins
    when a row is free and its utterance's previous segment has ended (FIFO otherwise, as
    gpt/batching.py admits), and every row sends one chunk per step."""

    def __init__(self, rows: int, chunks_of: dict[str, int]):
        self.rows, self.chunks_of = rows, chunks_of  # utterance -> chunks per segment
        self.queue: deque[m.SegmentKey] = deque()
        self.running: list[list] = []  # [key, chunks sent]

    def release(self, outgoing) -> None:
        for o in outgoing:
            if o.output_id == m.PHONEMES:
                self.queue.append(m.SegmentKey.from_metadata(o.metadata, m.PHONEMES))

    def step(self, n_samples: int) -> list:
        busy = {k.utterance_id for k, _ in self.running}
        for key in list(self.queue):
            if len(self.running) < self.rows and key.utterance_id not in busy:
                self.queue.remove(key)
                self.running.append([key, 0])
                busy.add(key.utterance_id)
        sent = []
        for row in self.running:
            key, index = row
            final = index + 1 == self.chunks_of[key.utterance_id]
            sent.append(m.AudioChunk(key, np.full(n_samples, 0.1, np.float32), SR, index, final).to_message())
            row[1] += 1
        self.running = [r for r in self.running if r[1] < self.chunks_of[r[0].utterance_id]]
        return sent


TEXTS = {"a": "第一句话。第二句话。第三句话。第四句话。第五句话。", "b": "再来一句。还有一句。", "c": "最后。"}


@pytest.mark.parametrize(
    "chunks_of",
    [
        {"a": 4, "b": 1},  # b's short segments overtake a's: b waits for a, holding window slots
        {"a": 1, "b": 4},
        {"a": 3, "b": 1, "c": 1},
    ],
    ids=["later-short", "later-long", "three"],
)
def test_window_3_with_batch_4_never_deadlocks_and_never_interleaves(chunks_of):
    clock = Clock(0.0)
    frontend = TextFrontendStage(max_segments_ahead=3, clock=clock)
    frontend.prompts["default"] = ("", "zh")
    sink, player = speaker_sink(clock)
    pipeline = BatchedPipeline(rows=4, chunks_of=chunks_of)
    for i, utt in enumerate(chunks_of):
        md = {m.UTTERANCE_ID: utt, m.TEXT_RECEIVED_AT: i * 0.01, m.LANGUAGE: "zh"}
        pipeline.release(frontend.handle(m.TEXT, m.text_array(TEXTS[utt]), md))
    done: list[dict] = []
    step_samples = SR // 10  # each step: one 0.1 s chunk per row, and the speaker plays 0.05 s
    for _ in range(2000):
        out = []
        for message in pipeline.step(step_samples):
            out += sink.handle(m.AUDIO, *message)
        clock.t += 0.05
        player.play(step_samples // 2)
        out += sink.tick()
        done += reports(out)
        for o in out:
            if o.output_id == m.SEGMENT_COMPLETE:
                pipeline.release(frontend.handle(m.SEGMENT_COMPLETE, o.data, o.metadata))
        if len(done) == len(chunks_of) and not sink.unplayed:
            break
    else:
        pytest.fail(f"stuck: reported {[r['utterance_id'] for r in done]}, in flight {sorted(frontend.in_flight)}")
    assert sorted(r["utterance_id"] for r in done) == sorted(chunks_of)
    assert all(r["errors"] == [] and r["stalls"] == 0 for r in done)
    assert not frontend.in_flight and not frontend.pending()
    assert sorted(runs(player.heard)) == sorted(chunks_of)  # one stretch per utterance: never interleaved


def test_serve_ends_after_the_waiting_utterance_played(tmp_path):
    """Through the shared loop: inputs close while b still waits for a's last chunk to be written."""
    from conftest import RecordingNode

    events = [
        input_event(m.AUDIO, *chunk("a", 100, utt_final=False, received=1.0)),
        input_event(m.AUDIO, *chunk("b", 100, received=2.0)),
        input_event(m.AUDIO, *chunk("a", 100, segment=1, received=1.0)),
        closed_event(m.AUDIO),
    ]
    node = RecordingNode(events)
    serve(node, AudioSinkStage("wav", tmp_path / "s.wav", clock=Clock(0.0)))
    ids = [md[m.UTTERANCE_ID] for _, md in node.outputs(m.METRICS)]
    assert ids == ["a", "b"]
