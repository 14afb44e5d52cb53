"""v3/v4: speed per flow-matching step count, in process (``bench.py --version v3 --sample-steps 4,8,16,32``).

For each step count every case runs through the whole pipeline (frontend, BERT, GPT, features,
flow matching, vocoder: ``inprocess.Pipeline``), and the streamed time to first audio is measured
as the graph produces it: the GPT's first chunk (``GSV_FIRST_CHUNK_TOKENS``) and the vocoder's first
run of it (``GSV_LOOKAHEAD_TOKENS`` held back) through ``mel_synthesis.MelStream``. Also measured:
how far the streamed audio of the whole first case is from its one-shot synthesis.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ..settings import GPTSettings, VocoderSettings
from ..text.frontend import text_to_phones
from ..text.sentence_split import prepare_sentences
from .cases import TextCase
from .inprocess import SPLIT_METHOD, Models, Pipeline, VoicePrompt, run_features

FIRST_CHUNK_TOKENS = GPTSettings.first_chunk_tokens
LOOKAHEAD_TOKENS = max(1, VocoderSettings.lookahead_tokens)
STREAM_RUN_TOKENS = 25  # later runs of the streamed-vs-one-shot comparison (one GPT chunk ~ 1 s)


def sweep(
    models: Models, voice: VoicePrompt, cases: list[TextCase], steps: list[int], tokens: int, seed: int, repeats: int
) -> dict[str, Any]:
    rows = []
    for n_steps in steps:
        pipeline = Pipeline(models, voice, tokens, seed, sample_steps=n_steps)
        pipeline.run(cases[0])  # warm-up (allocator, kernels at this length)
        for case in cases:
            runs = [pipeline.run(case) for _ in range(repeats)]
            wall = statistics.median(r.wall_s for r in runs)
            audio = runs[0].audio_s
            vocoder = statistics.median(sum(s.vocoder_s for s in r.segments) for r in runs)
            rows.append(
                {
                    "sample_steps": n_steps,
                    "case": case.name,
                    "characters": len(case.text),
                    "audio_s": round(audio, 3),
                    "wall_s": round(wall, 3),
                    "rtf": round(wall / audio, 3),
                    "characters_per_s": round(len(case.text) / wall, 1),
                    "vocoder_rtf": round(vocoder / audio, 3),
                    "streamed_ttfa_s": round(streamed_first_audio(pipeline, case), 3),
                }
            )
    first = cases[0]
    return {
        "version": models.paths.version,
        "rows": rows,
        "streamed_vs_one_shot": streamed_vs_one_shot(
            Pipeline(models, voice, tokens, seed, sample_steps=steps[0]), first
        ),
    }


@torch.inference_mode()
def streamed_first_audio(pipeline: Pipeline, case: TextCase) -> float:
    """Text in -> the first streamed audio out: frontend, BERT, the GPT's first chunk, its first run."""
    from ..sovits.mel_synthesis import MelStream, frame_noise

    m, voice = pipeline.models, pipeline.voice
    started = time.perf_counter()
    piece = prepare_sentences(case.text, case.language, SPLIT_METHOD)[0]
    runs = text_to_phones(piece, case.language, m.symbol_version)
    target = torch.tensor([i for r in runs for i in r.phone_ids], dtype=torch.long, device=m.device)
    bert = torch.cat([voice.prompt_bert, run_features(m, runs)], dim=1)
    stream = m.gpt_stream(
        torch.cat([voice.prompt_ids, target]), bert, voice.prompt_tokens, pipeline.sampling(pipeline.seed)
    )
    tokens = [t for _, t in zip(range(FIRST_CHUNK_TOKENS), stream)]
    mel = MelStream(
        m.sovits,
        m.mel_vocoder,
        voice.mel_voice,
        target,
        pipeline.sample_steps,
        noise=frame_noise(0),
    )
    cut = max(1, len(tokens) - LOOKAHEAD_TOKENS)
    samples, _ = mel.decode(torch.tensor(tokens[:cut]), torch.tensor(tokens[cut:]))
    samples.float().cpu()
    elapsed = time.perf_counter() - started
    stream.close()
    return elapsed


@torch.inference_mode()
def streamed_vs_one_shot(pipeline: Pipeline, case: TextCase) -> dict[str, Any]:
    """The first segment of ``case`` vocoded in one go and in runs of STREAM_RUN_TOKENS (the token
    stream cross-faded as the vocoder node does): SNR of streamed against one-shot, and their peaks."""
    from ..sovits.mel_synthesis import MelStream, frame_noise
    from ..sovits.streaming import crossfade

    m, voice = pipeline.models, pipeline.voice
    segment = pipeline.run(case).segments[0]
    target = torch.tensor(
        [i for r in text_to_phones(segment.text, case.language, m.symbol_version) for i in r.phone_ids]
    )
    codes = torch.tensor(segment.tokens)

    def stream(run_tokens: int) -> torch.Tensor:
        mel = MelStream(
            m.sovits,
            m.mel_vocoder,
            voice.mel_voice,
            target,
            pipeline.sample_steps,
            noise=frame_noise(1),
        )
        pieces, tail = [], None
        for start in range(0, len(codes), run_tokens):
            stop = min(len(codes), start + run_tokens)
            lookahead = codes[stop : stop + LOOKAHEAD_TOKENS] if stop < len(codes) else codes[:0]
            samples, new_tail = mel.decode(codes[start:stop], lookahead)
            pieces.append(crossfade(tail, samples))
            tail = new_tail
        return torch.cat(pieces).float()

    one_shot, streamed = stream(len(codes)), stream(STREAM_RUN_TOKENS)
    n = min(len(one_shot), len(streamed))
    error = (streamed[:n] - one_shot[:n]).pow(2).mean()
    power = one_shot[:n].pow(2).mean()
    return {
        "case": case.name,
        "tokens": len(codes),
        "run_tokens": STREAM_RUN_TOKENS,
        "lookahead_tokens": LOOKAHEAD_TOKENS,
        "samples": [len(one_shot), len(streamed)],
        "snr_db": round(float(10 * torch.log10(power / error.clamp_min(1e-20))), 2),
        "max_abs_diff": round(float((streamed[:n] - one_shot[:n]).abs().max()), 5),
        "peak": round(float(one_shot.abs().max()), 5),
    }


def to_markdown(doc: dict[str, Any], host: str) -> str:
    lines = [
        f"# SoVITS {doc['version']}: speed per flow-matching step count ({host})",
        "",
        "| steps | case | audio s | wall s | RTF | chars/s | vocoder stage RTF | streamed TTFA s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['sample_steps']} | {r['case']} | {r['audio_s']} | {r['wall_s']} | {r['rtf']} | "
            f"{r['characters_per_s']} | {r['vocoder_rtf']} | {r['streamed_ttfa_s']} |"
        )
    s = doc["streamed_vs_one_shot"]
    lines += [
        "",
        f"Streamed (runs of {s['run_tokens']} tokens, {s['lookahead_tokens']} of lookahead) against one-shot, "
        f"{s['case']}, {s['tokens']} tokens: SNR {s['snr_db']} dB, max |Δ| {s['max_abs_diff']} (peak {s['peak']}).",
    ]
    return "\n".join(lines) + "\n"
