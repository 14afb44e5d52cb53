"""Barge-in and several utterances in flight, end to end through the real dora CLI (service graph,
tiny development model, vocoder paced to real time so that a long utterance is still playing when
the stop comes)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, dora_cli
from test_dataflow_e2e import assert_plausible_speech_file, dev_models, node_env  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed")
LONG = "".join(["今天天气很好。", "我们去公园散步吧。", "Hello from the dataflow.", "这是一个很长的句子。"] * 10)
FOLLOW_UPS = {
    "ctl-b": "你好，世界。这是第二句话。",
    "ctl-c": "今天天气很好。我们去公园散步吧。",
    "ctl-d": "Hello there. How are you? Fine.",
}
CHUNK = re.compile(r"audio chunk: utterance (\S+) segment (\d+) chunk (\d+)")


def say(env: dict, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "gsv-say"), *args], env=env, check=True, timeout=30)


def sink_log(since: float) -> list[str]:
    """The audio-sink's log lines of the graph started after ``since`` (dora writes them as JSONL in
    the graph's working directory)."""
    logs = [p for p in REPO.glob("**/out/*/log_audio-sink.jsonl") if p.stat().st_mtime >= since]
    if not logs:
        return []
    return [
        json.loads(line)["msg"] for line in max(logs, key=lambda p: p.stat().st_mtime).read_text().splitlines() if line
    ]


def node_log(since: float, node: str) -> str:
    logs = [p for p in REPO.glob(f"**/out/*/log_{node}.jsonl") if p.stat().st_mtime >= since]
    return max(logs, key=lambda p: p.stat().st_mtime).read_text() if logs else ""


def wait_for(condition, seconds: float, what: str, since: float) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"{what} within {seconds} s; audio-sink log tail: {sink_log(since)[-15:]}")
        time.sleep(0.2)


def listening() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 9871), timeout=1).close()  # an empty request: ignored
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def barge_in_run(dev_models, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    """Start the service, speak a long utterance, stop it mid-way, then three more back to back."""
    tmp = tmp_path_factory.mktemp("control")
    env = node_env(
        dev_models, GSV_WAV_PATH=str(tmp / "speech.wav"), GSV_MAX_LEAD_SECONDS="1.0", DORA_COORDINATOR_PORT="16113"
    )

    dora = dora_cli(env)

    started_at = time.time() - 1
    assert dora("up").returncode == 0
    try:
        start = dora("start", "dataflows/service.yml", "--name", "tts-ctl", "--detach")
        assert start.returncode == 0, start.stdout + start.stderr
        wait_for(listening, 400, "text-input listening", started_at)
        say(env, LONG, "--id", "ctl-a")
        wait_for(
            lambda: any("utterance ctl-a segment" in line for line in sink_log(started_at)),
            300,
            "first audio of ctl-a",
            started_at,
        )
        say(env, "--stop")
        for utterance_id, text in FOLLOW_UPS.items():
            say(env, text, "--id", utterance_id)
        wait_for(
            lambda: all(any(f"utterance {u} done" in line for line in sink_log(started_at)) for u in FOLLOW_UPS),
            300,
            "every follow-up utterance done",
            started_at,
        )
        yield sink_log(started_at), node_log(started_at, "text-frontend")
        stopped = dora("stop", "--name", "tts-ctl")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    finally:
        if dora("down").returncode != 0:
            dora("down", "--force")


def test_stop_silences_a_long_utterance_and_the_next_one_plays_fully(barge_in_run):
    lines, frontend_log = barge_in_run
    (cancelled_at,) = [
        i
        for i, line in enumerate(lines)
        if re.match(r"utterance ctl-a cancelled: silent [\d.]+ s after the stop", line)
    ]
    stop_to_silence = float(re.search(r"silent ([\d.]+) s", lines[cancelled_at]).group(1))
    print(f"\nstop -> silence at the sink: {stop_to_silence:.3f} s")
    assert stop_to_silence >= 0
    report = next(line for line in lines if line.startswith("utterance ctl-a cancelled: TTFA"))
    assert "failed" not in report
    # Not one chunk of the cancelled utterance reached the sink's output after the stop.
    assert not any(CHUNK.search(line) and CHUNK.search(line).group(1) == "ctl-a" for line in lines[cancelled_at:])
    assert "utterance ctl-a cancelled" in frontend_log  # its remaining text never became segments
    done_b = next(line for line in lines if line.startswith("utterance ctl-b done"))
    assert "failed" not in done_b
    assert_plausible_speech_file(Path(re.search(r"wrote (\S+?\.wav)", done_b).group(1)), min_seconds=2 * 0.74)


def test_utterances_in_flight_together_arrive_complete_in_order_and_never_interleave(barge_in_run):
    lines, _ = barge_in_run
    chunks = [
        (c.group(1), int(c.group(2)), int(c.group(3)))
        for line in lines
        if (c := CHUNK.search(line)) and c.group(1) != "ctl-a"
    ]
    order = [u for i, (u, *_) in enumerate(chunks) if i == 0 or chunks[i - 1][0] != u]
    assert order == list(FOLLOW_UPS)  # one block per utterance, in submission order
    for utterance_id in FOLLOW_UPS:
        positions = [(s, c) for u, s, c in chunks if u == utterance_id]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        segments = sorted({s for s, _ in positions})
        assert segments == list(range(len(segments))) and len(segments) >= 2
        done = next(line for line in lines if line.startswith(f"utterance {utterance_id} done"))
        assert "failed" not in done and "wrote" in done
