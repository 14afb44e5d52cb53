#!/usr/bin/env python3
"""Soak the service graph: N utterances back to back through `dora run` with a tiny dev model.

    flock /tmp/dora-e2e.lock .venv/bin/python scripts/soak.py --utterances 100 --out out/soak

Checks every utterance completed, in order, with audio of plausible length; records each node's RSS
before the first and after the last request, and that Ctrl-C leaves no node process behind.
Writes ``<out>.json`` and ``<out>.md`` (the figures in docs/reliability.md come from here).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from dora_gpt_sovits.benchmark import absolute_path

REPO = Path(__file__).resolve().parents[1]


def markdown(summary: dict) -> str:
    rows = "\n".join(
        f"| {n} | {summary['rss_start_mib'][n]} | {summary['rss_end_mib'].get(n, '—')} | {summary['rss_growth_mib'][n]:+} |"
        for n in sorted(summary["rss_start_mib"])
    )
    return (
        f"utterances {summary['utterances']}, completed {summary['completed']}, in order {summary['in_order']}, "
        f"implausible {len(summary['implausible'])}, failed {len(summary['failed'])}; "
        f"{summary['audio_s']} s of audio in {summary['wall_s']} s; orphans after Ctrl-C: {summary['orphans']}\n\n"
        f"| node | RSS start (MiB) | RSS end (MiB) | growth |\n|---|---|---|---|\n{rows}\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=40, help="GPT token budget per segment (dev model)")
    parser.add_argument("--out", type=absolute_path, default=REPO / "out" / "soak")
    parser.add_argument(
        "--long-text",
        type=int,
        metavar="CHARS",
        help="instead: time one CHARS-long text through the text frontend alone",
    )
    args = parser.parse_args()
    if args.long_text:
        from dora_gpt_sovits.benchmark.soak import long_text_frontend

        print(json.dumps(long_text_frontend(args.long_text)))
        return 0

    from dora_gpt_sovits.benchmark.dataflow import GraphRun, budget_gpt_checkpoint, node_env, processes_with_env
    from dora_gpt_sovits.benchmark.soak import soak
    from dora_gpt_sovits.devmodels.bundle import build_bundle
    from dora_gpt_sovits.model_paths import resolve

    work = Path(tempfile.mkdtemp(prefix="gsv-soak-"))
    models = build_bundle(work / "dev-tiny", size="tiny", version="v2")
    paths = resolve({"GSV_MODEL_DIR": str(models)}, need=("gpt", "sovits", "bert", "hubert"))
    env = node_env(paths, budget_gpt_checkpoint(paths, args.tokens, work), "cpu", "float32", 1, 0)
    graph = GraphRun(REPO, work, env)
    print(f"soak: starting the service graph in {work}", flush=True)
    startup = graph.start()
    try:
        graph.say("你好。", "zh")  # warm-up: the voice is encoded, every node has run once
        result = soak(graph, args.utterances, args.tokens)
    finally:
        graph.stop()  # SIGINT: dora run's Ctrl-C
    deadline = time.time() + 30
    while (orphans := processes_with_env("GSV_MODEL_DIR", str(models))) and time.time() < deadline:
        time.sleep(1)
    summary = result.summary() | {"startup_s": round(startup, 1), "orphans": len(orphans), "log": str(graph.log_path)}
    summary["ok"] = summary["ok"] and not orphans
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    args.out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
