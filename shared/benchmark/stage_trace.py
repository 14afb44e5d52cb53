"""Where the time to first audio goes: per-node message stamps through the graph.

With ``GSV_TRACE_DIR`` set, ``node_runtime.connect`` wraps each node's dora connection in
:class:`TracedNode`: every input message the node receives and every output it sends becomes one
JSON line in ``DIR/<node>-<pid>.jsonl`` — unix time, direction, port and the segment keys. A stage
adds points of its own with :func:`mark` (the gpt's first sampled token, which ends its prefill).
Off by default: untraced nodes pay one ``None`` check per :func:`mark`.

:func:`first_audio_path` turns one run's lines into the first segment's path for each utterance
(text received → text-input → frontend → bert → gpt prefill → first chunk → vocoder → sink), and
:func:`breakdown` gives the median of each step over the requests. The stamps share one clock (the
nodes run on one machine). A message's *transfer* is its receiver's stamp minus its sender's: dora's
queueing and delivery, plus any time the receiver was still busy with earlier work.
``scripts/bench_streaming.py --trace`` is the command; docs/performance.md has the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import messages as m

KEYS = (m.UTTERANCE_ID, m.SEGMENT_INDEX, m.CHUNK_INDEX, m.TEXT_RECEIVED_AT)

Write = Callable[[dict[str, Any]], None]
_write: Write | None = None  # set once this process is traced
_name = ""


def stamp(direction: str, node: str, port: str, metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """One trace line for a message of an utterance; None for messages that belong to none."""
    metadata = metadata or {}
    if m.UTTERANCE_ID not in metadata:
        return None
    record = {"t": time.time(), "node": node, "dir": direction, "port": port}
    return record | {k: metadata[k] for k in KEYS if k in metadata}


class TracedNode:
    """A dora node whose received inputs and sent outputs are written out as trace lines."""

    def __init__(self, node: Any, name: str, write: Write):
        self._node, self._name, self._write = node, name, write

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._node, attribute)

    def _received(self, event: dict[str, Any] | None) -> dict[str, Any] | None:
        if event is not None and event.get("type") == "INPUT":
            record = stamp("in", self._name, str(event.get("id")), event.get("metadata"))
            if record is not None:
                self._write(record)
        return event

    def next(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        return self._received(self._node.next(*args, **kwargs))

    def try_recv(self) -> dict[str, Any] | None:
        return self._received(self._node.try_recv())

    def send_output(self, output_id: str, data: Any, metadata: dict[str, Any] | None = None) -> None:
        record = stamp("out", self._name, output_id, metadata)
        if record is not None:
            self._write(record)  # stamped when ready: the send's own cost counts as transfer
        self._node.send_output(output_id, data, metadata or {})


def node_name(argv0: str) -> str:
    """The node a ``gsv-*`` console script serves (``gsv-text-input`` -> ``text-input``)."""
    return os.path.basename(argv0).removeprefix("gsv-")


def line_writer(path: Path) -> Write:
    out = open(path, "a", encoding="utf-8", buffering=1)  # line-buffered: a killed node keeps its lines

    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps(record) + "\n")

    return write


def traced(node: Any, folder: Path | None) -> Any:
    """``node`` itself, or (``folder`` set: ``GSV_TRACE_DIR``) the node wrapped to trace into it."""
    global _write, _name
    if folder is None:
        return node
    folder.mkdir(parents=True, exist_ok=True)
    _name = node_name(sys.argv[0])
    _write = line_writer(folder / f"{_name}-{os.getpid()}.jsonl")
    return TracedNode(node, _name, _write)


def mark(point: str, key: m.SegmentKey) -> None:
    """A stage's own point in the trace (e.g. the gpt's first token); nothing when untraced."""
    if _write is None:
        return
    record = {"t": time.time(), "node": _name, "dir": "mark", "port": point}
    _write(record | {m.UTTERANCE_ID: key.utterance_id, m.SEGMENT_INDEX: key.segment_index})


def read_trace(folder: Path) -> list[dict[str, Any]]:
    """Every line of every node's trace file in ``folder``, in time order."""
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return sorted(records, key=lambda r: r["t"])


# The first segment's path, in order: (point, node, direction, port, first chunk only).
PATH = (
    ("text-input sent", "text-input", "out", m.TEXT, False),
    ("frontend received", "text-frontend", "in", m.TEXT, False),
    ("frontend sent", "text-frontend", "out", m.PHONEMES, False),
    ("bert received", "bert", "in", m.PHONEMES, False),
    ("bert sent", "bert", "out", m.PHONE_FEATURES, False),
    ("gpt received", "gpt", "in", m.PHONE_FEATURES, False),
    ("gpt first token", "gpt", "mark", "first_token", False),
    ("gpt sent chunk 0", "gpt", "out", m.SEMANTIC_TOKENS, True),
    ("vocoder received", "vocoder", "in", m.SEMANTIC_TOKENS, True),
    ("vocoder sent audio", "vocoder", "out", m.AUDIO, True),
    ("sink received", "audio-sink", "in", m.AUDIO, True),
)

# What each step between consecutive points is called in the breakdown.
STEPS = (
    "text-input: received → sent",
    "transfer text → frontend",
    "frontend: text → phonemes",
    "transfer phonemes → bert",
    "bert: phonemes → features",
    "transfer features → gpt",
    "gpt: prefill + first token",
    "gpt: tokens 2..first chunk",
    "transfer tokens → vocoder",
    "vocoder: first run",
    "transfer audio → sink",
)


def first_audio_path(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per utterance (in the order they arrived): the time of each PATH point of its segment 0
    (chunk 0 where it applies), ``text received`` first; utterances missing a point are left out."""
    points: dict[str, dict[str, float]] = {}
    for r in records:
        utterance = r.get(m.UTTERANCE_ID)
        if utterance is None or r.get(m.SEGMENT_INDEX, 0) != 0:
            continue
        seen = points.setdefault(utterance, {})
        if m.TEXT_RECEIVED_AT in r:
            seen.setdefault("text received", float(r[m.TEXT_RECEIVED_AT]))
        for point, node, direction, port, first_chunk in PATH:
            if (r["node"], r["dir"], r["port"]) == (node, direction, port) and not (
                first_chunk and r.get(m.CHUNK_INDEX, 0) != 0
            ):
                seen.setdefault(point, r["t"])
    wanted = ("text received",) + tuple(p[0] for p in PATH)
    complete = {u: p for u, p in points.items() if all(w in p for w in wanted)}
    return dict(sorted(complete.items(), key=lambda item: item[1]["text received"]))


def steps(path: dict[str, float]) -> dict[str, float]:
    """The durations between one utterance's consecutive points, named by STEPS, plus the total."""
    times = [path["text received"]] + [path[p[0]] for p in PATH]
    out = {name: b - a for name, a, b in zip(STEPS, times[:-1], times[1:], strict=True)}
    return out | {"total (text received → sink)": times[-1] - times[0]}


def breakdown(records: Iterable[dict[str, Any]], skip: int = 1) -> dict[str, Any]:
    """Median (and min, max) of each step over the utterances, the first ``skip`` (warm-up) left out."""
    per_utterance = [steps(p) for p in list(first_audio_path(records).values())[skip:]]
    if not per_utterance:
        return {"requests": 0, "steps": {}}
    names = list(per_utterance[0])
    return {
        "requests": len(per_utterance),
        "steps": {
            name: {
                "median_s": round(statistics.median(s[name] for s in per_utterance), 4),
                "min_s": round(min(s[name] for s in per_utterance), 4),
                "max_s": round(max(s[name] for s in per_utterance), 4),
            }
            for name in names
        },
    }


def markdown(result: dict[str, Any], title: str = "") -> str:
    lines = [
        f"| step{f' ({title})' if title else ''} | median ms | min ms | max ms |",
        "|---|---|---|---|",
    ]
    for name, s in result["steps"].items():
        lines.append(f"| {name} | {1000 * s['median_s']:.0f} | {1000 * s['min_s']:.0f} | {1000 * s['max_s']:.0f} |")
    return "\n".join(lines)
