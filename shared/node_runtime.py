"""The event loop every node shares: dora events in, a stage's messages out.

A node is a *stage* (pure logic: input message -> output messages, testable without a daemon)
plus this loop. The loop decides when a node is done:

* dora ends a node with ``STOP`` once all of its inputs are closed, or on ``dora stop``;
* a node whose graph has a feedback edge (text-frontend <-> reference, sink -> frontend) would
  never see all inputs close, so a stage names its *primary* inputs: once those are closed and the
  stage has nothing pending, the node finishes.

dora delivers ``INPUT_CLOSED`` ahead of messages still queued for that input, so the loop drains the
local queue before it believes an input is exhausted: no message is dropped at shutdown.

Control messages (barge-in) must not wait behind data. A stage's ``handle`` is a generator; between
the messages it yields (a bare ``None`` is a poll point that sends nothing) the loop polls dora:
a message on one of the stage's ``control_inputs`` is handled at once — the stage records the
cancel, and the suspended generator sees it at its next step — while other events wait in a local
buffer and are handled in order afterwards.

Timed work (real-time pacing, playback progress): a stage may name its ``next_deadline()``; the loop
waits for events only until then and calls ``tick()``. A control message ends the wait at once. A
deadline already past means "more to do now" (the frontend releasing segments turn by turn): the
loop then takes only events that have already arrived between two ticks, never waits.

Fair scheduling (``GSV_FAIR_SCHEDULING=1``; ``fair_queue``): a stage may name ``fair_inputs``, whose
messages of different utterances may overtake each other; before handling one, the loop pulls what
dora has queued and handles the oldest message of the utterance served least recently, so a new
request's first segment does not wait behind a long one's backlog. Other events keep their place.

Backlog: a stage may look at what already waits behind the message it handles (``queued_events()``,
set by the loop: it pulls what dora has queued, handling a stop among it at once) and consume one
of those events now (``take_queued``). The vocoder vocodes a segment's next token chunk in the
same run when it is already there.

Restarts (``restart_policy`` in the YAML): dora restarts a crashed node and tells its direct
consumers with a ``NODE_RESTARTED`` event; a restart marker (``messages.restart_marker``) carries
the news further down the data path. Both reach the stage as ``upstream_restarted(node, inputs)``:
the stage fails the work it held open through that node and forwards the marker, so the sink closes
every utterance the crash cut short, with the reason, instead of waiting for it forever. A restart
is not an end: dora 1.1 keeps the restarted node's outputs open (no ``INPUT_CLOSED`` reaches its
consumers, so no primary input closes and the graph keeps serving). It does so only for a node
that has an open input when it fails; a node without inputs is never restarted, which is why
text-input listens to a timer in our graphs.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import pyarrow as pa

from . import health
from .fair_queue import FairPick
from .messages import CONTROL, RESTART_READY, MessageError, empty_array, restart_ready, restarted_node

log = logging.getLogger("dora_gpt_sovits")


@dataclass
class Outgoing:
    """One message a stage wants sent."""

    output_id: str
    data: pa.Array
    metadata: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    name: str
    primary_inputs: frozenset[str]
    control_inputs: frozenset[str]
    fair_inputs: frozenset[str]  # data the loop may pick across utterances (fair_queue)

    def start(self) -> Iterable[Outgoing]:
        """Messages to send once the node is connected, before any input (e.g. the default voice)."""

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing | None]:
        """React to one input message (``None`` items are poll points for control messages)."""

    def pending(self) -> bool:
        """True while the stage holds work that waits for another input or a deadline."""

    def next_deadline(self) -> float | None:
        """``time.monotonic()`` at which ``tick`` has work, or None."""

    def tick(self) -> Iterable[Outgoing]:
        """Send what is due by now (called at or after ``next_deadline``)."""

    def finish(self) -> Iterable[Outgoing]:
        """Called once when the node ends: flush or report what could not be completed."""

    def upstream_restarted(self, node: str, inputs: frozenset[str] | None) -> Iterable[Outgoing]:
        """``node`` (upstream of this one) restarted: fail the work lost with it, forward a marker.

        ``inputs``: this stage's inputs that ``node`` feeds (None when unknown: assume all)."""

    def queued_events(self) -> Sequence[dict[str, Any]]:
        """The dora events already queued behind the one being handled, oldest first (set by the loop)."""

    def take_queued(self, event: dict[str, Any]) -> None:
        """Remove one event of ``queued_events()`` from the queue: the stage handles it as part of the current one."""


class StageBase:
    """Defaults for stages with nothing pending, no deadlines and nothing to flush."""

    name = "stage"
    primary_inputs: frozenset[str] = frozenset()
    control_inputs: frozenset[str] = frozenset({CONTROL})
    fair_inputs: frozenset[str] = frozenset()

    def start(self) -> Iterable[Outgoing]:
        return ()

    def pending(self) -> bool:
        return False

    def next_deadline(self) -> float | None:
        return None

    def tick(self) -> Iterable[Outgoing]:
        return ()

    def finish(self) -> Iterable[Outgoing]:
        return ()

    def upstream_restarted(self, node: str, inputs: frozenset[str] | None) -> Iterable[Outgoing]:
        return ()

    def queued_events(self) -> Sequence[dict[str, Any]]:
        return ()  # outside a node loop (gsv-tts, tests) nothing is known to wait

    def take_queued(self, event: dict[str, Any]) -> None:
        raise LookupError("no queued events outside a node loop")

    # A health probe (shared/health.py) passes on this output as an empty message of this type.
    probe_output: str | None = None
    probe_payload: str = "utf8"

    def probe_reply(self, metadata: dict[str, Any]) -> Outgoing | None:
        if self.probe_output is None:
            return None
        return Outgoing(self.probe_output, empty_array(self.probe_payload), metadata)


class Inbox:
    """dora's event stream plus the events set aside while a stage's generator was running."""

    def __init__(self, node: Any):
        self.node = node
        self.buffered: deque[dict[str, Any]] = deque()

    def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        if self.buffered:
            return self.buffered.popleft()
        return self.node.next() if timeout is None else self.node.next(timeout=timeout)

    def try_recv(self) -> dict[str, Any] | None:
        if self.buffered:
            return self.buffered.popleft()
        return self.node.try_recv()


# What ``Loop.next_event`` returns when work is due and nothing has arrived: tick, do not wait.
NOTHING_YET: dict[str, Any] = {"type": "NOTHING_YET"}


class Loop:
    """Sends a stage's messages and handles control messages that arrive meanwhile."""

    def __init__(self, node: Any, stage: Stage, fair: bool = False):
        self.node = node
        self.stage = stage
        self.inbox = Inbox(node)
        self.control_inputs = getattr(stage, "control_inputs", frozenset())
        fair_inputs = getattr(stage, "fair_inputs", frozenset())
        self.fair = FairPick(fair_inputs) if fair and fair_inputs else None
        if hasattr(stage, "queued_events"):
            stage.queued_events, stage.take_queued = self.queued_events, self.take_queued

    def queued_events(self) -> Sequence[dict[str, Any]]:
        """What already arrived behind the event being handled, oldest first: everything dora has
        queued for this node is pulled now (a control message among it is handled at once)."""
        self.poll_control()
        return tuple(self.inbox.buffered)

    def take_queued(self, event: dict[str, Any]) -> None:
        """Remove ``event`` (one of ``queued_events()``'s, the very object) from the local queue."""
        for i, queued in enumerate(self.inbox.buffered):
            if queued is event:
                del self.inbox.buffered[i]
                return
        raise LookupError("the event is not queued")

    def next_event(self, clock: Callable[[], float]) -> dict[str, Any] | None:
        """The next event to handle (None: the stream ended). Waits at most until the stage's deadline;
        with fair scheduling, a data message is the fair pick among those already queued."""
        timeout = self.timeout(clock)
        if timeout == 0.0:
            event = self.inbox.try_recv()
            if event is None:
                return NOTHING_YET
        else:
            event = self.inbox.next(timeout)
        if self.fair is None or event is None or self.fair.utterance(event) is None:
            return event
        self.inbox.buffered.appendleft(event)
        self.poll_control()  # everything queued, in order; a stop among it is handled at once
        return self.fair.pick(self.inbox.buffered)

    def send_all(self, messages: Iterable[Outgoing | None]) -> int:
        count = 0
        for message in messages:
            if message is not None:
                self.node.send_output(message.output_id, message.data, message.metadata)
                count += 1
            if self.control_inputs:
                self.poll_control()
        return count

    def poll_control(self) -> None:
        """Handle control messages now; set anything else aside for later, in order."""
        while (event := self.node.try_recv()) is not None:
            if event.get("type") == "INPUT" and event.get("id") in self.control_inputs:
                self.dispatch(event, poll=False)
            else:
                self.inbox.buffered.append(event)

    def dispatch(self, event: dict[str, Any], poll: bool = True) -> None:
        """Feed one INPUT event to the stage; a malformed message is logged and skipped, not fatal."""
        metadata = dict(event.get("metadata") or {})
        if health.is_probe(metadata):  # not data: passed on at once, the stage never sees it
            send_all(self.node, forward_probe(self.stage, metadata))
            return
        try:
            if (restarted := restarted_node(metadata)) is not None:
                messages = self.stage.upstream_restarted(restarted, frozenset({event["id"]}))
                if restart_ready(metadata):
                    messages = mark_ready(messages, restarted)
            else:
                messages = self.stage.handle(event["id"], event["value"], metadata)
            if poll:
                self.send_all(messages)
            else:
                send_all(self.node, messages)
        except MessageError as e:
            log.error("%s: dropped malformed message on '%s': %s", self.stage.name, event["id"], e)

    def tick_if_due(self, clock: Callable[[], float]) -> None:
        deadline = getattr(self.stage, "next_deadline", lambda: None)()
        if deadline is not None and deadline <= clock():
            self.send_all(self.stage.tick())

    def timeout(self, clock: Callable[[], float]) -> float | None:
        deadline = getattr(self.stage, "next_deadline", lambda: None)()
        return None if deadline is None else max(0.0, deadline - clock())

    def drain(self) -> None:
        """Process inputs that are already queued locally (dora may have reordered them behind a close).
        Any other event (a STOP, a close, a restart) goes back in front, in order: dropping a STOP
        here left the loop to meet the stream's end and release paced audio all at once."""
        kept: list[dict[str, Any]] = []
        while (event := self.inbox.try_recv()) is not None:
            if event["type"] == "INPUT":
                self.dispatch(event)
            else:
                kept.append(event)
        self.inbox.buffered.extendleft(reversed(kept))

    def run_out_deadlines(self, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        """After every input closed no message can arrive any more: wait out what is timed."""
        while self.stage.pending() and (timeout := self.timeout(clock)) is not None:
            sleep(timeout)
            self.send_all(self.stage.tick())


def forward_probe(stage: Stage, metadata: dict[str, Any]) -> list[Outgoing]:
    reply = getattr(stage, "probe_reply", None)
    out = reply(health.passed(metadata, stage.name)) if reply is not None else None
    if out is None:
        log.warning("%s: a health probe reached a stage with no probe output; dropped", stage.name)
    return [out] if out is not None else []


def mark_ready(messages: Iterable[Outgoing | None], node: str) -> Iterator[Outgoing | None]:
    """Tag the markers naming ``node`` as "serving again". Stages forward a marker by naming the
    node only, so the runtime carries the tag across: the HTTP server at the end of the path takes
    requests again when it sees it (openai_api/bridge.py)."""
    for message in messages:
        if message is not None and restarted_node(message.metadata) == node:
            message.metadata = {**message.metadata, RESTART_READY: True}
        yield message


def send_all(node: Any, messages: Iterable[Outgoing | None]) -> int:
    count = 0
    for m in messages:
        if m is not None:
            node.send_output(m.output_id, m.data, m.metadata)
            count += 1
    return count


def restarted_upstream(loop: Loop, event: dict[str, Any]) -> None:
    """dora restarted one of our producers: whatever it was doing for us is lost."""
    name = str(event.get("id") or event.get("node_id") or "an upstream node")
    log.warning("%s: upstream node %s restarted", loop.stage.name, name)
    loop.send_all(loop.stage.upstream_restarted(name, inputs_fed_by(loop.node, name)))


def inputs_fed_by(node: Any, producer: str) -> frozenset[str] | None:
    """This node's input ids whose source is an output of ``producer`` (None if dora won't say)."""
    try:
        inputs = (node.node_config() or {}).get("inputs") or {}
    except (AttributeError, RuntimeError, TypeError):
        return None
    fed = set()
    for input_id, spec in inputs.items():
        source = spec.get("source", "") if isinstance(spec, dict) else str(spec)
        if str(source).split("/", 1)[0] == producer:
            fed.add(str(input_id))
    return frozenset(fed) if inputs else None


def announce_restart(loop: Loop) -> None:
    """This process is a restart: say so, and tell the nodes downstream that it is ready again.

    dora drops what is sent to a node while it is down (its restart delay and model loading), so
    the downstream stages treat our readiness like our crash: work that went into the gap is
    reported lost (the frontend fails the utterances still in flight) instead of awaited forever."""
    try:
        count = loop.node.restart_count() if loop.node.is_restart() else 0
    except AttributeError:  # test doubles without the restart API
        return
    if count:
        log.warning(
            "%s: restarted by dora (restart %d); in-flight work of the previous process is lost", loop.stage.name, count
        )
        loop.send_all(mark_ready(loop.stage.upstream_restarted(loop.stage.name, None), loop.stage.name))


def is_timeout(event: dict[str, Any]) -> bool:
    """dora answers ``next(timeout=...)`` that ran out with an ERROR event "Receiver timed out"."""
    return event.get("type") == "ERROR" and "timed out" in str(event.get("error", ""))


def serve(
    node: Any, stage: Stage, clock: Callable[[], float] = time.monotonic, sleep=time.sleep, fair: bool = False
) -> None:
    """Run ``stage`` on ``node``'s events until the node is done (``fair``: pick its ``fair_inputs``
    across utterances, ``fair_queue``)."""
    loop = Loop(node, stage, fair)
    closed: set[str] = set()
    announce_restart(loop)
    loop.send_all(stage.start())
    while True:
        loop.tick_if_due(clock)
        if stage.primary_inputs and stage.primary_inputs <= closed:
            loop.drain()
            loop.tick_if_due(clock)
            if not stage.pending():
                break
        if loop.inbox.buffered and loop.control_inputs:
            loop.poll_control()  # a stop must not wait behind the backlog set aside earlier
        event = loop.next_event(clock)
        if event is NOTHING_YET:
            continue  # the loop's top ticks what is due
        if event is None:  # the stream ended: no message can arrive any more
            loop.run_out_deadlines(clock, sleep)
            break
        kind = event["type"]
        if kind == "INPUT":
            loop.dispatch(event)
        elif kind == "NODE_RESTARTED":
            loop.drain()  # dora puts the event ahead of what the old process still sent us
            restarted_upstream(loop, event)
        elif kind == "INPUT_CLOSED":
            closed.add(event["id"])
        elif kind == "STOP":
            loop.drain()
            if event.get("id") == "ALL_INPUTS_CLOSED":  # a graceful end: let timed work finish
                loop.run_out_deadlines(clock, sleep)
            break
        elif kind == "ERROR" and is_timeout(event):
            loop.send_all(stage.tick())  # the deadline we waited for
        elif kind == "ERROR":
            log.warning("%s: dora error event: %s", stage.name, event.get("error"))
    loop.send_all(stage.finish())


class DoraLogHandler(logging.Handler):
    """Forwards Python log records into dora's structured node log (``dora run`` / ``dora logs``)."""

    def __init__(self, node: Any):
        super().__init__()
        self.node = node

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.ERROR:
                self.node.log_error(message)
            elif record.levelno >= logging.WARNING:
                self.node.log_warn(message)
            elif record.levelno >= logging.INFO:
                self.node.log_info(message)
            else:
                self.node.log_debug(message)
        except Exception:
            self.handleError(record)


def connect() -> Any:
    """Join the dataflow as the node the daemon started, with our logs flowing into dora's log.

    ``GSV_LOG_LEVEL`` (default INFO) sets the level: INFO shows per-chunk and per-utterance lines.
    """
    from dora import Node

    from .settings import RuntimeSettings, from_env_or_exit

    settings = from_env_or_exit(RuntimeSettings)
    try:
        node = Node()
    except RuntimeError as e:  # e.g. another node exited before joining: one line, not dora's backtrace
        fail(f"could not join the dataflow: {join_failure(str(e))}")
    root = logging.getLogger()
    root.addHandler(DoraLogHandler(node))
    root.setLevel(settings.log_level)
    if settings.trace_dir is None:
        return node
    from .benchmark.stage_trace import traced  # GSV_TRACE_DIR: the TTFA breakdown's message stamps

    return traced(node, settings.trace_dir)


def join_failure(error: str) -> str:
    """The reason in dora's ``Node()`` error: the last cause of its "Caused by:" chain (such as
    "subscribe failed: Node bert exited before initializing dora. For more information, run `dora
    logs … --node bert`."), else its first line."""
    lines = error.strip().splitlines() or ["unknown error"]
    if "Caused by:" not in lines:
        return lines[0]
    causes = []
    for line in lines[lines.index("Caused by:") + 1 :]:
        if not line.strip():
            break
        number, colon, cause = line.strip().partition(": ")
        causes.append(cause if colon and number.isdigit() else line.strip())
    return causes[-1] if causes else lines[0]


def serve_model_node(load: Callable[[], tuple[Stage, str]], logger: logging.Logger) -> None:
    """A model node's ``main()``: threads set, its stage loaded and warmed up by ``load`` *before*
    joining the graph (dora's ready barrier holds the text meanwhile), the line saying what was
    loaded, then served. gsv-tts calls the same ``load`` functions for its stages."""
    from .settings import RuntimeSettings, from_env_or_exit

    configure_threads()
    stage, loaded = load()
    node = connect()
    logger.info(loaded)
    serve(node, stage, fair=from_env_or_exit(RuntimeSettings).fair_scheduling)


def configure_threads() -> None:
    """CPU sharing between co-located nodes: torch threads (GSV_THREADS) and priority (GSV_NICE).

    ``GSV_NICE`` lowers this process's scheduling priority (``os.nice``): a node whose output is
    less urgent (the GPT decoding ahead of playback) then yields the cores to the one that makes
    the next audible sample (the vocoder). ``OMP_WAIT_POLICY=PASSIVE`` must be set in the node's
    environment instead (the OpenMP runtime reads it when torch is imported, before this runs).
    """
    from .settings import RuntimeSettings, from_env_or_exit

    settings = from_env_or_exit(RuntimeSettings)
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    if settings.nice:
        os.nice(settings.nice)


def fail(message: str) -> NoReturn:
    """Exit a node before it serves, with one clear line on stderr (shown by dora's logs)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)
