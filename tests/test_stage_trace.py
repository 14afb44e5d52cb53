"""The TTFA breakdown's message stamps (shared/benchmark/stage_trace.py): what a traced node writes,
that an untraced one writes nothing, and the step arithmetic over a run's lines."""

from __future__ import annotations

import json
import sys

import pytest

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.benchmark import stage_trace as st
from dora_gpt_sovits.settings import RuntimeSettings


class FakeNode:
    def __init__(self, events):
        self.events = list(events)
        self.sent = []

    def next(self, timeout=None):
        return self.events.pop(0) if self.events else None

    def try_recv(self):
        return self.next()

    def send_output(self, output_id, data, metadata=None):
        self.sent.append((output_id, data, metadata))

    def node_config(self):
        return {"inputs": {}}


@pytest.fixture
def untraced():
    yield
    st._write, st._name = None, ""  # a traced() call in a test must not leak into the next


def event(port, **metadata):
    return {"type": "INPUT", "id": port, "value": None, "metadata": metadata}


def test_a_traced_node_stamps_utterance_messages_both_ways_and_passes_everything_through(tmp_path, untraced):
    inner = FakeNode(
        [
            event(m.PHONE_FEATURES, utterance_id="u1", segment_index=0, text_received_at=5.0),
            event(m.PROMPT_SEMANTIC, voice="default"),  # no utterance: not traced
            {"type": "INPUT_CLOSED", "id": m.PHONE_FEATURES},
        ]
    )
    node = st.traced(inner, tmp_path / "trace")
    assert node.next()["id"] == m.PHONE_FEATURES
    assert node.try_recv()["id"] == m.PROMPT_SEMANTIC
    assert node.next(timeout=1)["type"] == "INPUT_CLOSED"
    node.send_output(m.SEMANTIC_TOKENS, "data", {"utterance_id": "u1", "segment_index": 0, "chunk_index": 0})
    st.mark("first_token", m.SegmentKey("u1", 0, True))
    assert inner.sent == [(m.SEMANTIC_TOKENS, "data", {"utterance_id": "u1", "segment_index": 0, "chunk_index": 0})]
    assert node.node_config() == {"inputs": {}}  # anything else reaches dora's node
    records = st.read_trace(tmp_path / "trace")
    assert [(r["dir"], r["port"]) for r in records] == [
        ("in", m.PHONE_FEATURES),
        ("out", m.SEMANTIC_TOKENS),
        ("mark", "first_token"),
    ]
    assert records[0]["text_received_at"] == 5.0 and records[1]["chunk_index"] == 0
    assert {r["node"] for r in records} == {st.node_name(sys.argv[0])}


def test_untraced_nodes_are_not_wrapped_and_marks_write_nothing(tmp_path, untraced):
    inner = FakeNode([])
    assert st.traced(inner, None) is inner
    st.mark("first_token", m.SegmentKey("u1", 0, True))  # no error, no file
    assert not list(tmp_path.iterdir())


def test_the_trace_folder_is_a_runtime_setting():
    assert RuntimeSettings.from_env({}).trace_dir is None
    assert str(RuntimeSettings.from_env({"GSV_TRACE_DIR": "/tmp/x"}).trace_dir) == "/tmp/x"


def test_node_names_come_from_the_console_script():
    assert st.node_name("/venv/bin/gsv-text-input") == "text-input"
    assert st.node_name("gsv-gpt") == "gpt"


def utterance_records(utterance, start):
    """One utterance's first-segment path, 10 ms per point after ``start``, plus noise around it."""
    t = iter(start + 0.01 * i for i in range(1, 100))
    rx = {m.UTTERANCE_ID: utterance, m.TEXT_RECEIVED_AT: start}
    out = []
    for _, node, direction, port, first_chunk in st.PATH:
        chunk = {"chunk_index": 0} if first_chunk else {}
        out.append({"t": next(t), "node": node, "dir": direction, "port": port, "segment_index": 0} | rx | chunk)
    # later chunks and the next segment must not move the first segment's points
    out.append({"t": start + 5, "node": "gpt", "dir": "out", "port": m.SEMANTIC_TOKENS, "chunk_index": 1} | rx)
    out.append({"t": start + 6, "node": "bert", "dir": "out", "port": m.PHONE_FEATURES, "segment_index": 1} | rx)
    return out


def test_the_breakdown_splits_the_first_segment_path_into_steps_that_add_up():
    records = utterance_records("warm", 100.0) + utterance_records("a", 200.0) + utterance_records("b", 300.0)
    paths = st.first_audio_path(sorted(records, key=lambda r: r["t"]))
    assert list(paths) == ["warm", "a", "b"]
    result = st.breakdown(records)
    assert result["requests"] == 2  # the warm-up left out
    steps = result["steps"]
    assert list(steps)[: len(st.STEPS)] == list(st.STEPS)
    assert all(steps[name]["median_s"] == pytest.approx(0.01) for name in st.STEPS)
    assert steps["total (text received → sink)"]["median_s"] == pytest.approx(0.01 * len(st.PATH))
    assert "| gpt: prefill + first token | 10 | 10 | 10 |" in st.markdown(result)


def test_an_utterance_missing_a_point_is_left_out_not_guessed():
    records = [r for r in utterance_records("a", 200.0) if r["port"] != "first_token"]
    assert st.first_audio_path(records) == {}
    assert st.breakdown(records, skip=0) == {"requests": 0, "steps": {}}


def test_trace_lines_are_json_one_per_message(tmp_path):
    write = st.line_writer(tmp_path / "n.jsonl")
    write({"t": 1.0, "node": "gpt"})
    write({"t": 2.0, "node": "gpt"})
    lines = (tmp_path / "n.jsonl").read_text().splitlines()
    assert [json.loads(line)["t"] for line in lines] == [1.0, 2.0]


def test_the_probe_waits_until_an_utterance_was_played_before_the_next():
    from dora_gpt_sovits.benchmark.dataflow import PLAYER_MARGIN_S, until_heard_s

    # first audio at 0.5 s, 2 s queued behind an earlier utterance, 5 s of audio + 0.1 s of stalls,
    # reported 3 s after the text: the last sample is heard at 7.6 s, 4.6 s after the report
    report = {"ttfa_s": 0.5, "queued_s": 2.0, "audio_s": 5.0, "stall_s": 0.1, "wall_s": 3.0}
    assert until_heard_s(report) == pytest.approx(4.6 + PLAYER_MARGIN_S)
    # an older sink without queued_s, and a report that came after the audio was played
    assert until_heard_s({"ttfa_s": 0.5, "audio_s": 1.0, "wall_s": 4.0}) == pytest.approx(PLAYER_MARGIN_S)
