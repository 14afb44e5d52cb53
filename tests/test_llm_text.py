"""LLM text: tool-call blocks removed, streamed deltas released sentence by sentence (no timer)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.nodes.text_frontend import TextFrontendStage
from dora_gpt_sovits.operators.sentence_stream import Operator, SentenceStream
from dora_gpt_sovits.text.llm_stream import ToolCallFilter, TurnSentences, strip_tool_calls


def test_strip_tool_calls_in_whole_messages():
    assert strip_tool_calls('好的。<tool_call>{"name": "x"}</tool_call>马上。') == "好的。马上。"
    assert strip_tool_calls("<tool_call>\n{}\n</tool_call>").strip() == ""
    assert strip_tool_calls("说完了。<tool_call>{unclosed") == "说完了。"


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7])
def test_tool_call_tags_split_across_deltas_are_still_removed(cut):
    text = 'Hello <tool_call>{"a": 1}</tool_call>world. <tool_ca is not a tag.'
    filt = ToolCallFilter()
    out = "".join(filt.push(text[i : i + cut]) for i in range(0, len(text), cut)) + filt.end()
    assert out == "Hello world. <tool_ca is not a tag."


def test_a_sentence_is_released_as_soon_as_the_next_text_shows_it_ended():
    turn = TurnSentences()
    assert turn.push("你好，") == []
    assert turn.push("欢迎使用。") == []  # "。" may still be followed by more marks
    assert turn.push("今") == ["你好，欢迎使用。"]
    assert turn.push("天天气") == []
    assert turn.push("很好。It is") == ["今天天气很好。"]
    assert turn.push(" sunny.") == []  # "sunny." could be "sunny.com"
    assert turn.push(" And") == ["It is sunny."]
    assert turn.end() == ["And"]


def test_sentence_stream_labels_sentences_and_ends_turns_on_each_signal():
    stream = SentenceStream()
    out = stream.delta("第一句话。", {m.VOICE: "alice", m.TURN_ID: "t1", "timestamp": 1})
    out += stream.delta("第二句话。第三", {})
    out += stream.delta("句", {m.FINAL: True})
    assert [s for s, _ in out] == ["第一句话。", "第二句话。", "第三句"]
    assert [md[m.UTTERANCE_ID] for _, md in out] == ["t1.0", "t1.1", "t1.2"]
    assert all(md[m.VOICE] == "alice" and md[m.TURN_ID] == "t1" and "timestamp" not in md for _, md in out)
    # An empty delta also ends a turn; the next delta starts a new one with its own id.
    assert [s for s, _ in stream.delta("Hello there", {})] == []
    ((sentence, md),) = stream.delta("", {})
    assert sentence == "Hello there" and md[m.TURN_ID] != "t1" and md[m.SENTENCE_INDEX] == 0
    assert stream.end() == []  # nothing open: an extra end is harmless


def test_operator_flushes_on_the_end_input_and_on_close_and_skips_bad_deltas():
    sent = []
    op = Operator()

    def send(output, data, metadata):
        sent.append((output, data[0].as_py(), metadata))

    def event(kind, input_id, value=None, metadata=None):
        return {"type": kind, "id": input_id, "value": value, "metadata": metadata or {}}

    op.on_event(event("INPUT", "text", pa.array([1.0])), send)  # not text: logged, ignored
    op.on_event(event("INPUT", "text", m.text_array("Hi. I am here")), send)
    assert sent == []
    op.on_event(event("INPUT", "end", pa.array([], pa.string())), send)
    assert [(o, t) for o, t, _ in sent] == [("text", "Hi. I am here")]  # "Hi." alone is too short
    op.on_event(event("INPUT", "text", m.text_array("最后一句")), send)
    op.on_event({"type": "INPUT_CLOSED", "id": "text"}, send)
    assert sent[-1][1] == "最后一句"


@pytest.mark.parametrize("text", ["", "   ", '<tool_call>{"name": "lights"}</tool_call>'])
def test_frontend_skips_text_with_nothing_to_speak(text):
    stage = TextFrontendStage()
    list(stage.handle(m.VOICE_PROMPT, *m.ReferencePart("default", "你好。", language="zh").to_message()))
    assert list(stage.handle(m.TEXT, m.text_array(text), {})) == []
    assert not stage.pending()


def test_frontend_speaks_around_a_tool_call():
    stage = TextFrontendStage()
    list(stage.handle(m.VOICE_PROMPT, *m.ReferencePart("default", "", language="zh").to_message()))
    out = list(stage.handle(m.TEXT, m.text_array('好的。<tool_call>{"x": 1}</tool_call>'), {}))
    (segment,) = [m.PhonemeSegment.from_event(o.data, o.metadata) for o in out]
    assert "tool" not in segment.segment_text and not segment.error
