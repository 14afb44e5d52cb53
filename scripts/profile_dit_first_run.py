"""Time (and optionally profile) one v3/v4 DiT call at a streamed first run's shape, in process.

    OMP_WAIT_POLICY=PASSIVE python scripts/profile_dit_first_run.py --model-dir models/bench-full-v4 \
        [--dtype bfloat16] [--threads 2] [--frames 32] [--prompt-frames 32] [--steps 8] [--calls 5] [--profile] \
        [--compile inductor]

The vocoder node's first run of a segment is one ``cfm.sample_mel`` call over the first-run prompt
(GSV_FIRST_RUN_PROMPT_FRAMES, 32) plus the run and its lookahead (8 tokens: 32 v4 frames). This loads
the SoVITS file as the vocoder node does (``MelVocoderEngine.load``: bfloat16 DiT on a CPU,
modulation memo), draws random inputs of that shape, warms up once, then prints each call's wall
time and the median; ``--profile`` adds a ``torch.profiler`` table of one more call, operators by
count and by time. ``--wait-policy`` sets OMP_WAIT_POLICY before torch loads (the graphs use
PASSIVE). ``--compile`` sets GSV_DIT_COMPILE for the load and prints the first call's time (the
compile). ``--save`` writes the last call's mel (float32 ``.pt``) to compare two versions of the code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True, help="a v3/v4 model directory (gsv-devmodel layout)")
    p.add_argument("--version", default="v4", choices=["v3", "v4"])
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=32, help="new frames (run + lookahead)")
    p.add_argument("--prompt-frames", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--wait-policy", choices=["PASSIVE", "ACTIVE"], help="OMP_WAIT_POLICY (default: as inherited)")
    p.add_argument("--compile", choices=["off", "inductor"], help="GSV_DIT_COMPILE for the load")
    p.add_argument("--save", help="write the last call's mel here (torch.save)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.wait_policy:
        if "torch" in sys.modules:
            raise SystemExit("--wait-policy must be set before torch is imported")
        os.environ["OMP_WAIT_POLICY"] = a.wait_policy
    if a.compile:
        os.environ["GSV_DIT_COMPILE"] = a.compile
    import torch

    from dora_gpt_sovits.model_paths import resolve
    from dora_gpt_sovits.sovits.cfm import sample_mel
    from dora_gpt_sovits.sovits.mel_engine import MelVocoderEngine

    torch.set_num_threads(a.threads)
    paths = resolve({"GSV_MODEL_DIR": a.model_dir, "GSV_VERSION": a.version}, need=("sovits", "vocoder"))
    engine = MelVocoderEngine.load(paths.sovits, paths.vocoder, a.version, torch.device("cpu"), getattr(torch, a.dtype))
    estimator = engine.model.estimator
    config = estimator.config
    generator = torch.Generator().manual_seed(0)
    length = a.prompt_frames + a.frames
    features = torch.randn(1, length, config.text_dim, generator=generator)
    prompt = torch.randn(1, config.mel_dim, a.prompt_frames, generator=generator).clamp(-1, 1)
    noise = torch.randn(1, config.mel_dim, length, generator=generator)

    def call() -> torch.Tensor:
        return sample_mel(estimator, features, prompt, a.steps, noise=noise)

    started = time.perf_counter()
    call()  # kernels and allocator for this shape (and the compile, if any)
    first = time.perf_counter() - started
    seconds, mel = [], None
    for _ in range(a.calls):
        started = time.perf_counter()
        mel = call()
        seconds.append(time.perf_counter() - started)
    print(
        f"{a.version} DiT, {a.prompt_frames} + {a.frames} frames, {a.steps} steps, {a.dtype}, {a.threads} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"GSV_DIT_COMPILE={os.environ.get('GSV_DIT_COMPILE', 'off')}: first call {first:.2f} s, then "
        + " ".join(f"{s:.3f}" for s in seconds)
        + f" s; median {statistics.median(seconds):.3f} s"
    )
    if a.save:
        torch.save(mel.float(), a.save)
    if a.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            call()
        events = prof.key_averages()
        print(f"aten operators: {sum(e.count for e in events if e.key.startswith('aten::'))} calls")
        print(events.table(sort_by="self_cpu_time_total", row_limit=30))
        print(events.table(sort_by="count", row_limit=30))


if __name__ == "__main__":
    main()
