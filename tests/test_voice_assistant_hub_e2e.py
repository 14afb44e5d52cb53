"""dataflows/voice-assistant.yml with the real hub nodes dora-vad and dora-pyaudio, built as the graph
builds them (each in its own virtual environment, scripts/setup_hub_nodes.sh; cached in .hub-venvs/).

Stand-ins only where weights or hardware are needed: the room (tests/voice_assistant_nodes/room.py)
is the microphone, speaking espeak-ng recordings into dora-vad, and the speaker dora-pyaudio plays
to, through ALSA's file plugin into a FIFO that it drains in real time; scripted whisper and qwen
nodes answer with fixed text. Our TTS is the staged graph on the tiny development model.

The user asks; the assistant answers; one second into the answer the user speaks again (a
barge-in through the real dora-vad), and the answer to that is spoken. Checked: the hub nodes were
built and imported, the speaker received audible audio at 24 kHz, the logs hold no warning storm,
and after the stop the speaker got at most what the mechanism allows (pyaudio-feed's flush empties
dora-pyaudio's queue, so only the message in hand plays out): counted in samples at the speaker.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO
from test_dataflow_e2e import dev_models, log_records, node_env  # noqa: F401  (dev_models: a fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)"),
]

HERE = Path(__file__).resolve().parent
QUESTION = "What is the weather like today?"
BARGE_IN = "Stop, wait a moment please."
TRANSCRIPTS = [QUESTION, BARGE_IN]
ANSWER = [
    "今天天气很好，阳光明媚。",
    "下午可能会有一点风。",
    "晚上气温会降到十五度左右。",
    "明天也是一个好天气。",
    "记得带上一件外套。",
]
AFTER = ["好的，我等你。"]
REAL_HUB_NODES = ("dora-vad", "dora-pyaudio")
SPEAKER_RATE = 24000
BARGE_AFTER_S = 1.0  # of the answer heard
MAX_WARNINGS = 10
DORA_PATH_DIAGNOSTIC = "dora-rs/dora#2742 diagnostic"  # dora 1.1 names each output's transport once, at start
# node-hub's graph gives dora-vad's microphone input dora's default queue (10, drop-oldest): a VAD
# that falls behind on a starved CPU skips old blocks to stay current, and dora logs each skip.
VAD_KEEPS_CURRENT = "Discarding event for input `audio` due to queue size limit"


def recording(text: str, path: Path) -> Path:
    """The user's voice: espeak-ng, resampled to dora-microphone's 16 kHz."""
    import soundfile as sf
    import soxr

    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), text], check=True, timeout=60)
    samples, rate = sf.read(raw, dtype="float32")
    sf.write(path, soxr.resample(samples, rate, 16000).astype(np.float32), 16000, subtype="PCM_16")
    return path


def absolute(command: str) -> str:
    """A hub node's build/path as written for dataflows/, for a graph file elsewhere."""
    return command.replace("../", f"{REPO}/")


def before_the_feed(graph: dict) -> dict:
    """The graph as it was before pyaudio-feed (for the measurement's baseline, scripts/bench_barge_in.py):
    dora-pyaudio fed by the vocoder directly, one-second messages."""
    graph = copy.deepcopy(graph)
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] != "pyaudio-feed"]
    nodes = {n["id"]: n for n in graph["nodes"]}
    nodes["dora-pyaudio"]["inputs"]["audio"]["source"] = "vocoder/audio"
    nodes["vocoder"]["env"]["GSV_MAX_CHUNK_SECONDS"] = 1.0
    return graph


def hub_test_graph(tmp: Path, baseline: bool = False) -> dict:
    graph = yaml.safe_load((REPO / "dataflows/voice-assistant.yml").read_text(encoding="utf-8"))
    if baseline:
        graph = before_the_feed(graph)
    asound = tmp / "asound.conf"
    asound.write_text(
        f'pcm.!default {{ type file; slave.pcm "null"; file "{tmp / "speaker.fifo"}"; format "wav" }}\n',
        encoding="utf-8",
    )
    stand_ins = {
        "dora-microphone": {
            "path": str(HERE / "voice_assistant_nodes/room.py"),
            "extra_inputs": {"timestamp_start": "dora-vad/timestamp_start"},
            "env": {
                "ROOM_FIFO": str(tmp / "speaker.fifo"),
                "ROOM_SPEAKER_RATE": str(SPEAKER_RATE),
                "ROOM_QUESTION": str(recording(QUESTION, tmp / "question.wav")),
                "ROOM_BARGE_IN": str(recording(BARGE_IN, tmp / "barge_in.wav")),
                "ROOM_BARGE_AFTER": str(BARGE_AFTER_S),
                "ROOM_REPORT": str(tmp / "room.json"),
            },
        },
        "dora-distil-whisper": {
            "path": str(HERE / "voice_assistant_nodes/scripted_reply.py"),
            "env": {"REPLIES": json.dumps(TRANSCRIPTS), "REPLY_REPORT": str(tmp / "whisper.json")},
        },
        "dora-qwen": {
            "path": str(HERE / "voice_assistant_nodes/scripted_reply.py"),
            "env": {
                "REPLIES": json.dumps(["".join(ANSWER), "".join(AFTER)], ensure_ascii=False),
                "REPLY_REPORT": str(tmp / "qwen.json"),
            },
        },
    }
    nodes = []
    for node in copy.deepcopy(graph["nodes"]):
        if node["id"] in stand_ins:
            spec = stand_ins[node["id"]]
            node = {
                "id": node["id"],
                "path": spec["path"],
                "inputs": {**node["inputs"], **spec.get("extra_inputs", {})},
                "outputs": node["outputs"],
                "env": {**node.get("env", {}), **spec["env"]},
            }
        elif node["id"] in REAL_HUB_NODES:
            node["build"], node["path"] = absolute(node["build"]), absolute(node["path"])
            if node["id"] == "dora-pyaudio":  # its default ALSA device: the room's speaker
                node["env"] = {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{asound}"}
        else:
            node.pop("build", None)  # this repository: installed already
        nodes.append(node)
    return {"nodes": nodes}


def first_silence(timeline: np.ndarray, start: int, at_least: int, audible: int = 200) -> int:
    """Where the first run of `at_least` silent samples from `start` begins."""
    loud = np.flatnonzero(np.abs(timeline[start:].astype(np.int32)) > audible)
    gaps = np.diff(np.concatenate([[-1], loud, [len(timeline) - start]])) - 1
    first = int(np.flatnonzero(gaps >= at_least)[0])
    return start + (int(loud[first - 1]) + 1 if first else 0)


def run_graph(graph: Path, tmp: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`dora run` the graph, the speaker FIFO held open meanwhile: the room's end must not leave
    dora-pyaudio writing to a FIFO without a reader (SIGPIPE, then a restart blocked in open()).
    A run past `timeout` is ended with its whole process group and reported with its output."""
    keep = os.open(tmp / "speaker.fifo", os.O_RDONLY | os.O_NONBLOCK)
    process = subprocess.Popen(
        ["dora", "run", str(graph), "--log-format", "json"],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        err += f"\n(killed after {timeout} s)"
    finally:
        os.close(keep)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def barged_in_run(dev_models, tmp_path_factory):  # noqa: F811  (the imported fixture)
    tmp = tmp_path_factory.mktemp("hub")
    os.mkfifo(tmp / "speaker.fifo")
    graph = tmp / "voice-assistant-hub.yml"
    graph.write_text(yaml.safe_dump(hub_test_graph(tmp), allow_unicode=True), encoding="utf-8")
    env = node_env(dev_models)
    # The hub venvs side by side first (the script installs them in parallel), then the graph's own
    # build, which finds them made.
    setup = [str(REPO / "scripts/setup_hub_nodes.sh"), *REAL_HUB_NODES]
    subprocess.run(["bash", *setup], env=env, capture_output=True, text=True, timeout=900)
    build = subprocess.run(["dora", "build", str(graph)], cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    run = run_graph(graph, tmp, env)
    room = json.loads((tmp / "room.json").read_text()) if (tmp / "room.json").exists() else {}
    timeline = np.load(tmp / "room.json.npy") if (tmp / "room.json.npy").exists() else np.zeros(0, np.int16)
    whisper = json.loads((tmp / "whisper.json").read_text()) if (tmp / "whisper.json").exists() else []
    return build, run, room, timeline, whisper


def test_hub_nodes_build_in_their_own_environments_and_import(barged_in_run):
    build, run, room, _, whisper = barged_in_run
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]
    for hub in REAL_HUB_NODES:
        assert (REPO / ".hub-venvs" / hub / "bin" / hub).is_file(), hub
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "Traceback" not in output and "Error while importing" not in output, output[-4000:]
    # dora-vad heard both utterances: its timestamps, and each finished utterance went to "whisper"
    # as 16 kHz float32 (the hub contract); dora-pyaudio opened its stream at the graph's rate.
    assert room["timestamp_start"], room
    assert [(w["input"], w["type"]) for w in whisper] == [("input", "float")] * 2, whisper
    assert room["speaker_rate"] == SPEAKER_RATE, room


def test_the_answers_are_heard_and_the_logs_stay_quiet(barged_in_run):
    _, run, room, timeline, _ = barged_in_run
    assert room["phase"] == "barge-in", room  # the answer played long enough to be interrupted
    audible = np.abs(timeline.astype(np.int32)) > 200
    assert audible.sum() > 1.0 * SPEAKER_RATE, audible.sum()
    # The answer after the barge-in was spoken too.
    assert audible[room["barge_in_at"] + 2 * SPEAKER_RATE :].sum() > 0.2 * SPEAKER_RATE
    records = log_records(run.stdout + run.stderr)
    warnings = [
        (r.get("node_id"), r.get("message"))
        for r in records
        if str(r.get("level", "")).upper() in ("WARN", "WARNING", "ERROR")
        and DORA_PATH_DIAGNOSTIC not in str(r.get("message"))
        and not (r.get("node_id") == "dora-vad" and VAD_KEEPS_CURRENT in str(r.get("message")))
    ]
    print(f"{len(warnings)} warnings: {warnings[:MAX_WARNINGS]}")
    assert len(warnings) <= MAX_WARNINGS, warnings[:30]


def stop_to_silence(room: dict, timeline: np.ndarray) -> tuple[int, int]:
    """After the first stop of the barge-in: samples the speaker still played, and samples
    dora-pyaudio still wrote (by the last stop dora-vad sent while the user was speaking)."""
    stops = [t for t in room["timestamp_start"] if t["played"] >= room["barge_in_at"]]
    silent_from = first_silence(timeline, stops[0]["played"], at_least=SPEAKER_RATE // 2)
    return silent_from - stops[0]["played"], stops[-1]["written"] - stops[0]["written"]


def test_barge_in_silences_the_real_dora_pyaudio_within_one_message(barged_in_run):
    _, _, room, timeline, _ = barged_in_run
    rate = SPEAKER_RATE
    after_stop, written_after_stop = stop_to_silence(room, timeline)
    # What the speaker still played after the stop reached the graph, in samples: what was already
    # in the device (its pipe, one page), the one message dora-pyaudio had in hand
    # (GSV_MAX_CHUNK_SECONDS of the graph), and the stop's way through text-frontend to
    # pyaudio-feed and the flush's to dora-pyaudio (allowed 0.1 s on a loaded 2-core machine).
    graph = yaml.safe_load((REPO / "dataflows/voice-assistant.yml").read_text(encoding="utf-8"))
    vocoder = next(n for n in graph["nodes"] if n["id"] == "vocoder")
    message = int(float(vocoder["env"]["GSV_MAX_CHUNK_SECONDS"]) * rate)
    in_device = room["pipe_bytes"] // 2
    allowed = in_device + message + int(0.1 * rate)
    lead = float(vocoder["env"]["GSV_MAX_LEAD_SECONDS"]) * rate  # what was queued without the flush
    print(
        f"stop -> silence at the speaker: {after_stop / rate:.3f} s ({after_stop} samples; allowed "
        f"{allowed}: device {in_device} + one message {message} + 0.1 s); dora-pyaudio wrote "
        f"{written_after_stop} samples after the stop"
    )
    assert written_after_stop <= message + int(0.1 * rate), (written_after_stop, room["timestamp_start"])
    assert after_stop <= allowed < lead, (after_stop, allowed, room["timestamp_start"])
