"""End-to-end health probe: one empty message that passes every node of the speech path.

A probe enters at text-frontend's ``text`` input with metadata ``probe`` (an id). Each node's loop
(``node_runtime``) forwards it on the stage's data output without touching the stage — text-frontend
on ``phonemes``, bert on ``phone_features``, gpt on ``semantic_tokens``, vocoder on ``audio`` —
adding its name and clock to ``probe_hops``; audio-sink answers on ``metrics`` with a JSON report.
Like the data, the probe queues behind what is already waiting, so a reply proves that the path
delivers now, including every edge between machines; no reply within the timeout means it does
not (a crashed node is restarted by dora and announces itself; a silent stall is found only so).

``gsv-say --health`` asks text-input for a probe (it needs the sink's ``metrics`` wired to
text-input's ``health`` input, as in dataflows/distributed.yml); a server with its own dora node
(the HTTP server) can send :func:`probe_request` on ``text`` and read the probe back on the
vocoder's ``audio`` with :func:`is_probe` and :func:`reply_report`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

PROBE = "probe"  # metadata: the probe's id; a message carrying it is not data
PROBE_HOPS = "probe_hops"  # metadata: ["node@unix seconds", ...] in path order
PROBE_SENT_AT = "probe_sent_at"
PATH = ("text-frontend", "bert", "gpt", "vocoder", "audio-sink")
DEFAULT_TIMEOUT_S = 10.0


def probe_request(probe_id: str | None = None, clock: Callable[[], float] = time.time) -> tuple[pa.Array, dict]:
    """The message to send on text-frontend's ``text`` input."""
    probe_id = probe_id or f"probe-{uuid.uuid4().hex[:12]}"
    return pa.array([""], type=pa.string()), {PROBE: probe_id, PROBE_SENT_AT: clock()}


def is_probe(metadata: Mapping[str, Any]) -> bool:
    return bool(metadata.get(PROBE))


def passed(metadata: Mapping[str, Any], node: str, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """The probe's metadata after ``node`` forwarded it."""
    hops = [str(h) for h in (metadata.get(PROBE_HOPS) or [])]
    return {**metadata, PROBE_HOPS: [*hops, f"{node}@{clock():.3f}"]}


def reply_report(
    metadata: Mapping[str, Any], path: tuple[str, ...] = PATH, clock: Callable[[], float] = time.time
) -> dict[str, Any]:
    """What a probe that came back says: every hop with its delay since the probe was sent."""
    sent = float(metadata.get(PROBE_SENT_AT) or 0.0)
    hops = []
    for hop in metadata.get(PROBE_HOPS) or []:
        node, _, at = str(hop).rpartition("@")
        hops.append({"node": node, "after_s": round(float(at) - sent, 3) if sent else None})
    missing = [n for n in path if n not in {h["node"] for h in hops}]
    return {
        PROBE: str(metadata.get(PROBE)),
        "ok": not missing,
        "round_trip_s": round(clock() - sent, 3) if sent else None,
        "hops": hops,
    } | ({"error": f"the probe came back without passing {missing}"} if missing else {})


def timeout_report(probe_id: str, timeout_s: float, path: tuple[str, ...] = PATH) -> dict[str, Any]:
    return {
        PROBE: probe_id,
        "ok": False,
        "error": (
            f"no answer within {timeout_s:g} s: the path {' -> '.join(path)} does not deliver. If the graph runs on "
            "two machines and a daemon reconnected to the coordinator, dora no longer delivers between them: "
            "restart the dataflow (dora stop, dora start); otherwise look for a stuck node in `dora logs`"
        ),
    }


def reply_text(report: Mapping[str, Any]) -> pa.Array:
    return pa.array([json.dumps(report)], type=pa.string())


def check(
    send_probe: Callable[[pa.Array, dict[str, Any]], None],
    next_probe_reply: Callable[[float], Mapping[str, Any] | None],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    path: tuple[str, ...] = PATH,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """One end-to-end check for a caller with its own dora node (the HTTP server's ``/health``).

    ``send_probe(data, metadata)`` sends on the output wired to text-frontend's ``text``;
    ``next_probe_reply(timeout)`` returns the metadata of the next probe that came back (the
    vocoder's ``audio`` carries it to the server: ``path=PATH[:-1]``), or None when nothing came
    within ``timeout`` seconds."""
    data, metadata = probe_request()
    probe_id = metadata[PROBE]
    send_probe(data, metadata)
    deadline = clock() + timeout_s
    while (left := deadline - clock()) > 0:
        reply = next_probe_reply(left)
        if reply is not None and reply.get(PROBE) == probe_id:
            return reply_report(reply, path)
    return timeout_report(probe_id, timeout_s, path)
