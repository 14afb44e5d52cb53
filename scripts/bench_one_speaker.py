"""Two requests at once to one speaker: the service graph with GSV_MAX_BATCH 1 and 4 (issue #19).

    flock /tmp/gsv-bench.lock python scripts/bench_one_speaker.py [--model-dir models/bench-full-v2]
        [--batch 1,4] [--rounds 4] [--tokens 60]

For each batch setting: `dataflows/service.yml` (null sink, which models a speaker's playback)
under `dora start` with that GSV_MAX_BATCH, one warm-up request, then rounds of two requests sent
back to back (a zh text, then an en one). Prints each round's sink reports (ttfa_s, queued_s,
audio, wall, stalls: docs/messages.md, "The sink's report") and when both were done; between rounds
it waits until the modelled speaker has played everything. The GPT's budget is capped at
``--tokens`` per segment (a random-weight model never says EOS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dora_gpt_sovits.benchmark import absolute_path
from dora_gpt_sovits.benchmark.dataflow import budget_gpt_checkpoint
from dora_gpt_sovits.model_paths import resolve

REPO = Path(__file__).resolve().parent.parent
TEXTS = [
    ("今天天气很好，我们去公园散步吧。路上有很多人在跑步。", "zh"),
    ("Hello from the dataflow. It streams while it decodes the rest.", "en"),
]
REPORT = re.compile(
    r"utterance (\S+) done: TTFA ([\d.]+) s(?: \(then ([\d.]+) s in the queue\))?, ([\d.]+) s of audio in ([\d.]+) s, "
    r"playback stalls (\d+) \(([\d.]+) s\)"
)


def graph_file(batch: int, listen: str, folder: Path) -> Path:
    """service.yml with the GPT's GSV_MAX_BATCH and text-input's address set (written into ``folder``)."""
    graph = yaml.safe_load((REPO / "dataflows/service.yml").read_text(encoding="utf-8"))
    for node in graph["nodes"]:
        if "operator" in node:
            node["operator"]["python"] = str(REPO / "operators" / Path(node["operator"]["python"]).name)
        elif node["id"] == "gpt":
            node["env"]["GSV_MAX_BATCH"] = batch
        elif node["id"] == "text-input":
            node["env"]["GSV_TEXT_LISTEN"] = listen
    path = folder / f"service-batch{batch}.yml"
    path.write_text(yaml.safe_dump(graph), encoding="utf-8")
    return path


def sink_reports(folder: Path) -> dict[str, dict]:
    """The sink's 'utterance ... done' lines of the graph run in ``folder``, parsed, by utterance."""
    found: dict[str, dict] = {}
    for log in folder.glob("out/*/log_audio-sink.jsonl"):
        for line in log.read_text().splitlines():
            if match := REPORT.match(json.loads(line)["msg"]):
                u, ttfa, queued, audio, wall, stalls, stall_s = match.groups()
                found[u] = {"ttfa_s": float(ttfa), "queued_s": float(queued or 0), "audio_s": float(audio),
                            "wall_s": float(wall), "stalls": int(stalls), "stall_s": float(stall_s)}  # fmt: skip
    return found


def wait_for(folder: Path, ids: list[str], timeout_s: float = 300) -> dict[str, dict]:
    deadline = time.time() + timeout_s
    while not all(u in (got := sink_reports(folder)) for u in ids):
        if time.time() > deadline:
            raise SystemExit(f"error: no report of {ids} within {timeout_s} s (logs in {folder}/out)")
        time.sleep(0.1)
    return got


def run(batch: int, args: argparse.Namespace, folder: Path) -> None:
    paths = resolve({"GSV_MODEL_DIR": str(args.model_dir)}, need=("gpt",))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(GSV_MODEL_DIR=str(args.model_dir), GSV_GPT_PATH=str(budget_gpt_checkpoint(paths, args.tokens, folder)),
               GSV_SINK="null", GSV_SEED="0", GSV_THREADS="1", HF_HUB_OFFLINE="1",
               DORA_COORDINATOR_PORT=str(args.coordinator_port))  # fmt: skip
    graph = graph_file(batch, args.listen, folder)

    def dora(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(["dora", *a], cwd=folder, env=env, capture_output=True, text=True, timeout=300)

    def say(text: str, language: str, utterance_id: str) -> None:
        command = ["gsv-say", text, "--address", args.listen, "--language", language, "--id", utterance_id]
        subprocess.run(command, env=env, check=True, timeout=400)

    if dora("up").returncode != 0:
        raise SystemExit("error: dora up failed (another coordinator on this port? --coordinator-port)")
    try:
        started = dora("start", str(graph), "--name", f"one-speaker-{batch}", "--detach")
        if started.returncode != 0:
            raise SystemExit(f"error: dora start failed: {started.stderr.strip()[-300:]}")
        say("你好。", "zh", "warm-up")  # gsv-say waits until the graph listens
        wait_for(folder, ["warm-up"])
        time.sleep(2)
        for k in range(args.rounds):
            ids = [f"round{k}-{i}" for i in range(len(TEXTS))]
            start = time.time()
            for (text, language), utterance_id in zip(TEXTS, ids):
                say(text, language, utterance_id)
            got = wait_for(folder, ids)
            took = time.time() - start
            print(json.dumps({"batch": batch, "round": k, "both_done_s": round(took, 2)} | {u: got[u] for u in ids}))
            time.sleep(max(0.0, sum(got[u]["audio_s"] for u in ids) - took) + 1.0)  # the speaker falls silent
    finally:
        dora("stop", "--name", f"one-speaker-{batch}")
        dora("down")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=absolute_path, default=REPO / "models/bench-full-v2")
    parser.add_argument("--batch", default="1,4", help="GSV_MAX_BATCH values to compare")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=60, help="GPT tokens per segment at most")
    parser.add_argument("--listen", default="127.0.0.1:9873", help="text-input's address (beside the service's 9871)")
    parser.add_argument("--coordinator-port", type=int, default=16313)
    args = parser.parse_args()
    args.model_dir = args.model_dir.resolve()  # the graph runs in a temporary folder
    for batch in (int(b) for b in args.batch.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"one-speaker-{batch}-") as folder:
            run(batch, args, Path(folder))


if __name__ == "__main__":
    main()
