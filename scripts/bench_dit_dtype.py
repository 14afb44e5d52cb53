"""One full-size v3/v4 DiT step in float32 and in bfloat16 on this CPU: time and agreement.

    python scripts/bench_dit_dtype.py [--threads 2] [--frames 600]

What `GSV_DTYPE=bfloat16` buys the v3/v4 vocoder node on a CPU with matrix units (AMX), where only
the DiT is bfloat16 (sovits/mel_engine.py). Random weights; prints seconds (best of 2) and the SNR
of the bfloat16 velocity against float32.
"""

from __future__ import annotations

import argparse
import time

import torch

from dora_gpt_sovits.sovits.dit import DiT, DiTConfig


def best_step_seconds(model: DiT, inputs: list[torch.Tensor], dtype: torch.dtype) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        cast = [a.to(dtype) for a in inputs]
        model(*cast)  # warm-up
        times, out = [], None
        for _ in range(2):
            started = time.perf_counter()
            out = model(*cast)
            times.append(time.perf_counter() - started)
    return min(times), out.float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=600)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = DiT(DiTConfig()).eval().requires_grad_(False)
    for param in model.parameters():
        param.data.normal_(0, 0.02)
    t = a.frames
    inputs = [
        torch.randn(1, t, 100),
        torch.randn(1, t, 100),
        torch.randn(1, t, 512),
        torch.tensor([0.3]),
        torch.tensor([0.125]),
    ]
    fp32_s, exact = best_step_seconds(model, inputs, torch.float32)
    half = DiT(DiTConfig()).eval().requires_grad_(False)
    half.load_state_dict(model.state_dict())
    bf16_s, fast = best_step_seconds(half.to(torch.bfloat16), inputs, torch.bfloat16)
    error = (fast - exact).pow(2).mean() / exact.pow(2).mean()
    print(
        f"DiT step, {t} frames, {a.threads} threads: float32 {fp32_s:.2f} s, bfloat16 {bf16_s:.2f} s "
        f"({fp32_s / bf16_s:.2f}x), SNR {-10 * torch.log10(error).item():.1f} dB"
    )


if __name__ == "__main__":
    main()
