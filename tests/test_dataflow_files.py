"""The YAML graphs: valid for dora, one node per stage, deep queues, service variant in step."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from conftest import REPO

from dora_gpt_sovits.benchmark.two_machines import crossing_inputs

STAGES = {"text-input", "text-frontend", "reference", "bert", "gpt", "vocoder", "audio-sink"}
GRAPHS = ["dataflow.yml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "dataflows").glob("*.yml"))]
HUB_SOURCES = {"dora-microphone", "dora-vad", "dora-distil-whisper", "dora-qwen"}


def load(path):
    return yaml.safe_load((REPO / path).read_text(encoding="utf-8"))


def test_default_graph_has_one_node_per_stage_and_deep_queues():
    graph = load("dataflow.yml")
    ids = {n["id"] for n in graph["nodes"]}
    assert STAGES <= ids


@pytest.mark.parametrize("path", GRAPHS)
def test_every_input_of_our_nodes_is_lossless(path):
    """dora's default queue (10, drop-oldest) loses segments or audio under load, and the direct zenoh
    path drops messages reaching a busy node (texts lost in a burst); backpressure keeps the edge on
    the daemon path, which queues instead."""
    # Between machines dora 1.1's daemon path stops delivering after a reconnect (issue #22): those
    # inputs take the node-to-node path, and a loss there is reported per utterance instead.
    crossing = set(crossing_inputs(load(path)))
    for node in load(path)["nodes"]:
        if node["id"] in HUB_SOURCES:
            continue  # the voice-assistant graph's upstream nodes, as node-hub ships them
        inputs = node.get("inputs") or node.get("operator", {}).get("inputs", {})
        for name, spec in inputs.items():
            if name == "timestamp_start":
                continue  # dora-pyaudio's barge-in signal from dora-vad, as in node-hub's graph
            if str(spec).startswith("dora/timer/"):
                continue  # a tick made by the daemon itself: nothing a queue could lose
            assert isinstance(spec, dict) and spec["queue_size"] >= 100, (path, node["id"], name)
            expected = None if (node["id"], name) in crossing else "backpressure"
            assert spec.get("queue_policy") == expected, (path, node["id"], name)


@pytest.mark.parametrize("path", GRAPHS)
def test_every_node_is_restarted_when_it_dies(path):
    """One crash must not take the graph down: every process node has a restart policy, and an open
    input when it fails, because dora 1.1 never restarts a node without one ("not restarting node
    because all inputs are already closed" — the text-input that a lone surrogate killed stayed
    dead, and every node after it wound down). A timer is enough to keep an input open."""
    for node in load(path)["nodes"]:
        if "operator" in node:
            # dora's runtime nodes take no restart fields (`dora validate` refuses them); our one
            # operator, level-meter, is a leaf whose output nobody consumes.
            assert not node["operator"].get("outputs") or node["id"] == "level-meter", node["id"]
            continue
        assert node.get("restart_policy") == "on-failure", (path, node["id"])
        assert node.get("max_restarts", 0) >= 3 and node.get("restart_delay", 0) > 0, (path, node["id"])
        assert node.get("inputs"), (path, node["id"], "dora never restarts a node without inputs")


@pytest.mark.parametrize("path", [p for p in GRAPHS if "text-input" in {n["id"] for n in load(p)["nodes"]}])
def test_text_input_listens_to_a_timer_only_to_stay_restartable(path):
    (text_input,) = [n for n in load(path)["nodes"] if n["id"] == "text-input"]
    inputs = dict(text_input["inputs"])
    inputs.pop("health", None)  # probe replies only (gsv-say --health), read while a check waits
    (source,) = inputs.values()
    assert source.startswith("dora/timer/")  # no data: the node ignores its ticks


def test_service_graph_differs_only_by_the_text_listener_and_its_health_answers():
    default, service = load("dataflow.yml"), load("dataflows/service.yml")
    service_input = next(n for n in service["nodes"] if n["id"] == "text-input")
    assert service_input.pop("env") == {"GSV_TEXT_LISTEN": "127.0.0.1:9871"}
    assert service_input["inputs"].pop("health")["source"] == "audio-sink/metrics"  # gsv-say --health
    for node in service["nodes"]:
        if "operator" in node:  # paths are relative to each YAML file's folder
            node["operator"]["python"] = node["operator"]["python"].removeprefix("../")
    assert service == default


def test_two_rooms_graph_is_the_service_graph_with_a_sink_per_listener_and_no_window():
    service, rooms = load("dataflows/service.yml"), load("dataflows/two-rooms.yml")
    nodes = {n["id"]: n for n in rooms["nodes"]}
    sinks = [nodes.pop(room) for room in ("kitchen", "office")]
    for room, sink in zip(("kitchen", "office"), sinks):
        assert sink["path"] == "gsv-audio-sink" and sink["env"]["GSV_SINK_LISTENER"] == room
        assert sink["inputs"]["audio"]["source"] == "vocoder/audio"
        assert sink["inputs"]["control"]["source"] == "text-frontend/control"
    assert len({s["env"]["GSV_WAV_PATH"] for s in sinks}) == 2  # without a speaker, a file per room
    # The window counts one sink's reports: with a sink per room it is off.
    assert "segment_complete" not in nodes["text-frontend"]["inputs"] and "env" not in nodes["text-frontend"]
    assert nodes["text-input"]["inputs"]["health"]["source"] == "kitchen/metrics"
    expected = {n["id"]: n for n in service["nodes"] if n["id"] not in ("audio-sink", "level-meter")}
    expected["text-frontend"].pop("env")
    expected["text-frontend"]["inputs"].pop("segment_complete")
    expected["text-input"]["inputs"]["health"]["source"] = "kitchen/metrics"
    nodes["text-input"]["env"]["GSV_TEXT_LISTEN"] = expected["text-input"]["env"]["GSV_TEXT_LISTEN"]
    assert nodes == expected


def test_distributed_graph_moves_gpt_and_vocoder_to_the_accelerator_machine():
    default, distributed = load("dataflow.yml"), load("dataflows/distributed.yml")
    default["nodes"] = [n for n in default["nodes"] if "operator" not in n]
    for node in distributed["nodes"]:
        deploy = node.pop("deploy", None)
        assert (deploy == {"machine": "accelerator"}) == (node["id"] in ("gpt", "vocoder")), node["id"]
    # Between machines dora can stall silently: a watchdog and an end-to-end health probe (issue #22).
    nodes = {n["id"]: n for n in distributed["nodes"]}
    assert nodes["text-input"]["inputs"].pop("health")["source"] == "audio-sink/metrics"
    assert float(nodes["text-frontend"]["env"].pop("GSV_STALL_TIMEOUT")) > 0
    crossing = crossing_inputs(load("dataflows/distributed.yml"))
    assert ("gpt", "phone_features") in crossing and ("audio-sink", "audio") in crossing
    for node, name in crossing:
        nodes[node]["inputs"][name]["queue_policy"] = "backpressure"
    assert distributed == default


def test_default_graph_wires_the_control_plane():
    nodes = {n["id"]: n for n in load("dataflow.yml")["nodes"]}
    frontend = nodes["text-frontend"]
    assert frontend["inputs"]["control"]["source"] == "text-input/control"
    # The stop fans out from the frontend directly to every later stage, not through the data chain.
    for stage in ("bert", "gpt", "vocoder", "audio-sink"):
        assert nodes[stage]["inputs"]["control"]["source"] == "text-frontend/control", stage
    # Flow control: the sink's playback reports come back to the frontend's window, losslessly.
    assert frontend["inputs"]["segment_complete"] == {
        "source": "audio-sink/segment_complete",
        "queue_size": 1000,
        "queue_policy": "backpressure",
    }
    assert int(frontend["env"]["GSV_MAX_SEGMENTS_AHEAD"]) > 0


def test_graphs_batch_concurrent_utterances_only_where_the_consumer_orders_them():
    """Our audio-sink plays utterances one after another and the http-server streams each request
    its own: their graphs batch. dora-pyaudio (voice-assistant, gsv-tts's kokoro graphs) plays
    what arrives in arrival order: batching would interleave two utterances there."""
    for path in ("dataflow.yml", "dataflows/service.yml", "dataflows/distributed.yml", "dataflows/openai-server.yml"):
        nodes = {n["id"]: n for n in load(path)["nodes"]}
        assert int(nodes["gpt"]["env"]["GSV_MAX_BATCH"]) == 4, path
    assistant = {n["id"]: n for n in load("dataflows/voice-assistant.yml")["nodes"]}
    assert "GSV_MAX_BATCH" not in assistant["gpt"].get("env", {})


def without_control_plane(nodes: dict) -> dict:
    """The data wiring alone: control inputs/outputs, the sink's segment_complete and the frontend's
    env (its segment window needs a playing sink) removed, and GSV_FAIR_SCHEDULING (on where each
    utterance streams apart: the HTTP server)."""
    for node in nodes.values():
        node.get("env", {}).pop("GSV_FAIR_SCHEDULING", None)
        for port in ("control", "segment_complete"):
            node.get("inputs", {}).pop(port, None)
            if port in node.get("outputs", []):
                node["outputs"].remove(port)
        if node["id"] == "text-frontend":
            node.pop("env", None)
    return nodes


def test_openai_server_graph_is_the_default_graph_with_the_server_as_text_source_and_audio_consumer():
    default, server = load("dataflow.yml"), load("dataflows/openai-server.yml")
    nodes = {n["id"]: n for n in server["nodes"]}
    assert set(nodes) == STAGES - {"text-input", "audio-sink"} | {"http-server"}
    http = nodes.pop("http-server")
    assert http["inputs"] == {
        "audio": {"source": "vocoder/audio", "queue_size": 10000, "queue_policy": "backpressure"},
        # the frontend's restarts reach the server at once, and its echo of a probe says it is back
        "frontend_control": {"source": "text-frontend/control", "queue_size": 100, "queue_policy": "backpressure"},
    }
    assert set(http["outputs"]) == {"text", "control"} and "env" not in http  # host/port from the caller
    # A disconnected client's stop enters at text-frontend, which fans it out to every later stage.
    assert nodes["text-frontend"]["inputs"]["control"]["source"] == "http-server/control"
    for stage in ("bert", "gpt", "vocoder"):
        assert nodes[stage]["inputs"]["control"]["source"] == "text-frontend/control", stage
    assert "GSV_MAX_SEGMENTS_AHEAD" not in nodes["text-frontend"].get("env", {})  # no sink reports playback
    without_control_plane(nodes)
    assert nodes["text-frontend"]["inputs"]["text"].pop("source") == "http-server/text"
    # OpenAI's pcm is 24 kHz: the vocoder emits it, so the server streams without converting.
    assert nodes["vocoder"]["env"].pop("GSV_OUTPUT_SAMPLE_RATE") == "24000"
    # Each request streams its own audio: concurrent requests' segments decode together (as in the
    # default graph, whose sink plays them one after another).
    assert str(nodes["gpt"]["env"]["GSV_MAX_BATCH"]) == "4"
    reference = without_control_plane({n["id"]: n for n in default["nodes"] if n["id"] in nodes})
    reference["text-frontend"]["inputs"]["text"].pop("source")
    assert nodes == reference


HUB_NODES = {"dora-microphone", "dora-vad", "dora-distil-whisper", "dora-qwen", "dora-pyaudio"}


def test_voice_assistant_graph_is_qwen_dev_interruption_with_our_tts_in_place_of_kokoro():
    default, assistant = load("dataflow.yml"), load("dataflows/voice-assistant.yml")
    nodes = {n["id"]: n for n in assistant["nodes"]}
    assert set(nodes) == HUB_NODES | STAGES - {"text-input", "audio-sink"} | {"tts-metrics", "pyaudio-feed"}
    # Our sink beside dora-pyaudio only measures (time to first audio); it plays nothing.
    metrics = nodes.pop("tts-metrics")
    assert metrics["path"] == "gsv-audio-sink" and metrics["env"] == {"GSV_SINK": "null"}
    assert metrics["inputs"]["audio"]["source"] == "vocoder/audio"
    for hub in HUB_NODES:  # released node-hub packages, each in its own venv (scripts/setup_hub_nodes.sh)
        build, path = f"bash ../scripts/setup_hub_nodes.sh {hub}", f"../.hub-venvs/{hub}/bin/{hub}"
        assert (nodes[hub]["build"], nodes[hub]["path"]) == (build, path)
    # The hub nodes keep qwen-dev-interruption's wiring; the TTS boundary is text in, audio out
    # (our audio edge lossless like every edge of ours), through pyaudio-feed, which empties
    # dora-pyaudio's queue at a barge-in (tests/test_voice_assistant_hub_e2e.py).
    feed = nodes.pop("pyaudio-feed")
    assert feed["path"] == "gsv-pyaudio-feed" and feed["inputs"]["audio"]["source"] == "vocoder/audio"
    assert feed["inputs"]["control"]["source"] == "text-frontend/control"
    assert nodes["dora-pyaudio"]["inputs"] == {
        "audio": {"source": "pyaudio-feed/audio", "queue_size": 1000, "queue_policy": "backpressure"},
        "timestamp_start": "dora-vad/timestamp_start",
    }
    assert nodes["dora-vad"]["outputs"] == ["audio", "timestamp_start"]
    assert nodes["text-frontend"]["inputs"]["text"].pop("source") == "dora-qwen/text"
    # Barge-in: the user speaking stops the TTS at its control input, which fans out downstream.
    assert nodes["text-frontend"]["inputs"]["control"]["source"] == "dora-vad/timestamp_start"
    for stage in ("bert", "gpt", "vocoder"):
        assert nodes[stage]["inputs"]["control"]["source"] == "text-frontend/control", stage
    env = nodes["vocoder"]["env"]
    assert 0 < float(env["GSV_PEAK_LIMIT"]) <= 32767 / 70000  # dora-pyaudio's int16 cast never wraps
    assert int(env["GSV_OUTPUT_SAMPLE_RATE"]) == 24000 and float(env["GSV_MAX_LEAD_SECONDS"]) > 0
    assert nodes["text-frontend"].pop("build") == "pip install -e .."  # this repository
    # Apart from that, the TTS nodes are the default graph's stages, wired the same way.
    ours = without_control_plane({k: n for k, n in nodes.items() if k not in HUB_NODES})
    reference = without_control_plane({n["id"]: n for n in default["nodes"] if n["id"] in ours})
    reference["text-frontend"]["inputs"]["text"].pop("source")
    for node in (*ours.values(), *reference.values()):
        node.pop("env", None)
    assert ours == reference


BACKEND_VARIANTS = {
    "dataflows/onnx-cpu.yml": {"GSV_BACKEND": "onnxruntime", "GSV_DEVICE": "cpu", "GSV_DTYPE": "float32"},
    "dataflows/cuda.yml": {"GSV_BACKEND": "onnxruntime", "GSV_DEVICE": "cuda", "GSV_DTYPE": "float16"},
    "dataflows/tensorrt.yml": {"GSV_BACKEND": "tensorrt", "GSV_DEVICE": "cuda", "GSV_DTYPE": "float16"},
}


@pytest.mark.parametrize("path", sorted(BACKEND_VARIANTS))
def test_backend_variants_differ_only_by_the_model_nodes_backend_env(path):
    from dora_gpt_sovits.backends.config import choice_from_env

    default, variant = load("dataflow.yml"), load(path)
    defaults = {n["id"]: n.get("env") for n in default["nodes"]}
    for node in variant["nodes"]:
        if node["id"] in ("reference", "bert", "gpt", "vocoder"):
            assert node["env"] == {**(defaults[node["id"]] or {}), **BACKEND_VARIANTS[path]}, node["id"]
            choice_from_env(node["env"])  # a valid choice
            node["env"] = defaults[node["id"]]
        if "operator" in node:
            node["operator"]["python"] = node["operator"]["python"].removeprefix("../")
    assert variant == default


@pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed")
@pytest.mark.parametrize(
    "path",
    [
        "dataflow.yml",
        "dataflows/service.yml",
        "dataflows/distributed.yml",
        "dataflows/openai-server.yml",
        "dataflows/voice-assistant.yml",
        *sorted(BACKEND_VARIANTS),
    ],
)
def test_dora_validates_the_graphs(path):
    result = subprocess.run(["dora", "validate", path], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
