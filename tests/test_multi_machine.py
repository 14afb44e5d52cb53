"""Issue #22, without a daemon: the stall watchdog (text-frontend), the sink's report of an
utterance the frontend gave up on, and the health probe passing every stage's loop.
The same through two dora daemons in two network namespaces: tests/test_multi_machine_e2e.py."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import yaml
from conftest import REPO, RecordingNode, input_event

from dora_gpt_sovits import health
from dora_gpt_sovits import messages as m
from dora_gpt_sovits.benchmark.two_machines import crossing_inputs, set_crossing_policy, write_graph
from dora_gpt_sovits.node_runtime import StageBase, serve
from dora_gpt_sovits.nodes.audio_sink import AudioSinkStage
from dora_gpt_sovits.nodes.text_frontend import TextFrontendStage
from dora_gpt_sovits.nodes.text_input import GraphStopping, answer_health, health_timeout
from dora_gpt_sovits.watchdog import StallWatchdog

TEXT = "第一句话。第二句话。第三句话。第四句话。"


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def frontend(timeout: float, monotonic: Clock, window: int = 2) -> TextFrontendStage:
    stage = TextFrontendStage(
        max_segments_ahead=window, clock=Clock(500.0), stall_timeout_s=timeout, monotonic=monotonic
    )
    stage.prompts["default"] = ("", "zh")  # reference-free voice: no round trip to the reference node
    return stage


def text(utt: str, received: float = 100.0):
    return m.text_array(TEXT), {m.UTTERANCE_ID: utt, m.TEXT_RECEIVED_AT: received, m.LANGUAGE: "zh"}


def complete(utt: str, index: int):
    return m.SegmentComplete(m.SegmentKey(utt, index, False, "default", 100.0)).to_message()


def test_the_watchdog_counts_only_while_work_is_in_flight():
    dog = StallWatchdog(30.0)
    assert dog.deadline() is None
    dog.progress(10.0, in_flight=True)
    assert dog.deadline() == 40.0 and not dog.expired(39.9) and dog.expired(40.0)
    dog.progress(20.0, in_flight=False)
    assert dog.deadline() is None and not dog.expired(1e9)
    assert StallWatchdog(0.0).deadline() is None  # 0 = off


def test_a_stalled_path_fails_the_utterances_in_flight_through_the_stop_and_the_frontend_serves_on():
    now = Clock(0.0)
    stage = frontend(timeout=60.0, monotonic=now)
    assert len([o for o in stage.handle(m.TEXT, *text("u1")) if o.output_id == m.PHONEMES]) == 2
    assert stage.next_deadline() == 60.0
    now.t = 50.0
    list(stage.handle(m.SEGMENT_COMPLETE, *complete("u1", 0)))  # progress: the count restarts
    assert stage.next_deadline() == 110.0
    now.t = 109.0
    assert list(stage.tick()) == []
    now.t = 110.0
    out = list(stage.tick())
    stops = [o for o in out if o.output_id == m.CONTROL]
    assert len(stops) == 1, out
    command = m.ControlCommand.from_event(stops[0].data, stops[0].metadata)
    assert command.utterance_id == "u1" and "stalled" in command.error and "gsv-say --health" in command.error
    assert not stage.in_flight and not stage.held  # its window slots are free, its text dropped
    # The next utterance is served (and watched) as before.
    assert [o.metadata[m.UTTERANCE_ID] for o in stage.handle(m.TEXT, *text("u2", 600.0))] == ["u2", "u2"]
    assert stage.next_deadline() == 170.0


def test_the_watchdog_is_off_without_a_window_or_timeout():
    now = Clock(0.0)
    assert frontend(timeout=0.0, monotonic=now).next_deadline() is None
    stage = frontend(timeout=60.0, monotonic=now, window=0)
    list(stage.handle(m.TEXT, *text("u1")))
    assert stage.next_deadline() is None  # no window: no reports to wait for


def test_the_sink_reports_an_utterance_the_frontend_gave_up_on_seen_or_not():
    sink = AudioSinkStage("null", clock=Clock(200.0))
    chunk = m.AudioChunk(m.SegmentKey("seen", 0, False, "default", 100.0), np.zeros(3200, np.float32), 32000, 0, False)
    assert list(sink.handle(m.AUDIO, *chunk.to_message())) == []
    reports = []
    for utt in ("seen", "never-seen", "seen"):  # the second stop for "seen" reports nothing more
        command = m.ControlCommand(150.0, utt, "stalled: the path is silent")
        reports += [json.loads(m.read_text(o.data)) for o in sink.handle(m.CONTROL, *command.to_message())]
    assert [(r["utterance_id"], r["errors"]) for r in reports] == [
        ("seen", ["stalled: the path is silent"]),
        ("never-seen", ["stalled: the path is silent"]),
    ]
    assert "cancelled" not in reports[0] and reports[0]["audio_s"] == 0.1
    assert [r["seq"] for r in reports] == [1, 2]  # a consumer elsewhere can tell a lost report
    late = m.AudioChunk(m.SegmentKey("seen", 0, True, "default", 100.0), np.zeros(10, np.float32), 32000, 1, True)
    assert list(sink.handle(m.AUDIO, *late.to_message())) == []  # what comes later is dropped


class Forward(StageBase):
    """A stage that must never see a probe."""

    def __init__(self, name: str, output: str, payload: str):
        self.name, self.probe_output, self.probe_payload = name, output, payload

    def handle(self, input_id, value, metadata):
        raise AssertionError("a probe reached the stage")


def test_a_probe_passes_every_stage_loop_and_the_sink_answers_with_every_hop():
    stages = [
        (m.TEXT, TextFrontendStage()),
        (m.PHONEMES, Forward("bert", m.PHONE_FEATURES, "float32")),
        (m.PHONE_FEATURES, Forward("gpt", m.SEMANTIC_TOKENS, "int64")),
        (m.SEMANTIC_TOKENS, Forward("vocoder", m.AUDIO, "float32")),
        (m.AUDIO, AudioSinkStage("null")),
    ]
    data, metadata = health.probe_request("p1")
    for input_id, stage in stages:
        node = RecordingNode([input_event(input_id, data, metadata)])
        serve(node, stage)
        ((output_id, data, metadata),) = [s for s in node.sent if health.is_probe(s[2])]
        assert isinstance(data, pa.Array)
    assert output_id == m.METRICS
    report = json.loads(m.read_text(data))
    assert report["ok"] and [h["node"] for h in report["hops"]] == list(health.PATH)
    assert health.reply_report(metadata)["ok"]


def test_the_health_check_reports_a_reply_a_missing_hop_and_a_timeout():
    sent = []

    def replies(timeout):
        (_, md) = sent[-1]
        for node in health.PATH[:-1]:
            md = health.passed(md, node)
        return md

    report = health.check(lambda d, md: sent.append((d, md)), replies, 5.0, path=health.PATH[:-1])
    assert report["ok"] and report["round_trip_s"] >= 0
    assert not health.check(lambda d, md: sent.append((d, md)), replies, 5.0)["ok"]  # audio-sink missing
    t = Clock(0.0)

    def nothing(timeout):
        t.t += timeout
        return None

    report = health.check(lambda d, md: None, nothing, 2.0, clock=t)
    assert not report["ok"] and "no answer within 2 s" in report["error"] and "dora stop" in report["error"]


def test_text_input_reads_a_health_request():
    assert health_timeout('{"health": true}') == health.DEFAULT_TIMEOUT_S
    assert health_timeout('{"health": 3}') == 3.0
    assert health_timeout('{"health": -1}') is None and health_timeout('{"text": "health"}') is None


def test_outgoing_probe_keeps_the_hops_in_order():
    md = health.passed(health.passed({health.PROBE: "x", health.PROBE_SENT_AT: 1.0}, "a", lambda: 1.5), "b", lambda: 2)
    report = health.reply_report(md, path=("a", "b"))
    assert report["ok"] and [h["after_s"] for h in report["hops"]] == [0.5, 1.0]


class EchoingGraph:
    """text-input's view of a graph: a probe sent on ``text`` comes back on ``health`` (or never)."""

    def __init__(self, answers: bool, stop: bool = False):
        self.answers, self.stop, self.sent = answers, stop, []

    def node_config(self):
        return {"inputs": {"keepalive": "dora/timer/secs/60", "health": {"source": "audio-sink/metrics"}}}

    def send_output(self, output_id, data, metadata):
        self.sent.append((output_id, dict(metadata)))

    def next(self, timeout=None):
        if self.stop:
            return {"type": "STOP", "id": "MANUAL"}
        if not self.answers or not self.sent:
            return {"type": "ERROR", "error": "Receiver timed out"}
        metadata = self.sent[-1][1]
        for node in health.PATH:
            metadata = health.passed(metadata, node)
        return {"type": "INPUT", "id": "health", "value": health.reply_text({}), "metadata": metadata}


def test_text_input_answers_a_health_request_with_the_probe_that_came_back_or_a_timeout():
    graph = EchoingGraph(answers=True)
    report = answer_health(graph, 2.0)
    assert report["ok"] and graph.sent[0][0] == m.TEXT and health.is_probe(graph.sent[0][1])
    report = answer_health(EchoingGraph(answers=False), 0.05)
    assert not report["ok"] and "no answer within 0.05 s" in report["error"]
    with pytest.raises(GraphStopping):  # dora's stop is not swallowed by the wait
        answer_health(EchoingGraph(answers=False, stop=True), 1.0)


def test_the_inputs_fed_from_the_other_machine_are_found_and_their_policy_set():

    spec = {
        "nodes": [
            {"id": "a", "outputs": ["x"], "inputs": {"t": "dora/timer/secs/1"}},
            {
                "id": "b",
                "deploy": {"machine": "gpu"},
                "inputs": {"x": {"source": "a/x", "queue_policy": "backpressure"}},
            },
            {"id": "c", "inputs": {"x": {"source": "a/x"}, "y": {"source": "b/y"}}},
        ]
    }
    assert crossing_inputs(spec) == [("b", "x"), ("c", "y")]
    set_crossing_policy(spec, "direct")
    assert "queue_policy" not in spec["nodes"][1]["inputs"]["x"]
    set_crossing_policy(spec, "backpressure")
    assert spec["nodes"][2]["inputs"]["y"]["queue_policy"] == "backpressure"
    assert "queue_policy" not in spec["nodes"][2]["inputs"]["x"]  # same machine: untouched


def test_the_load_test_graph_is_the_shipped_one_with_a_listener_and_a_collector(tmp_path):
    spec = yaml.safe_load(write_graph(REPO, tmp_path, tmp_path / "m.jsonl", 15.0).read_text())
    nodes = {n["id"]: n for n in spec["nodes"]}
    assert nodes["text-input"]["env"]["GSV_TEXT_LISTEN"].startswith("127.0.0.1:")
    assert nodes["text-frontend"]["env"]["GSV_STALL_TIMEOUT"] == 15.0
    assert nodes["bench-metrics"]["inputs"]["metrics"]["source"] == "audio-sink/metrics"
    assert "queue_policy" not in nodes["gpt"]["inputs"]["phone_features"]  # as shipped


def answering_server(answer: bytes):
    """A one-connection stand-in for text-input: records the request line, sends ``answer``."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    seen = []

    def serve_once():
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as reader:
            seen.append(json.loads(reader.readline()))
            conn.sendall(answer)
        server.close()

    threading.Thread(target=serve_once, daemon=True).start()
    return f"127.0.0.1:{server.getsockname()[1]}", seen


def test_gsv_say_health_prints_the_answer_and_exits_1_when_the_path_does_not_deliver(capsys):
    from dora_gpt_sovits import say

    address, seen = answering_server(b'{"ok": true, "round_trip_s": 0.02}\n')
    with pytest.raises(SystemExit) as done:
        say.main(["--health", "3", "--address", address, "--wait", "0"])
    assert done.value.code == 0 and seen == [{"health": 3.0}]
    assert json.loads(capsys.readouterr().out)["ok"] is True
    address, _ = answering_server(b'{"ok": false, "error": "no answer within 10 s"}\n')
    with pytest.raises(SystemExit) as done:
        say.main(["--health", "--address", address, "--wait", "0"])
    assert done.value.code == 1 and "no answer" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        say.main(["--health", "--stop"])
    assert done.value.code == 2  # argparse's usage error
