"""Soak: many utterances back to back through the real service graph, checked one by one.

Every utterance must come back complete (no error), in submission order, with audio of a length
the text and the development model's token budget allow; each node's resident memory is read from
/proc before the first request and after the last, so growth over the run is visible.
``scripts/soak.py`` runs it (100 utterances by default); tests/test_reliability_e2e.py runs a small
one in CI.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .dataflow import GraphRun, node_rss_mib

SECONDS_PER_TOKEN = 0.04  # 25 semantic tokens per second of audio
PAUSE_S = 0.3  # the vocoder's pause after every segment
MIN_TOKENS = 11  # the GPT never stops before this many tokens

SENTENCES = [
    "今天天气很好。",
    "我们去公园散步吧。",
    "Hello from the dataflow.",
    "这是一个很长的测试句子，用来检查流式合成。",
    "It keeps streaming while it decodes.",
]


@dataclass
class SoakResult:
    utterances: int = 0
    completed: int = 0
    in_order: bool = False
    implausible: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    audio_s: float = 0.0
    wall_s: float = 0.0
    rss_start_mib: dict[str, float] = field(default_factory=dict)
    rss_end_mib: dict[str, float] = field(default_factory=dict)

    @property
    def rss_growth_mib(self) -> dict[str, float]:
        return {n: round(self.rss_end_mib.get(n, 0.0) - v, 1) for n, v in self.rss_start_mib.items()}

    def ok(self) -> bool:
        return self.completed == self.utterances and self.in_order and not self.implausible and not self.failed

    def summary(self) -> dict[str, Any]:
        return asdict(self) | {"rss_growth_mib": self.rss_growth_mib, "ok": self.ok()}


def soak_texts(n: int) -> list[tuple[str, int]]:
    """n texts of one or two sentences each, with the number of segments the frontend makes of them."""
    from ..text.sentence_split import prepare_sentences

    texts = []
    for i in range(n):
        picked = [SENTENCES[i % len(SENTENCES)]] + ([SENTENCES[(i + 2) % len(SENTENCES)]] if i % 3 == 0 else [])
        text = " ".join(picked)
        texts.append((text, len(prepare_sentences(text, "auto", "cut5"))))
    return texts


def audio_bounds(segments: int, tokens_per_segment: int) -> tuple[float, float]:
    """The audio length a development model with that token budget can produce for the text."""
    low = segments * (MIN_TOKENS * SECONDS_PER_TOKEN + PAUSE_S) - 0.05
    # The GPT stops once it has generated more than its budget: the token that crosses it is kept.
    high = segments * ((tokens_per_segment + 1) * SECONDS_PER_TOKEN + PAUSE_S) + 0.05
    return low, high


def soak(graph: GraphRun, n: int, tokens_per_segment: int, timeout_s: float = 600) -> SoakResult:
    """Send ``n`` utterances at once, then collect and check the sink's report of each."""
    texts = soak_texts(n)
    ids = [f"soak-{i:04d}" for i in range(n)]
    result = SoakResult(utterances=n, rss_start_mib=node_rss_mib(graph.process.pid))
    started = time.perf_counter()
    graph.send(*({"text": t, "language": "auto", "utterance_id": u} for (t, _), u in zip(texts, ids)))
    reports = [graph.next_metrics(timeout_s=timeout_s) for _ in ids]
    result.wall_s = round(time.perf_counter() - started, 1)
    result.rss_end_mib = node_rss_mib(graph.process.pid)
    result.in_order = [r["utterance_id"] for r in reports] == ids
    by_id = {r["utterance_id"]: r for r in reports}
    for (_text, segments), u in zip(texts, ids):
        report = by_id.get(u)
        if report is None:
            result.failed.append(f"{u}: no report")
            continue
        if report["errors"]:
            result.failed.append(f"{u}: {report['errors']}")
            continue
        result.completed += 1
        result.audio_s += report["audio_s"]
        low, high = audio_bounds(segments, tokens_per_segment)
        if not low <= report["audio_s"] <= high:
            result.implausible.append(
                f"{u}: {report['audio_s']} s for {segments} segment(s), expected {low:.2f}-{high:.2f}"
            )
    result.audio_s = round(result.audio_s, 1)
    return result


def long_text_frontend(chars: int = 100_000) -> dict[str, Any]:
    """A ``chars``-long text through the text frontend alone (no dora, no models): when the first
    segment leaves, how many segments, how long in all, and how much the process's peak memory grew.
    This is the worst case (every segment converted back to back, as with no window); with the
    window the frontend holds the text and converts three segments ahead of playback."""
    import os

    import numpy as np

    from ..text.frontend_engine import FrontendEngine
    from .system import _status_kib, reset_peak_rss

    engine = FrontendEngine()  # the text-frontend node's conversion (its defaults: v2, cut5)
    engine.warm_up()  # the node loads its dictionaries before serving, too
    prompt = engine.prompt_phones("你好。", "zh")
    text = (
        "今天天气很好，我们去公园散步吧。" * (chars // 30 + 1)
        + "Hello there, this is a long text. " * (chars // 60 + 1)
    )[:chars]
    reset_peak_rss()
    rss_before = _status_kib(os.getpid(), "VmRSS") or 0
    started = time.perf_counter()
    first_s, segments = None, 0
    for segment in engine.segments(text, "auto"):
        if segment.error:
            continue
        # What the node sends per segment: the prompt's phones, then the segment's.
        np.concatenate([np.asarray(r.phone_ids, dtype=np.int64) for r in prompt + segment.runs])
        segments += 1
        first_s = first_s if first_s is not None else time.perf_counter() - started
    total_s = time.perf_counter() - started
    peak = _status_kib(os.getpid(), "VmHWM") or 0
    return {
        "chars": chars,
        "segments": segments,
        "first_segment_s": round(first_s or 0.0, 3),
        "total_s": round(total_s, 1),
        "peak_rss_growth_mib": round((peak - rss_before) / 1024, 1),
    }
