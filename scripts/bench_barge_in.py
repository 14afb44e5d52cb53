"""Barge-in through the real dora-pyaudio: how long the speaker keeps playing after the user speaks.

Runs tests/test_voice_assistant_hub_e2e.py's graph (dataflows/voice-assistant.yml with the real
dora-vad and dora-pyaudio, the room as microphone and speaker, the tiny development model) several
times, with pyaudio-feed as the graph has it and, alternating, as the graph was before it (dora-pyaudio
fed by the vocoder, one-second messages). Prints stop -> silence at the speaker per run and the
medians; counted in samples of the speaker's real-time timeline from the first dora-vad
`timestamp_start` of the barge-in.

    python scripts/bench_barge_in.py --runs 5 [--json out/barge_in.json]

Needs what that test needs: the dora CLI, espeak-ng, PortAudio headers for PyAudio (portaudio19-dev).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import test_voice_assistant_hub_e2e as hub  # noqa: E402  (the test's graph and measurement)
from test_dataflow_e2e import node_env  # noqa: E402


def one_run(models: Path, baseline: bool) -> float | None:
    with tempfile.TemporaryDirectory(prefix="barge-in-") as name:
        tmp = Path(name)
        os.mkfifo(tmp / "speaker.fifo")
        graph = tmp / "graph.yml"
        graph.write_text(yaml.safe_dump(hub.hub_test_graph(tmp, baseline), allow_unicode=True), encoding="utf-8")
        run = hub.run_graph(graph, tmp, node_env(models))
        report = tmp / "room.json"
        if run.returncode != 0 or not report.exists():
            failed = Path(tempfile.mkdtemp(prefix="barge-in-failed-")) / "output.txt"
            failed.write_text(run.stdout + run.stderr)
            print(f"a run failed (exit {run.returncode}); its output: {failed}", flush=True)
            return None
        after_stop, _ = hub.stop_to_silence(json.loads(report.read_text()), np.load(tmp / "room.json.npy"))
        return after_stop / hub.SPEAKER_RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the per-run figures here")
    args = parser.parse_args()
    from dora_gpt_sovits.devmodels.bundle import build_bundle

    subprocess.run(["bash", str(REPO / "scripts/setup_hub_nodes.sh"), *hub.REAL_HUB_NODES], check=True)
    results: dict[str, list[float]] = {"pyaudio-feed": [], "before": []}
    with tempfile.TemporaryDirectory(prefix="barge-in-models-") as models:
        bundle = build_bundle(Path(models) / "dev-tiny", size="tiny", version="v2")
        for i in range(args.runs):
            for variant in results:
                seconds = one_run(bundle, baseline=variant == "before")
                if seconds is not None:
                    results[variant].append(seconds)
                    print(f"run {i + 1} {variant}: stop -> silence {seconds:.3f} s", flush=True)
    for variant, values in results.items():
        if values:
            print(f"{variant}: median {statistics.median(values):.3f} s over {len(values)} runs ({values})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
