"""Barge-in (stop) and flow control (segment window, real-time pacing), stage by stage and through
the shared loop, with stand-in models and fake nodes: no daemon, no weights."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import RecordingNode, closed_event, input_event

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.audio.pacing import Pacer
from dora_gpt_sovits.audio.playback_clock import PlaybackClock
from dora_gpt_sovits.audio.player import JitterBuffer
from dora_gpt_sovits.cancellation import Cancellations
from dora_gpt_sovits.node_runtime import serve
from dora_gpt_sovits.nodes.audio_sink import AudioSinkStage
from dora_gpt_sovits.nodes.bert_features import BertStage
from dora_gpt_sovits.nodes.gpt_decoder import ChunkPolicy, GPTStage
from dora_gpt_sovits.nodes.text_frontend import TextFrontendStage
from dora_gpt_sovits.nodes.text_input import StopRequest, TextRequest, parse_line
from dora_gpt_sovits.nodes.vocoder import VocoderStage

SR = 32000
OLD, NEW = 100.0, 200.0  # text_received_at of an utterance before / after the stop at 150
STOP_AT = 150.0


def key(utt: str, received: float, segment: int = 0, final: bool = True) -> m.SegmentKey:
    return m.SegmentKey(utt, segment, final, "default", received)


def stop(utterance_id: str = "", at: float = STOP_AT) -> tuple[pa.Array, dict[str, Any]]:
    return m.ControlCommand(at, utterance_id).to_message()


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---- the contract ---------------------------------------------------------------------------------
def test_control_messages_parse_stop_named_stop_and_foreign_signals():
    cmd = m.ControlCommand.from_event(m.text_array("stop"), {}, stamp=5.0)
    assert (cmd.cancel_before, cmd.utterance_id) == (5.0, "")
    cmd = m.ControlCommand.from_event(m.text_array(" STOP "), {m.UTTERANCE_ID: "u1", m.CANCEL_BEFORE: 3.0}, stamp=5.0)
    assert (cmd.cancel_before, cmd.utterance_id) == (3.0, "u1")  # the sender's own stamp wins
    # dora-vad's timestamp_start (Int64 array) is a barge-in too, and always stops everything.
    cmd = m.ControlCommand.from_event(pa.array([1234], pa.int64()), {m.UTTERANCE_ID: "x"}, stamp=7.0)
    assert (cmd.cancel_before, cmd.utterance_id) == (7.0, "")
    with pytest.raises(m.MessageError, match="unknown command 'pause'"):
        m.ControlCommand.from_event(m.text_array("pause"), {}, stamp=1.0)
    with pytest.raises(m.MessageError, match="cancel_before"):
        m.ControlCommand.from_event(m.text_array("stop"), {})
    data, md = m.ControlCommand(9.5, "u2").to_message()
    assert m.read_text(data) == "stop" and md == {m.CANCEL_BEFORE: 9.5, m.UTTERANCE_ID: "u2"}


def test_cancellations_keep_the_highest_watermark_and_named_utterances():
    c = Cancellations()
    c.apply(m.ControlCommand(STOP_AT))
    c.apply(m.ControlCommand(STOP_AT - 50))  # an older stop arriving late lowers nothing
    c.apply(m.ControlCommand(0.0, "late"))
    assert c.cancels(key("a", OLD)) and not c.cancels(key("b", NEW)) and c.cancels(key("late", NEW))


def test_segment_complete_round_trips_with_error_and_cancelled():
    done = m.SegmentComplete(key("u", OLD, 2, False), error="boom", cancelled=True)
    back = m.SegmentComplete.from_event(*done.to_message())
    assert back == done and done.to_message()[1][m.CANCELLED] is True


def test_text_input_turns_control_lines_into_stops():
    assert parse_line('{"control": "stop"}', "auto", "default") == StopRequest("")
    assert parse_line('{"control": "stop", "utterance_id": "u7"}', "auto", "default") == StopRequest("u7")
    with pytest.raises(ValueError, match="unknown control command"):
        parse_line('{"control": "pause"}', "auto", "default")
    request = parse_line('{"text": "hi", "utterance_id": "mine"}', "auto", "default")
    assert isinstance(request, TextRequest) and request.to_message()[1][m.UTTERANCE_ID] == "mine"
    data, md = StopRequest("u7").to_message()
    assert m.read_text(data) == "stop" and md[m.UTTERANCE_ID] == "u7" and md[m.CANCEL_BEFORE] > 0


# ---- text-frontend --------------------------------------------------------------------------------
LONG_TEXT = "第一句话。第二句话。第三句话。第四句话。第五句话。"


def frontend(window: int = 0, clock: Clock | None = None) -> TextFrontendStage:
    stage = TextFrontendStage(max_segments_ahead=window, clock=clock or Clock(STOP_AT))
    stage.prompts["default"] = ("", "zh")  # reference-free voice: no round trip to the reference node
    return stage


def text_msg(text: str, utt: str, received: float):
    return m.text_array(text), {m.UTTERANCE_ID: utt, m.TEXT_RECEIVED_AT: received, m.LANGUAGE: "zh"}


def phoneme_keys(outgoing) -> list[tuple[str, int]]:
    return [(o.metadata[m.UTTERANCE_ID], o.metadata[m.SEGMENT_INDEX]) for o in outgoing if o.output_id == m.PHONEMES]


def complete(utt: str, index: int, received: float = OLD, **kw):
    return m.SegmentComplete(key(utt, received, index, False), **kw).to_message()


def test_frontend_window_holds_segments_until_the_sink_completes_them():
    stage = frontend(window=2)
    assert phoneme_keys(stage.handle(m.TEXT, *text_msg(LONG_TEXT, "u1", OLD))) == [("u1", 0), ("u1", 1)]
    assert stage.pending()  # batch runs must not end while segments are held
    assert phoneme_keys(stage.handle(m.TEXT, *text_msg("再来一句。", "u2", OLD + 1))) == []
    assert phoneme_keys(stage.handle(m.SEGMENT_COMPLETE, *complete("u1", 0))) == [("u1", 2)]
    assert phoneme_keys(stage.handle(m.SEGMENT_COMPLETE, *complete("u9", 0))) == []  # unknown: ignored
    # A failed segment frees its slot like any other.
    assert phoneme_keys(stage.handle(m.SEGMENT_COMPLETE, *complete("u1", 1, error="vocoder broke"))) == [("u1", 3)]
    released = []
    for index in (2, 3, 4):
        released += phoneme_keys(stage.handle(m.SEGMENT_COMPLETE, *complete("u1", index)))
    assert released == [("u1", 4), ("u2", 0)]  # utterances leave in order, never interleaved
    assert not stage.pending()


class OneAtATime(RecordingNode):
    """Events arrive only through ``next()``: nothing is queued when the loop drains after a close,
    as when the sink's reports are still on their way."""

    def try_recv(self):
        return None


def test_a_batch_frontend_stays_until_the_window_released_everything():
    # text closes at once, but the node must serve segment_complete until its last segment left.
    completions = [input_event(m.SEGMENT_COMPLETE, *complete("u1", i)) for i in range(5)]
    node = OneAtATime([input_event(m.TEXT, *text_msg(LONG_TEXT, "u1", OLD)), closed_event(m.TEXT), *completions])
    stage = frontend(window=2)
    serve(node, stage)
    assert [md[m.SEGMENT_INDEX] for _, md in node.outputs(m.PHONEMES)] == [0, 1, 2, 3, 4]
    assert not stage.pending()


def test_frontend_without_window_releases_everything_at_once():
    stage = frontend(window=0)
    assert len(phoneme_keys(stage.handle(m.TEXT, *text_msg(LONG_TEXT, "u1", OLD)))) == 5
    assert not stage.pending()


def test_frontend_stop_stamps_fans_out_and_frees_the_cancelled_slots():
    stage = frontend(window=2, clock=Clock(STOP_AT))
    list(stage.handle(m.TEXT, *text_msg(LONG_TEXT, "u1", OLD)))
    out = list(stage.handle(m.CONTROL, m.text_array("stop"), {}))
    (control,) = [o for o in out if o.output_id == m.CONTROL]
    assert control.metadata == {m.CANCEL_BEFORE: STOP_AT}  # stamped with the frontend's clock
    assert phoneme_keys(out) == [] and not stage.pending() and not stage.in_flight
    # Text that entered the graph before the stop but reached the frontend after it is dropped too;
    # a new utterance gets the whole window at once.
    assert phoneme_keys(stage.handle(m.TEXT, *text_msg("旧的。", "u0", OLD + 1))) == []
    assert phoneme_keys(stage.handle(m.TEXT, *text_msg(LONG_TEXT, "u2", NEW))) == [("u2", 0), ("u2", 1)]


def test_frontend_named_stop_cancels_only_that_utterance():
    stage = frontend(window=3)
    list(stage.handle(m.TEXT, *text_msg(LONG_TEXT, "u1", OLD)))
    list(stage.handle(m.TEXT, *text_msg("第二个请求。", "u2", OLD + 1)))
    out = list(stage.handle(m.CONTROL, *stop("u1")))
    assert out[0].metadata[m.UTTERANCE_ID] == "u1"
    assert phoneme_keys(out) == [("u2", 0)]  # u1's three slots were freed at once


def test_frontend_treats_a_foreign_signal_as_stop_and_logs_unknown_words(caplog):
    node = RecordingNode(
        [
            input_event(m.CONTROL, m.text_array("pause")),
            input_event(m.CONTROL, pa.array([16000], pa.int64())),  # dora-vad's timestamp_start
        ]
    )
    serve(node, frontend())
    controls = node.outputs(m.CONTROL)
    assert len(controls) == 1 and m.read_text(controls[0][0]) == "stop" and m.UTTERANCE_ID not in controls[0][1]
    assert "unknown command 'pause'" in caplog.text


# ---- bert -----------------------------------------------------------------------------------------
def test_bert_drops_segments_of_cancelled_utterances():
    stage = BertStage(lambda text, word2ph: torch.zeros(m.FEATURE_DIM, sum(word2ph)))

    def segment(utt, received):
        return m.PhonemeSegment(key(utt, received), np.arange(3), 0, ["en"], ["abc"], [3], []).to_message()

    assert list(stage.handle(m.CONTROL, *stop())) == []
    assert list(stage.handle(m.PHONEMES, *segment("old", OLD))) == []
    assert len(list(stage.handle(m.PHONEMES, *segment("new", NEW)))) == 1


# ---- gpt ------------------------------------------------------------------------------------------
class ControlAfter(RecordingNode):
    """Delivers the held-back control event only once ``ready()`` is true (dora would deliver it
    whenever it arrives; this pins the moment to the middle of a decode)."""

    def __init__(self, events, control: dict[str, Any], ready):
        super().__init__(events)
        self.control, self.ready = control, ready

    def try_recv(self):
        if self.control is not None and self.ready():
            event, self.control = self.control, None
            return event
        return super().try_recv()


def features(utt: str, received: float, segment: int = 0):
    return m.PhoneFeatures(key(utt, received, segment), torch.ones(m.FEATURE_DIM, 3), [10, 11, 12], 1).to_message()


def test_gpt_stops_mid_segment_when_serve_polls_a_stop_and_keeps_the_new_utterance():
    decoded = []

    def decode(phone_ids, feats, prompt, seed, options):
        for token in range(100):
            decoded.append(token)
            yield token

    stage = GPTStage(decode, ChunkPolicy(first_chunk_tokens=4, chunk_tokens=10, growth=2.0))
    prompt = m.ReferencePart("default", np.array([1, 2], np.int64)).to_message()
    events = [
        input_event(m.PROMPT_SEMANTIC, *prompt),
        input_event(m.PHONE_FEATURES, *features("old", OLD)),
        input_event(m.PHONE_FEATURES, *features("old", OLD, segment=1)),  # queued behind: dropped
        input_event(m.PHONE_FEATURES, *features("new", NEW)),
    ]
    node = ControlAfter(events, input_event(m.CONTROL, *stop()), ready=lambda: len(decoded) == 20)
    serve(node, stage)
    chunks = [m.SemanticChunk.from_event(d, md) for d, md in node.outputs(m.SEMANTIC_TOKENS)]
    old = [c for c in chunks if c.key.utterance_id == "old"]
    new = [c for c in chunks if c.key.utterance_id == "new"]
    # The stop landed while segment 0 was at token 20: no chunk of it after that, segment 1 never ran.
    assert [len(c.tokens) for c in old] == [4, 8] and not any(c.segment_final for c in old)
    assert {c.key.segment_index for c in old} == {0}
    assert sum(len(c.tokens) for c in new) == 100 and new[-1].segment_final
    assert len(decoded) == 20 + 100


def test_gpt_drops_held_segments_of_a_named_utterance():
    stage = GPTStage(lambda *_: iter(range(3)))
    list(stage.handle(m.PHONE_FEATURES, *features("a", OLD)))  # waits for its voice's prompt
    list(stage.handle(m.PHONE_FEATURES, *features("b", OLD)))
    list(stage.handle(m.CONTROL, *stop("a")))
    out = [
        o
        for o in stage.handle(m.PROMPT_SEMANTIC, *m.ReferencePart("default", np.array([1], np.int64)).to_message())
        if o
    ]
    assert {o.metadata[m.UTTERANCE_ID] for o in out} == {"b"}


# ---- vocoder --------------------------------------------------------------------------------------
def fake_make_decoder(cond, phone_ids, seed, speed):
    def decode(history, run, lookahead, position):
        return torch.full((len(run) * 640,), 0.25), torch.zeros(0)  # 640 samples per token, as v2

    return decode


def vocoder(**kwargs) -> VocoderStage:
    stage = VocoderStage(lambda spec, sv: "cond", fake_make_decoder, SR, needs_speaker_embedding=False, **kwargs)
    list(
        stage.handle(m.REFERENCE_SPECTROGRAM, *m.ReferencePart("default", np.ones((1025, 8), np.float32)).to_message())
    )
    return stage


def tokens(utt, received, n, index, final, segment=0):
    return m.SemanticChunk(key(utt, received, segment), np.arange(n, dtype=np.int64), index, final, [1, 2]).to_message()


def audio_msgs(outgoing):
    return [o for o in outgoing if o is not None and o.output_id == m.AUDIO]


def test_vocoder_cancel_drops_the_open_segment_and_flushes_the_next_utterance():
    stage = vocoder()
    assert audio_msgs(stage.handle(m.SEMANTIC_TOKENS, *tokens("old", OLD, 40, 0, False)))
    list(stage.handle(m.CONTROL, *stop()))
    assert not stage.open
    assert audio_msgs(stage.handle(m.SEMANTIC_TOKENS, *tokens("old", OLD, 40, 1, True))) == []  # arrives late
    first, *rest = audio_msgs(stage.handle(m.SEMANTIC_TOKENS, *tokens("new", NEW, 40, 0, True)))
    assert first.metadata[m.FLUSH] is True  # a real bool, as dora's get_bool_param reads it
    assert all(m.FLUSH not in o.metadata for o in rest)
    assert all(
        m.FLUSH not in o.metadata for o in audio_msgs(stage.handle(m.SEMANTIC_TOKENS, *tokens("n2", NEW, 9, 0, True)))
    )


def test_vocoder_named_stop_keeps_other_utterances_and_does_not_flush():
    stage = vocoder()
    list(stage.handle(m.SEMANTIC_TOKENS, *tokens("a", OLD, 40, 0, False)))
    list(stage.handle(m.SEMANTIC_TOKENS, *tokens("b", OLD, 40, 0, False)))
    list(stage.handle(m.CONTROL, *stop("a")))
    assert [seg.key.utterance_id for seg in stage.open.values()] == ["b"]
    out = audio_msgs(stage.handle(m.SEMANTIC_TOKENS, *tokens("b", OLD, 10, 1, True)))
    assert out and all(m.FLUSH not in o.metadata for o in out)


def samples_of(outgoing) -> int:
    return sum(len(o.data) for o in audio_msgs(outgoing))


def test_vocoder_holds_chunks_for_longer_runs_while_it_has_audio_in_hand():
    clock = Clock(0.0)
    stage = vocoder(coalesce_lead_seconds=3.0, clock=clock)
    # Segment 0 arrives whole: 300 tokens = 6 s of the stand-in's audio (+ 0.3 s pause) sent at t = 0.
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 300, 0, True))) == 300 * 640 + int(0.3 * SR)
    assert stage.lead_seconds("u") == pytest.approx(6.3)
    assert stage.lead_seconds("other") == 0.0  # each utterance is its own stream
    clock.t = 1.0  # 5.3 s in hand: segment 1's first chunks wait for a longer run
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 0, False, segment=1))) == 0
    clock.t = 3.0  # 3.3 s in hand
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 1, False, segment=1))) == 0
    clock.t = 3.5  # 2.8 s: below the threshold, everything held goes out in one run (minus the lookahead)
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 2, False, segment=1))) == (60 - 4) * 640
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 10, 3, True, segment=1))) == 14 * 640 + int(
        0.3 * SR
    )
    assert stage.open == {}
    # The next utterance starts with nothing in hand, however much the last one still has.
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("v", OLD, 20, 0, False))) == 16 * 640


def test_vocoder_holds_no_more_than_the_lead_pays_for():
    clock = Clock(0.0)
    stage = vocoder(coalesce_lead_seconds=1.0, clock=clock)
    list(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 300, 0, True)))  # 6.3 s in hand at t = 0
    stage.seconds_per_token = 0.05  # as if vocoding were slow: 2 s for 40 tokens
    clock.t = 1.0  # 5.3 s in hand >= 1 s + 20 tokens' 1 s of vocoding: held
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 0, False, segment=1))) == 0
    clock.t = 2.0  # 4.3 s >= 1 s + 40 tokens' 2 s: held
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 1, False, segment=1))) == 0
    clock.t = 2.5  # 3.8 s: 60 tokens would cost 3 s and leave less than 1 s in hand, so they go now
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 2, False, segment=1))) == (60 - 4) * 640
    assert stage.lead_seconds("u") > 1.0


def test_vocoder_holds_nothing_before_it_has_timed_a_run():
    clock = Clock(0.0)
    stage = vocoder(coalesce_lead_seconds=1.0, clock=clock)
    stage.playback["u"] = PlaybackClock(prebuffer_s=0.0)
    stage.playback["u"].arrive(0.0, 10.0)  # plenty in hand, but no idea yet what a run costs
    assert stage.seconds_per_token is None
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 0, False))) == 16 * 640
    assert stage.seconds_per_token is not None and stage.seconds_per_token > 0


def test_vocoder_without_lead_vocodes_every_chunk_and_a_stop_forgets_the_lead():
    clock = Clock(0.0)
    stage = vocoder(coalesce_lead_seconds=3.0, clock=clock)
    list(stage.handle(m.SEMANTIC_TOKENS, *tokens("old", OLD, 300, 0, True)))
    list(stage.handle(m.CONTROL, *stop()))  # the sink dropped what it had: nothing is in hand
    assert stage.lead_seconds("old") == 0.0
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("new", NEW, 20, 0, False))) == 16 * 640
    off = vocoder(clock=clock)  # coalescing off (the stage's default; the node turns it on)
    list(off.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 300, 0, True)))
    assert samples_of(off.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 0, False, segment=1))) == 16 * 640


def counting_vocoder(runs: list[int], **kwargs) -> VocoderStage:
    """The stand-in vocoder, recording the token count of every run it decodes."""

    def make_decoder(cond, phone_ids, seed, speed):
        def decode(history, run, lookahead, position):
            runs.append(len(run))
            return torch.full((len(run) * 640,), 0.25), torch.zeros(0)

        return decode

    stage = VocoderStage(lambda spec, sv: "cond", make_decoder, SR, needs_speaker_embedding=False, **kwargs)
    list(
        stage.handle(m.REFERENCE_SPECTROGRAM, *m.ReferencePart("default", np.ones((1025, 8), np.float32)).to_message())
    )
    return stage


def backlogged_segment(clock: Clock, coalesce_queued: bool) -> tuple[list[int], RecordingNode]:
    """Segment 0 whole (6.3 s in hand), then segment 1 in four chunks that all wait in the queue."""
    runs: list[int] = []
    stage = counting_vocoder(runs, clock=clock, coalesce_queued=coalesce_queued)
    stage.seconds_per_token = 0.01  # as measured: 1 s of audio (50 tokens) costs 0.5 s
    chunks = [(20, 0, False), (20, 1, False), (20, 2, False), (10, 3, True)]
    node = RecordingNode(
        [input_event(m.SEMANTIC_TOKENS, *tokens("u", OLD, 300, 0, True))]
        + [input_event(m.SEMANTIC_TOKENS, *tokens("u", OLD, n, i, f, segment=1)) for n, i, f in chunks]
        + [closed_event(m.SEMANTIC_TOKENS)]
    )
    serve(node, stage, clock=clock)
    return runs, node


def test_vocoder_vocodes_a_chunk_with_the_next_one_when_that_one_already_waits():
    runs, node = backlogged_segment(Clock(0.0), coalesce_queued=True)
    assert runs == [300, 70]  # segment 1 in one run: each chunk's successor was already queued
    off, node_off = backlogged_segment(Clock(0.0), coalesce_queued=False)
    assert off == [300, 16, 20, 20, 14]  # one run per chunk (the first keeps 4 tokens of lookahead)
    # The same audio leaves either way (the stand-in decodes tokens independently of the runs).
    merged, per_chunk = (np.concatenate([d.to_numpy() for d, _ in n.outputs(m.AUDIO)]) for n in (node, node_off))
    assert np.array_equal(merged, per_chunk) and len(merged) == 370 * 640 + 2 * int(0.3 * SR)


def test_a_stop_found_while_looking_at_the_backlog_is_applied_before_the_chunk_is_vocoded():
    runs: list[int] = []
    stage = counting_vocoder(runs, coalesce_queued=True)
    node = RecordingNode(
        [
            input_event(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 0, False)),
            input_event(m.CONTROL, *stop()),
            input_event(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 1, True)),
            closed_event(m.SEMANTIC_TOKENS),
        ]
    )
    serve(node, stage)
    assert runs == [] and node.outputs(m.AUDIO) == []


class FakeQueue:
    """The node loop's queue as a stage sees it: ``queued_events()`` and ``take_queued`` (by identity)."""

    def __init__(self, stage: VocoderStage):
        self.events: list[dict[str, Any]] = []
        stage.queued_events, stage.take_queued = lambda: tuple(self.events), self.take

    def take(self, event: dict[str, Any]) -> None:
        del self.events[next(i for i, queued in enumerate(self.events) if queued is event)]

    def put(self, *messages: tuple[pa.Array, dict[str, Any]]) -> None:
        self.events[:] = [input_event(m.SEMANTIC_TOKENS, *msg) for msg in messages]


def test_vocoder_joins_a_queued_chunk_only_while_the_audio_in_hand_pays_for_it():
    clock = Clock(0.0)
    runs: list[int] = []
    stage = counting_vocoder(runs, clock=clock, coalesce_queued=True)
    queue = FakeQueue(stage)
    list(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 50, 0, True)))  # 1.3 s in hand at t = 0
    stage.seconds_per_token = 0.03
    # 40 tokens cost 1.2 s <= 1.3 s in hand: the waiting chunk is taken and both go in one run.
    queue.put(tokens("u", OLD, 20, 1, False, segment=1))
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 0, False, segment=1))) == 36 * 640
    assert queue.events == [] and runs == [50, 36]
    clock.t, stage.seconds_per_token = 0.5, 0.03  # 1.52 s in hand; 4 held + 20 + 40 tokens would cost 1.92 s
    queue.put(tokens("u", OLD, 40, 3, False, segment=1))
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 2, False, segment=1))) == 20 * 640
    assert len(queue.events) == 1
    # What waits must be the segment's very next chunk: a later one, or another utterance's, does not count.
    for segment, other in ((2, tokens("u", OLD, 20, 2, False, segment=2)), (3, tokens("v", OLD, 20, 1, False))):
        queue.put(other)
        assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 0, False, segment=segment))) > 0
        assert len(queue.events) == 1


def test_vocoder_under_a_backlog_of_other_utterances_joins_whatever_the_lead_but_not_at_a_segment_start():
    clock = Clock(100.0)  # nothing in hand for anybody
    runs: list[int] = []
    stage = counting_vocoder(runs, clock=clock, coalesce_queued=True)
    stage.seconds_per_token = 0.03
    queue = FakeQueue(stage)
    # This chunk starts its segment: it goes alone, whatever waits.
    queue.put(tokens("v", OLD, 20, 2, False), tokens("u", OLD, 20, 1, False))
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 0, False))) == 16 * 640
    # Mid-segment with another utterance's chunks waiting: the node is the bottleneck, so it joins.
    queue.put(tokens("v", OLD, 20, 2, False), tokens("u", OLD, 20, 2, False), tokens("u", OLD, 10, 3, True))
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 1, False))) == 54 * 640 + int(0.3 * SR)
    assert [e["metadata"][m.UTTERANCE_ID] for e in queue.events] == ["v"]
    assert runs == [16, 54]
    # ... but not while another utterance waits at a segment's start (its first audio).
    queue.put(tokens("w", OLD, 20, 0, False), tokens("u", OLD, 20, 2, False, segment=1))
    list(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 0, False, segment=1)))
    assert samples_of(stage.handle(m.SEMANTIC_TOKENS, *tokens("u", OLD, 20, 1, False, segment=1))) == 20 * 640
    assert len(queue.events) == 2


def test_pacer_holds_audio_beyond_the_lead_and_releases_it_on_the_deadline():
    clock = Clock(10.0)
    pacer: Pacer[str] = Pacer(max_lead=1.0, clock=clock)
    assert pacer.offer("a", 1.0) == ["a"]  # nothing ahead yet
    assert pacer.offer("b", 1.0) == ["b"]  # 1 s ahead: within the lead
    assert pacer.offer("c", 1.0) == [] and pacer.next_deadline() == 11.0
    clock.t = 10.9
    assert pacer.release() == []
    clock.t = 11.0
    assert pacer.release() == ["c"] and pacer.next_deadline() is None
    pacer.offer("d", 1.0, tag="old")
    assert pacer.discard(lambda tag: tag == "old") == 1 and not pacer.held
    pacer.restart()  # after a barge-in the consumer holds nothing of ours
    assert pacer.offer("e", 1.0) == ["e"]


def test_pacer_keeps_no_more_short_messages_waiting_than_the_consumer_queue_holds():
    clock = Clock(0.0)
    pacer: Pacer[int] = Pacer(max_lead=2.0, clock=clock, max_queued=3)
    # 0.1 s messages: 2 s of lead would let 20 wait; only 1 playing + 3 waiting leave.
    assert [out for i in range(10) for out in pacer.offer(i, 0.1)] == [0, 1, 2, 3]
    assert pacer.next_deadline() == pytest.approx(0.1)  # when message 1 starts, one slot frees
    clock.t = 0.1
    assert pacer.release() == [4] and pacer.next_deadline() == pytest.approx(0.2)
    clock.t = 0.35  # messages 2 and 3 have started meanwhile
    assert pacer.release() == [5, 6]
    pacer.restart()  # a flush emptied the consumer's queue
    assert pacer.release() == [7, 8, 9]


class TimedNode(RecordingNode):
    """A node whose ``next(timeout)`` lets a fake clock run and answers like dora does on timeout;
    it records the clock at every send."""

    def __init__(self, events, clock: Clock):
        super().__init__(events)
        self.clock, self.sent_at = clock, []
        self.pending = list(events)

    def next(self, timeout=None):
        if self.mock._events and self.mock._events[0].get("type") != "STOP":
            return super().next(timeout)
        if timeout is not None:
            self.clock.t += timeout
            return {"type": "ERROR", "error": "Timeout event stream error: Receiver timed out"}
        return super().next(timeout)

    def try_recv(self):
        return None  # nothing arrives while a handle() runs: events come through next()

    def send_output(self, output_id, data, metadata=None):
        super().send_output(output_id, data, metadata)
        self.sent_at.append(self.clock.t)


def test_serve_paces_vocoder_audio_to_real_time_and_ends_after_the_last_release():
    clock = Clock(0.0)
    stage = vocoder(max_lead_seconds=0.5, clock=clock)
    node = TimedNode(
        [input_event(m.SEMANTIC_TOKENS, *tokens("u", OLD, 150, 0, True)), closed_event(m.SEMANTIC_TOKENS)], clock
    )
    serve(node, stage, clock=clock, sleep=lambda s: None)
    durations = [len(d) / SR for d, _ in node.outputs(m.AUDIO)]
    assert durations == pytest.approx([1.0, 1.0, 1.0, 0.3])  # 150 tokens = 3 s, plus the 0.3 s pause
    # Message k leaves once the audio before it is at most 0.5 s ahead of real-time playback.
    ahead = np.cumsum([0.0] + durations[:-1])
    assert node.sent_at == pytest.approx(np.maximum(0.0, ahead - 0.5).tolist())
    assert not stage.pending()


def test_serve_handles_a_stop_while_waiting_for_a_pacing_deadline():
    clock = Clock(0.0)
    stage = vocoder(max_lead_seconds=0.0, clock=clock)
    events = [
        input_event(m.SEMANTIC_TOKENS, *tokens("old", OLD, 150, 0, True)),
        input_event(m.CONTROL, *stop()),  # arrives while three messages are held
        input_event(m.SEMANTIC_TOKENS, *tokens("new", NEW, 10, 0, True)),
    ]
    node = TimedNode(events, clock)
    serve(node, stage, clock=clock, sleep=lambda s: None)
    utterances = [md[m.UTTERANCE_ID] for _, md in node.outputs(m.AUDIO)]
    assert utterances == ["old", "new"]  # only the first second of "old" had left
    assert node.sent_at[1] == 0.0  # the new utterance did not wait for the dropped audio
    assert node.outputs(m.AUDIO)[1][1][m.FLUSH] is True


# ---- audio sink -----------------------------------------------------------------------------------
class FakePlayer:
    """The speaker's jitter buffer without a device: the test plays samples by calling ``play``."""

    def __init__(self):
        self.buffer = JitterBuffer(prebuffer_samples=0)
        self.underruns = 0

    written = property(lambda self: self.buffer.written)
    consumed = property(lambda self: self.buffer.consumed)

    def write(self, samples, complete, tag=None):
        self.buffer.write(samples, complete, tag)

    def discard(self, drop):
        return self.buffer.discard(drop)

    def play(self, n):
        self.buffer.read(np.empty(n, np.float32))

    def drain(self):
        pass


def audio(utt, received, n, segment=0, index=0, seg_final=True, utt_final=True):
    k = key(utt, received, segment, utt_final)
    return m.AudioChunk(k, np.full(n, 0.1, np.float32), SR, index, seg_final).to_message()


def outputs_of(outgoing, port):
    return [o for o in outgoing if o.output_id == port]


def test_sink_stop_silences_the_speaker_reports_the_cancel_and_drops_late_audio():
    clock = Clock(STOP_AT + 0.02)
    stage = AudioSinkStage("speaker", clock=clock)
    player = stage.players[SR] = FakePlayer()
    list(stage.handle(m.AUDIO, *audio("old", OLD, 8000, seg_final=False, utt_final=False)))
    list(stage.handle(m.AUDIO, *audio("new", NEW, 4000, seg_final=False)))  # submitted after the stop
    out = list(stage.handle(m.CONTROL, *stop()))
    assert player.buffer.queued == 4000  # only the new utterance's audio is left to play
    (metrics,) = outputs_of(out, m.METRICS)
    report = json.loads(m.read_text(metrics.data))
    assert report["utterance_id"] == "old" and report["cancelled"] is True
    assert report["stop_to_silence_s"] == pytest.approx(0.02)
    (done,) = [m.SegmentComplete.from_event(o.data, o.metadata) for o in outputs_of(out, m.SEGMENT_COMPLETE)]
    assert done.cancelled and done.key.utterance_id == "old" and done.key.utterance_final
    assert list(stage.handle(m.AUDIO, *audio("old", OLD, 8000, segment=1))) == []  # late: dropped
    assert player.buffer.queued == 4000


def test_sink_reports_a_segment_complete_only_once_the_speaker_consumed_it():
    stage = AudioSinkStage("speaker", clock=Clock(0.0), monotonic=Clock(0.0))
    player = stage.players[SR] = FakePlayer()
    list(stage.handle(m.AUDIO, *audio("u", OLD, 1000, segment=0, utt_final=False)))
    list(stage.handle(m.AUDIO, *audio("u", OLD, 1000, segment=1, utt_final=True)))
    assert stage.next_deadline() is not None
    player.play(999)
    assert list(stage.tick()) == []
    player.play(500)
    (first,) = stage.tick()
    assert m.SegmentComplete.from_event(first.data, first.metadata).key.segment_index == 0
    player.play(501)
    (second,) = stage.tick()
    assert second.metadata[m.SEGMENT_INDEX] == 1 and stage.next_deadline() is None


class RealTimePlayer(FakePlayer):
    """Plays at real-time speed on a fake clock, from time 0."""

    def __init__(self, clock: Clock):
        super().__init__()
        self.clock = clock

    consumed = property(lambda self: min(self.buffer.written, int(self.clock.t * SR)))


def test_serve_reports_segments_of_a_speaker_sink_as_they_finish_playing():
    clock = Clock(0.0)
    stage = AudioSinkStage("speaker", clock=clock, monotonic=clock)
    stage.players[SR] = RealTimePlayer(clock)
    events = [
        input_event(m.AUDIO, *audio("u", OLD, SR // 2, segment=0, utt_final=False)),  # 0.5 s
        input_event(m.AUDIO, *audio("u", OLD, SR, segment=1, utt_final=True)),  # 1.0 s more
    ]
    node = TimedNode(events, clock)
    serve(node, stage, clock=clock, sleep=lambda s: None)
    done = [(md[m.SEGMENT_INDEX], t) for (o, _, md), t in zip(node.sent, node.sent_at) if o == m.SEGMENT_COMPLETE]
    assert [i for i, _ in done] == [0, 1]
    assert done[0][1] == pytest.approx(0.5) and done[1][1] == pytest.approx(1.5)  # not before it was heard


def test_sink_in_null_mode_completes_each_segment_at_once_with_its_error():
    stage = AudioSinkStage("null", clock=Clock(0.0))
    out = list(
        stage.handle(
            m.AUDIO,
            *m.AudioChunk(key("u", OLD, 0, False), np.zeros(0, np.float32), SR, 0, True, error="bad").to_message(),
        )
    )
    (done,) = outputs_of(out, m.SEGMENT_COMPLETE)
    assert done.metadata[m.ERROR] == "bad" and done.metadata[m.SEGMENT_INDEX] == 0


def test_jitter_buffer_discards_one_utterance_and_counts_it_as_consumed():
    buffer = JitterBuffer(prebuffer_samples=0)
    buffer.write(np.ones(10, np.float32), False, tag="a")
    buffer.write(np.ones(5, np.float32), False, tag="b")
    buffer.read(np.empty(4, np.float32))
    assert buffer.discard(lambda tag: tag == "a") == 6
    assert (buffer.queued, buffer.consumed, buffer.written) == (5, 10, 15)
    buffer.discard(lambda tag: True)
    out = np.ones(8, np.float32)
    buffer.read(out)
    assert not out.any() and buffer.underruns == 0  # intended silence is not an underrun
