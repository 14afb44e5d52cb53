"""The v1/v2 vocoder in float32 and with its generator on the matrix units: time and agreement.

    python scripts/bench_vocoder_dtype.py [--model-dir models/bench-full-v2] [--threads 2] [--tokens 125] [--repeats 5]

What `GSV_DTYPE=bfloat16` buys the vocoder node on this CPU (sovits/cpu_generator.py): the same
decode (prior, flow, generator) of the same random tokens by the model loaded both ways, the two
alternating; prints the CPU, each side's median seconds (wall and process CPU) and the real-time
factor, and the bfloat16 waveform's agreement with float32: SNR, max |difference| and a log-spectral
distance (dB, 1024-point frames). A bucket's first run builds its kernels: timed apart, once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from dora_gpt_sovits.benchmark.audio_distance import distance
from dora_gpt_sovits.benchmark.system import cpu_flags, cpu_model
from dora_gpt_sovits.sovits.engine import load_torch_sovits


def decode_seconds(model, inputs, repeats_out: list[tuple[float, float]]) -> torch.Tensor:
    codes, phones, spec = inputs
    wall, cpu = time.perf_counter(), time.process_time()
    wav = model.decode(codes, phones, [spec], noise_scale=0.5, generator=torch.Generator().manual_seed(1))
    repeats_out.append((time.perf_counter() - wall, time.process_time() - cpu))
    return wav.float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("models/bench-full-v2"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=125, help="semantic tokens decoded (25 per second of audio)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = next(args.model_dir.glob("**/*.pth"))
    g = torch.Generator().manual_seed(0)
    inputs = (
        torch.randint(0, 1024, (1, 1, args.tokens), generator=g),
        torch.randint(1, 300, (1, args.tokens // 2), generator=g),
        torch.rand(1, 1025, 200, generator=g),
    )
    models = {name: load_torch_sovits(source, torch.device("cpu"), dtype, env={}) for name, dtype in
              (("float32", torch.float32), ("bfloat16", torch.bfloat16))}  # fmt: skip
    first: dict[str, float] = {}
    for name, model in models.items():  # the first run of this length builds the bucket's kernels
        runs: list[tuple[float, float]] = []
        decode_seconds(model, inputs, runs)
        first[name] = runs[0][0]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    waves: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for name, model in models.items():
            waves[name] = decode_seconds(model, inputs, times[name])
    audio_s = waves["float32"].shape[-1] / models["float32"].config.sampling_rate
    reference, half = waves["float32"], waves["bfloat16"]
    report = {
        "cpu": cpu_model()[0],
        "cpu_flags": cpu_flags(),
        "threads": args.threads,
        "audio_s": round(audio_s, 2),
        "first_run_s": {k: round(v, 3) for k, v in first.items()},
    }
    for name, runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        report[name] = {
            "wall_s": round(wall, 3),
            "cpu_s": round(statistics.median(c for _, c in runs), 3),
            "rtf": round(wall / audio_s, 3),
        }
    report["speedup"] = round(report["float32"]["wall_s"] / report["bfloat16"]["wall_s"], 2)
    agreement = distance(reference.reshape(-1), half.reshape(-1))
    report["snr_db"] = agreement["snr_db"]
    report["max_abs_diff"] = agreement["max_abs_diff"]
    report["log_spectral_distance_db"] = agreement["lsd_db"]
    report["finite"] = bool(torch.isfinite(half).all())
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
