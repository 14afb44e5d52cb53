"""Our part of dataflows/voice-assistant.yml through the real dora CLI (tiny development models).

The graph's gsv-* nodes run as written there; the hub nodes around them are replaced by stand-ins:
a scripted LLM that streams its reply as small deltas, one sentence every few seconds, through the
sentence-stream operator (instead of dora-qwen), and a sink that checks dora-pyaudio's contract on
every message (instead of dora-pyaudio). The scripted LLM also stands in for dora-vad's
`timestamp_start` (the user starts speaking). In one graph run: turn 0 streams slowly, turn 1
switches to a voice with its own GPT and SoVITS weights, turn 2 is interrupted by a barge-in, and
turn 3, the reply after it, brings its own reference recording (an ad-hoc voice).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_dataflow_e2e import log_records, node_env

pytestmark = pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed")

HERE = Path(__file__).resolve().parent
TURN1 = ["你好，我是语音助手。", "今天天气很好。", "我们去公园散步吧。", "Have a nice day."]
TURN2 = ["这是第二个声音。"]
BARGED = ["这一句会被打断。", "这一句也说不完。", "这一句根本不会说。"]
AFTER = ["好的，我在听。"]
BARGE_IN_AFTER = 1.5  # seconds after turn 2's text ended: while it is being spoken
GAP_SECONDS = 2.5  # between sentences: an LLM writing slowly
PAUSE_BEFORE_BARGED = 8.0  # before turn 2


def tts_unit(graph: dict) -> list[dict]:
    """The dora-gpt-sovits nodes of a graph: the block users paste in place of dora-kokoro-tts."""
    return [n for n in graph["nodes"] if str(n.get("path", "")).startswith("gsv-")]


def source_of(spec) -> str:
    return spec["source"] if isinstance(spec, dict) else spec


def audio_input(graph: dict) -> dict:
    """dora-pyaudio's audio input exactly as the example graph declares it."""
    return next(n for n in graph["nodes"] if n["id"] == "dora-pyaudio")["inputs"]["audio"]


def derived_graph(llm_report: Path, sink_report: Path, adhoc_audio: Path) -> dict:
    graph = yaml.safe_load((REPO / "dataflows/voice-assistant.yml").read_text(encoding="utf-8"))
    nodes = []
    for node in tts_unit(graph):
        node = dict(node)
        node.pop("build", None)  # installed already
        inputs = {}
        for name, spec in node.get("inputs", {}).items():
            if source_of(spec) == "dora-vad/timestamp_start":
                spec = dict(spec, source="dora-qwen/timestamp_start")
            if source_of(spec) == "dora-qwen/text":
                spec = dict(spec, source="llm-sentences/text")
            inputs[name] = spec
        node["inputs"] = inputs
        nodes.append(node)
    adhoc = {"ref_audio": str(adhoc_audio), "prompt_text": "", "prompt_language": "zh"}  # reference-free
    script = [
        {"sentences": TURN1},
        {"sentences": TURN2, "metadata": {"voice": "second"}},
        # The stop cancels everything in flight: the pause lets turn 1 (a voice whose own weights
        # load first) be spoken before it even on a loaded machine.
        {"sentences": BARGED, "gap": 0.1, "barge_in_after": BARGE_IN_AFTER, "pause": PAUSE_BEFORE_BARGED},
        {"sentences": AFTER, "metadata": adhoc},
    ]
    nodes += [
        {
            "id": "dora-qwen",
            "path": str(HERE / "voice_assistant_nodes/scripted_llm.py"),
            "outputs": ["text", "timestamp_start"],
            "env": {
                "LLM_SCRIPT": json.dumps(script, ensure_ascii=False),
                "LLM_SENTENCE_GAP": str(GAP_SECONDS),
                "LLM_REPORT": str(llm_report),
            },
        },
        {
            "id": "llm-sentences",
            "operator": {
                "python": str(REPO / "operators/sentence_stream.py"),
                "inputs": {"text": {"source": "dora-qwen/text", "queue_size": 1000, "queue_policy": "backpressure"}},
                "outputs": ["text"],
            },
        },
        {
            "id": "dora-pyaudio",
            "path": str(HERE / "voice_assistant_nodes/pyaudio_contract_sink.py"),
            "inputs": {"audio": audio_input(graph), "timestamp_start": "dora-qwen/timestamp_start"},
            "env": {"SINK_REPORT": str(sink_report)},
        },
    ]
    return {"nodes": nodes}


@pytest.fixture(scope="module")
def two_voices(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny bundle (the graph's models) and a voices file whose `second` voice brings its own
    GPT and SoVITS weights (random, another seed) and its own recording."""
    from dora_gpt_sovits.audio.synthetic_voice import speech_like_signal
    from dora_gpt_sovits.audio.wav import write_wav
    from dora_gpt_sovits.devmodels.bundle import MAX_SEC, build_bundle
    from dora_gpt_sovits.devmodels.gpt import write_random_gpt
    from dora_gpt_sovits.devmodels.sovits import write_random_sovits

    root = tmp_path_factory.mktemp("voices")
    base = build_bundle(root / "base", size="tiny", version="v2", seed=0)
    write_random_gpt(root / "second.ckpt", size="tiny", seed=1, max_sec=MAX_SEC["tiny"])
    write_random_sovits(root / "second.pth", version="v2", size="tiny", seed=1)
    write_wav(root / "second.wav", speech_like_signal(3.0, 32000, f0=220.0, seed=1), 32000)
    voices = root / "voices.yml"
    voices.write_text(
        yaml.safe_dump(
            {
                "second": {
                    "ref_audio": "second.wav",
                    "prompt_text": "第二个参考声音。",
                    "prompt_language": "zh",
                    "gpt_weights": "second.ckpt",
                    "sovits_weights": "second.pth",
                }
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    return base, voices


def test_streamed_llm_text_is_spoken_early_in_the_kokoro_contract_switches_voice_and_stops_on_barge_in(
    two_voices, tmp_path
):
    models, voices = two_voices
    llm_report, sink_report = tmp_path / "llm.json", tmp_path / "sink.json"
    graph = tmp_path / "voice-assistant-test.yml"
    spec = derived_graph(llm_report, sink_report, adhoc_audio=voices.parent / "second.wav")
    graph.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    env = node_env(models, GSV_VOICES=str(voices))
    result = subprocess.run(
        ["dora", "run", str(graph), "--log-format", "json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    sent, received = json.loads(llm_report.read_text()), json.loads(sink_report.read_text())

    # The kokoro / dora-pyaudio contract holds on every message at the boundary.
    assert received, output[-3000:]
    assert [r for r in received if r["problems"] or r["error"]] == []
    assert {r["sample_rate"] for r in received} == {24000}
    audible = [r for r in received if r["samples"]]
    assert max(r["peak"] for r in audible) > 0.05  # limited, not silenced

    # Every sentence of the turns not interrupted was spoken, one utterance each (`t<turn>.<n>`);
    # turn 1 in the second voice.
    voice_of = {r["utterance_id"]: r["voice"] for r in audible}
    expected = {f"t{turn}.{i}" for turn, n in ((0, len(TURN1)), (1, len(TURN2)), (3, len(AFTER))) for i in range(n)}
    assert expected <= set(voice_of), voice_of
    assert {u for u, v in voice_of.items() if v == "second"} == {f"t1.{i}" for i in range(len(TURN2))}
    # Turn 3 brought its own reference recording: an ad-hoc voice, encoded while the graph ran.
    assert all(voice_of[f"t3.{i}"].startswith("adhoc-") for i in range(len(AFTER)))

    # Barge-in through the example's wiring (dora-vad/timestamp_start -> text-frontend control, an
    # Int64 message): turn 2 falls silent, and the reply after it starts with dora's flush.
    barge_in = next(s["at"] for s in sent if s.get("barge_in"))
    late = [r for r in audible if r["utterance_id"].startswith("t2.") and r["at"] > barge_in + 3.0]
    assert late == [], (barge_in, late)
    first_after = next(r for r in received if r["utterance_id"] == "t3.0")
    assert first_after["flush"] and first_after["at"] > barge_in

    # Speech started on the first sentence before the LLM had even sent its last one.
    last_sentence_sent = max(s["at"] for s in sent if s.get("turn") == 0 and "sentence" in s)
    assert audible[0]["at"] < last_sentence_sent, (audible[0]["at"], last_sentence_sent)
    start = sent[0]["at"]
    print(
        f"LLM started sentence 1 at 0 s; first audio at {audible[0]['at'] - start:.2f} s; "
        f"last sentence of turn 1 sent at {last_sentence_sent - start:.2f} s; "
        f"{len(received)} audio messages, peak {max(r['peak'] for r in audible):.3f}; "
        f"turn 2: {sum(r['utterance_id'].startswith('t2.') for r in audible)} audio messages, the last "
        f"{max([r['at'] for r in audible if r['utterance_id'].startswith('t2.')] or [barge_in]) - barge_in:+.2f} s "
        f"from the barge-in; the reply's first audio {first_after['at'] - barge_in:.2f} s after it"
    )

    # The second voice's own weights were loaded in the running graph, in gpt and vocoder.
    records = log_records(output)
    loaded = {r["node_id"] for r in records if "loaded for a voice" in r["message"]}
    assert {"gpt", "vocoder"} <= loaded, [r["message"] for r in records if r["node_id"] in ("gpt", "vocoder")][-10:]
    # The unit's optional measuring sink reported time to first audio for every utterance.
    ttfa = [r for r in records if r["node_id"] == "tts-metrics" and "TTFA" in r["message"]]
    assert expected <= {r["message"].split()[1] for r in ttfa}, [r["message"] for r in ttfa]
