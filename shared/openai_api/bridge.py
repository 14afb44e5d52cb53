"""The dora side of the server: one thread owns the node, the HTTP side talks to it via a queue.

dora's Python ``Node`` is not meant to be shared between threads, so only :meth:`GraphBridge.run`
touches it: it waits for events with a short timeout and, between events, sends what HTTP handlers
queued (``text`` to start an utterance, ``control`` "stop" to cancel one). Incoming ``audio`` goes
to the :class:`~.router.UtteranceRouter`.
"""

from __future__ import annotations

import logging
import queue
from typing import Any

from dora_gpt_sovits import messages as m

from .router import Deliver, UtteranceRouter
from .schema import SpeechRequest

log = logging.getLogger("gsv.http-server")

CONTROL = "control"  # output: Utf8[1] "stop" + utterance_id -> text-frontend cancels that utterance
STOP_COMMAND = "stop"


class GraphBridge:
    """Speech requests into the graph, their audio back out; the engine the HTTP app uses."""

    def __init__(self, router: UtteranceRouter | None = None, poll_seconds: float = 0.005):
        self.router = router or UtteranceRouter()
        self.poll_seconds = poll_seconds
        self.outbox: queue.SimpleQueue[tuple[str, Any, dict[str, Any]]] = queue.SimpleQueue()

    # ---- called from HTTP handlers (any thread) ----
    def start(self, utterance_id: str, request: SpeechRequest, received_at: float, deliver: Deliver) -> None:
        self.router.open(utterance_id, deliver)
        self.outbox.put((m.TEXT, m.text_array(request.input), request.text_metadata(utterance_id, received_at)))

    def cancel(self, utterance_id: str) -> None:
        """The client is gone: stop routing and ask the graph to drop the utterance's remaining work."""
        self.router.close(utterance_id)
        self.outbox.put((CONTROL, m.text_array(STOP_COMMAND), {m.UTTERANCE_ID: utterance_id}))

    # ---- the node's thread ----
    def run(self, node: Any) -> None:
        """Serve until dora stops the node (``dora stop``) or the event stream ends."""
        try:
            while True:
                self.flush(node)
                event = node.next(timeout=self.poll_seconds)
                if event is None or event["type"] == "STOP":
                    break
                if event["type"] == "INPUT" and event["id"] == m.AUDIO:
                    self.on_audio(event)
                elif event["type"] == "NODE_RESTARTED":
                    self.upstream_restarted(str(event.get("id")))
                elif event["type"] == "INPUT_CLOSED" and event["id"] == m.AUDIO:
                    self.router.fail_all("the vocoder's audio output closed")
                # ERROR events are next()'s timeouts ("Receiver timed out"): nothing to do.
            self.flush(node)
        finally:
            self.router.fail_all("the dataflow is stopping")

    def flush(self, node: Any) -> None:
        while True:
            try:
                output_id, data, metadata = self.outbox.get_nowait()
            except queue.Empty:
                return
            node.send_output(output_id, data, metadata)

    def upstream_restarted(self, node: str) -> None:
        """A node restarted (docs/reliability.md): what it held is lost, so no request in flight can
        be trusted to complete; each ends with the reason instead of waiting forever."""
        log.error("node %s restarted: failing every request in flight", node)
        self.router.fail_all(f"node {node} restarted mid-utterance; please retry")

    def on_audio(self, event: dict[str, Any]) -> None:
        if (restarted := m.restarted_node(dict(event.get("metadata") or {}))) is not None:
            self.upstream_restarted(restarted)
            return
        try:
            chunk = m.AudioChunk.from_event(event["value"], dict(event.get("metadata") or {}))
        except m.MessageError as e:
            log.error("dropped malformed audio message: %s", e)
            return
        self.router.route(chunk)
