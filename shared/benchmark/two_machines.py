"""Two dora machines on one host: network namespaces joined by a veth pair (needs root).

Machine A (namespace ``<prefix>a``, 10.77.0.1) runs the coordinator and the daemon without a
machine id (text-input, text-frontend, reference, bert, audio-sink); machine B (``<prefix>b``,
10.77.0.2) runs the daemon ``accelerator`` (gpt, vocoder), as in ``dataflows/distributed.yml``.
The two daemons meet through zenoh's rendezvous on A (``--zenoh-peer tcp/10.77.0.1:7447``), exactly
the commands docs/architecture.md ("Across two machines") gives for two real hosts.

Faults an operator met, made on purpose:

* ``pause_coordinator(seconds)``: SIGSTOP the coordinator past its 20 s heartbeat timeout, then
  SIGCONT; both daemons lose it and reconnect ("Connected to dora-coordinator").
* ``cut_link(seconds)``: ``ip link set <veth> down`` on B's side, then up: B loses the coordinator
  *and* A's daemon.
* ``pause_node(name, seconds)``: SIGSTOP/SIGCONT one node process (a stuck vocoder).

Text goes in over text-input's TCP listener inside A; the sink's reports come back through a
``bench-metrics`` node (:mod:`.metrics_collector`) that appends them to a file on the shared disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import metrics_collector

ADDRESS_A, ADDRESS_B = "10.77.0.1", "10.77.0.2"
ZENOH_PORT = 7447
TEXT_PORT = 9871
HEARTBEAT_TIMEOUT_S = 20  # dora 1.1's coordinator <-> daemon heartbeat


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def stop(process: subprocess.Popen | None, grace_s: float = 20) -> None:
    """Terminate ``process`` if it still runs; kill it after ``grace_s``."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_tails(logs: dict[str, Path], n: int = 1500) -> str:
    """The last ``n`` characters of each role's log, for an error message."""
    return "; ".join(f"{role}: {path.read_text(errors='replace')[-n:]}" for role, path in logs.items())


@dataclass
class Namespaces:
    """Two network namespaces with a veth pair between them; removed by ``delete``."""

    prefix: str = field(default_factory=lambda: f"gsv{os.getpid() % 100000}")

    @property
    def a(self) -> str:
        return f"{self.prefix}a"

    @property
    def b(self) -> str:
        return f"{self.prefix}b"

    @property
    def veth_b(self) -> str:
        return f"{self.prefix}vb"  # the end inside B (names are at most 15 characters)

    def create(self) -> None:
        veth_a = f"{self.prefix}va"
        run("ip", "netns", "add", self.a)
        run("ip", "netns", "add", self.b)
        run("ip", "link", "add", veth_a, "type", "veth", "peer", "name", self.veth_b)
        for ns, veth, address in ((self.a, veth_a, ADDRESS_A), (self.b, self.veth_b, ADDRESS_B)):
            run("ip", "link", "set", veth, "netns", ns)
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", veth)
            run("ip", "-n", ns, "link", "set", veth, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")

    def delete(self) -> None:
        for ns in (self.a, self.b):  # the veth pair goes with its namespaces
            run("ip", "netns", "del", ns, check=False)

    def argv(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def set_link(self, up: bool) -> None:
        run("ip", "-n", self.b, "link", "set", self.veth_b, "up" if up else "down")


def write_graph(
    repo: Path,
    workdir: Path,
    metrics_path: Path,
    stall_timeout_s: float | None = None,
    crossing_policy: str | None = None,
    graph: str = "dataflows/distributed.yml",
) -> Path:
    """The distributed graph with text-input listening and a metrics collector on machine A;
    ``crossing_policy`` ("backpressure", or "direct": none, so dora's node-to-node path) sets the
    queue policy of every input whose source runs on the other machine."""
    spec = yaml.safe_load((repo / graph).read_text(encoding="utf-8"))
    if crossing_policy is not None:
        set_crossing_policy(spec, crossing_policy)
    for node in spec["nodes"]:
        if node["id"] == "text-input":
            node.setdefault("env", {})["GSV_TEXT_LISTEN"] = f"127.0.0.1:{TEXT_PORT}"
        if node["id"] == "text-frontend" and stall_timeout_s is not None:
            node["env"]["GSV_STALL_TIMEOUT"] = stall_timeout_s
    spec["nodes"].append(metrics_collector.node_spec(metrics_path))
    path = workdir / "two-machines.yml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def machine(node: dict[str, Any]) -> str:
    return (node.get("deploy") or {}).get("machine", "")


def crossing_inputs(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(node, input) of every input whose source node runs on the other machine."""
    where = {n["id"]: machine(n) for n in spec["nodes"]}
    found = []
    for node in spec["nodes"]:
        for name, source in (node.get("inputs") or {}).items():
            source = source["source"] if isinstance(source, dict) else str(source)
            producer = source.split("/", 1)[0]
            if producer in where and where[producer] != where[node["id"]]:
                found.append((node["id"], name))
    return found


def set_crossing_policy(spec: dict[str, Any], policy: str) -> None:
    nodes = {n["id"]: n for n in spec["nodes"]}
    for node, name in crossing_inputs(spec):
        spec_input = nodes[node]["inputs"][name]
        if policy == "backpressure":
            spec_input["queue_policy"] = "backpressure"
        else:
            spec_input.pop("queue_policy", None)


class TwoMachines:
    """The coordinator and two daemons in two namespaces, and one dataflow started on them."""

    def __init__(
        self,
        repo: Path,
        workdir: Path,
        env: dict[str, str],
        stall_timeout_s: float | None = None,
        name: str = "tts-two",
        crossing_policy: str | None = None,
    ):
        self.repo, self.workdir, self.env, self.name = repo, workdir, dict(env), name
        self.ns = Namespaces()
        self.metrics_path = workdir / "metrics.jsonl"
        self.metrics_path.write_text("")
        self.graph = write_graph(repo, workdir, self.metrics_path, stall_timeout_s, crossing_policy)
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.seen = 0

    def spawn(self, role: str, ns: str, *argv: str) -> None:
        self.logs[role] = self.workdir / f"{role}.log"
        out = open(self.logs[role], "w", encoding="utf-8")
        self.processes[role] = subprocess.Popen(
            self.ns.argv(ns, *argv), cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )

    def up(self) -> None:
        self.ns.create()
        peer = f"tcp/{ADDRESS_A}:{ZENOH_PORT}"
        self.spawn("coordinator", self.ns.a, "dora", "coordinator", "--interface", "0.0.0.0", "--store", "memory")
        time.sleep(1)
        # A's own address, not loopback: dora derives the address its zenoh listener binds from it.
        self.spawn("daemon-a", self.ns.a, "dora", "daemon", "--coordinator-addr", ADDRESS_A, "--zenoh-peer", peer)
        time.sleep(1)
        self.spawn(
            "daemon-b",
            self.ns.b,
            "dora",
            "daemon",
            "--machine-id",
            "accelerator",
            "--coordinator-addr",
            ADDRESS_A,
            "--zenoh-peer",
            peer,
        )
        self.wait_for(
            lambda: "daemon accelerator" in self.logs["coordinator"].read_text(errors="replace"), 30, "daemon B"
        )

    def dora(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.ns.argv(self.ns.a, "dora", *args),
            cwd=self.workdir,
            env=self.env | {"DORA_COORDINATOR_ADDR": "127.0.0.1"},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, ready_timeout_s: float = 600) -> float:
        started = time.perf_counter()
        result = self.dora("start", str(self.graph), "--name", self.name, "--detach", timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"dora start failed: {result.stdout}{result.stderr}")
        self.wait_for(self.listening, ready_timeout_s, "text-input listening")
        return time.perf_counter() - started

    def listening(self) -> bool:
        return self.send_lines("") == 0

    def send_lines(self, lines: str) -> int:
        """Send JSON lines to text-input inside A (0 on success)."""
        code = (
            "import socket,sys\n"
            f"s=socket.create_connection(('127.0.0.1',{TEXT_PORT}),timeout=10)\n"
            "s.sendall(sys.stdin.buffer.read())\n"
        )
        argv = self.ns.argv(self.ns.a, sys.executable, "-c", code)
        return subprocess.run(argv, input=lines.encode("utf-8"), capture_output=True).returncode

    def send(self, *requests: dict[str, Any]) -> None:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
        if self.send_lines(lines) != 0:
            raise RuntimeError("text-input is not listening")

    def reports(self) -> list[dict[str, Any]]:
        """The sink's utterance reports so far (health probe answers left out)."""
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        return [r for r in map(json.loads, filter(None, lines)) if "probe" not in r]

    def health(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """`gsv-say --health` run inside A: text-input's answer to a probe through every node."""
        argv = [sys.executable, "-m", "dora_gpt_sovits.say", "--health", str(timeout_s), "--address"]
        argv += [f"127.0.0.1:{TEXT_PORT}", "--wait", "0"]
        result = subprocess.run(self.ns.argv(self.ns.a, *argv), capture_output=True, text=True, env=self.env)
        try:
            report = json.loads(result.stdout)
        except ValueError:
            return {"ok": False, "error": f"gsv-say --health printed no answer: {result.stdout}{result.stderr}"[-500:]}
        assert result.returncode == (0 if report.get("ok") else 1), result  # its exit status says the same
        return report

    def wait_for(self, condition, seconds: float, what: str) -> Any:
        deadline = time.time() + seconds
        while not (value := condition()):
            if time.time() > deadline:
                raise TimeoutError(f"{what} not within {seconds} s; {self.tails()}")
            time.sleep(0.2)
        return value

    def tails(self, n: int = 1500) -> str:
        return log_tails(self.logs, n)

    # ---- faults ------------------------------------------------------------------------------
    def pause_coordinator(self, seconds: float) -> None:
        pid = self.processes["coordinator"].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def cut_link(self, seconds: float) -> None:
        self.ns.set_link(False)
        try:
            time.sleep(seconds)
        finally:
            self.ns.set_link(True)

    def node_pids(self, script: str) -> list[int]:
        """Processes of this run's node ``script`` (e.g. ``gsv-vocoder``), found by the metrics path
        every node of this run has in its environment."""
        needle = f"TWO_MACHINES_RUN={self.env.get('TWO_MACHINES_RUN', '')}".encode()
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if script.encode() in cmdline and needle in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    def pause_node(self, script: str, seconds: float) -> None:
        pids = self.node_pids(script)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def down(self) -> None:
        try:
            self.dora("stop", "--name", self.name, "--grace-duration", "5s", timeout=60)
        except subprocess.TimeoutExpired:
            pass
        for role in ("daemon-b", "daemon-a", "coordinator"):
            stop(self.processes.get(role))
        for script in ("gsv-", "metrics_collector"):
            for pid in self.node_pids(script):
                os.kill(pid, signal.SIGKILL)
        self.ns.delete()


# ---- the load test ----------------------------------------------------------------------------
@dataclass
class LoadResult:
    utterances: int = 0
    completed: int = 0
    failed: dict[str, list[str]] = field(default_factory=dict)  # utterance -> its reported errors
    missing: list[str] = field(default_factory=list)  # never reported: silently lost
    in_order: bool = False
    wall_s: float = 0.0
    vocoder_paused_s: float = 0.0
    health_before: dict[str, Any] = field(default_factory=dict)
    stuck: dict[str, Any] = field(default_factory=dict)
    reconnect: dict[str, Any] = field(default_factory=dict)


def wait_reports(machines: TwoMachines, ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """The sink's report of each of ``ids`` that arrives within ``timeout_s`` (all of them, or fewer)."""
    deadline = time.time() + timeout_s
    while True:
        by_id = {r["utterance_id"]: r for r in machines.reports() if r["utterance_id"] in ids}
        if len(by_id) == len(ids) or time.time() > deadline:
            return by_id
        time.sleep(0.2)


def load_test(
    machines: TwoMachines,
    utterances: int,
    pause_vocoder_s: float = 3.0,
    pause_others: tuple[str, ...] = (),
    reconnect: bool = True,
    after_reconnect: int = 3,
    report_timeout_s: float = 600.0,
    stall_timeout_s: float = 60.0,
    stuck_node: str | None = None,
) -> LoadResult:
    """``utterances`` at once with the vocoder paused (SIGSTOP) once audio flows; then, optionally,
    the coordinator paused past its heartbeat timeout so that both daemons reconnect, and
    ``after_reconnect`` more utterances: each must be spoken or reported failed with a reason."""
    from .soak import soak_texts

    result = LoadResult(utterances=utterances)
    result.health_before = machines.health()
    ids = [f"load-{i:04d}" for i in range(utterances)]
    started = time.time()
    machines.send(
        *({"text": t, "language": "auto", "utterance_id": u} for (t, _), u in zip(soak_texts(utterances), ids))
    )
    if pause_vocoder_s:
        machines.wait_for(lambda: machines.reports(), report_timeout_s, "the first report")
        for script in ("gsv-vocoder", *pause_others):
            machines.pause_node(script, pause_vocoder_s)
        result.vocoder_paused_s = pause_vocoder_s
    by_id = wait_reports(machines, ids, report_timeout_s)
    result.wall_s = round(time.time() - started, 1)
    result.missing = [u for u in ids if u not in by_id]
    result.failed = {u: r["errors"] for u, r in by_id.items() if r["errors"]}
    result.completed = len(by_id) - len(result.failed)
    result.in_order = [r["utterance_id"] for r in machines.reports() if r["utterance_id"] in ids] == ids[: len(by_id)]
    if stuck_node:
        result.stuck = stuck_phase(machines, stuck_node, stall_timeout_s)
    if reconnect:
        result.reconnect = reconnect_phase(machines, after_reconnect, stall_timeout_s)
    return result


def stuck_phase(machines: TwoMachines, script: str, stall_timeout_s: float) -> dict[str, Any]:
    """One node stuck (SIGSTOP) past the stall timeout with an utterance in flight: the watchdog
    must report it. The utterance sent after that report, while the node is still stopped
    ("after-stuck"), may be lost without a trace from dora: the node's zenoh peers close their
    sessions to it when it stops answering (zenoh's lease, 10 s), and what they publish before the
    sessions re-open after it resumes reaches nobody; so it must be spoken or reported ``stalled``,
    never left unanswered. Once the node runs again the path must answer a health probe within a
    bound, and the utterance after that must be spoken."""
    sent = time.time()
    machines.send({"text": "你好，世界。", "language": "zh", "utterance_id": "stuck"})
    with ThreadPoolExecutor(1) as pool:
        paused = pool.submit(machines.pause_node, script, stall_timeout_s + 8)
        stuck = wait_reports(machines, ["stuck"], 60).get("stuck", {})
        reported_s = round(stuck.get("collected_at", time.time()) - sent, 1)
        machines.send({"text": "你好。", "language": "zh", "utterance_id": "after-stuck"})
        sent_while_stuck = not paused.done()
        paused.result()
    resumed = time.time()
    while_stuck = wait_reports(machines, ["after-stuck"], stall_timeout_s + 60).get("after-stuck")
    healthy = healthy_within(machines, 60)
    healthy_s = round(time.time() - resumed, 1)
    machines.send({"text": "你好。", "language": "zh", "utterance_id": "after-resume"})
    after = wait_reports(machines, ["after-resume"], 120).get("after-resume")
    return {
        "node": script,
        "stuck_errors": stuck.get("errors"),
        "reported_after_s": reported_s,
        "sent_while_stuck": sent_while_stuck,
        "while_stuck_report": while_stuck,
        "healthy": healthy,
        "healthy_after_resume_s": healthy_s,
        "next_spoken": after is not None and not after["errors"],
        "next_report": after,
    }


def healthy_within(machines: TwoMachines, seconds: float) -> dict[str, Any]:
    """Health checks until one passes or ``seconds`` are over: the last answer."""
    deadline = time.time() + seconds
    while not (health := machines.health())["ok"] and time.time() < deadline:
        time.sleep(1.0)
    return health


def timed(call) -> tuple[Any, float]:
    started = time.time()
    return call(), round(time.time() - started, 1)


def reconnect_phase(machines: TwoMachines, n: int, stall_timeout_s: float) -> dict[str, Any]:
    """Both daemons lose the coordinator and reconnect; then ``n`` utterances and a health check.
    Either the graph serves again (dora recovered), or every one of them is reported (the stall
    watchdog) and the health check says what to do, each within a bound."""
    machines.pause_coordinator(HEARTBEAT_TIMEOUT_S + 5)
    machines.wait_for(
        lambda: machines.logs["daemon-b"].read_text(errors="replace").count("Connected to dora-coordinator") >= 2,
        60,
        "daemon B reconnected",
    )
    ids = [f"after-reconnect-{i}" for i in range(n)]
    sent = time.time()
    machines.send(*({"text": "你好。", "language": "zh", "utterance_id": u} for u in ids))
    with ThreadPoolExecutor(1) as pool:  # the health check meanwhile: its probe queues behind them
        checked = pool.submit(timed, machines.health)
        bound = stall_timeout_s + 60  # the watchdog's timeout, plus a segment's own time on a busy machine
        by_id = wait_reports(machines, ids, bound)
        answered_s = round(time.time() - sent, 1)
        health, health_s = checked.result()
    return {
        "utterances": n,
        "reported": len(by_id),
        "missing": [u for u in ids if u not in by_id],
        "spoken": [u for u, r in by_id.items() if not r["errors"]],
        "errors": {u: r["errors"] for u, r in by_id.items() if r["errors"]},
        "answered_within_s": answered_s,
        "bound_s": bound,
        "health": health,
        "health_s": health_s,
        "recovered": len(by_id) == n and all(not r["errors"] for r in by_id.values()) and health.get("ok", False),
    }
