#!/usr/bin/env python3
"""Load test of dataflows/distributed.yml on two dora machines made of network namespaces (root).

    flock /tmp/dora-e2e.lock .venv/bin/python scripts/multi_machine_load.py --utterances 100 --out out/multi-machine

Machine A (coordinator, text-input ... bert, audio-sink) and machine B (daemon `accelerator`: gpt,
vocoder) are joined by a veth pair (10.77.0.1/2). N utterances at once with the vocoder paused
(SIGSTOP) for a few seconds once audio flows; then the coordinator is paused past its heartbeat
timeout so both daemons reconnect, and a few more utterances plus a health check follow. Every
utterance must be spoken or reported failed with a reason; none may vanish. Writes ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from dora_gpt_sovits.benchmark import absolute_path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=100)
    parser.add_argument("--pause-vocoder", type=float, default=3.0, help="seconds of SIGSTOP (0: none)")
    parser.add_argument(
        "--pause-also",
        nargs="*",
        default=[],
        help="node scripts paused after the vocoder (e.g. gsv-gpt gsv-audio-sink)",
    )
    parser.add_argument(
        "--crossing-policy",
        choices=("backpressure", "direct"),
        help="queue policy of the inputs fed from the other machine: backpressure (the daemons carry them) "
        "or direct (dora's node-to-node zenoh path); default: the YAML's",
    )
    parser.add_argument(
        "--stuck", metavar="SCRIPT", help="also SIGSTOP this node (e.g. gsv-gpt) past the stall timeout mid-utterance"
    )
    parser.add_argument("--no-reconnect", action="store_true", help="skip the coordinator pause")
    parser.add_argument("--stall-timeout", type=float, default=20.0, help="GSV_STALL_TIMEOUT for the run")
    parser.add_argument("--tokens", type=int, default=40, help="GPT token budget per segment (dev model)")
    parser.add_argument("--out", type=absolute_path, default=REPO / "out" / "multi-machine")
    args = parser.parse_args()

    from dora_gpt_sovits.benchmark.dataflow import budget_gpt_checkpoint, node_env
    from dora_gpt_sovits.benchmark.two_machines import TwoMachines, load_test
    from dora_gpt_sovits.devmodels.bundle import build_bundle
    from dora_gpt_sovits.model_paths import resolve

    work = Path(tempfile.mkdtemp(prefix="gsv-two-machines-"))
    models = build_bundle(work / "dev-tiny", size="tiny", version="v2")
    paths = resolve({"GSV_MODEL_DIR": str(models)}, need=("gpt", "sovits", "bert", "hubert"))
    env = node_env(paths, budget_gpt_checkpoint(paths, args.tokens, work), "cpu", "float32", 1, 0)
    env["TWO_MACHINES_RUN"] = str(work)
    machines = TwoMachines(REPO, work, env, stall_timeout_s=args.stall_timeout, crossing_policy=args.crossing_policy)
    try:
        machines.up()
        startup = machines.start()
        result = load_test(
            machines,
            args.utterances,
            args.pause_vocoder,
            tuple(args.pause_also),
            reconnect=not args.no_reconnect,
            stall_timeout_s=args.stall_timeout,
            stuck_node=args.stuck,
        )
    finally:
        machines.down()
    summary = asdict(result) | {"startup_s": round(startup, 1), "work": str(work)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    answered = not result.missing and not result.reconnect.get("missing")
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())
