"""Where the vocoder's spectral convolutions pay on this CPU: per layer, and the whole generator.

    python scripts/bench_spectral_conv.py [--threads 2] [--frames 16,48,122] [--model-dir models/bench-full-v2]

``FFT_PLAN`` (sovits/spectral_conv.py) lists the residual convolutions computed in the frequency
domain and the shortest input each takes; it was measured on one CPU (docs/performance.md names
it). This prints what a new CPU needs to check it:

* **per layer**: the speed-up of the spectral convolution over oneDNN's direct one for each width,
  kernel and block size the generator could use, at dilation 1 and 5, for inputs of ``--frames``
  latent frames at that stage's rate (random weights, channels-last input, medians of 9);
* **whole generator** (with ``--model-dir``, a full-size v2 model): its milliseconds with every
  convolution direct and with the plan, interleaved, at each ``--generator-frames`` length (default
  ``--frames``), and how far apart the two waveforms are.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from dora_gpt_sovits.benchmark.system import cpu_model
from dora_gpt_sovits.sovits.generator import conv
from dora_gpt_sovits.sovits.spectral_conv import SpectralKernel, spectral_conv

STAGE_RATE = {256: 10, 128: 80, 64: 160, 32: 320}  # v1/v2 generator: samples per latent frame at each width
CANDIDATES = [  # (channels, taps, block size)
    (256, 7, 32), (256, 11, 32), (256, 11, 64),
    (128, 7, 32), (128, 11, 32), (128, 11, 64),
    (64, 7, 32), (64, 11, 32), (64, 11, 64),
    (32, 11, 32),
]  # fmt: skip


def median_ms(call: Callable[[], object], repeats: int = 9) -> float:
    call(), call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def layer_speedup(channels: int, taps: int, n_fft: int, dilation: int, length: int) -> float:
    """Direct time over spectral time of one random layer on a channels-last input of ``length``."""
    layer = nn.Conv1d(channels, channels, taps, dilation=dilation, padding=dilation * (taps - 1) // 2)
    kernel = SpectralKernel.of(layer, n_fft)
    x = torch.randn(1, channels, 1, length).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return median_ms(partial(conv, x, layer)) / median_ms(partial(spectral_conv, x, kernel))


def layer_speedups(frames: list[int]) -> None:
    print("| layer (block N) | " + " | ".join(f"{f} frames, d 1 / 5" for f in frames) + " |")
    print("|---" * (len(frames) + 1) + "|")
    for channels, taps, n_fft in CANDIDATES:
        cells = []
        for latent in frames:
            length = latent * STAGE_RATE[channels]
            ratios = [layer_speedup(channels, taps, n_fft, dilation, length) for dilation in (1, 5)]
            cells.append(f"{ratios[0]:.2f} / {ratios[1]:.2f}")
        print(f"| {channels} ch, {taps} taps (N = {n_fft}) | " + " | ".join(cells) + " |", flush=True)


def whole_generator(model_dir: Path, frames: list[int], rounds: int = 7) -> None:
    from dora_gpt_sovits.sovits.loader import load_sovits

    generator = load_sovits(next(model_dir.glob("**/*.pth"))).dec
    cond = torch.randn(1, generator.cond.in_channels, 1)
    print("\n| latent frames | direct ms | plan ms | speed-up | max abs difference |\n|---|---|---|---|---|")
    for latent in frames:
        z = torch.randn(1, generator.conv_pre.in_channels, latent)
        times: dict[bool, list[float]] = {False: [], True: []}
        waves = {}
        with torch.inference_mode():
            for spectral in (False, True):  # the first call of a length builds its kernels: untimed
                generator.use_spectral_convs(spectral)
                waves[spectral] = generator(z, cond)
            for _ in range(rounds):
                for spectral in (False, True):
                    generator.use_spectral_convs(spectral)
                    started = time.perf_counter()
                    generator(z, cond)
                    times[spectral].append(time.perf_counter() - started)
        direct, planned = (statistics.median(times[s]) * 1e3 for s in (False, True))
        gap = (waves[True] - waves[False]).abs().max().item()
        print(f"| {latent} | {direct:.0f} | {planned:.0f} | {direct / planned:.2f}× | {gap:.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", default="16,48,122", help="latent frame counts (50 per second of audio)")
    parser.add_argument("--model-dir", type=Path, help="a full-size v2 model for the whole-generator comparison")
    parser.add_argument("--generator-frames", help="latent frame counts for the whole generator (default: --frames)")
    parser.add_argument("--layers", action=argparse.BooleanOptionalAction, default=True, help="the per-layer table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = [int(f) for f in args.frames.split(",")]
    print(f"{cpu_model()[0]}, {args.threads} threads, torch {torch.__version__}\n")
    if args.layers:
        layer_speedups(frames)
    if args.model_dir is not None:
        whole_generator(args.model_dir, [int(f) for f in (args.generator_frames or args.frames).split(",")])


if __name__ == "__main__":
    main()
