"""Time to first audio, real-time factor and playback stalls through the graph, per node setting.

A *setting* is a set of environment variables for the graph's own nodes (``gsv-*``), for one node
(``gpt.GSV_FUSED_DECODE=0``) or for all of them (``*.GSV_THREADS=1``); a node's own entry wins over
``*``. For each setting the service graph is started once, the same text is spoken ``requests``
times one after another, and the first request (a warm-up) is left out of the medians. Each request
waits until the one before was played (the sink plays utterances in turn: one queued behind
another's audio would show no stalls). ``scripts/bench_streaming.py`` is the command;
docs/performance.md ("Streaming through the graph") has the figures.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..model_paths import ModelPaths
from . import stage_trace
from .dataflow import GraphRun, budget_gpt_checkpoint, node_env

ALL_NODES = "*"


@dataclass(frozen=True)
class Setting:
    name: str
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # node id (or "*") -> variables

    @classmethod
    def parse(cls, text: str) -> Setting:
        """``name`` or ``name:node.VAR=value,node.VAR=value`` (node ``*`` = every gsv node)."""
        name, _, assignments = text.partition(":")
        if not name:
            raise ValueError(f"setting {text!r}: a name comes first, e.g. unfused:gpt.GSV_FUSED_DECODE=0")
        env: dict[str, dict[str, str]] = {}
        for assignment in filter(None, assignments.split(",")):
            target, equals, value = assignment.partition("=")
            node, dot, variable = target.partition(".")
            if not (equals and dot and node and variable):
                raise ValueError(f"setting {text!r}: {assignment!r} is not node.VARIABLE=value")
            env.setdefault(node, {})[variable] = value
        return cls(name, env)

    def apply(self, graph: dict[str, Any]) -> dict[str, Any]:
        """The graph with this setting's variables in its gsv nodes' ``env`` (a node's own wins)."""
        for node in graph["nodes"]:
            if not str(node.get("path", "")).startswith("gsv-"):
                continue  # dora's runtime (operators) and the benchmark's collector
            for key in (ALL_NODES, node["id"]):
                if key in self.env:
                    node.setdefault("env", {}).update(self.env[key])
        unknown = set(self.env) - {ALL_NODES} - {n["id"] for n in graph["nodes"]}
        if unknown:
            raise ValueError(f"setting {self.name!r} names nodes the graph does not have: {sorted(unknown)}")
        return graph


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile, interpolated between the nearest ranks (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(name: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
    measured = reports[1:] or reports  # the first request warms the graph up
    median = lambda key: round(statistics.median(r[key] for r in measured), 4)  # noqa: E731
    return {
        "setting": name,
        "requests": len(measured),
        "ttfa_s": median("ttfa_s"),
        "ttfa_p90_s": round(percentile([r["ttfa_s"] for r in measured], 0.9), 4),
        "rtf": median("rtf"),
        "stall_s": median("stall_s"),
        "ttfa_each_s": [r["ttfa_s"] for r in measured],
        "errors": [e for r in reports for e in r["errors"]],
    }


def probe(
    repo: Path,
    workdir: Path,
    paths: ModelPaths,
    setting: Setting,
    text: str,
    language: str,
    requests: int,
    tokens_per_segment: int,
    threads: int,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
    trace: bool = False,
) -> dict[str, Any]:
    """``trace``: every node stamps its messages (``GSV_TRACE_DIR``) and the result gets the first
    segment's ``breakdown`` (:mod:`.stage_trace`), the warm-up request left out as for the medians."""
    workdir.mkdir(parents=True, exist_ok=True)
    budget = budget_gpt_checkpoint(paths, tokens_per_segment, workdir) if paths.development else None
    env = node_env(paths, budget, "cpu", "float32", threads, seed)
    trace_dir = workdir.resolve() / "trace"  # the nodes write it from their own folders
    if trace:
        shutil.rmtree(trace_dir, ignore_errors=True)  # a previous run's lines would mix in
        env["GSV_TRACE_DIR"] = str(trace_dir)
    graph = GraphRun(repo, workdir, env)
    patched = setting.apply(yaml.safe_load(graph.graph.read_text(encoding="utf-8")))
    graph.graph.write_text(yaml.safe_dump(patched, allow_unicode=True, sort_keys=False), encoding="utf-8")
    reports = []
    try:
        startup = graph.start()
        for i in range(requests):
            reports.append(graph.say(text, language, until_played=True))
            progress(f"{setting.name}: request {i + 1}/{requests}")
    finally:
        graph.stop()
    result = summarize(setting.name, reports) | {"startup_s": round(startup, 1), "env": setting.env}
    if trace:
        result["breakdown"] = stage_trace.breakdown(stage_trace.read_trace(trace_dir))
    return result


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| setting | env | TTFA median s | TTFA p90 s | RTF median | stall s per utterance | requests |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        env = (
            "; ".join(f"{node}: " + ", ".join(f"{k}={v}" for k, v in vs.items()) for node, vs in r["env"].items())
            or "graph defaults"
        )
        lines.append(
            f"| {r['setting']} | {env} | {r['ttfa_s']:.3f} | {r.get('ttfa_p90_s', float('nan')):.3f} | {r['rtf']:.3f}"
            f" | {r['stall_s']:.2f} | {r['requests']} |"
        )
    return "\n".join(lines)
