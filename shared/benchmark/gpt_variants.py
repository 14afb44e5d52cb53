"""``bench.py --gpt-variants``: GPT decode speed per PyTorch option, one process, runs interleaved.

A variant is ``+``-joined words: a weight format (``none`` = float32 weights, ``fp16``, ``auto``;
gpt/weights.py) and optionally ``compile`` and/or ``graphs`` (gpt/static_decode.py; CUDA only)
and/or ``fbgemm`` (float16 products by FBGEMM's kernel instead of ours,
gpt/half_matvec.py) and/or ``unfused`` (our kernel, one PyTorch call per operation instead of the
fused decode step, gpt/decode_layers.py), e.g. ``none,fp16+fbgemm,fp16+unfused,fp16``. Every variant decodes the same
utterance (the default voice's prompt size, random phones) with the same seed; rounds go variant
after variant so that all of them see the same machine load. Reported per variant: median ms/token
over the rounds (decode only, prefill excluded), median prefill, the one-off preparation time
(packing, or compiling every bucket), the decoder it ran (options.make_decoder's line), and
whether its tokens equal the first variant's.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..gpt.loader import load_gpt
from ..gpt.options import TorchGPTOptions, describe, make_decoder, stream_function
from ..gpt.sampling import SamplingParams

WORDS = ("none", "auto", "fp16", "compile", "graphs", "fbgemm", "unfused")


@dataclass(frozen=True)
class Variant:
    name: str
    options: TorchGPTOptions


def parse_variants(text: str, capacity: int) -> list[Variant]:
    """``capacity``: the static decoder's positions (compile/graphs variants): fits the utterance,
    so that one bucket is compiled, not the five a node prepares for the longest utterances."""
    variants = []
    for name in filter(None, (v.strip() for v in text.split(","))):
        words = name.split("+")
        unknown = [w for w in words if w not in WORDS]
        quant = [w for w in words if w in ("none", "auto", "fp16")]
        if unknown or len(quant) > 1:
            raise ValueError(
                f"--gpt-variants: {name!r} is not a variant (words: {', '.join(WORDS)}; one weight format)"
            )
        variants.append(
            Variant(
                name,
                TorchGPTOptions(
                    quant=quant[0] if quant else "none",
                    compile="compile" in words,
                    cuda_graphs="1" if "graphs" in words else "0",
                    capacity=capacity,
                    half_matvec="fbgemm" if "fbgemm" in words else "auto",
                    fused_decode="unfused" not in words,
                    read_every=1,
                ),
            )
        )  # tokens timed as they are sampled, as the eager loop yields them
    if not variants:
        raise ValueError("--gpt-variants: no variant given")
    return variants


TEXT_LEN, PROMPT_LEN = 60, 120  # phones (prompt text + target) and prompt tokens of the utterance


def compare_variants(
    gpt_path: Path,
    variants: list[Variant],
    device: torch.device,
    tokens: int,
    repeats: int,
    seed: int = 0,
    text_len: int = TEXT_LEN,
    prompt_len: int = PROMPT_LEN,
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    phones = torch.randint(0, 700, (text_len,), generator=generator).to(device)
    bert = (torch.randn(1024, text_len, generator=generator) * 0.1).to(device)
    prompt = torch.randint(0, 1024, (prompt_len,), generator=generator).to(device)
    params = SamplingParams(early_stop_num=tokens, seed=seed)

    streams, prepare_s, decoders = {}, {}, {}
    for v in variants:
        model = load_gpt(gpt_path, device=device)
        started = time.perf_counter()
        decoder = make_decoder(model, v.options)
        prepare_s[v.name] = time.perf_counter() - started
        streams[v.name], decoders[v.name] = stream_function(decoder), describe(decoder)

    def one_run(name: str) -> tuple[float, float, list[int]]:
        stamps, out = [], []
        started = time.perf_counter()
        for token in streams[name](phones, bert, prompt, params):
            stamps.append(time.perf_counter())
            out.append(token)
        return 1000 * (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1), 1000 * (stamps[0] - started), out

    for v in variants:
        one_run(v.name)  # warm-up: allocator, first-call costs
    runs: dict[str, list[tuple[float, float, list[int]]]] = {v.name: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            runs[v.name].append(one_run(v.name))
    reference = runs[variants[0].name][0][2]
    return {
        "threads": torch.get_num_threads(),
        "device": str(device),
        "tokens": tokens + 1,
        "repeats": repeats,
        "variants": {
            name: {
                "ms_per_token": [round(r[0], 2) for r in rs],
                "ms_per_token_median": round(statistics.median(r[0] for r in rs), 2),
                "prefill_ms_median": round(statistics.median(r[1] for r in rs), 1),
                "prepare_s": round(prepare_s[name], 2),
                "decoder": decoders[name],
                "same_tokens_as_first": rs[0][2] == reference,
                "token_agreement_with_first": round(
                    sum(a == b for a, b in zip(rs[0][2], reference)) / max(1, len(reference)), 3
                ),
            }
            for name, rs in runs.items()
        },
    }


def to_markdown(doc: dict[str, Any]) -> str:
    first = next(iter(doc["variants"]))
    lines = [
        f"GPT decode per variant ({doc['device']}, {doc['threads']} threads, {doc['tokens']} tokens, "
        f"median of {doc['repeats']} interleaved runs)",
        "",
        f"| variant | ms/token | tok/s | prefill ms | prepare s | tokens as {first} |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in doc["variants"].items():
        ms = v["ms_per_token_median"]
        same = "yes" if v["same_tokens_as_first"] else f"{100 * v['token_agreement_with_first']:.0f}% positions"
        lines.append(
            f"| {name} | {ms:.1f} | {1000 / ms:.1f} | {v['prefill_ms_median']:.0f} | {v['prepare_s']:.1f} | {same} |"
        )
    return "\n".join(lines) + "\n"
