"""Time to first audio through the real dataflow: ``dora run`` of the service graph, text in over TCP,
the audio-sink's ``metrics`` out.

The graph is ``dataflows/service.yml`` with three changes made in a generated copy: text-input
listens on a free port, the level-meter operator's path is absolute (the copy lives in the work
directory), and a ``bench-metrics`` node (:mod:`.metrics_collector`) writes each ``metrics``
message to a file. Requests are sent one at a time, each after the previous one was played (its
metrics arrived and the sink's player is idle again), so every TTFA and RTF is that of an idle,
warm graph (models loaded, the voice encoded) with nothing queued at the sink.

With a development model the GPT is given the in-process benchmark's token budget through a copy of
its checkpoint whose ``max_sec`` gives ``early_stop_num`` = that budget (the gpt node has no other
knob); real weights stop at EOS as they would in use.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..checkpoint_io import read_checkpoint
from ..gpt.config import EARLY_STOP_PER_SECOND
from ..model_paths import ModelPaths
from .cases import TextCase, warmup_cases
from .system import _status_kib

READY_TIMEOUT_S = 900  # seven processes importing torch and loading models on 2 busy cores
REQUEST_TIMEOUT_S = 300  # the longest text takes ~80 s on a busy 2-core machine


class DataflowError(RuntimeError):
    """The graph could not be run or did not answer; the message carries the log's tail."""


@dataclass
class DataflowRequest:
    case: str
    warmup: bool
    metrics: dict[str, Any]


@dataclass
class DataflowResult:
    requests: list[DataflowRequest] = field(default_factory=list)
    startup_s: float = 0.0  # dora run -> text-input listening (every model loaded, voice queued)
    node_peak_rss_mib: dict[str, float] = field(default_factory=dict)
    gpt_tokens_per_segment: int | None = None  # None: the model's own stop (EOS or its max_sec)
    log_path: str = ""
    error: str | None = None  # why the requests stopped early (what was measured before is kept)

    def measured(self, case: str) -> list[dict[str, Any]]:
        return [r.metrics for r in self.requests if r.case == case and not r.warmup]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_graph(
    repo: Path, workdir: Path, port: int, metrics_path: Path, node_env: dict[str, dict[str, str]] | None = None
) -> Path:
    """``node_env``: environment for single nodes by id (the YAML's ``env:``, over the daemon's)."""
    graph = yaml.safe_load((repo / "dataflows" / "service.yml").read_text(encoding="utf-8"))
    for node in graph["nodes"]:
        node_vars = (node_env or {}).get(node["id"])
        if node_vars:
            node.setdefault("env", {}).update(node_vars)
        if node["id"] == "text-input":
            node.setdefault("env", {})["GSV_TEXT_LISTEN"] = f"127.0.0.1:{port}"
        operator = node.get("operator")
        if operator and "python" in operator:
            operator["python"] = str((repo / "dataflows" / operator["python"]).resolve())
    graph["nodes"].append(
        {
            "id": "bench-metrics",
            "path": sys.executable,
            "args": "-m dora_gpt_sovits.benchmark.metrics_collector",
            "inputs": {"metrics": {"source": "audio-sink/metrics", "queue_size": 1000, "queue_policy": "backpressure"}},
            "env": {"GSV_BENCH_METRICS": str(metrics_path)},
        }
    )
    path = workdir / "bench-graph.yml"
    path.write_text(yaml.safe_dump(graph, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def budget_gpt_checkpoint(paths: ModelPaths, tokens: int, workdir: Path) -> Path:
    """A copy of a development GPT whose early-stop budget is ``tokens`` (int(50 * max_sec) == tokens),
    named by its absolute path (nodes read it from their own folders)."""
    content = read_checkpoint(paths.gpt).content
    content["config"]["data"]["max_sec"] = (tokens + 0.5) / EARLY_STOP_PER_SECOND
    out = workdir.resolve() / f"gpt-budget-{tokens}.ckpt"
    import torch

    torch.save(content, out)
    return out


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            found.append(child)
            todo.append(child)
    return found


def node_name(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in argv if a]
    for word in words:
        base = os.path.basename(word)
        if base.startswith("gsv-"):
            return base.removeprefix("gsv-")
        if word.endswith("metrics_collector"):
            return "bench-metrics"
    text = " ".join(words)
    if "start_runtime" in text:
        return text.rsplit("#", 1)[-1].strip() or "runtime"
    return None


def node_pids(root: int) -> dict[str, list[int]]:
    """The processes of every node under ``dora run``, by node."""
    pids: dict[str, list[int]] = {}
    for pid in descendants(root):
        name = node_name(pid)
        if name:
            pids.setdefault(name, []).append(pid)
    return pids


def processes_with_env(key: str, value: str) -> list[int]:
    """Node processes (gsv-* scripts, dora's operator runtime) whose environment has key=value: the
    nodes of one particular graph run, found even after ``dora run`` itself has exited."""
    needle = f"{key}={value}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if (b"gsv-" in cmdline or b"start_runtime" in cmdline) and needle in (proc / "environ").read_bytes().split(
                b"\0"
            ):
                found.append(int(proc.name))
        except OSError:
            continue  # exited, or not ours to read
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_rss_mib(root: int) -> dict[str, float]:
    """Current RSS (VmRSS) of every node process under ``dora run``, by node."""
    return {
        name: round(sum(_status_kib(pid, "VmRSS") or 0 for pid in pids) / 1024, 1)
        for name, pids in node_pids(root).items()
    }


def node_cpu_s(root: int) -> dict[str, float]:
    """CPU seconds (user + system) each node's processes have used so far, by node."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for name, pids in node_pids(root).items():
        for pid in pids:
            try:
                # Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def node_peaks(root: int) -> dict[str, float]:
    """Peak RSS (VmHWM) of every node process under ``dora run``, by node."""
    peaks: dict[str, float] = {}
    for pid in descendants(root):
        name = node_name(pid)
        kib = _status_kib(pid, "VmHWM")
        if name and kib:
            peaks[name] = max(peaks.get(name, 0.0), round(kib / 1024, 1))
    return peaks


class GraphRun:
    def __init__(
        self, repo: Path, workdir: Path, env: dict[str, str], node_env: dict[str, dict[str, str]] | None = None
    ):
        # Absolute: dora runs in workdir, and the graph names files in it (a relative --out once
        # made `dora run` look for the graph under workdir/workdir).
        self.repo, self.workdir = repo.resolve(), workdir.resolve()
        workdir = self.workdir
        self.port = free_port()
        self.metrics_path = workdir / "dataflow-metrics.jsonl"
        self.metrics_path.write_text("")
        self.graph = write_graph(repo, workdir, self.port, self.metrics_path, node_env)
        self.log_path = workdir / "dataflow.log"
        self.env = env
        self.process: subprocess.Popen | None = None
        self.seen = 0

    def start(self) -> float:
        started = time.perf_counter()
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            ["dora", "run", str(self.graph)],
            cwd=self.workdir,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while not self.listening():
            self.check_alive("starting")
            if time.perf_counter() - started > READY_TIMEOUT_S:
                raise DataflowError(f"text-input did not listen within {READY_TIMEOUT_S} s: {self.log_tail()}")
            time.sleep(0.5)
        return time.perf_counter() - started

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True  # an empty connection is a no-op for text-input
        except OSError:
            return False

    def check_alive(self, doing: str) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            log = self.log_tail()
            raise DataflowError(f"dora run exited ({self.process.returncode}) while {doing}: {error_cause(log)}\n{log}")

    def say(self, text: str, language: str, until_played: bool = False) -> dict[str, Any]:
        """Speak ``text``; its sink report. ``until_played``: return only once the sink's player
        has played it too, so that the next request starts on an idle graph *and* an idle speaker
        (the sink plays utterances one after another: a request sent earlier would wait behind this
        one's audio, which hides its stalls and fills the frontend's segment window)."""
        self.send({"text": text, "language": language})
        metrics = self.next_metrics(text)
        if until_played:
            time.sleep(until_heard_s(metrics))
        return metrics

    def send(self, *requests: dict[str, Any]) -> None:
        """Text requests (text-input's JSON lines), sent back to back without waiting."""
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(lines.encode("utf-8"))

    def next_metrics(self, text: str = "", timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        """The next utterance's report from the sink, waiting for it."""
        started = time.perf_counter()
        while True:
            lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
            if len(lines) > self.seen:
                self.seen += 1
                return json.loads(lines[self.seen - 1])
            self.check_alive("waiting for metrics")
            if time.perf_counter() - started > timeout_s:
                raise DataflowError(f"no metrics within {timeout_s} s for {text[:40]!r}: {self.log_tail()}")
            time.sleep(0.05)

    def peaks(self) -> dict[str, float]:
        return node_peaks(self.process.pid) if self.process else {}

    def node_pids(self) -> dict[str, list[int]]:
        return node_pids(self.process.pid) if self.process else {}

    def cpu_s(self) -> dict[str, float]:
        return node_cpu_s(self.process.pid) if self.process else {}

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # dora run's Ctrl-C: a graceful stop of every node
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the session this run started, nothing else
                self.process.wait()
        self.log.close()

    def log_tail(self, n: int = 3000) -> str:
        """The log's last ``n`` characters, without dora's Rust stack backtraces (a hundred lines
        each, which would push the error they follow out of any tail)."""
        self.log.flush()
        return without_backtraces(self.log_path.read_text(encoding="utf-8", errors="replace"))[-n:]


def without_backtraces(log: str) -> str:
    """``log`` with each ``Stack backtrace:`` block (numbered frames and their ``at`` lines) cut."""
    kept: list[str] = []
    in_backtrace = False
    for line in log.splitlines():
        if line.strip() == "Stack backtrace:":
            in_backtrace = True
            kept.append("Stack backtrace: (cut)")
            continue
        if in_backtrace and (re.match(r"\s*\d+: ", line) or re.match(r"\s+at ", line)):
            continue
        in_backtrace = False
        kept.append(line)
    return "\n".join(kept)


def clip(text: str, limit: int = 1500) -> str:
    """``text`` cut to about ``limit`` characters for bench.json, keeping its head (what failed
    and why: the report's line) and its tail (the end of the log)."""
    return text if len(text) <= limit else f"{text[: limit // 3]} … {text[-(limit - limit // 3) :]}"


def error_cause(log: str, limit: int = 400) -> str:
    """One line for a report: what follows dora's last ``[ERROR]`` up to its ``Location:`` (the
    error and its causes), else the log's last non-empty line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    marks = [i for i, line in enumerate(lines) if line.startswith("[ERROR]")]
    if not marks:
        return lines[-1][:limit] if lines else "(empty log)"
    cause = []
    for line in lines[marks[-1] : marks[-1] + 12]:
        if line.startswith(("Location:", "Stack backtrace:")):
            break
        cause.append(line.removeprefix("[ERROR]").strip())
    return " / ".join(part for part in cause if part)[:limit]


PLAYER_MARGIN_S = 0.3  # the sink's 150 ms jitter buffer, and its segment_complete on the way back


def until_heard_s(metrics: dict[str, Any]) -> float:
    """From a sink report's arrival to the end of its utterance's playback: the audio starts
    ``ttfa_s`` + ``queued_s`` after the text arrived and lasts ``audio_s`` + its stalls; the report
    left ``wall_s`` after the text arrived."""
    start = metrics["ttfa_s"] + (metrics.get("queued_s") or 0.0)
    end = start + metrics["audio_s"] + (metrics.get("stall_s") or 0.0)
    return max(0.0, end - metrics["wall_s"]) + PLAYER_MARGIN_S


def node_env(
    paths: ModelPaths, gpt_path: Path | None, device: str, dtype: str, threads: int, seed: int
) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # gsv-* and dora
    env.update(
        GSV_MODEL_DIR=str(paths.model_dir),
        GSV_VERSION=paths.version,
        GSV_SINK="null",
        GSV_SEED=str(seed),
        GSV_THREADS=str(threads),
        GSV_DEVICE=device,
        GSV_DTYPE=dtype,
        HF_HUB_OFFLINE="1",
    )
    if gpt_path is not None:
        env["GSV_GPT_PATH"] = str(gpt_path)
    return env


def run_dataflow(
    repo: Path,
    workdir: Path,
    paths: ModelPaths,
    cases: list[TextCase],
    repeats: int,
    tokens_per_segment: int,
    device: str,
    dtype: str,
    threads: int,
    seed: int,
    progress: Callable[[str], None] = lambda _: None,
    vocoder_dtype: str | None = None,
) -> DataflowResult:
    """One warm-up request per language (its shortest text), then ``repeats`` rounds over the cases.
    ``vocoder_dtype``: the vocoder node's GSV_DTYPE when it differs from the other nodes'."""
    budget = budget_gpt_checkpoint(paths, tokens_per_segment, workdir) if paths.development else None
    vocoder_env = {"vocoder": {"GSV_DTYPE": vocoder_dtype}} if vocoder_dtype else None
    graph = GraphRun(repo, workdir, node_env(paths, budget, device, dtype, threads, seed), vocoder_env)
    result = DataflowResult(gpt_tokens_per_segment=tokens_per_segment if budget else None, log_path=str(graph.log_path))
    try:
        progress("dataflow: starting dora run")
        result.startup_s = graph.start()
        try:
            for warmup, rounds, chosen in ((True, 1, warmup_cases(cases)), (False, repeats, cases)):
                for _ in range(rounds):
                    for case in chosen:
                        metrics = graph.say(case.text, case.language, until_played=True)
                        result.requests.append(DataflowRequest(case.name, warmup, metrics))
                        progress(f"dataflow: {case.name}{' (warm-up)' if warmup else ''}")
        except DataflowError as e:
            # A request that never completes leaves the graph in an unknown state: stop asking,
            # keep what was measured, and say which request it was.
            done = len(result.requests)
            result.error = f"request {done + 1} ({case.name}) failed: {e}"
        result.node_peak_rss_mib = graph.peaks()
    finally:
        graph.stop()
    return result
