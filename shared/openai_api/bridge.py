"""The dora side of the server: one thread owns the node, the HTTP side talks to it via a queue.

dora's Python ``Node`` is not meant to be shared between threads, so only :meth:`GraphBridge.run`
touches it: it waits for events with a short timeout and, between events, sends what HTTP handlers
queued (``text`` to start an utterance, ``control`` "stop" to cancel one). Incoming ``audio`` goes
to the :class:`~.router.UtteranceRouter`.

It also knows whether the graph can take a request now (:class:`Availability`). dora drops what is
sent to a node while it restarts, so a request accepted then would wait for audio that never comes;
instead the app answers 503 with Retry-After until the node is serving again. A node is *down* from
the first news of its restart: dora's ``NODE_RESTARTED`` (the vocoder, and the text-frontend through
the ``frontend_control`` input) or a restart marker on ``audio`` (bert, gpt: forwarded down the data
path). It is *back* on the marker its new process sends once it serves (tagged ``restart_ready`` by the
node runtime), or, for the text-frontend, whose announcement does not reach the audio path, when it
echoes a probe: a ``stop`` for a made-up utterance id, which a serving frontend fans out on its
``control`` output and which cancels nothing. Should no such sign come, ``restart_grace_seconds`` ends
the wait. A node whose output closed for good makes every request a 503 until the graph is restarted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from dora_gpt_sovits import health
from dora_gpt_sovits import messages as m

from .router import Deliver, UtteranceRouter
from .schema import SpeechRequest

log = logging.getLogger("gsv.http-server")

CONTROL = "control"  # output: Utf8[1] "stop" + utterance_id -> text-frontend cancels that utterance
STOP_COMMAND = "stop"
FRONTEND = "text-frontend"
FRONTEND_CONTROL = "frontend_control"  # input: text-frontend/control (its restarts, our probes' echo)
PROBE_PREFIX = "gsv-http-probe-"
PROBE_SECONDS = 0.5  # how often a restarting frontend is asked whether it serves again
RETRY_AFTER_SECONDS = 5.0  # what a 503 during a restart tells the client


class Availability:
    """Which nodes are restarting or gone; written by the node's thread, read by HTTP handlers."""

    def __init__(self, grace_seconds: float = 120.0, clock: Callable[[], float] = time.monotonic):
        self.grace_seconds, self.clock = grace_seconds, clock
        self._lock = threading.Lock()
        self._down: dict[str, float] = {}
        self._gone: dict[str, str] = {}

    def went_down(self, node: str) -> None:
        with self._lock:
            self._down.setdefault(node, self.clock())

    def came_back(self, node: str) -> None:
        with self._lock:
            if self._down.pop(node, None) is not None:
                log.info("node %s serves again: taking requests", node)

    def gone(self, node: str, reason: str) -> None:
        with self._lock:
            self._gone.setdefault(node, reason)

    def is_down(self, node: str) -> bool:
        with self._lock:
            return node in self._down

    def unavailable(self) -> tuple[str, float | None] | None:
        """(why, seconds to wait or None when waiting will not help), or None when requests are welcome."""
        with self._lock:
            if self._gone:
                return f"the dataflow cannot serve any more: {'; '.join(self._gone.values())}", None
            now = self.clock()
            for node, since in list(self._down.items()):
                if now - since > self.grace_seconds:
                    log.warning(
                        "node %s gave no sign of serving again within %g s: taking requests again",
                        node,
                        self.grace_seconds,
                    )
                    del self._down[node]
            if self._down:
                return (
                    f"node {', '.join(sorted(self._down))} of the dataflow is restarting; retry shortly",
                    RETRY_AFTER_SECONDS,
                )
        return None


class GraphBridge:
    """Speech requests into the graph, their audio back out; the engine the HTTP app uses."""

    def __init__(
        self,
        router: UtteranceRouter | None = None,
        poll_seconds: float = 0.005,
        restart_grace_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.router = router or UtteranceRouter()
        self.poll_seconds = poll_seconds
        self.outbox: queue.SimpleQueue[tuple[str, Any, dict[str, Any]]] = queue.SimpleQueue()
        self.availability = Availability(restart_grace_seconds, clock)
        self.clock = clock
        self.probes_sent = 0
        self.first_valid_probe = 0  # echoes of probes sent before the frontend went down prove nothing
        self.next_probe_at = 0.0
        self.probing = False  # only when the frontend's control output is wired to us (else no echo comes)
        self.health_replies: queue.Queue[dict[str, Any]] = queue.Queue()  # health probes back on ``audio``
        self.health_lock = threading.Lock()  # two checks at once would take each other's replies

    # ---- called from HTTP handlers (any thread) ----
    def start(self, utterance_id: str, request: SpeechRequest, received_at: float, deliver: Deliver) -> None:
        # The message first, before the route opens: a text that cannot be sent leaves none.
        data, metadata = request.text_request(utterance_id, received_at).to_message()
        self.router.open(utterance_id, deliver)
        self.outbox.put((m.TEXT, data, metadata))

    def unavailable(self) -> tuple[str, float | None] | None:
        """Why the graph cannot take a request now (and the seconds to wait), or None."""
        return self.availability.unavailable()

    def cancel(self, utterance_id: str) -> None:
        """The client is gone: stop routing and ask the graph to drop the utterance's remaining work."""
        self.router.close(utterance_id)
        self.outbox.put((CONTROL, m.text_array(STOP_COMMAND), {m.UTTERANCE_ID: utterance_id}))

    def check_health(self, timeout_s: float = health.DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """A probe through every node from text-frontend to the vocoder and back (shared/health.py);
        blocks up to ``timeout_s``: call it from a worker thread."""

        def next_reply(wait_s: float) -> dict[str, Any] | None:
            try:
                return self.health_replies.get(timeout=wait_s)
            except queue.Empty:
                return None

        def send(data: Any, metadata: dict[str, Any]) -> None:
            self.outbox.put((m.TEXT, data, metadata))

        with self.health_lock:
            return health.check(send, next_reply, timeout_s, path=health.PATH[:-1])  # we are the end, not the sink

    # ---- the node's thread ----
    def run(self, node: Any) -> None:
        """Serve until dora stops the node (``dora stop``) or the event stream ends."""
        try:
            while True:
                self.probe_if_due()
                self.flush(node)
                event = node.next(timeout=self.poll_seconds)
                if event is None or event["type"] == "STOP":
                    break
                if event["type"] == "INPUT" and event["id"] == m.AUDIO:
                    self.on_audio(event)
                elif event["type"] == "INPUT" and event["id"] == FRONTEND_CONTROL:
                    self.on_frontend_control(dict(event.get("metadata") or {}))
                elif event["type"] == "NODE_RESTARTED":
                    self.upstream_restarted(str(event.get("id")), direct=True)
                elif event["type"] == "INPUT_CLOSED" and event["id"] in (m.AUDIO, FRONTEND_CONTROL):
                    producer = "vocoder" if event["id"] == m.AUDIO else FRONTEND
                    self.availability.gone(producer, f"the {producer} has stopped")
                    self.router.fail_all(f"the {producer} has stopped")
                # ERROR events are next()'s timeouts ("Receiver timed out"): nothing to do.
            self.flush(node)
        finally:
            self.availability.gone("http-server", "the dataflow is stopping")
            self.router.fail_all("the dataflow is stopping")

    def flush(self, node: Any) -> None:
        while True:
            try:
                output_id, data, metadata = self.outbox.get_nowait()
            except queue.Empty:
                return
            node.send_output(output_id, data, metadata)

    def upstream_restarted(self, node: str, ready: bool = False, direct: bool = False) -> None:
        """A node restarted (docs/reliability.md): what it held is lost, so no request in flight can
        be trusted to complete; each ends with the reason instead of waiting forever. Until it serves
        again (``ready``), new requests are refused (:meth:`unavailable`)."""
        if ready:
            self.availability.came_back(node)
        else:
            self.availability.went_down(node)
            if node == FRONTEND and direct:
                self.probing = True
                self.first_valid_probe = self.probes_sent
        log.error("node %s %s: failing every request in flight", node, "serves again" if ready else "restarted")
        self.router.fail_all(f"node {node} restarted mid-utterance; please retry")

    def probe_if_due(self) -> None:
        if not self.probing or not self.availability.is_down(FRONTEND) or self.clock() < self.next_probe_at:
            return
        self.next_probe_at = self.clock() + PROBE_SECONDS
        self.outbox.put((CONTROL, m.text_array(STOP_COMMAND), {m.UTTERANCE_ID: f"{PROBE_PREFIX}{self.probes_sent}"}))
        self.probes_sent += 1

    def on_frontend_control(self, metadata: dict[str, Any]) -> None:
        """The frontend's fan-out of a stop: our probe's echo means it serves again; others are ignored."""
        probe = str(metadata.get(m.UTTERANCE_ID) or "")
        if (
            probe.startswith(PROBE_PREFIX)
            and probe[len(PROBE_PREFIX) :].isdigit()
            and int(probe[len(PROBE_PREFIX) :]) >= self.first_valid_probe
        ):
            self.availability.came_back(FRONTEND)

    def on_audio(self, event: dict[str, Any]) -> None:
        metadata = dict(event.get("metadata") or {})
        if health.is_probe(metadata):
            self.health_replies.put(metadata)
            return
        if (restarted := m.restarted_node(metadata)) is not None:
            self.upstream_restarted(restarted, ready=m.restart_ready(metadata))
            return
        try:
            chunk = m.AudioChunk.from_event(event["value"], dict(event.get("metadata") or {}))
        except m.MessageError as e:
            log.error("dropped malformed audio message: %s", e)
            return
        self.router.route(chunk)
