"""gsv-tts in node-hub's voice-assistant example, with only the kokoro node's id/build/path changed.

The graph is examples/llm/qwen-dev-interruption.yml's (dora-rs/node-hub): its node ids, inputs,
outputs and env. The dora-kokoro-tts node becomes ``gsv-tts`` by changing its ``id``, ``build`` and
``path`` (and the one source that names the id); it keeps kokoro's input, output and even its unused
``env``. The nodes that need a microphone, a speaker or model weights (microphone, VAD, whisper,
qwen, rerun, pyaudio) are small stand-ins with the same ports (tests/gsv_tts_nodes/hub_standin.py);
gsv-tts runs the tiny development model. Asserted: dora-pyaudio's contract on every audio message,
24 kHz, non-silent, every sentence of every reply in order, a tool-call-only reply skipped as
kokoro skips it.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO
from test_dataflow_e2e import (  # noqa: F401  (dev_models: a fixture)
    dev_models,
    dora_run_batch_retrying_a_hang,
    log_records,
    node_env,
)

from dora_gpt_sovits.text.llm_stream import strip_tool_calls
from dora_gpt_sovits.text.segment_limits import segment_text

pytestmark = [pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed"), pytest.mark.slow]

STANDIN = Path(__file__).resolve().parent / "gsv_tts_nodes" / "hub_standin.py"

# examples/llm/qwen-dev-interruption.yml (dora-rs/node-hub @ 874c13b), build lines as in its repository.
HUB_EXAMPLE = """
nodes:
  - id: dora-microphone
    build: pip install -e ../../dora-microphone
    path: dora-microphone
    inputs: {tick: dora/timer/millis/2000}
    outputs: [audio]
  - id: dora-vad
    build: pip install -e ../../dora-vad
    path: dora-vad
    inputs: {audio: dora-microphone/audio}
    outputs: [audio, timestamp_start]
  - id: dora-distil-whisper
    build: pip install -e ../../dora-distil-whisper
    path: dora-distil-whisper
    inputs: {input: dora-vad/audio}
    outputs: [text]
    env: {TARGET_LANGUAGE: english}
  - id: dora-qwen
    build: pip install -e ../../dora-qwen
    path: dora-qwen
    inputs: {text: dora-distil-whisper/text}
    outputs: [text]
  - id: plot
    build: pip install -e ../../dora-rerun
    path: dora-rerun
    inputs: {text_qwen: dora-qwen/text, text_whisper: dora-distil-whisper/text}
  - id: dora-kokoro-tts
    build: pip install -e ../../dora-kokoro-tts
    path: dora-kokoro-tts
    inputs: {text: dora-qwen/text}
    outputs: [audio]
    env: {ACTIVATION_WORDS: you}
  - id: dora-pyaudio
    build: pip install -e ../../dora-pyaudio
    path: dora-pyaudio
    inputs: {audio: dora-kokoro-tts/audio, timestamp_start: dora-vad/timestamp_start}
"""
STANDIN_ROLES = {
    "dora-microphone": "microphone",
    "dora-vad": "vad",
    "dora-distil-whisper": "whisper",
    "dora-qwen": "qwen",
    "plot": "plot",
    "dora-pyaudio": "pyaudio",
}
TURNS = [
    ["Hello there.", "你好，我是语音助手。今天天气很好，我们去公园散步吧。"],
    ["Call the tool.", '<tool_call>{"name": "lights", "arguments": {"on": true}}</tool_call>'],  # nothing to say
    ["And in English?", "Sure. It is a sunny day, so let us take a walk in the park."],
]


def drop_in(graph: dict, old: str = "dora-kokoro-tts", new: str = "gsv-tts") -> dict:
    """The user's change: the TTS node's id, build and path, and the sources that name the old id."""
    graph = copy.deepcopy(graph)
    for node in graph["nodes"]:
        if node["id"] == old:
            node.update(id=new, build=f"pip install -e {REPO}", path="gsv-tts")
        for name, source in node.get("inputs", {}).items():
            if source.split("/")[0] == old:
                node["inputs"][name] = source.replace(old, new, 1)
    return graph


def with_standins(graph: dict, sink_report: Path) -> dict:
    graph = copy.deepcopy(graph)
    for node in graph["nodes"]:
        node.pop("build")  # this repository is installed; stand-ins need nothing
        if node["id"] in STANDIN_ROLES:
            node["path"] = str(STANDIN)
            env = {"ROLE": STANDIN_ROLES[node["id"]], "TURNS": json.dumps(TURNS, ensure_ascii=False)}
            node["env"] = node.get("env", {}) | env | {"SINK_REPORT": str(sink_report)}
    return graph


def test_the_drop_in_changes_only_id_build_and_path_of_the_tts_node():
    hub = yaml.safe_load(HUB_EXAMPLE)
    ours = drop_in(hub)
    before = {n["id"]: n for n in hub["nodes"]}
    after = {n["id"]: n for n in ours["nodes"]}
    kokoro, tts = before["dora-kokoro-tts"], after["gsv-tts"]
    assert {k: v for k, v in kokoro.items() if k not in ("id", "build", "path")} == {
        k: v for k, v in tts.items() if k not in ("id", "build", "path")
    }
    assert after["dora-pyaudio"]["inputs"] == {"audio": "gsv-tts/audio", "timestamp_start": "dora-vad/timestamp_start"}
    assert {i: n for i, n in after.items() if i not in ("gsv-tts", "dora-pyaudio")} == {
        i: n for i, n in before.items() if i not in ("dora-kokoro-tts", "dora-pyaudio")
    }


def test_hub_voice_assistant_speaks_every_sentence_through_the_one_node_drop_in(dev_models, tmp_path):  # noqa: F811
    sink_report = tmp_path / "pyaudio.json"
    graph = tmp_path / "qwen-dev-interruption-gsv-tts.yml"
    spec = with_standins(drop_in(yaml.safe_load(HUB_EXAMPLE)), sink_report)
    graph.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    # No GSV_* variable but the model directory: gsv-tts's defaults give the kokoro contract.
    env = {k: v for k, v in node_env(dev_models).items() if not k.startswith("GSV_")}
    # (GSV_WAV_PATH: only the marker by which a hang report finds this run's node processes)
    env.update(GSV_MODEL_DIR=str(dev_models), GSV_THREADS="1", GSV_SEED="0", GSV_WAV_PATH=str(tmp_path / "unused"))
    returncode, output = dora_run_batch_retrying_a_hang(str(graph), env, timeout=420)
    assert returncode == 0, output[-4000:]
    received = json.loads(sink_report.read_text(encoding="utf-8"))

    # dora-pyaudio's contract on every message: flat float32, int sample_rate, <= 1 s, peak <= 0.468.
    assert received, output[-3000:]
    assert [r for r in received if r["problems"] or r["error"]] == []
    assert {r["sample_rate"] for r in received} == {24000}
    audible = [r for r in received if r["samples"]]
    assert max(r["peak"] for r in audible) > 0.05 and np.mean([r["rms"] for r in audible]) > 1e-3  # not silent
    assert all(r["development_model"] for r in received)  # random weights: said on every message

    # Every sentence of each reply that has one, in order; the tool-call-only reply says nothing.
    spoken = [strip_tool_calls(reply) for _, reply in TURNS if strip_tool_calls(reply).strip()]
    expected = [len(list(segment_text(text, "auto", "v2", "cut5"))) for text in spoken]
    utterances: dict[str, list[dict]] = {}
    for r in received:
        utterances.setdefault(r["utterance_id"], []).append(r)
    assert [sorted({r["segment_index"] for r in records}) for records in utterances.values()] == [
        list(range(n)) for n in expected
    ]
    for records in utterances.values():
        finals = [(r["segment_index"], r["utterance_final"]) for r in records if r["segment_final"]]
        assert finals == [(i, i == len(finals) - 1) for i in range(len(finals))]
        chunks: dict[int, list[int]] = {}
        for r in records:
            chunks.setdefault(r["segment_index"], []).append(r["chunk_index"])
        assert all(c == list(range(len(c))) for c in chunks.values()), chunks  # no message lost mid-sentence

    # One process did it all, and it said the voice is noise.
    records = log_records(output)
    tts = [r["message"] for r in records if r.get("node_id") == "gsv-tts"]
    assert any("gsv-tts ready" in line for line in tts), tts[-10:]
    assert "DEVELOPMENT MODEL" in output
    print(f"{len(received)} audio messages, {sum(r['samples'] for r in received) / 24000:.1f} s at 24 kHz")


def test_missing_weights_end_the_node_before_it_joins_with_one_line_naming_them(tmp_path):
    env = node_env(tmp_path / "no-models")
    result = subprocess.run(["gsv-tts"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "model files missing" in lines[0], result.stderr[-2000:]
    for part in ("s1bert25hz", "s2G2333k.pth", "chinese-roberta-wwm-ext-large", "chinese-hubert-base"):
        assert part in lines[0]
