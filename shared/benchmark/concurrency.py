"""Concurrent listeners through the OpenAI server graph: ``scripts/bench.py --concurrency 1,2,4,8``.

``dataflows/openai-server.yml`` runs under ``dora run`` (the GPT node batches up to GSV_MAX_BATCH
segments of different requests). For each level N, N streaming ``POST /v1/audio/speech`` requests
(pcm, 24 kHz s16le) of mixed texts are sent at once, for a few rounds. Per stream: TTFA (first
audio byte), RTF (wall / audio seconds) and stalls: times a player that starts at the first byte
and plays in real time would have run dry (it waits, then resumes, so later deadlines move too).
Per level: seconds of audio per wall second over all streams, and its ratio to level 1.

A fairness probe asks whether a long utterance delays another's first audio: a short request is
sent once a long one is streaming, and its TTFA is set beside the short text's TTFA alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..model_paths import ModelPaths
from .cases import TextCase, select_cases, warmup_cases
from .dataflow import GraphRun, budget_gpt_checkpoint, node_env, node_rss_mib

SAMPLE_RATE = 24000  # the graph's vocoder is set to OpenAI's pcm rate
BYTES_PER_SECOND = SAMPLE_RATE * 2  # s16le mono
STALL_MIN_S = 0.01  # shorter gaps are the socket's granularity, not a player running dry
STREAM_TIMEOUT_S = 900


class ServerGraph(GraphRun):
    """``dataflows/openai-server.yml`` under ``dora run``; ready when its HTTP port accepts (the
    server opens it only once every node has loaded its model)."""

    def __init__(
        self, repo: Path, workdir: Path, env: dict[str, str], node_env: dict[str, dict[str, str]] | None = None
    ):
        super().__init__(repo, workdir, env)
        # A copy beside the run's logs (dora writes its out/ folder next to the graph file), with
        # ``node_env`` over each named node's YAML env (e.g. the vocoder's GSV_DTYPE).
        graph = yaml.safe_load((repo / "dataflows" / "openai-server.yml").read_text(encoding="utf-8"))
        for node in graph["nodes"]:
            node.setdefault("env", {}).update((node_env or {}).get(node["id"], {}))
        self.graph = workdir / "openai-server.yml"
        self.graph.write_text(yaml.safe_dump(graph, allow_unicode=True, sort_keys=False), encoding="utf-8")
        self.env = env | {"GSV_HTTP_HOST": "127.0.0.1", "GSV_HTTP_PORT": str(self.port)}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> dict[str, float]:
        return node_rss_mib(self.process.pid) if self.process else {}


def server_env(paths: ModelPaths, workdir: Path, tokens: int, seed: int, threads: int = 1) -> dict[str, str]:
    """The nodes' environment; a development GPT gets a token budget (random weights never say EOS)."""
    budget = budget_gpt_checkpoint(paths, tokens, workdir) if paths.development else None
    return node_env(paths, budget, "cpu", "float32", threads, seed)


# ---- one stream ------------------------------------------------------------------------------------


@dataclass
class Stream:
    text: str
    language: str
    started: float = 0.0  # perf_counter when the request was sent
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (perf_counter, bytes so far)
    pcm: bytes = b""
    status: int = 0
    error: str | None = None
    cancelled: bool = False

    @property
    def audio_s(self) -> float:
        return len(self.pcm) / BYTES_PER_SECOND

    @property
    def ttfa_s(self) -> float | None:
        return self.arrivals[0][0] - self.started if self.arrivals else None

    @property
    def wall_s(self) -> float:
        return (self.arrivals[-1][0] if self.arrivals else self.started) - self.started

    def stalls(self) -> list[float]:
        """Gaps a real-time player starting at the first byte would have heard (seconds each)."""
        return [gap for _, gap in self.stalls_at()]

    def stalls_at(self) -> list[tuple[float, float]]:
        """The same gaps as (seconds of audio played before the gap, gap)."""
        if not self.arrivals:
            return []
        start, shift, previous, gaps = self.arrivals[0][0], 0.0, self.arrivals[0][1], []
        for at, total in self.arrivals[1:]:
            due = start + shift + previous / BYTES_PER_SECOND  # when playback runs out of what it had
            if at - due > STALL_MIN_S:
                gaps.append((previous / BYTES_PER_SECOND, at - due))
                shift += at - due
            previous = total
        return gaps

    def record(self) -> dict[str, Any]:
        stalls = self.stalls()
        return {
            "text": self.text[:30],
            "language": self.language,
            "ttfa_s": _round(self.ttfa_s),
            "audio_s": round(self.audio_s, 3),
            "rtf": round(self.wall_s / self.audio_s, 3) if self.audio_s else None,
            "stall_count": len(stalls),
            "stall_s": round(sum(stalls), 3),
            "stalls_at_audio_s": [[round(played, 2), round(gap, 3)] for played, gap in self.stalls_at()],
            "error": self.error,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def speech_body(text: str, language: str) -> dict[str, Any]:
    return {
        "model": "gpt-sovits",
        "voice": "default",
        "input": text,
        "response_format": "pcm",
        "language": language,
    }


async def stream(
    session: Any, base: str, text: str, language: str, cancel_after_bytes: int | None = None, into: Stream | None = None
) -> Stream:
    """One streaming request; with ``cancel_after_bytes`` the connection is closed once that much
    audio arrived (a listener who leaves). ``into`` is filled as bytes arrive (watch it live)."""
    result = into or Stream(text, language)
    result.started = time.perf_counter()
    try:
        async with session.post(f"{base}/v1/audio/speech", json=speech_body(text, language)) as response:
            result.status = response.status
            if response.status != 200:
                result.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return result
            parts: list[bytes] = []
            async for part in response.content.iter_any():
                parts.append(part)
                total = result.arrivals[-1][1] + len(part) if result.arrivals else len(part)
                result.arrivals.append((time.perf_counter(), total))
                if cancel_after_bytes is not None and total >= cancel_after_bytes:
                    result.cancelled = True
                    response.close()  # drops the connection: the server stops the utterance
                    break
            result.pcm = b"".join(parts)
    except Exception as e:  # a failed stream is a measurement, not the end of the benchmark
        result.error = f"{type(e).__name__}: {e}"
    return result


async def streams_at_once(base: str, requests: list[tuple[str, str]]) -> tuple[list[Stream], float]:
    """All requests sent together; returns their streams and the wall time until the last ended."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=STREAM_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)  # every stream on its own connection, none queued here
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        started = time.perf_counter()
        results = await asyncio.gather(*(stream(session, base, t, lang) for t, lang in requests))
    return list(results), time.perf_counter() - started


# ---- levels ----------------------------------------------------------------------------------------


def round_requests(cases: list[TextCase], n: int, round_index: int) -> list[tuple[str, str]]:
    """n texts for one round, rotated so that every level hears the same mix over its rounds."""
    return [
        (cases[(round_index * n + j) % len(cases)].text, cases[(round_index * n + j) % len(cases)].language)
        for j in range(n)
    ]


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: list[float]) -> dict[str, float | None]:
    return {"p50": _round(percentile(values, 50)), "p95": _round(percentile(values, 95))} if values else {}


def level_summary(
    n: int, streams: list[Stream], walls: list[float], rss: dict[str, float], cpu_s: dict[str, float] | None = None
) -> dict[str, Any]:
    """``cpu_s``: CPU seconds each node used during the level; reported per second of audio, which
    says where the cores go once they are the limit."""
    records = [s.record() for s in streams]
    ok = [r for r in records if r["error"] is None and r["audio_s"] > 0]
    audio = sum(r["audio_s"] for r in ok)
    per_audio_s = {k: round(v / audio, 3) for k, v in sorted((cpu_s or {}).items())} if audio else {}
    return {
        "concurrency": n,
        "streams": len(records),
        "failed": len(records) - len(ok),
        "ttfa_s": summarize([r["ttfa_s"] for r in ok]),
        "rtf": summarize([r["rtf"] for r in ok]),
        "stall_s": summarize([r["stall_s"] for r in ok]),
        "stall_count": summarize([float(r["stall_count"]) for r in ok]),
        "streams_with_stalls": sum(1 for r in ok if r["stall_count"]),
        "aggregate_audio_per_wall_s": round(audio / sum(walls), 3) if walls else None,
        "rss_after_mib": rss,
        "cpu_s_per_audio_s": per_audio_s,
        "records": records,
    }


def run_level(graph: ServerGraph, cases: list[TextCase], n: int, rounds: int) -> dict[str, Any]:
    streams, walls = [], []
    cpu_before = graph.cpu_s()
    for r in range(rounds):
        got, wall = asyncio.run(streams_at_once(graph.base_url, round_requests(cases, n, r)))
        streams += got
        walls.append(wall)
    cpu = {k: v - cpu_before.get(k, 0.0) for k, v in graph.cpu_s().items()}
    return level_summary(n, streams, walls, graph.rss(), cpu)


# ---- fairness ----------------------------------------------------------------------------------------


async def short_behind_long(base: str, long: TextCase, short: TextCase) -> dict[str, Any]:
    """A short request sent once a long one is streaming audio: does it wait for the long one?"""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STREAM_TIMEOUT_S)) as session:
        alone = await stream(session, base, short.text, short.language)
        long_stream = Stream(long.text, long.language)
        long_task = asyncio.create_task(stream(session, base, long.text, long.language, into=long_stream))
        while not long_stream.arrivals and not long_task.done():
            await asyncio.sleep(0.02)
        behind = await stream(session, base, short.text, short.language)
        await long_task
    return {
        "long": long.name,
        "short": short.name,
        "short_alone_ttfa_s": _round(alone.ttfa_s),
        "short_behind_long_ttfa_s": _round(behind.ttfa_s),
        "short_behind_long_rtf": behind.record()["rtf"],
        "long_audio_s": round(long_stream.audio_s, 2),
        "short_finished_before_long": bool(
            behind.arrivals and long_stream.arrivals and behind.arrivals[-1][0] < long_stream.arrivals[-1][0]
        ),
    }


# ---- the whole benchmark ------------------------------------------------------------------------------


def run_concurrency(
    repo: Path,
    workdir: Path,
    paths: ModelPaths,
    levels: list[int],
    rounds: int,
    tokens: int,
    seed: int,
    cases: list[TextCase] | None = None,
    progress: Any = print,
    threads: int = 1,
    vocoder_dtype: str | None = None,
) -> dict[str, Any]:
    """``threads``: torch threads per node; ``vocoder_dtype``: the vocoder node's GSV_DTYPE (the
    others stay float32), e.g. bfloat16 for the generator on the matrix units."""
    cases = cases or select_cases(lengths=["short", "medium"])
    vocoder_env = {"vocoder": {"GSV_DTYPE": vocoder_dtype}} if vocoder_dtype else None
    graph = ServerGraph(repo, workdir, server_env(paths, workdir, tokens, seed, threads), vocoder_env)
    result: dict[str, Any] = {
        "levels": [],
        "log": str(graph.log_path),
        "tokens_per_segment": tokens,
        "threads_per_node": threads,
        "vocoder_dtype": vocoder_dtype or "float32",
    }
    try:
        progress("concurrency: starting the OpenAI server graph")
        result["startup_s"] = round(graph.start(), 1)
        # One request per language first: lazy imports and G2P dictionaries are not a level's cost.
        asyncio.run(streams_at_once(graph.base_url, [(c.text, c.language) for c in warmup_cases(cases)]))
        for n in levels:
            result["levels"].append(run_level(graph, cases, n, rounds))
            progress(f"concurrency {n}: {_line(result['levels'][-1])}")
        result["fairness"] = asyncio.run(short_behind_long(graph.base_url, *long_and_short(cases)))
        progress(f"fairness: {result['fairness']}")
        result["node_peak_rss_mib"] = graph.peaks()
    finally:
        graph.stop()
    add_speedups(result["levels"])
    return result


def long_and_short(cases: list[TextCase]) -> tuple[TextCase, TextCase]:
    by_length = sorted(cases, key=lambda c: len(c.text))
    long = next((c for c in select_cases(lengths=["long"]) if c.language == by_length[0].language), by_length[-1])
    return long, by_length[0]


def add_speedups(levels: list[dict[str, Any]]) -> None:
    base = next((lv["aggregate_audio_per_wall_s"] for lv in levels if lv["concurrency"] == 1), None)
    for lv in levels:
        agg = lv["aggregate_audio_per_wall_s"]
        lv["aggregate_vs_1"] = round(agg / base, 2) if base and agg else None


def _line(level: dict[str, Any]) -> str:
    return (
        f"TTFA p50 {level['ttfa_s'].get('p50')} p95 {level['ttfa_s'].get('p95')} s, "
        f"RTF p50 {level['rtf'].get('p50')} p95 {level['rtf'].get('p95')}, "
        f"{level['streams_with_stalls']}/{level['streams']} streams stalled, "
        f"aggregate {level['aggregate_audio_per_wall_s']} audio s / wall s"
    )


# ---- documents -------------------------------------------------------------------------------------------


def cpu_table(levels: list[dict[str, Any]]) -> str:
    """CPU seconds per second of audio, by node and level: where the cores go."""
    nodes = sorted({k for lv in levels for k in lv.get("cpu_s_per_audio_s", {})})
    if not nodes:
        return ""
    head = "| N | " + " | ".join(nodes) + " | all |\n|---|" + "---|" * (len(nodes) + 1) + "\n"
    rows = "".join(
        f"| {lv['concurrency']} | "
        + " | ".join(str(lv["cpu_s_per_audio_s"].get(k, "")) for k in nodes)
        + f" | {sum(lv['cpu_s_per_audio_s'].values()):.3f} |\n"
        for lv in levels
    )
    return "CPU seconds per second of audio, by node:\n\n" + head + rows + "\n"


def to_markdown(result: dict[str, Any]) -> str:
    host = result.get("host", {})
    rows = "\n".join(
        f"| {lv['concurrency']} | {lv['streams']} | {lv['failed']} | {lv['ttfa_s'].get('p50')} / {lv['ttfa_s'].get('p95')} "
        f"| {lv['rtf'].get('p50')} / {lv['rtf'].get('p95')} | {lv['streams_with_stalls']} "
        f"| {lv['stall_s'].get('p50')} / {lv['stall_s'].get('p95')} | {lv['aggregate_audio_per_wall_s']} "
        f"| {lv.get('aggregate_vs_1')} | {sum(lv['rss_after_mib'].values()):.0f} |"
        for lv in result["levels"]
    )
    fair = result.get("fairness") or {}
    peaks = ", ".join(f"{k} {v}" for k, v in sorted(result.get("node_peak_rss_mib", {}).items()))
    return (
        f"# Concurrency through the OpenAI server graph\n\n"
        f"{host.get('cpu_model', '')}, load average {host.get('load_average')}, {host.get('date', '')}; "
        f"model {result.get('model_dir')}, {result.get('tokens_per_segment')} GPT tokens per segment (dev model budget), "
        f"{result.get('rounds')} rounds per level, {result.get('threads_per_node', 1)} torch thread(s) per node, "
        f"vocoder {result.get('vocoder_dtype', 'float32')}.\n\n"
        "| N | streams | failed | TTFA p50 / p95 (s) | RTF p50 / p95 | streams with stalls | stall s p50 / p95 "
        "| aggregate audio s / wall s | ×(N=1) | RSS after (MiB, all nodes) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"{cpu_table(result['levels'])}"
        f"Peak RSS per node (MiB): {peaks}\n\n"
        f"Fairness: short text alone TTFA {fair.get('short_alone_ttfa_s')} s; sent while "
        f"{fair.get('long')} streams: TTFA {fair.get('short_behind_long_ttfa_s')} s, "
        f"finished before the long one: {fair.get('short_finished_before_long')}.\n"
    )


def write_outputs(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "concurrency.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    (out / "concurrency.md").write_text(to_markdown(result))
    draw_chart(result, out / "concurrency.png")


def draw_chart(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return  # the chart is optional; the table carries the same figures
    levels = result["levels"]
    ns = [lv["concurrency"] for lv in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(ns, [lv["ttfa_s"].get("p50") for lv in levels], "o-", label="TTFA p50")
    left.plot(ns, [lv["ttfa_s"].get("p95") for lv in levels], "o--", label="TTFA p95")
    left.set(xlabel="concurrent streams", ylabel="seconds", title="time to first audio")
    left.legend()
    right.plot(ns, [lv["aggregate_audio_per_wall_s"] for lv in levels], "o-")
    right.set(xlabel="concurrent streams", ylabel="audio s / wall s", title="aggregate throughput")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_from_options(opts: Any, paths: ModelPaths, repo: Path) -> None:
    """``scripts/bench.py --concurrency``: the levels, then concurrency.json/.md (and .png) in --out."""
    import tempfile

    import torch

    from .system import host_info

    workdir = Path(tempfile.mkdtemp(prefix="gsv-concurrency-"))
    cases = select_cases(opts.languages, opts.lengths)
    result = run_concurrency(
        repo,
        workdir,
        paths,
        opts.concurrency,
        opts.repeats,
        opts.tokens,
        opts.seed,
        cases,
        threads=opts.threads or 1,
        vocoder_dtype=opts.vocoder_dtype,
    )
    result |= {"host": host_info(torch.device("cpu"), torch.float32, repo).to_dict(), "rounds": opts.repeats}
    result["model_dir"] = str(paths.model_dir)
    write_outputs(result, opts.out)
    print(to_markdown(result))
