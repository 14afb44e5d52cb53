"""The event loop every node shares: dora events in, a stage's messages out.

A node is a *stage* (pure logic: input message -> output messages, testable without a daemon)
plus this loop. The loop decides when a node is done:

* dora ends a node with ``STOP`` once all of its inputs are closed, or on ``dora stop``;
* a node whose graph has a feedback edge (text-frontend <-> reference) would never see all inputs
  close, so a stage names its *primary* inputs: once those are closed and the stage has nothing
  pending, the node finishes.

dora delivers ``INPUT_CLOSED`` ahead of messages still queued for that input, so the loop drains the
local queue before it believes an input is exhausted: no message is dropped at shutdown.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NoReturn, Protocol

import pyarrow as pa

from .messages import MessageError

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

    def start(self) -> Iterable[Outgoing]:
        """Messages to send once the node is connected, before any input (e.g. the default voice)."""

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing]:
        """React to one input message."""

    def pending(self) -> bool:
        """True while the stage holds work that waits for another input."""

    def finish(self) -> Iterable[Outgoing]:
        """Called once when the node ends: flush or report what could not be completed."""


class StageBase:
    """Defaults for stages with nothing pending and nothing to flush."""

    name = "stage"
    primary_inputs: frozenset[str] = frozenset()

    def start(self) -> Iterable[Outgoing]:
        return ()

    def pending(self) -> bool:
        return False

    def finish(self) -> Iterable[Outgoing]:
        return ()


def send_all(node: Any, messages: Iterable[Outgoing]) -> int:
    count = 0
    for m in messages:
        node.send_output(m.output_id, m.data, m.metadata)
        count += 1
    return count


def dispatch(node: Any, stage: Stage, event: dict[str, Any]) -> None:
    """Feed one INPUT event to the stage; a malformed message is logged and skipped, not fatal."""
    try:
        send_all(node, stage.handle(event["id"], event["value"], dict(event.get("metadata") or {})))
    except MessageError as e:
        log.error("%s: dropped malformed message on '%s': %s", stage.name, event["id"], e)


def serve(node: Any, stage: Stage) -> None:
    """Run ``stage`` on ``node``'s events until the node is done."""
    closed: set[str] = set()
    send_all(node, stage.start())
    for event in _events(node):
        kind = event["type"]
        if kind == "INPUT":
            dispatch(node, stage, event)
        elif kind == "INPUT_CLOSED":
            closed.add(event["id"])
        elif kind == "STOP":
            _drain(node, stage)
            break
        elif kind == "ERROR":
            log.warning("%s: dora error event: %s", stage.name, event.get("error"))
        if stage.primary_inputs and stage.primary_inputs <= closed:
            _drain(node, stage)
            if not stage.pending():
                break
    send_all(node, stage.finish())


def _events(node: Any) -> Iterator[dict[str, Any]]:
    while True:
        event = node.next()
        if event is None:
            return
        yield event


def _drain(node: Any, stage: Stage) -> None:
    """Process inputs that are already queued locally (dora may have reordered them behind a close)."""
    while (event := node.try_recv()) is not None:
        if event["type"] == "INPUT":
            dispatch(node, stage, event)


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

    node = Node()
    root = logging.getLogger()
    root.addHandler(DoraLogHandler(node))
    root.setLevel(os.environ.get("GSV_LOG_LEVEL", "INFO").upper())
    return node


def configure_threads() -> None:
    """CPU sharing between co-located nodes: torch threads (GSV_THREADS) and priority (GSV_NICE).

    ``GSV_NICE`` lowers this process's scheduling priority (``os.nice``): a node whose output is
    less urgent (the GPT decoding ahead of playback) then yields the cores to the one that makes
    the next audible sample (the vocoder). ``OMP_WAIT_POLICY=PASSIVE`` must be set in the node's
    environment instead (the OpenMP runtime reads it when torch is imported, before this runs).
    """
    threads = os.environ.get("GSV_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    nice = os.environ.get("GSV_NICE")
    if nice:
        os.nice(int(nice))


def fail(message: str) -> NoReturn:
    """Exit a node before it serves, with one clear line on stderr (shown by dora's logs)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)
