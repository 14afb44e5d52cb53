"""Repeated runs -> the benchmark's result document (a JSON-ready dict).

Every speed figure is a :class:`.stats.Summary` over the measured repeats (warm-up runs excluded).
Definitions:

* GPT prefill: GPT call -> first token sampled, per segment (prefill forward + one sample);
* GPT decode: tokens after the first / time from the first token to the last (excludes prefill);
* vocoder RTF: vocoder time / speech seconds it produced;
* end-to-end RTF (in-process): wall time text -> last segment's audio / audio seconds as played
  (speech + the 0.3 s pause the vocoder node appends to each segment);
* first audio (in-process): text in -> the first segment's audio computed;
* TTFA (dataflow): the audio-sink's own figure: text received by text-input -> first audio message
  at the sink; dataflow RTF is the sink's too (wall / audio incl. pauses);
* chars/s: characters of the input text / end-to-end wall time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .cases import TextCase
from .dataflow import DataflowResult
from .inprocess import CaseRun
from .stats import Summary, ratio, summarize
from .upstream import UpstreamCaseRun

STAGES = ("frontend", "bert", "gpt_prefill", "gpt_decode", "vocoder")


def _s(summary: Summary | None) -> dict[str, float] | None:
    return None if summary is None else summary.to_dict()


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class CaseRecord:
    case: TextCase
    ours: list[CaseRun] = field(default_factory=list)
    upstream: list[UpstreamCaseRun] = field(default_factory=list)


def ours_metrics(runs: list[CaseRun], chars: int) -> dict[str, Any]:
    stages = {name: summarize([r.stage_seconds()[name] for r in runs]) for name in STAGES}
    prefill = [sum(s.gpt_prefill_s for s in r.segments) / len(r.segments) for r in runs]
    decode_tok_s = [sum(s.decode_tokens for s in r.segments) / sum(s.gpt_decode_s for s in r.segments) for r in runs]
    speech = [sum(s.audio_s for s in r.segments) for r in runs]
    return {
        "stages_s": {k: _s(v) for k, v in stages.items()},
        "gpt_prefill_ms_per_segment": _s(summarize([1000 * p for p in prefill])),
        "gpt_decode_tok_per_s": _s(summarize(decode_tok_s)),
        "gpt_decode_ms_per_token": _s(summarize([1000 / t for t in decode_tok_s])),
        "vocoder_rtf": _s(summarize([r.stage_seconds()["vocoder"] / a for r, a in zip(runs, speech)])),
        "model_rtf": _s(
            summarize(
                [
                    (r.stage_seconds()["gpt_prefill"] + r.stage_seconds()["gpt_decode"] + r.stage_seconds()["vocoder"])
                    / r.audio_s
                    for r in runs
                ]
            )
        ),
        "e2e_rtf": _s(summarize([r.wall_s / r.audio_s for r in runs])),
        "wall_s": _s(summarize([r.wall_s for r in runs])),
        "first_audio_s": _s(summarize([r.first_audio_s for r in runs])),
        "chars_per_s": _s(summarize([chars / r.wall_s for r in runs])),
        "audio_s": round(runs[0].audio_s, 3),
        "speech_s": round(speech[0], 3),
        "peak_rss_mib": max((r.peak_rss_mib for r in runs if r.peak_rss_mib), default=None),
        "peak_gpu_mib": max((r.peak_gpu_mib for r in runs if r.peak_gpu_mib), default=None),
    }


def upstream_metrics(runs: list[UpstreamCaseRun], ours: list[CaseRun]) -> dict[str, Any]:
    stages = {
        name: summarize([r.stage_seconds()[name] for r in runs])
        for name in ("bert", "gpt_prefill", "gpt_decode", "vocoder")
    }
    decode_tok_s = [sum(n - 1 for n in r.steps) / sum(r.decode_s) for r in runs]
    played = ours[0].audio_s  # same tokens -> same audio length as ours (checked below)
    hashes = {r.token_hash() for r in runs}
    return {
        "stages_s": {k: _s(v) for k, v in stages.items()},
        "gpt_prefill_ms_per_segment": _s(summarize([1000 * sum(r.prefill_s) / len(r.prefill_s) for r in runs])),
        "gpt_decode_tok_per_s": _s(summarize(decode_tok_s)),
        "gpt_decode_ms_per_token": _s(summarize([1000 / t for t in decode_tok_s])),
        "vocoder_rtf": _s(summarize([sum(r.vocoder_s) / r.audio_s for r in runs])),
        "model_rtf": _s(summarize([(sum(r.prefill_s) + sum(r.decode_s) + sum(r.vocoder_s)) / played for r in runs])),
        # Its end to end without the frontend (not run): a lower bound of upstream's e2e RTF.
        "e2e_rtf_lower_bound": _s(summarize([sum(r.stage_seconds().values()) / played for r in runs])),
        "bert_max_abs_diff": max((r.bert_max_abs_diff for r in runs if r.bert_max_abs_diff is not None), default=None),
        "token_hash": runs[0].token_hash(),
        "token_hash_stable": len(hashes) == 1,
        "tokens_equal_ours": hashes == {ours[0].token_hash()},
        "audio_samples_equal_ours": all(r.samples == [s.audio.numel() for s in ours[0].segments] for r in runs),
        "audio_max_abs_diff": next((r.audio_max_abs_diff for r in runs if r.audio_max_abs_diff is not None), None),
        "peak_rss_mib": max((r.peak_rss_mib for r in runs if r.peak_rss_mib), default=None),
    }


def side_by_side(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    """How many times faster ours is (> 1: ours faster), on medians."""

    def sm(d: dict[str, Any], key: str) -> Summary | None:
        v = d.get(key)
        return None if v is None else Summary(**{k: v[k] for k in ("median", "p25", "p75", "min", "max", "n")})

    return {
        "gpt_prefill": _round(
            ratio(sm(ours, "gpt_prefill_ms_per_segment"), sm(theirs, "gpt_prefill_ms_per_segment")), 3
        ),
        "gpt_decode": _round(ratio(sm(ours, "gpt_decode_ms_per_token"), sm(theirs, "gpt_decode_ms_per_token")), 3),
        "vocoder": _round(ratio(sm(ours, "vocoder_rtf"), sm(theirs, "vocoder_rtf")), 3),
        "gpt_plus_vocoder": _round(ratio(sm(ours, "model_rtf"), sm(theirs, "model_rtf")), 3),
        # Ours whole (frontend included) against upstream without its frontend: a lower bound.
        "end_to_end_at_least": _round(ratio(sm(ours, "e2e_rtf"), sm(theirs, "e2e_rtf_lower_bound")), 3),
    }


def dataflow_metrics(result: DataflowResult, case: str) -> dict[str, Any] | None:
    measured = [m for m in result.measured(case) if not m.get("errors")]
    if not measured:
        return None
    return {
        "ttfa_s": _s(summarize([m["ttfa_s"] for m in measured])),
        "rtf": _s(summarize([m["rtf"] for m in measured if m.get("rtf") is not None])),
        "wall_s": _s(summarize([m["wall_s"] for m in measured])),
        "audio_s": measured[0]["audio_s"],
        "failed_requests": len(result.measured(case)) - len(measured),
    }


def case_document(record: CaseRecord, dataflow: DataflowResult | None) -> dict[str, Any]:
    runs = record.ours
    first = runs[0]
    hashes = {r.token_hash() for r in runs}
    doc: dict[str, Any] = {
        "language": record.case.language,
        "length": record.case.length,
        "text": record.case.text,
        "chars": len(record.case.text),
        "segments": len(first.segments),
        "target_phones": [s.target_phones for s in first.segments],
        "prompt_phones": first.segments[0].prompt_phones,
        "prompt_tokens": first.segments[0].prompt_tokens,
        "tokens_per_segment": [len(s.tokens) for s in first.segments],
        "gpt_steps_per_segment": [s.gpt_steps for s in first.segments],
        "token_hash": first.token_hash(),
        "token_hash_stable": len(hashes) == 1,
        "ours": ours_metrics(runs, len(record.case.text)),
    }
    if record.upstream:
        doc["upstream"] = upstream_metrics(record.upstream, runs)
        doc["speedup_vs_upstream"] = side_by_side(doc["ours"], doc["upstream"])
    if dataflow is not None:
        doc["dataflow"] = dataflow_metrics(dataflow, record.case.name)
    return doc


def overall(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Medians across cases of the per-case medians: one headline number per metric."""
    import statistics

    def across(side: str, key: str) -> float | None:
        values = [c[side][key]["median"] for c in cases.values() if c.get(side) and c[side].get(key)]
        return round(statistics.median(values), 4) if values else None

    # The model stages both sides run; ours also times the frontend, so it has end-to-end figures.
    model_keys = (
        "gpt_prefill_ms_per_segment",
        "gpt_decode_ms_per_token",
        "gpt_decode_tok_per_s",
        "vocoder_rtf",
        "model_rtf",
    )
    summary: dict[str, Any] = defaultdict(dict)
    for key in (*model_keys, "e2e_rtf", "first_audio_s", "chars_per_s"):
        summary["ours"][key] = across("ours", key)
    for key in model_keys:
        value = across("upstream", key)
        if value is not None:
            summary["upstream"][key] = value
    for key in ("ttfa_s", "rtf"):
        value = across("dataflow", key)
        if value is not None:
            summary["dataflow"][key] = value
    speedups = defaultdict(list)
    for c in cases.values():
        for k, v in (c.get("speedup_vs_upstream") or {}).items():
            if v is not None:
                speedups[k].append(v)
    if speedups:
        summary["speedup_vs_upstream"] = {k: round(statistics.median(v), 3) for k, v in speedups.items()}
    return dict(summary)


def decode_bandwidth(
    weight_bytes: int,
    ms_per_token: float | None,
    available: dict[str, float],
    threads: int,
    cache_bytes_per_step: float = 0.0,
) -> dict[str, Any] | None:
    """The GPT decode step against the memory floor: its weights read once per token in
    ``ms_per_token`` -> GB/s used, against the machine's read bandwidth at the run's thread count
    (system.read_bandwidth_gbs); the floor is weight bytes / that bandwidth. A step also reads the
    cached keys and values (``cache_bytes_per_step``: on average over the run's steps), so the
    floor of the step as it must run is given with them too (``*_with_cache``)."""
    gbs = available.get(str(threads))
    if not weight_bytes or not ms_per_token or not gbs:
        return None
    used = weight_bytes / (ms_per_token / 1000) / 1e9
    floor_ms = weight_bytes / (gbs * 1e9) * 1000
    floor_with_cache_ms = (weight_bytes + cache_bytes_per_step) / (gbs * 1e9) * 1000
    return {
        "weight_mb": round(weight_bytes / 1e6, 1),
        "threads": threads,
        "used_gbs": round(used, 3),  # a tiny model on a busy machine reads well under 0.1 GB/s
        "available_gbs": gbs,
        "used_fraction": round(used / gbs, 3),
        "floor_ms_per_token": round(floor_ms, 2),
        "vs_floor": round(ms_per_token / floor_ms, 2),
        "cache_mb_per_step": round(cache_bytes_per_step / 1e6, 1),
        "floor_with_cache_ms_per_token": round(floor_with_cache_ms, 2),
        "vs_floor_with_cache": round(ms_per_token / floor_with_cache_ms, 2),
    }


def mean_cached_positions(cases: dict[str, dict[str, Any]]) -> float:
    """The cached positions a decode step attends over, averaged over every step of every case's
    segments: a segment's step ``k`` (k = 1.., after the prefill) sees its prompt phones, target
    phones, prompt tokens and the ``k`` tokens fed so far."""
    positions = steps = 0.0
    for case in cases.values():
        for target, n in zip(case["target_phones"], case["gpt_steps_per_segment"]):
            start = case["prompt_phones"] + target + case["prompt_tokens"]
            decode_steps = max(n - 1, 0)  # the first token comes from the prefill
            positions += decode_steps * start + decode_steps * (decode_steps + 1) / 2
            steps += decode_steps
    return positions / steps if steps else 0.0
