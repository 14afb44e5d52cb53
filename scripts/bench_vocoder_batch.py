"""Vocoder runs of several utterances: one batched model call, or one call per run? (issue #19)

    flock /tmp/gsv-bench.lock python scripts/bench_vocoder_batch.py [--model-dir models/bench-full-v2]
        [--tokens 16,40] [--rows 1,2,4] [--threads 1,2] [--dtypes float32,bfloat16] [--repeats 5]

The vocoder node decodes each run of new tokens with ``streaming.decode_chunk``: the text encoder
over history + run + lookahead, then prior, flow and generator over the run's frames plus their
context. When B utterances each have a run of the same length ready, the node could stack them
into one call of each model part (batch B) instead of B calls. This measures both on the same
random tokens, in the node's steady state (50 tokens of history, 4 of lookahead), for each token
count x rows x torch threads x dtype (``GSV_DTYPE=bfloat16``: the generator on the matrix units,
sovits/cpu_generator.py), the two ways alternating: median wall and process-CPU seconds per
round, and ``speedup`` = sequential wall / batched wall. The batched rows are checked against the
sequential ones (same audio up to float rounding), so both compute the same thing. The first
call of every shape builds kernels: one untimed round first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dora_gpt_sovits.benchmark.system import cpu_model
from dora_gpt_sovits.sovits.engine import load_torch_sovits
from dora_gpt_sovits.sovits.streaming import (
    DEFAULT_MARGIN_FRAMES,
    TorchStreamingSynthesis,
    decode_chunk,
    frame_noise,
    output_frame,
)
from dora_gpt_sovits.sovits.synthesizer import Conditioning

HISTORY, LOOKAHEAD, PHONES, NOISE_SCALE = 50, 4, 40, 0.5


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def run_inputs(rows: int, tokens: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's window of ids (history + run + lookahead) [rows, 1, W] and its phones [rows, P]."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1024, (rows, 1, HISTORY + tokens + LOOKAHEAD), generator=g)
    return codes, torch.randint(1, 300, (rows, PHONES), generator=g)


@torch.inference_mode()
def decode_rows(synthesis: TorchStreamingSynthesis, cond: Conditioning, codes, phones, tokens: int) -> torch.Tensor:
    """``decode_chunk`` for rows of equal shape at once: every model part called once with batch B
    (speed 1, the run at position HISTORY); -> the runs' samples [B, 1, n]."""
    rows = codes.shape[0]
    batch = Conditioning(cond.ge.expand(rows, -1, -1), cond.ge_text.expand(rows, -1, -1))
    content = synthesis.content(codes, phones, batch)
    first, last = output_frame(HISTORY, 1.0), output_frame(HISTORY + tokens, 1.0)
    reachable = content.shape[-1]  # with a lookahead, every window frame is reachable
    flow_lo, flow_hi = max(0, first - synthesis.receptive_field), min(last + synthesis.receptive_field, reachable)
    gen_lo, gen_hi = max(0, first - DEFAULT_MARGIN_FRAMES), min(last + DEFAULT_MARGIN_FRAMES, reachable)
    eps = frame_noise(0, flow_lo, flow_hi, synthesis.inter_channels).expand(rows, -1, -1)
    window = content[..., flow_lo:flow_hi]
    wav = synthesis.window_audio(window, eps, NOISE_SCALE, batch, slice(gen_lo - flow_lo, gen_hi - flow_lo))
    hop = synthesis.samples_per_frame
    return wav[..., (first - gen_lo) * hop : (last - gen_lo) * hop]


def decode_one_by_one(model, cond: Conditioning, codes, phones, tokens: int) -> torch.Tensor:
    """What the node does today: ``decode_chunk`` once per row."""
    out = []
    for row in range(codes.shape[0]):
        window = codes[row, 0]
        chunk = decode_chunk(
            model,
            cond,
            phones[row : row + 1],
            window[:HISTORY],
            window[HISTORY : HISTORY + tokens],
            window[HISTORY + tokens :],
            noise_scale=NOISE_SCALE,
        )
        out.append(chunk.samples)
    return torch.cat(out)


def timed(fn: Callable[[], torch.Tensor], into: list[tuple[float, float]]) -> torch.Tensor:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    into.append((time.perf_counter() - wall, time.process_time() - cpu))
    return result


def median(runs: list[tuple[float, float]], i: int) -> float:
    return round(statistics.median(r[i] for r in runs), 4)


def measure(model, cond: Conditioning, rows: int, tokens: int, repeats: int) -> dict:
    codes, phones = run_inputs(rows, tokens)
    synthesis = TorchStreamingSynthesis(model)
    ways = {
        "batched": lambda: decode_rows(synthesis, cond, codes, phones, tokens),
        "sequential": lambda: decode_one_by_one(model, cond, codes, phones, tokens),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for fn in ways.values():
        fn()  # kernels for this shape
    out = {}
    for _ in range(repeats):
        for name, fn in ways.items():
            out[name] = timed(fn, times[name])
    diff = float((out["batched"].float() - out["sequential"].float()).abs().max())
    audio_s = out["sequential"].shape[-1] * rows / model.config.sampling_rate
    report = {"tokens": tokens, "rows": rows, "audio_s": round(audio_s, 3)}
    for name, runs in times.items():
        report[name] = {"wall_s": median(runs, 0), "cpu_s": median(runs, 1)}
    report["speedup"] = round(report["sequential"]["wall_s"] / report["batched"]["wall_s"], 2)
    report["max_abs_diff"] = round(diff, 5)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("models/bench-full-v2"))
    parser.add_argument("--tokens", type=ints, default=[16, 40], help="tokens per run (25 per second of audio)")
    parser.add_argument("--rows", type=ints, default=[1, 2, 4], help="runs decoded together")
    parser.add_argument("--threads", type=ints, default=[1, 2])
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    source = next(args.model_dir.glob("**/*.pth"), None)
    if source is None:
        raise SystemExit(f"error: no SoVITS .pth under {args.model_dir} (gsv-devmodel makes one)")
    results = []
    for dtype_name in args.dtypes.split(","):
        model = load_torch_sovits(source, torch.device("cpu"), getattr(torch, dtype_name), env={})
        spec = torch.rand(1, 1025, 200, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            cond = model.global_condition([spec])
        for threads in args.threads:
            torch.set_num_threads(threads)
            for tokens in args.tokens:
                for rows in args.rows:
                    report = {"dtype": dtype_name, "threads": threads} | measure(
                        model, cond, rows, tokens, args.repeats
                    )
                    print(json.dumps(report), flush=True)
                    results.append(report)
    summary = {"cpu": cpu_model()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))


if __name__ == "__main__":
    main()
