"""Fair scheduling across utterances (issue #19): a new utterance's first segment overtakes the
backlog of earlier ones in text-frontend, bert and the vocoder, each utterance's order kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import yaml
from conftest import REPO, RecordingNode, closed_event, input_event

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.node_runtime import serve
from dora_gpt_sovits.nodes.bert_features import BertStage
from dora_gpt_sovits.nodes.text_frontend import TextFrontendStage
from dora_gpt_sovits.nodes.vocoder import VocoderStage
from dora_gpt_sovits.sovits.token_stream import StreamPolicy

LONG = "今天天气很好。我们去公园散步吧。公园里有很多花。小鸟在树上唱歌。我们一起回家吧。"
SHORT = "今天下雨了。我们在家看书吧。"
OTHER = "天空很蓝很蓝。河水慢慢地流。山上开满了花。"


def voice_prompt() -> dict[str, Any]:
    return input_event(m.VOICE_PROMPT, *m.ReferencePart("default", "", language="zh").to_message())


def text(content: str, utterance: str) -> dict[str, Any]:
    return input_event(m.TEXT, m.text_array(content), {m.UTTERANCE_ID: utterance})


def keys(node: RecordingNode, output: str = m.PHONEMES) -> list[tuple[str, int]]:
    out = []
    for _, md in node.outputs(output):
        key = m.SegmentKey.from_metadata(md, output)
        out.append((key.utterance_id, key.segment_index))
    return out


def utterance_order(order: list[tuple[str, int]], utterance: str) -> list[int]:
    return [i for u, i in order if u == utterance]


def test_frontend_without_a_window_releases_round_robin_and_a_new_text_goes_first():
    node = RecordingNode([voice_prompt(), text(LONG, "L"), text(SHORT, "S"), closed_event(m.TEXT)])
    serve(node, TextFrontendStage(fair=True))
    order = keys(node)
    long_segments = utterance_order(order, "L")
    assert long_segments == list(range(5)) and utterance_order(order, "S") == [0, 1]  # all out, in order
    # The short text, read after the long one's first two steps, went out before the rest of it.
    assert order.index(("S", 0)) < order.index(("L", 2))
    assert order.index(("S", 1)) < order.index(("L", 4))  # then turns alternate


def test_frontend_round_robin_starves_nobody():
    events = [voice_prompt(), text(LONG, "A"), text(OTHER, "B"), text(SHORT, "C"), closed_event(m.TEXT)]
    node = RecordingNode(events)
    serve(node, TextFrontendStage(fair=True))
    order = keys(node)
    # The texts came one after another; the long one did not run ahead to its end meanwhile.
    assert order.index(("B", 2)) < order.index(("A", 4)) and order.index(("C", 1)) < order.index(("A", 4))
    assert [utterance_order(order, u) for u in "ABC"] == [list(range(5)), [0, 1, 2], [0, 1]]


def test_frontend_without_fair_scheduling_is_first_in_first_out():
    node = RecordingNode([voice_prompt(), text(LONG, "L"), text(SHORT, "S"), closed_event(m.TEXT)])
    serve(node, TextFrontendStage())
    assert keys(node) == [("L", i) for i in range(5)] + [("S", 0), ("S", 1)]


def test_frontend_with_a_window_keeps_utterance_order_even_when_fair():
    """Round-robin could fill the window with a later utterance the sink will not play yet."""
    stage = TextFrontendStage(max_segments_ahead=2, fair=True)
    list(stage.handle(*event_args(voice_prompt())))
    first = segments(stage.handle(*event_args(text(LONG, "L"))))
    assert first == [("L", 0), ("L", 1)]
    assert segments(stage.handle(*event_args(text(SHORT, "S")))) == []  # waits for the window
    assert stage.next_deadline() is None  # nothing is released by ticks with a window
    released = []
    for index in range(7):
        done = m.SegmentComplete(m.SegmentKey(*released_key(first + released, index))).to_message()
        released += segments(stage.handle(m.SEGMENT_COMPLETE, *done))
    assert released == [("L", 2), ("L", 3), ("L", 4), ("S", 0), ("S", 1)]


def released_key(order: list[tuple[str, int]], index: int) -> tuple[str, int, bool]:
    utterance, segment = order[index]
    return utterance, segment, False


def event_args(event: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    return event["id"], event["value"], event["metadata"]


def segments(outgoing) -> list[tuple[str, int]]:
    return [
        (md[m.UTTERANCE_ID], md[m.SEGMENT_INDEX]) for o in outgoing if o.output_id == m.PHONEMES for md in [o.metadata]
    ]


def test_frontend_a_stop_drops_the_held_rest_of_one_utterance_and_the_others_go_on():
    stage = TextFrontendStage(fair=True)
    list(stage.handle(*event_args(voice_prompt())))
    assert segments(stage.handle(*event_args(text(LONG, "L")))) == [("L", 0)]
    assert segments(stage.handle(*event_args(text(SHORT, "S")))) == [("S", 0)]
    stop = m.ControlCommand(m.now() + 1.0, "L").to_message()
    list(stage.handle(m.CONTROL, *stop))
    rest = []
    while stage.next_deadline() is not None:
        rest += segments(stage.tick())
    assert rest == [("S", 1)] and not stage.pending()


# ---- bert and the vocoder: opted in on their data input --------------------------------------------
def phonemes(utterance: str, index: int, final: bool = False) -> dict[str, Any]:
    key = m.SegmentKey(utterance, index, final, "default", 100.0)
    segment = m.PhonemeSegment(key, np.array([1, 2], np.int64), 0, ["en"], ["ab"], [2], [])
    return input_event(m.PHONEMES, *segment.to_message())


def test_bert_serves_a_new_utterances_first_segment_before_the_long_backlog():
    assert BertStage.fair_inputs == frozenset({m.PHONEMES})
    events = [phonemes("L", i, i == 5) for i in range(6)] + [phonemes("S", 0), phonemes("S", 1, True)]
    node = RecordingNode(events)
    serve(node, BertStage(lambda text, word2ph: torch.zeros(m.FEATURE_DIM, 2)), fair=True)
    order = keys(node, m.PHONE_FEATURES)
    assert order[:4] == [("L", 0), ("S", 0), ("L", 1), ("S", 1)]
    assert utterance_order(order, "L") == list(range(6))


def token_chunk(utterance: str, index: int, final: bool, voice: str = "default") -> dict[str, Any]:
    key = m.SegmentKey(utterance, 0, True, voice, 100.0)
    chunk = m.SemanticChunk(key, np.arange(10, dtype=np.int64), index, final, [1, 2])
    return input_event(m.SEMANTIC_TOKENS, *chunk.to_message())


def spectrogram(voice: str) -> dict[str, Any]:
    return input_event(m.REFERENCE_SPECTROGRAM, *m.ReferencePart(voice, np.ones((1025, 8), np.float32)).to_message())


def test_vocoder_interleaves_token_chunks_but_never_moves_one_past_a_voice_part():
    assert VocoderStage.fair_inputs == frozenset({m.SEMANTIC_TOKENS})

    def make_decoder(cond, phone_ids, seed, speed):
        return lambda history, run, lookahead, position: (torch.full((len(run) * 640,), 0.25), torch.zeros(0))

    stage = VocoderStage(
        lambda spec, sv: "cond",
        make_decoder,
        32000,
        needs_speaker_embedding=False,
        policy=StreamPolicy(lookahead_tokens=0, min_run_tokens=1),
    )
    events = [spectrogram("default")] + [token_chunk("L", i, i == 4) for i in range(5)] + [token_chunk("S", 0, False)]
    # T speaks with a voice whose spectrogram is queued before T's chunk: the chunk may not overtake it.
    events += [spectrogram("bob"), token_chunk("S", 1, True), token_chunk("T", 0, True, "bob")]
    node = RecordingNode(events)
    serve(node, stage, fair=True)
    chunks = [m.AudioChunk.from_event(d, md) for d, md in node.outputs(m.AUDIO)]
    assert [c.key.utterance_id for c in chunks] == ["L", "S", "L", "L", "L", "L", "T", "S"]
    assert not node.outputs(m.VOICE_REQUEST) and not any(c.error for c in chunks)  # T never waited for bob


def test_only_the_graph_whose_consumer_separates_utterances_schedules_fairly():
    def env(path: str) -> dict[str, dict[str, Any]]:
        return {n["id"]: n.get("env") or {} for n in yaml.safe_load((REPO / path).read_text())["nodes"]}

    server = env("dataflows/openai-server.yml")
    assert all(server[n].get("GSV_FAIR_SCHEDULING") == "1" for n in ("text-frontend", "bert", "vocoder"))
    for speaker_graph in ("dataflow.yml", "dataflows/voice-assistant.yml"):
        assert not any("GSV_FAIR_SCHEDULING" in e for e in env(speaker_graph).values()), speaker_graph
