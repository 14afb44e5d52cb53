"""The shared node loop: start messages, drain-after-close, primary inputs, malformed input."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
from conftest import RecordingNode, closed_event, input_event

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.node_runtime import Outgoing, StageBase, serve


class Echo(StageBase):
    name = "echo"

    def __init__(self, primary: frozenset[str] = frozenset()):
        self.primary_inputs = primary
        self.finished = False

    def start(self) -> Iterable[Outgoing]:
        yield Outgoing("out", m.text_array("hello"))

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing]:
        yield Outgoing("out", m.text_array(m.read_text(value, input_id)), metadata)

    def finish(self) -> Iterable[Outgoing]:
        self.finished = True
        yield Outgoing("out", m.text_array("bye"))


def texts(node: RecordingNode) -> list[str]:
    return [d[0].as_py() for d, _ in node.outputs("out")]


def test_messages_queued_behind_an_input_close_are_still_processed():
    # dora may deliver INPUT_CLOSED before messages still queued for that input.
    node = RecordingNode(
        [closed_event("text"), input_event("text", m.text_array("a")), input_event("text", m.text_array("b"))]
    )
    stage = Echo(primary=frozenset({"text"}))
    serve(node, stage)
    assert texts(node) == ["hello", "a", "b", "bye"]
    assert stage.finished


def test_primary_inputs_end_the_node_even_if_others_stay_open():
    events = [input_event("text", m.text_array("a")), closed_event("text")]
    node = RecordingNode(events + [input_event("other", m.text_array("late"))])
    serve(node, Echo(primary=frozenset({"text"})))
    # "late" was queued when the primary closed, so it is drained, not dropped.
    assert texts(node) == ["hello", "a", "late", "bye"]


def test_malformed_message_is_skipped_and_the_node_keeps_serving(caplog):
    node = RecordingNode([input_event("text", pa.array([1, 2])), input_event("text", m.text_array("ok"))])
    serve(node, Echo())
    assert texts(node) == ["hello", "ok", "bye"]
    assert "expected a Utf8 string array" in caplog.text


def test_metadata_is_forwarded():
    node = RecordingNode([input_event("text", m.text_array("a"), {"utterance_id": "x"})])
    serve(node, Echo())
    assert node.outputs("out")[1][1]["utterance_id"] == "x"


def test_python_logging_is_forwarded_to_the_dora_node_log():
    import logging

    from dora_gpt_sovits.node_runtime import DoraLogHandler

    class LogNode:
        def __init__(self):
            self.lines = []

        def log_info(self, msg):
            self.lines.append(("info", msg))

        def log_warn(self, msg):
            self.lines.append(("warn", msg))

        def log_error(self, msg):
            self.lines.append(("error", msg))

        def log_debug(self, msg):
            self.lines.append(("debug", msg))

    node = LogNode()
    logger = logging.getLogger("gsv.test-forwarding")
    logger.addHandler(DoraLogHandler(node))
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.info("chunk %d", 3)
    logger.warning("careful")
    logger.error("broken")
    assert node.lines == [("info", "chunk 3"), ("warn", "careful"), ("error", "broken")]


class Recorder(StageBase):
    """Records what it handles, in order; answers each data message with one output."""

    name = "recorder"

    def __init__(self):
        self.seen: list[str] = []

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing | None]:
        self.seen.append(f"{input_id}:{m.read_text(value, input_id)}")
        if input_id != "control":
            yield None  # a poll point
            yield Outgoing("out", m.text_array(self.seen[-1]))


def test_control_messages_overtake_data_queued_while_a_handler_runs():
    events = [input_event("data", m.text_array(str(i))) for i in range(3)] + [
        input_event("control", m.text_array("stop"))
    ]
    stage = Recorder()
    serve(RecordingNode(events), stage)
    # While data 0 was being handled, the loop set data 1 and 2 aside and handled the stop at once.
    assert stage.seen == ["data:0", "control:stop", "data:1", "data:2"]


def test_dora_timeouts_tick_the_stage_and_are_not_logged_as_errors(caplog):
    class Ticking(StageBase):
        name = "ticking"

        def __init__(self):
            self.ticks = 0

        def handle(self, input_id, value, metadata):
            return ()

        def next_deadline(self):
            return 5.0 if self.ticks < 2 else None  # later than the clock: only a timeout ticks

        def tick(self):
            self.ticks += 1
            yield Outgoing("out", m.text_array(f"tick {self.ticks}"))

    timeout = {"type": "ERROR", "error": "Timeout event stream error: Receiver timed out"}
    node = RecordingNode([timeout, timeout])
    stage = Ticking()
    serve(node, stage, clock=lambda: 1.0)
    assert stage.ticks == 2 and texts(node) == ["tick 1", "tick 2"]
    assert "dora error event" not in caplog.text


# ---- restarts (issue #15, class 1) ------------------------------------------------------------------
class Forwarder(StageBase):
    """Forwards restart markers as the real stages do: naming the node only."""

    name = "forwarder"
    primary_inputs = frozenset({"text"})

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing]:
        yield Outgoing("out", m.text_array(m.read_text(value, input_id)), metadata)

    def upstream_restarted(self, node: str, inputs: frozenset[str] | None = None) -> Iterable[Outgoing]:
        yield Outgoing("out", *m.restart_marker(node, "utf8"))


def test_a_restarted_producer_does_not_end_the_node():
    """dora 1.1 keeps a restarting node's outputs open: its consumers get NODE_RESTARTED, no
    INPUT_CLOSED, so the primary input stays open and later texts are served."""
    node = RecordingNode(
        [
            input_event("text", m.text_array("a")),
            {"type": "NODE_RESTARTED", "id": "text-input"},
            input_event("text", m.text_array("b")),
            closed_event("text"),
        ]
    )
    serve(node, Forwarder())
    sent = [d[0].as_py() if len(d) else m.restarted_node(md) for d, md in node.outputs("out")]
    # (the loop drains what is queued before it reacts to a restart: dora puts the event ahead of it)
    assert sorted(sent) == ["a", "b", "text-input"]


def test_the_ready_tag_of_a_restart_marker_travels_through_a_stage_that_forwards_it():
    down = m.restart_marker("gpt", "utf8")
    ready = (down[0], down[1] | {m.RESTART_READY: True})
    node = RecordingNode([input_event("text", *down), input_event("text", *ready), closed_event("text")])
    serve(node, Forwarder())
    assert [(m.restarted_node(md), m.restart_ready(md)) for _, md in node.outputs("out")] == [
        ("gpt", False),
        ("gpt", True),
    ]


def test_a_restarted_node_announces_itself_ready():
    class Restarted(RecordingNode):
        def is_restart(self) -> bool:
            return True

        def restart_count(self) -> int:
            return 1

    node = Restarted([closed_event("text")])
    serve(node, Forwarder())
    ((_, md),) = node.outputs("out")
    assert m.restarted_node(md) == "forwarder" and m.restart_ready(md)


# ---- fair scheduling across utterances (issue #19) --------------------------------------------------
class FairRecorder(StageBase):
    """Records what it handles; its ``data`` input may be picked fairly across utterances."""

    name = "fair-recorder"
    primary_inputs = frozenset({"data"})
    fair_inputs = frozenset({"data"})

    def __init__(self):
        self.seen: list[str] = []
        self.finished = False

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing | None]:
        self.seen.append(m.read_text(value, input_id) if input_id != "control" else "STOP")
        if input_id == "data":
            yield None  # a poll point: a stop queued behind the backlog is handled here
            yield Outgoing("out", m.text_array(self.seen[-1]), metadata)

    def upstream_restarted(self, node: str, inputs: frozenset[str] | None = None) -> Iterable[Outgoing]:
        self.seen.append(f"restart {node}")
        return ()

    def finish(self) -> Iterable[Outgoing]:
        self.finished = True
        return ()


def data(utterance: str, index: int, input_id: str = "data") -> dict[str, Any]:
    return input_event(input_id, m.text_array(f"{utterance}{index}"), {m.UTTERANCE_ID: utterance})


def backlog(utterance: str, n: int) -> list[dict[str, Any]]:
    return [data(utterance, i) for i in range(n)]


def served(events: list[dict[str, Any]], fair: bool = True) -> list[str]:
    stage = FairRecorder()
    serve(RecordingNode(events), stage, fair=fair)
    assert stage.finished
    return stage.seen


def in_order(seen: list[str], utterance: str) -> bool:
    mine = [s for s in seen if s.startswith(utterance)]
    return mine == sorted(mine, key=lambda s: int(s[len(utterance) :]))


def test_a_new_utterances_first_message_overtakes_the_backlog_of_a_long_one():
    seen = served(backlog("L", 6) + backlog("S", 2))
    # L0 was taken first (nothing else queued was older); S, never served, goes next, then turns alternate.
    assert seen == ["L0", "S0", "L1", "S1", "L2", "L3", "L4", "L5"]
    assert in_order(seen, "L") and in_order(seen, "S")


def test_without_fair_scheduling_messages_are_handled_first_in_first_out():
    events = backlog("L", 4) + backlog("S", 2)
    assert served(events, fair=False) == ["L0", "L1", "L2", "L3", "S0", "S1"]


def test_nobody_starves_utterances_take_turns():
    events = backlog("A", 3) + backlog("B", 3) + backlog("C", 3)
    assert served(events) == ["A0", "B0", "C0", "A1", "B1", "C1", "A2", "B2", "C2"]


def test_other_inputs_restart_markers_and_probes_are_barriers():
    part = input_event("voice", m.text_array("part"), {})
    marker = input_event("data", *m.restart_marker("bert", "utf8"))
    seen = served(backlog("L", 3) + [part] + [data("S", 0), data("L", 3)] + [marker] + [data("S", 1), data("T", 0)])
    # Nothing crosses "part" or the marker; between them, S0 (never served) goes before L3.
    assert seen[:4] == ["L0", "L1", "L2", "part"]
    assert seen[4:7] == ["S0", "L3", "restart bert"]
    assert seen[7:] == ["T0", "S1"]  # T was never served, S just was


def test_a_stop_is_handled_at_once_and_stop_and_closes_are_not_lost():
    stop = input_event("control", m.text_array("stop"), {})
    events = backlog("L", 3) + backlog("S", 2) + [stop, closed_event("data"), {"type": "STOP", "id": "x"}]
    seen = served(events)
    assert seen[0] == "STOP"  # pulled with the backlog before L0 was handled: handled at once
    assert seen[1:] == ["L0", "S0", "L1", "S1", "L2"]  # nothing lost, nothing stops the turns


def test_due_work_is_released_step_by_step_and_new_events_are_read_between_steps():
    class Stepper(StageBase):
        """Sends one queued item per tick, like the frontend releasing segments round-robin."""

        name = "stepper"

        def __init__(self):
            self.queue = ["a", "b", "c"]

        def handle(self, input_id, value, metadata):
            yield Outgoing("out", m.text_array(m.read_text(value, input_id)))

        def next_deadline(self):
            return 0.0 if self.queue else None  # due at once

        def pending(self):
            return bool(self.queue)

        def tick(self):
            yield Outgoing("out", m.text_array(self.queue.pop(0)))

    node = RecordingNode([input_event("in", m.text_array("new"))])
    serve(node, Stepper())
    assert texts(node) == ["a", "new", "b", "c"]  # the event was read after one step, not after all
