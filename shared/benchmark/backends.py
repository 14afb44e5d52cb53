"""Speed of each heavy stage on each backend, through the stage factories the nodes use.

    python scripts/bench_backends.py --backends torch onnxruntime --threads 2 [--model-dir DIR]

Per backend and stage, the median of ``--repeats`` runs of: BERT on one Chinese sentence, CN-HuBERT on
a 5 s clip, the GPT prefill (a ~100-phone segment with a 150-token prompt), GPT decode ms/token
(``--tokens`` steps, greedy so every backend decodes the same tokens), and the vocoder streaming
those tokens in the vocoder node's chunks (real-time factor = compute / audio seconds). Exports
are made on first use (``<model dir>/onnx``). Writes ``backends.json`` and ``backends.md``.

The in-process pipeline of ``scripts/bench.py`` drives the torch modules directly; this one opens
every stage exactly as a node does (``backends.stages``), which is what a backend comparison needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..backends.config import BackendChoice
from ..backends.stages import bert_builders, gpt_builders, hubert_builders, vocoder_builders
from ..gpt.sampling import SamplingParams
from ..model_paths import resolve
from ..sovits.streaming import decode_in_chunks
from .inprocess import token_hash

REPO = Path(__file__).resolve().parents[2]
SENTENCE = "今天天气真好，我们一起去公园散步吧，顺便买一些水果回来。"


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_backend(choice: BackendChoice, paths, tokens: int, repeats: int, threads: int | None = None) -> dict:
    from ..encoders.bert import bert_features
    from ..encoders.hubert import hubert_features

    out: dict = {}
    bert, tokenizer = bert_builders(paths.bert, threads)[choice.backend](choice)
    word2ph = [2] * len(SENTENCE)
    bert_features(bert, tokenizer, SENTENCE, word2ph)
    out["bert_ms"] = 1000 * median_time(lambda: bert_features(bert, tokenizer, SENTENCE, word2ph), repeats)

    hubert = hubert_builders(paths.hubert, threads)[choice.backend](choice)
    wav = torch.sin(torch.arange(16000 * 5) * 0.03) * 0.3
    hubert_features(hubert, wav)
    out["hubert_ms_per_5s"] = 1000 * median_time(lambda: hubert_features(hubert, wav), repeats)
    del bert, hubert

    stream = gpt_builders(paths.gpt, threads)[choice.backend](choice)
    rng = np.random.default_rng(0)
    phones, feats = rng.integers(1, 300, 100), rng.standard_normal((1024, 100)).astype(np.float32) * 0.1
    prompt = rng.integers(0, 1024, 150)
    greedy = SamplingParams(top_k=1, early_stop_num=tokens - 1)
    list(stream(phones, feats, prompt, dataclasses.replace(greedy, early_stop_num=3)))  # warm-up

    def prefill() -> None:
        next(iter(stream(phones, feats, prompt, greedy)))

    out["gpt_prefill_ms"] = 1000 * median_time(prefill, repeats)
    decoded: list[int] = []

    def decode() -> None:
        decoded[:] = list(stream(phones, feats, prompt, greedy))

    total = median_time(decode, repeats)
    out["gpt_ms_per_token"] = 1000 * (total - out["gpt_prefill_ms"] / 1000) / max(1, len(decoded) - 1)
    out["gpt_tokens"] = len(decoded)
    out["gpt_tokens_hash"] = token_hash([decoded])  # greedy: equal across backends when logits agree
    del stream

    vocoder = vocoder_builders(paths.sovits, threads)[choice.backend](choice)
    cond = vocoder.condition(np.abs(rng.standard_normal((1025, 200))).astype(np.float32), None)
    codes = torch.tensor(decoded, dtype=torch.long)
    target = torch.from_numpy(phones)[None]
    audio_s = 0.0

    def vocode() -> None:
        nonlocal audio_s
        pieces = list(decode_in_chunks(vocoder.chunks, cond, target, codes, chunk_tokens=40, lookahead_tokens=4, history_tokens=25))
        audio_s = sum(p.shape[-1] for p in pieces) / vocoder.sampling_rate

    vocode()
    out["vocoder_rtf"] = median_time(vocode, repeats) / audio_s
    out["vocoder_audio_s"] = audio_s
    return out


def to_markdown(results: dict[str, dict[str, float]], meta: dict) -> str:
    rows = [("BERT, one sentence (ms)", "bert_ms"), ("CN-HuBERT, 5 s clip (ms)", "hubert_ms_per_5s"),
            ("GPT prefill (ms)", "gpt_prefill_ms"), ("GPT decode (ms/token)", "gpt_ms_per_token"),
            ("Vocoder streaming (RTF)", "vocoder_rtf")]
    names = list(results)
    lines = [f"Per-stage speed by backend — {meta['device']}/{meta['dtype']}, {meta['threads']} threads, "
             f"median of {meta['repeats']}, model: {meta['model']}", "",
             "| stage | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(f"{results[n][key]:.3g}" for n in names) + " |")
    lines.append("| GPT greedy tokens (hash) | " + " | ".join(str(results[n]["gpt_tokens_hash"]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=("torch", "onnxruntime", "tensorrt"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model-dir", type=Path, default=None, help="default: $GSV_MODEL_DIR, else models/dev-full (built if missing)")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench")
    args = p.parse_args(argv)

    env = dict(os.environ)
    model_dir = args.model_dir or (Path(env["GSV_MODEL_DIR"]) if env.get("GSV_MODEL_DIR") else REPO / "models" / "dev-full")
    if not model_dir.exists():
        from ..devmodels.bundle import build_bundle

        build_bundle(model_dir, size="full")
    env["GSV_MODEL_DIR"] = str(model_dir)
    paths = resolve(env)
    torch.set_num_threads(args.threads)
    onnx_dir = model_dir / "onnx"
    precision = "float16" if args.dtype == "float16" else "float32"
    if any(b != "torch" for b in args.backends) and not (onnx_dir / f"gpt_step.{precision}.onnx").exists():
        from ..backends.export_cli import export_all

        export_all(onnx_dir, precisions=(precision,), env=env)
    results = {}
    for backend in args.backends:
        choice = BackendChoice(backend, args.device if args.device != "cuda" else "cuda:0", args.dtype, onnx_dir)
        results[backend] = bench_backend(choice, paths, args.tokens, args.repeats, args.threads)
        print(backend, json.dumps(results[backend]), flush=True)
    meta = {"device": args.device, "dtype": args.dtype, "threads": args.threads, "repeats": args.repeats,
            "tokens": args.tokens, "model": str(model_dir)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backends.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (args.out / "backends.md").write_text(to_markdown(results, meta))
    print(to_markdown(results, meta))


if __name__ == "__main__":
    main()
