"""v3/v4: speed per flow-matching step count, in process (``bench.py --version v3 --sample-steps 4,8,16,32``).

For each step count every case runs through the whole pipeline (frontend, BERT, GPT, features,
flow matching, vocoder: ``inprocess.Pipeline``), and the streamed time to first audio is measured
as the graph produces it: the GPT's first chunk (``GSV_FIRST_CHUNK_TOKENS``) and the vocoder's first
run of it (``GSV_LOOKAHEAD_TOKENS`` held back) through ``mel_synthesis.MelStream``, once exact and once
with the first-run shortcut the vocoder node would take (``GSV_FIRST_RUN_PROMPT_FRAMES`` /
``GSV_FIRST_RUN_STEPS`` from the environment; ``mel_synthesis.FirstRun``). Also measured: how far the
streamed audio of the whole first case is from its one-shot synthesis (SNR, max |Δ|, log-spectral
distance), streamed exactly and with the shortcut, over the whole segment and over the first run.

Beside upstream (``--upstream PATH``): each measured run of ours is followed by upstream's own code on
the same files, text inputs, seeds and step count (:mod:`.upstream`: its BERT step, its GPT, and
``TTS.using_vocoder_synthesis`` decoding *our* tokens), and each row gains upstream's RTF, characters
per second and vocoder-stage seconds, how many times faster ours is, and the largest sample
difference between the two one-shot waveforms (ours draws upstream's noise, so they should agree to
float rounding). Upstream has no frontend here and cannot stream: its time is BERT + GPT + synthesis
(a lower bound of its end to end) and its first audio comes when the first segment is synthesised.
Upstream runs float32 on a CPU whatever ``--dtype`` says for ours.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ..settings import GPTSettings, VocoderSettings
from ..sovits.mel_synthesis import EXACT, FirstRun
from ..text.frontend import text_to_phones
from ..text.sentence_split import prepare_sentences
from .audio_distance import distance
from .cases import TextCase
from .inprocess import SPLIT_METHOD, CaseRun, Models, Pipeline, VoicePrompt, run_features
from .upstream import Upstream, UpstreamCaseRun, UpstreamError

FIRST_CHUNK_TOKENS = GPTSettings.first_chunk_tokens
LOOKAHEAD_TOKENS = max(1, VocoderSettings.lookahead_tokens)
FIRST_RUN_TOKENS = max(1, FIRST_CHUNK_TOKENS - LOOKAHEAD_TOKENS)  # what the vocoder node's first run holds
STREAM_RUN_TOKENS = 25  # later runs of the streamed-vs-one-shot comparison (one GPT chunk ~ 1 s)
TTFA_REPEATS = 3  # streamed first audio: median of this many (it is short and the machine shared)

# (pipeline) -> (the started upstream side or None, its document: checkout, worker info or error);
# benchmark.cli.start_upstream with the options bound.
StartUpstream = Callable[[Pipeline], tuple[Upstream | None, dict[str, Any]]]


def sweep(
    models: Models,
    voice: VoicePrompt,
    cases: list[TextCase],
    steps: list[int],
    tokens: int,
    seed: int,
    repeats: int,
    upstream: StartUpstream | None = None,
) -> dict[str, Any]:
    """Every case at every step count, ``repeats`` measured runs each after one warm-up run (the
    first case, before the first step count: the shapes do not depend on the step count)."""
    rows = []
    first_run = first_run_from_env()
    pipelines = {n: Pipeline(models, voice, tokens, seed, sample_steps=n) for n in steps}
    side, upstream_doc = upstream(pipelines[steps[0]]) if upstream is not None else (None, {})
    try:
        warm = pipelines[steps[0]].run(cases[0])  # allocator, kernels at these lengths
        if side is not None:
            side, upstream_doc = guarded(side, upstream_doc, cases[0], warm, measured=False)
        for n_steps in steps:
            pipeline = pipelines[n_steps]
            if side is not None:
                side.pipeline = pipeline  # its vocoder runs at the pipeline's step count
            for case in cases:
                runs, theirs = [], []
                for _ in range(repeats):
                    runs.append(pipeline.run(case))
                    if side is not None:
                        side, upstream_doc = guarded(side, upstream_doc, case, runs[-1], measured=True, out=theirs)
                row = ours_row(n_steps, case, runs)
                row["streamed_ttfa_exact_s"] = median_first_audio(pipeline, case, EXACT)
                row["streamed_ttfa_s"] = median_first_audio(pipeline, case, first_run)
                if theirs and len(theirs) == len(runs):
                    row["upstream"] = upstream_row(case, runs, theirs)
                rows.append(row)
    finally:
        if side is not None:
            side.close()
    if upstream_doc.get("error"):  # a partial comparison would mislead: drop it
        for row in rows:
            row.pop("upstream", None)
    first = cases[0]
    doc = {
        "version": models.paths.version,
        "dtype": str(models.dtype).removeprefix("torch."),
        "vocoder_dtype": str(models.vocoder_dtype or models.dtype).removeprefix("torch."),
        "first_run": first_run.label(),
        "rows": rows,
        "streamed_vs_one_shot": streamed_vs_one_shot(
            Pipeline(models, voice, tokens, seed, sample_steps=steps[0]), first, first_run
        ),
    }
    if upstream is not None:
        doc["upstream"] = upstream_doc
    return doc


def guarded(
    side: Upstream,
    doc: dict[str, Any],
    case: TextCase,
    ours: CaseRun,
    measured: bool,
    out: list[UpstreamCaseRun] | None = None,
) -> tuple[Upstream | None, dict[str, Any]]:
    """One upstream run; on failure the side is closed and the error kept in ``doc``."""
    try:
        run = side.run(case, ours, measured=measured)
    except UpstreamError as e:
        doc["error"] = f"failed on {case.name} at {side.pipeline.sample_steps} steps: {e}"
        side.close()
        return None, doc
    if out is not None:
        out.append(run)
    return side, doc


def ours_row(n_steps: int, case: TextCase, runs: list[CaseRun]) -> dict[str, Any]:
    wall = statistics.median(r.wall_s for r in runs)
    audio = runs[0].audio_s
    vocoder = statistics.median(sum(s.vocoder_s for s in r.segments) for r in runs)
    return {
        "sample_steps": n_steps,
        "case": case.name,
        "characters": len(case.text),
        "segments": len(runs[0].segments),
        "audio_s": round(audio, 3),
        "wall_s": round(wall, 3),
        "rtf": round(wall / audio, 3),
        "characters_per_s": round(len(case.text) / wall, 1),
        "vocoder_s": round(vocoder, 3),
        "vocoder_rtf": round(vocoder / audio, 3),
        "first_audio_one_shot_s": round(statistics.median(r.first_audio_s or 0.0 for r in runs), 3),
    }


def upstream_row(case: TextCase, ours: list[CaseRun], theirs: list[UpstreamCaseRun]) -> dict[str, Any]:
    """Upstream's figures for a row, on ours' played duration (the same tokens give the same length)."""
    played = ours[0].audio_s
    wall = statistics.median(sum(r.stage_seconds().values()) for r in theirs)
    vocoder = statistics.median(sum(r.vocoder_s) for r in theirs)
    gpt = statistics.median(sum(r.prefill_s) + sum(r.decode_s) for r in theirs)
    first = statistics.median(r.bert_s[0] + r.prefill_s[0] + r.decode_s[0] + r.vocoder_s[0] for r in theirs)
    ours_wall = statistics.median(r.wall_s for r in ours)
    ours_vocoder = statistics.median(sum(s.vocoder_s for s in r.segments) for r in ours)
    return {
        "wall_s": round(wall, 3),  # BERT + GPT + synthesis: no frontend (a lower bound of its end to end)
        "rtf": round(wall / played, 3),
        "characters_per_s": round(len(case.text) / wall, 1),
        "bert_s": round(statistics.median(sum(r.bert_s) for r in theirs), 3),
        "gpt_s": round(gpt, 3),
        "vocoder_s": round(vocoder, 3),
        "vocoder_rtf": round(vocoder / played, 3),
        "first_audio_s": round(first, 3),  # no streaming: the first segment whole
        # > 1: ours is faster. End to end: ours whole against upstream without its frontend.
        "speedup_end_to_end_at_least": round(wall / ours_wall, 3),
        "speedup_vocoder": round(vocoder / ours_vocoder, 3),
        "tokens_equal_ours": all(r.token_hash() == ours[0].token_hash() for r in theirs),
        "audio_samples_equal_ours": all(r.samples == [s.audio.numel() for s in ours[0].segments] for r in theirs),
        "audio_max_abs_diff": next((r.audio_max_abs_diff for r in theirs if r.audio_max_abs_diff is not None), None),
        "peak_rss_mib": max((r.peak_rss_mib for r in theirs if r.peak_rss_mib), default=None),
    }


def first_run_from_env() -> FirstRun:
    """The first-run shortcut the vocoder node would take with this environment."""
    settings = VocoderSettings.from_env(os.environ)
    return FirstRun(settings.first_run_prompt_frames or None, settings.first_run_steps)


def median_first_audio(pipeline: Pipeline, case: TextCase, first_run: FirstRun) -> float:
    return round(statistics.median(streamed_first_audio(pipeline, case, first_run) for _ in range(TTFA_REPEATS)), 3)


@torch.inference_mode()
def streamed_first_audio(pipeline: Pipeline, case: TextCase, first_run: FirstRun = EXACT) -> float:
    """Text in -> the first streamed audio out: frontend, BERT, the GPT's first chunk, its first run."""
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
    mel = mel_stream(pipeline, target, seed=0, first_run=first_run)
    cut = max(1, len(tokens) - LOOKAHEAD_TOKENS)
    samples, _ = mel.decode(torch.tensor(tokens[:cut]), torch.tensor(tokens[cut:]))
    samples.float().cpu()
    elapsed = time.perf_counter() - started
    stream.close()
    return elapsed


def mel_stream(pipeline: Pipeline, target: torch.Tensor, seed: int, first_run: FirstRun = EXACT) -> Any:
    """The vocoder node's v3/v4 stream of one segment (``mel_synthesis.MelStream``, frame-seeded noise)."""
    from ..sovits.mel_synthesis import MelStream, frame_noise

    m, voice = pipeline.models, pipeline.voice.mel_voice
    return MelStream(
        m.sovits, m.mel_vocoder, voice, target, pipeline.sample_steps, noise=frame_noise(seed), first_run=first_run
    )


def run_schedule(tokens: int) -> list[tuple[int, int]]:
    """(start, stop) of each run as the graph cuts a segment: the GPT's first chunk less the lookahead,
    then runs of STREAM_RUN_TOKENS."""
    bounds = [0, min(tokens, FIRST_RUN_TOKENS)]
    while bounds[-1] < tokens:
        bounds.append(min(tokens, bounds[-1] + STREAM_RUN_TOKENS))
    return list(zip(bounds, bounds[1:]))


@torch.inference_mode()
def streamed_vs_one_shot(pipeline: Pipeline, case: TextCase, first_run: FirstRun = EXACT) -> dict[str, Any]:
    """The first segment of ``case`` vocoded in one go and streamed in the graph's runs (the token
    stream cross-faded as the vocoder node does), exactly and with ``first_run``: the distance of each
    from one-shot, over the whole segment and over the first run's samples."""
    from ..sovits.streaming import crossfade

    m = pipeline.models
    segment = pipeline.run(case).segments[0]
    target = torch.tensor(
        [i for r in text_to_phones(segment.text, case.language, m.symbol_version) for i in r.phone_ids]
    )
    codes = torch.tensor(segment.tokens)

    def stream(schedule: list[tuple[int, int]], shortcut: FirstRun) -> tuple[torch.Tensor, int]:
        mel = mel_stream(pipeline, target, seed=1, first_run=shortcut)
        pieces, tail = [], None
        for start, stop in schedule:
            lookahead = codes[stop : stop + LOOKAHEAD_TOKENS] if stop < len(codes) else codes[:0]
            samples, new_tail = mel.decode(codes[start:stop], lookahead)
            pieces.append(crossfade(tail, samples))
            tail = new_tail
        return torch.cat(pieces).float(), len(pieces[0])

    one_shot, _ = stream([(0, len(codes))], EXACT)
    doc: dict[str, Any] = {
        "case": case.name,
        "tokens": len(codes),
        "first_run_tokens": FIRST_RUN_TOKENS,
        "run_tokens": STREAM_RUN_TOKENS,
        "lookahead_tokens": LOOKAHEAD_TOKENS,
    }
    for name, shortcut in (("exact", EXACT), ("first_run", first_run)):
        streamed, head = stream(run_schedule(len(codes)), shortcut)
        doc[name] = {
            "setting": shortcut.label(),
            "samples": [len(one_shot), len(streamed)],
            "whole": distance(one_shot, streamed),
            "first_run": distance(one_shot[:head], streamed[:head]),
        }
    return doc


def to_markdown(doc: dict[str, Any], host: str) -> str:
    lines = [
        f"# SoVITS {doc['version']}: speed per flow-matching step count ({host})",
        "",
        "| steps | case | audio s | wall s | RTF | chars/s | vocoder stage s | vocoder stage RTF | "
        "streamed TTFA s (exact) | streamed TTFA s (first run) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['sample_steps']} | {r['case']} | {r['audio_s']} | {r['wall_s']} | {r['rtf']} | "
            f"{r['characters_per_s']} | {r.get('vocoder_s', '')} | {r['vocoder_rtf']} | "
            f"{r.get('streamed_ttfa_exact_s', '')} | {r['streamed_ttfa_s']} |"
        )
    lines += ["", f"First run: {doc.get('first_run', 'exact')}.", ""] + distance_markdown(doc["streamed_vs_one_shot"])
    lines += upstream_markdown(doc)
    return "\n".join(lines) + "\n"


def distance_markdown(s: dict[str, Any]) -> list[str]:
    lines = [
        f"Streamed against one-shot, {s['case']}, {s['tokens']} tokens, runs of {s['first_run_tokens']} then "
        f"{s['run_tokens']} tokens, {s['lookahead_tokens']} of lookahead:",
        "",
        "| streamed | over | SNR dB | max abs diff | peak | log-spectral distance dB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in ("exact", "first_run"):
        for part in ("whole", "first_run"):
            d = s[name][part]
            lines.append(
                f"| {s[name]['setting']} | {part.replace('_', ' ')} | {d['snr_db']} | {d['max_abs_diff']} | "
                f"{d['peak']} | {d['lsd_db']} |"
            )
    return lines


def ours_precision(doc: dict[str, Any]) -> str:
    """Our precision for the report: the GPT's dtype, and the vocoder stage's where it differs
    (e.g. "float32, vocoder stage bfloat16": ``bench.py --vocoder-dtype``)."""
    dtype = doc.get("dtype", "float32")
    vocoder = doc.get("vocoder_dtype", dtype)
    return dtype if vocoder == dtype else f"{dtype}, vocoder stage {vocoder}"


def upstream_markdown(doc: dict[str, Any]) -> list[str]:
    if "upstream" not in doc:
        return []
    up = doc["upstream"]
    lines = ["", "## Side by side with upstream GPT-SoVITS", ""]
    if up.get("error"):
        return lines + [f"Not run: {up['error'].splitlines()[0]}"]
    worker = up.get("worker", {})
    lines += [
        f"Upstream {up.get('commit') or up.get('checkout')} (torch {worker.get('torch')}, "
        f"{worker.get('threads')} threads, float32) on the same files, inputs, seeds and step counts; its "
        f"synthesis decodes our tokens. Ours: {ours_precision(doc)}. Upstream's time is BERT + GPT + "
        "synthesis (no frontend: a lower bound); it cannot stream, its first audio is its first segment whole. "
        "Speedup = upstream time / ours (> 1: ours faster).",
        "",
        "| steps | case | upstream wall s | upstream RTF | upstream chars/s | upstream vocoder stage s | "
        "upstream first audio s | speedup e2e (at least) | speedup vocoder stage | same tokens | max abs diff one-shot |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in doc["rows"]:
        u = r.get("upstream")
        if u is None:
            continue
        lines.append(
            f"| {r['sample_steps']} | {r['case']} | {u['wall_s']} | {u['rtf']} | {u['characters_per_s']} | "
            f"{u['vocoder_s']} | {u['first_audio_s']} | {u['speedup_end_to_end_at_least']}× | "
            f"{u['speedup_vocoder']}× | {'yes' if u['tokens_equal_ours'] else 'no'} | {u['audio_max_abs_diff']} |"
        )
    return lines
