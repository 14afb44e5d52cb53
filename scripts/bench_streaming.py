#!/usr/bin/env python3
"""TTFA, RTF and playback stalls through the service graph for several node settings.

    python scripts/bench_streaming.py --model-dir DEV_FULL \\
        --setting defaults --setting unfused:gpt.GSV_FUSED_DECODE=0 \\
        --setting la2:vocoder.GSV_LOOKAHEAD_TOKENS=2

A setting is ``name[:node.VARIABLE=value,...]`` (node ``*`` = every gsv node). Each starts the
graph once and speaks the text ``--requests`` times (the first is a warm-up). Prints a markdown
table and writes ``streaming.json`` into ``--out``; ``--trace`` adds where the first segment's time
to first audio goes, node by node (``dora_gpt_sovits.benchmark.stage_trace``).
"""

import argparse
import json
import sys
from pathlib import Path

from dora_gpt_sovits.benchmark import absolute_path, stage_trace
from dora_gpt_sovits.benchmark.cases import select_cases
from dora_gpt_sovits.benchmark.streaming_settings import Setting, markdown, probe
from dora_gpt_sovits.model_paths import resolve

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model-dir", type=absolute_path, required=True, help="models (a full-size development model or real weights)"
    )
    p.add_argument("--version", default="v2", help="the model's GSV_VERSION (v3/v4: flow-matching vocoder)")
    p.add_argument("--setting", action="append", type=Setting.parse, default=None)
    p.add_argument("--case", default="en-short", help="a benchmark text (shared/benchmark/cases.py)")
    p.add_argument("--requests", type=int, default=6)
    p.add_argument("--tokens", type=int, default=60, help="GPT budget per segment of a development model")
    p.add_argument("--threads", type=int, default=2, help="GSV_THREADS of every node unless a setting says otherwise")
    p.add_argument(
        "--trace", action="store_true", help="per-node stamps: where the first segment's time to first audio goes"
    )
    p.add_argument("--out", type=absolute_path, default=REPO / "out" / "bench-streaming")
    a = p.parse_args()
    cases = select_cases()
    case = next((c for c in cases if c.name == a.case), None)
    if case is None:
        sys.exit(f"error: unknown case {a.case!r}; known: {', '.join(c.name for c in cases)}")
    paths = resolve({"GSV_MODEL_DIR": a.model_dir, "GSV_VERSION": a.version}, need=("gpt", "sovits", "bert", "hubert"))
    rows = []
    for setting in a.setting or [Setting("defaults")]:
        rows.append(
            probe(
                REPO,
                a.out / setting.name,
                paths,
                setting,
                case.text,
                case.language,
                a.requests,
                a.tokens,
                a.threads,
                progress=lambda m: print(m, file=sys.stderr),
                trace=a.trace,
            )
        )
        print(markdown(rows[-1:]).splitlines()[-1], file=sys.stderr)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "streaming.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(markdown(rows))
    for row in rows:
        if "breakdown" in row:
            print(f"\n{stage_trace.markdown(row['breakdown'], row['setting'])}")


if __name__ == "__main__":
    main()
