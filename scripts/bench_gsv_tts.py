"""Time to first audio and RTF of gsv-tts (one node) against the staged graph, in one harness.

    python scripts/bench_gsv_tts.py staged   out/bench-staged
    python scripts/bench_gsv_tts.py one-node out/bench-one-node

Both run through the graph benchmark's ``benchmark.dataflow.GraphRun`` (dataflows/service.yml:
text-input over TCP -> TTS -> gsv-audio-sink, whose ``metrics`` give TTFA and RTF per request); for
``one-node`` the five stages are replaced by one ``gsv-tts`` node wired the same way (its
``segment_complete`` input keeps the service graph's flow-control window). Both get 24 kHz output
with the 0.45 peak limit and no real-time pacing, the full-size development model
(``models/bench-full-v2``, ``gsv-devmodel --size full``) with 60 tokens per segment, float32 on the
CPU, zh-medium and en-medium, one warm-up request then ``--repeats`` rounds. Writes result.json
(every request with the 1-minute load average when it was sent, startup, peak RSS by node).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

from dora_gpt_sovits.benchmark import absolute_path, dataflow
from dora_gpt_sovits.benchmark.cases import select_cases, warmup_cases
from dora_gpt_sovits.model_paths import resolve

REPO = Path(__file__).resolve().parents[1]
STAGES = {"text-frontend", "reference", "bert", "gpt", "vocoder"}
service_graph = dataflow.write_graph


def one_node_graph(repo, workdir, port, metrics_path, node_env=None) -> Path:
    """The benchmark's service graph with its five stages replaced by gsv-tts."""
    path = service_graph(repo, workdir, port, metrics_path, node_env)
    graph = yaml.safe_load(path.read_text(encoding="utf-8"))
    frontend = next(n for n in graph["nodes"] if n["id"] == "text-frontend")
    edge = {"queue_policy": "backpressure"}
    tts = {
        "id": "gsv-tts",
        "path": "gsv-tts",
        "env": {"OMP_WAIT_POLICY": "PASSIVE", **frontend.get("env", {})},
        "inputs": {
            "text": {"source": "text-input/text", "queue_size": 1000, **edge},
            "control": {"source": "text-input/control", "queue_size": 100, **edge},
            "segment_complete": {"source": "audio-sink/segment_complete", "queue_size": 1000, **edge},
        },
        "outputs": ["audio"],
    }
    rest = [n for n in graph["nodes"] if n["id"] not in STAGES]
    for node in rest:
        for spec in [*(node.get("inputs") or {}).values(), *node.get("operator", {}).get("inputs", {}).values()]:
            if isinstance(spec, dict) and spec["source"] == "vocoder/audio":
                spec["source"] = "gsv-tts/audio"
        if node["id"] == "audio-sink":
            node["inputs"].pop("control")  # the frontend's stop fan-out stays inside gsv-tts
    graph["nodes"] = [tts, *rest]
    path.write_text(yaml.safe_dump(graph, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=("staged", "one-node"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--model-dir", type=absolute_path, default=REPO / "models" / "bench-full-v2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.variant == "one-node":
        dataflow.write_graph = one_node_graph
    args.out.mkdir(parents=True, exist_ok=True)
    paths = resolve({"GSV_MODEL_DIR": str(args.model_dir.resolve())}, need=("gpt", "sovits", "bert", "hubert"))
    budget = dataflow.budget_gpt_checkpoint(paths, 60, args.out) if paths.development else None
    env = dataflow.node_env(paths, budget, "cpu", "float32", args.threads, 0)
    env.update(GSV_OUTPUT_SAMPLE_RATE="24000", GSV_PEAK_LIMIT="0.45", GSV_MAX_LEAD_SECONDS="")
    cases = select_cases(["zh", "en"], ["medium"])
    run = dataflow.GraphRun(REPO, args.out, env)
    result = {"variant": args.variant, "requests": []}
    try:
        result["startup_s"] = run.start()
        for warmup, rounds, chosen in ((True, 1, warmup_cases(cases)), (False, args.repeats, cases)):
            for _ in range(rounds):
                for case in chosen:
                    load = Path("/proc/loadavg").read_text().split()[0]
                    metrics = run.say(case.text, case.language)
                    result["requests"].append({"case": case.name, "warmup": warmup, "load1": float(load), **metrics})
        result["peak_rss_mib"] = run.peaks()
    finally:
        run.stop()
    (args.out / "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    measured = [r for r in result["requests"] if not r["warmup"]]
    print(
        f"{args.variant}: TTFA median {statistics.median(r['ttfa_s'] for r in measured):.2f} s, "
        f"RTF median {statistics.median(r['rtf'] for r in measured):.2f} over {len(measured)} requests "
        f"(load average median {statistics.median(r['load1'] for r in measured):.1f}); "
        f"startup {result['startup_s']:.0f} s; peak RSS {result['peak_rss_mib']}"
    )


if __name__ == "__main__":
    main()
