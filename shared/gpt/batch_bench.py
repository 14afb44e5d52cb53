"""Decode-step time of the GPT alone and with 2, 4, 8 rows decoding together (batching.py).

    python shared/gpt/batch_bench.py --model-dir models/bench-full-v2 --rows 1,2,4,8 --threads 2

``--alone-only`` times only the one-utterance loop (decoder.stream), which older versions of the
library also have: run with ``PYTHONPATH`` pointing at an older checkout to compare batch 1
before/after a change. Prints one JSON line per case: medians over the measured steps (the steps
with every row running; prefills are not counted), wall-clock and this process's CPU time (on a
machine shared with other work, CPU time per step at one thread is the steadier comparison).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dora_gpt_sovits.gpt.decoder import stream
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.options import TorchGPTOptions, make_decoder
from dora_gpt_sovits.gpt.sampling import SamplingParams
from dora_gpt_sovits.model_paths import resolve

TEXT_PHONES, PROMPT_TOKENS = 90, 150  # a sentence plus the prompt text's phones; ~6 s of reference


def inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    phones = torch.randint(0, 300, (TEXT_PHONES,), generator=g)
    return (
        phones,
        torch.randn(1024, TEXT_PHONES, generator=g) * 0.1,
        torch.randint(0, 1024, (PROMPT_TOKENS,), generator=g),
    )


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def alone(decoder, tokens: int, seed: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds between successive tokens of one utterance (the first, after the prefill, excluded)."""
    times = [now() for _ in stream(decoder, *inputs(seed), SamplingParams(early_stop_num=tokens, seed=seed))]
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(times, times[1:])]


def batched(decoder, rows: int, tokens: int, seed: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per scheduler step while all ``rows`` rows run."""
    from dora_gpt_sovits.gpt.batching import Job, Scheduler

    scheduler = Scheduler(decoder, max_rows=rows)
    for r in range(rows):
        params = SamplingParams(early_stop_num=tokens + rows, seed=seed + r)
        scheduler.submit(Job(r, r, decoder.prepare(*inputs(seed + r)), params))
    steps = []
    while scheduler.busy():
        full = len(scheduler.running) == rows and not scheduler.waiting
        started = now()
        scheduler.step()
        if full and len(scheduler.running) == rows:
            ended = now()
            steps.append((ended[0] - started[0], ended[1] - started[1]))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--rows", default="1,2,4,8")
    parser.add_argument("--tokens", type=int, default=100, help="decode steps per row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--alone-only", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    decoder = make_decoder(
        load_gpt(resolve({"GSV_MODEL_DIR": args.model_dir}, need=("gpt",)).gpt), TorchGPTOptions.from_env()
    )
    for _ in stream(decoder, *inputs(0), SamplingParams(early_stop_num=8, seed=0)):
        pass  # one-off costs
    cases = [("alone", 1)] + ([] if args.alone_only else [("batched", int(r)) for r in args.rows.split(",")])
    for kind, rows in cases:
        steps = []
        for repeat in range(args.repeats):
            seed = 100 * repeat
            steps += alone(decoder, args.tokens, seed) if kind == "alone" else batched(decoder, rows, args.tokens, seed)
        wall, cpu = (statistics.median(t) * 1000 for t in zip(*steps))
        print(json.dumps({"case": kind, "rows": rows, "decoder": decoder.name, "threads": torch.get_num_threads(),
                          "steps": len(steps), "step_ms": round(wall, 2), "step_cpu_ms": round(cpu, 2),
                          "ms_per_token": round(wall / rows, 2), "cpu_ms_per_token": round(cpu / rows, 2)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
