"""``GET /health`` of the HTTP server: a probe through every node to the vocoder and back (shared/health.py)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from test_openai_server import FakeGraph

from dora_gpt_sovits import health
from dora_gpt_sovits import messages as m
from dora_gpt_sovits.openai_api.app import HttpServer, create_app
from dora_gpt_sovits.openai_api.bridge import GraphBridge
from dora_gpt_sovits.openai_api.config import ServerConfig


class ProbeEchoGraph(FakeGraph):
    """The server tests' graph stand-in, passing probes through ``hops`` (all of them: a healthy path)."""

    def __init__(self, hops: tuple[str, ...] = health.PATH[:-1]):
        super().__init__()
        self.hops = hops
        self.probes_seen = 0

    def send_output(self, output_id, data, metadata=None):
        metadata = dict(metadata or {})
        if output_id != m.TEXT or not health.is_probe(metadata):
            return
        self.probes_seen += 1
        for node in self.hops:
            metadata = health.passed(metadata, node)
        self.events.put({"type": "INPUT", "id": m.AUDIO, "value": None, "metadata": metadata})


@pytest.fixture()
def serve():
    started = []

    def start(graph: ProbeEchoGraph) -> tuple[str, GraphBridge]:
        bridge = GraphBridge()
        thread = threading.Thread(target=bridge.run, args=(graph,), daemon=True)
        thread.start()
        server = HttpServer(create_app(bridge, {}, ServerConfig(port=0)), "127.0.0.1", 0)
        port = server.start()
        started.append((server, graph, thread))
        return f"http://127.0.0.1:{port}", bridge

    yield start
    for server, graph, thread in started:
        server.stop()
        graph.events.put({"type": "STOP", "id": "MANUAL"})
        thread.join(timeout=10)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_healthy_path_answers_200_with_every_hop(serve):
    base, _ = serve(ProbeEchoGraph())
    status, report = get(f"{base}/health")
    assert status == 200 and report["ok"] is True
    assert [hop["node"] for hop in report["hops"]] == ["text-frontend", "bert", "gpt", "vocoder"]


def test_a_probe_lost_on_the_way_is_a_503_naming_the_path(serve):
    graph = ProbeEchoGraph()
    graph.send_output = lambda *args, **kwargs: None  # the graph swallows everything: a silent stall
    base, _ = serve(graph)
    status, report = get(f"{base}/health?timeout=0.3")
    assert status == 503 and report["ok"] is False
    assert "text-frontend -> bert -> gpt -> vocoder" in report["error"]


def test_a_probe_that_skipped_a_node_is_not_healthy(serve):
    base, _ = serve(ProbeEchoGraph(hops=("text-frontend", "gpt", "vocoder")))
    status, report = get(f"{base}/health")
    assert status == 503 and "bert" in report["error"]


def test_a_restarting_node_is_a_503_at_once(serve):
    graph = ProbeEchoGraph()
    base, bridge = serve(graph)
    bridge.availability.went_down("gpt")
    status, report = get(f"{base}/health")
    assert status == 503 and "gpt" in report["error"] and graph.probes_seen == 0


@pytest.mark.parametrize("timeout", ["x", "0", "61"])
def test_a_bad_timeout_is_a_400(serve, timeout):
    base, _ = serve(ProbeEchoGraph())
    status, report = get(f"{base}/health?timeout={timeout}")
    assert status == 400 and report["error"]["param"] == "timeout"
