"""Speed of each heavy stage on each backend, through the stage factories the nodes use.

    python scripts/bench_backends.py --backends torch onnxruntime --threads 2 [--model-dir DIR]

Per backend and stage, the median of ``--repeats`` runs (alternating between backends) of: BERT on one Chinese sentence, CN-HuBERT on
a 5 s clip, the GPT prefill (a ~100-phone segment with a 150-token prompt), GPT decode ms/token
(``--tokens`` steps, greedy so every backend decodes the same tokens), and the vocoder streaming
those tokens in the vocoder node's chunks (real-time factor = compute / audio seconds). Exports
are made on first use (``<model dir>/onnx``). Writes ``backends.json`` and ``backends.md``.

The in-process pipeline of ``scripts/bench.py`` drives the torch modules directly; this one opens
every stage exactly as a node does (``backends.stages``), which is what a backend comparison needs.
"""

from __future__ import annotations

import argparse
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


class StageSet:
    """Every benchmarked stage of one backend, opened as the nodes open them, with its inputs."""

    def __init__(self, choice: BackendChoice, paths, tokens: int, threads: int | None):
        from ..encoders.bert import bert_features
        from ..encoders.hubert import hubert_features

        self.bert, tokenizer = bert_builders(paths.bert, threads)[choice.backend](choice)
        self.hubert = hubert_builders(paths.hubert, threads)[choice.backend](choice)
        self.stream = gpt_builders(paths.gpt, threads)[choice.backend](choice)
        self.vocoder = vocoder_builders(paths.sovits, threads)[choice.backend](choice)
        rng = np.random.default_rng(0)
        word2ph = [2] * len(SENTENCE)
        phones, feats = rng.integers(1, 300, 100), rng.standard_normal((1024, 100)).astype(np.float32) * 0.1
        prompt = rng.integers(0, 1024, 150)
        greedy = SamplingParams(top_k=1, early_stop_num=tokens - 1)
        wav = torch.sin(torch.arange(16000 * 5) * 0.03) * 0.3
        cond = self.vocoder.condition(np.abs(rng.standard_normal((1025, 200))).astype(np.float32), None)
        self.decoded: list[int] = []
        self.audio_s = 0.0

        def decode() -> None:
            self.decoded[:] = list(self.stream(phones, feats, prompt, greedy))

        def vocode() -> None:
            codes = torch.tensor(self.decoded, dtype=torch.long)
            pieces = list(
                decode_in_chunks(
                    self.vocoder.chunks,
                    cond,
                    torch.from_numpy(phones)[None],
                    codes,
                    chunk_tokens=40,
                    lookahead_tokens=4,
                    history_tokens=25,
                )
            )
            self.audio_s = sum(p.shape[-1] for p in pieces) / self.vocoder.sampling_rate

        self.runs = {
            "bert": lambda: bert_features(self.bert, tokenizer, SENTENCE, word2ph),
            "hubert": lambda: hubert_features(self.hubert, wav),
            "gpt_prefill": lambda: next(iter(self.stream(phones, feats, prompt, greedy))),
            "gpt": decode,
            "vocoder": vocode,
        }


def bench(choices: dict[str, BackendChoice], paths, tokens: int, repeats: int, threads: int | None) -> dict[str, dict]:
    """Runs alternate between backends (round r times every backend once), so a shared machine's
    load changes hit every backend alike; the median of the rounds is reported."""
    sets = {name: StageSet(choice, paths, tokens, threads) for name, choice in choices.items()}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in sets}
    for stage in ("bert", "hubert", "gpt_prefill", "gpt", "vocoder"):
        for stages in sets.values():
            stages.runs[stage]()  # warm-up (and the tokens the vocoder decodes)
        for _ in range(repeats):
            for name, stages in sets.items():
                started = time.perf_counter()
                stages.runs[stage]()
                times[name].setdefault(stage, []).append(time.perf_counter() - started)
    results = {}
    for name, stages in sets.items():
        t = {stage: statistics.median(v) for stage, v in times[name].items()}
        n = len(stages.decoded)
        results[name] = {
            "bert_ms": 1000 * t["bert"],
            "hubert_ms_per_5s": 1000 * t["hubert"],
            "gpt_prefill_ms": 1000 * t["gpt_prefill"],
            "gpt_ms_per_token": 1000 * (t["gpt"] - t["gpt_prefill"]) / max(1, n - 1),
            "gpt_tokens": n,
            "gpt_tokens_hash": token_hash([stages.decoded]),  # greedy: equal across backends when logits agree
            "vocoder_rtf": t["vocoder"] / stages.audio_s,
            "vocoder_audio_s": stages.audio_s,
        }
    return results


def to_markdown(results: dict[str, dict[str, float]], meta: dict) -> str:
    rows = [
        ("BERT, one sentence (ms)", "bert_ms"),
        ("CN-HuBERT, 5 s clip (ms)", "hubert_ms_per_5s"),
        ("GPT prefill (ms)", "gpt_prefill_ms"),
        ("GPT decode (ms/token)", "gpt_ms_per_token"),
        ("Vocoder streaming (RTF)", "vocoder_rtf"),
    ]
    names = list(results)
    lines = [
        f"Per-stage speed by backend — {meta['device']}/{meta['dtype']}, {meta['threads']} threads, "
        f"median of {meta['repeats']}, model: {meta['model']}",
        "",
        "| stage | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(f"{results[n][key]:.3g}" for n in names) + " |")
    lines.append("| GPT greedy tokens (hash) | " + " | ".join(str(results[n]["gpt_tokens_hash"]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--backends", nargs="+", default=["torch", "onnxruntime"], choices=("torch", "onnxruntime", "tensorrt")
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--model-dir", type=Path, default=None, help="default: $GSV_MODEL_DIR, else models/dev-full (built if missing)"
    )
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench")
    args = p.parse_args(argv)

    env = dict(os.environ)
    model_dir = args.model_dir or (
        Path(env["GSV_MODEL_DIR"]) if env.get("GSV_MODEL_DIR") else REPO / "models" / "dev-full"
    )
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
    choices = {
        b: BackendChoice(b, args.device if args.device != "cuda" else "cuda:0", args.dtype, onnx_dir)
        for b in args.backends
    }
    results = bench(choices, paths, args.tokens, args.repeats, args.threads)
    meta = {
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "repeats": args.repeats,
        "tokens": args.tokens,
        "model": str(model_dir),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backends.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (args.out / "backends.md").write_text(to_markdown(results, meta))
    print(to_markdown(results, meta))


if __name__ == "__main__":
    main()
