#!/usr/bin/env python3
"""Load test of the OpenAI server graph: many requests from concurrent `openai` clients, each
completed stream checked against the same request run alone.

    .venv/bin/python scripts/load_test.py --requests 200 --clients 8 --out out/load_test

The graph (``dataflows/openai-server.yml``, GSV_MAX_BATCH 4) runs under ``dora run`` with a tiny v2
development model and a fixed ``GSV_SEED``: segment i of any utterance samples with seed + i in the
GPT and the vocoder, so a request's audio depends on its text alone, not on what it was batched
with. Mixed lengths and languages (zh, en, both); about ``--cancel`` of them close their stream
after the first audio. Afterwards each distinct request is run alone, one at a time, and every
completed stream must equal its solo run byte for byte (s16le PCM; the max |difference| in
samples is reported where not); a cancelled one must be a prefix of its solo run. Node RSS is
sampled every few seconds to show whether memory grows with the requests served.
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dora_gpt_sovits.benchmark import absolute_path

REPO = Path(__file__).resolve().parents[1]
CANCEL_AFTER_BYTES = 9600  # 0.2 s of 24 kHz s16le: the listener heard the start, then left

TEXTS = [  # (text, language): one to four segments, zh, en and mixed
    ("你好。", "zh"),
    ("今天天气很好，我们一起去公园散步吧。", "zh"),
    ("语音合成技术可以把文字变成自然流畅的声音。它被广泛用于导航软件、有声读物和智能助手。", "zh"),
    ("Hello there.", "en"),
    ("The weather is lovely today, so let us take a walk in the park.", "en"),
    ("Speech synthesis turns written text into audio. It is used in navigation apps and audio books.", "en"),
    ("第一个请求。Then a sentence in English.", "auto"),
    ("我们测试并发，with many listeners at once。", "auto"),
]


@dataclass
class Request:
    index: int
    text: str
    language: str
    cancel: bool


@dataclass
class Outcome:
    request: Request
    pcm: bytes = b""
    error: str | None = None
    cancelled: bool = False
    busy: int = 0  # 429s before it was taken


def speak(base: str, request: Request, attempts: int = 50) -> Outcome:
    """One request, sent again after each 429: the server holds a slot until its handler returns
    (a cancelled stream's until it notices the disconnect), so with as many clients as slots a
    client's next request can arrive while its previous one still counts."""
    from openai import RateLimitError

    busy = 0
    while True:
        try:
            outcome = stream_once(base, request)
            outcome.busy = busy
            return outcome
        except RateLimitError:
            busy += 1
            if busy >= attempts:
                return Outcome(request, error=f"429 on all {attempts} attempts", busy=busy)
            time.sleep(0.2)


def plan(n: int, cancel_fraction: float, seed: int) -> list[Request]:
    rng = random.Random(seed)
    return [Request(i, *rng.choice(TEXTS), cancel=rng.random() < cancel_fraction) for i in range(n)]


def stream_once(base: str, request: Request) -> Outcome:
    """One streaming request with the official client; a cancelling one leaves after its first audio."""
    from openai import OpenAI, RateLimitError

    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=600)
    outcome, parts, received = Outcome(request), [], 0
    try:
        with client.audio.speech.with_streaming_response.create(
            model="gpt-sovits",
            voice="default",
            input=request.text,
            response_format="pcm",
            extra_body={"language": request.language},
        ) as response:
            for part in response.iter_bytes(4096):
                parts.append(part)
                received += len(part)
                if request.cancel and received >= CANCEL_AFTER_BYTES:
                    outcome.cancelled = True
                    break  # leaving the block closes the connection: the server stops the utterance
    except RateLimitError:
        raise
    except Exception as e:  # every failure is counted, none ends the test
        outcome.error = f"{type(e).__name__}: {e}"
    outcome.pcm = b"".join(parts)
    return outcome


def run_concurrently(base: str, requests: list[Request], clients: int) -> list[Outcome]:
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda r: speak(base, r), requests))


def solo_runs(base: str, requests: list[Request]) -> dict[tuple[str, str], bytes]:
    """Each distinct (text, language) alone, one after another, to full length."""
    solos = {}
    for key in dict.fromkeys((r.text, r.language) for r in requests):
        outcome = speak(base, Request(-1, *key, cancel=False))
        if outcome.error:
            raise RuntimeError(f"solo run of {key[0]!r} failed: {outcome.error}")
        solos[key] = outcome.pcm
    return solos


def max_difference(a: bytes, b: bytes) -> int:
    x, y = (np.frombuffer(p[: len(p) // 2 * 2], "<i2").astype(np.int32) for p in (a, b))
    n = min(len(x), len(y))
    return int(np.abs(x[:n] - y[:n]).max()) if n else 0


def compare(outcomes: list[Outcome], solos: dict[tuple[str, str], bytes]) -> dict:
    """Completed streams equal to their solo run; cancelled ones a prefix of it."""
    counts = {"completed": 0, "equal": 0, "cancelled": 0, "cancelled_prefix": 0, "failed": 0}
    counts["busy_retries"] = sum(o.busy for o in outcomes)
    mismatches = []
    for o in outcomes:
        solo = solos[(o.request.text, o.request.language)]
        if o.error:
            counts["failed"] += 1
            mismatches.append({"index": o.request.index, "error": o.error})
        elif o.cancelled:
            counts["cancelled"] += 1
            counts["cancelled_prefix"] += solo.startswith(o.pcm)
        else:
            counts["completed"] += 1
            if o.pcm == solo:
                counts["equal"] += 1
            else:
                mismatches.append(mismatch(o, solo, solos))
    return counts | {"mismatches": mismatches[:20]}


def mismatch(o: Outcome, solo: bytes, solos: dict[tuple[str, str], bytes]) -> dict:
    other = next((k[0][:20] for k, v in solos.items() if v == o.pcm), None)  # mixed up with another text?
    return {
        "index": o.request.index,
        "text": o.request.text[:20],
        "bytes": len(o.pcm),
        "solo_bytes": len(solo),
        "max_abs_diff": max_difference(o.pcm, solo),
        "equals_solo_of": other,
    }


class RssSampler(threading.Thread):
    """Every node's RSS every ``period`` seconds while the load runs."""

    def __init__(self, graph, period: float = 2.0):
        super().__init__(daemon=True)
        self.graph, self.period, self.samples, self.stopped = graph, period, [], threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((round(time.perf_counter() - self.t0, 1), self.graph.rss()))
            self.stopped.wait(self.period)

    def summary(self) -> dict:
        """Per node: RSS at the first, the quarter and the last sample, and the maximum (MiB)."""
        nodes = sorted({n for _, s in self.samples for n in s})
        quarter = self.samples[len(self.samples) // 4][1] if self.samples else {}
        return {
            n: {
                "first": self.samples[0][1].get(n),
                "quarter": quarter.get(n),
                "last": self.samples[-1][1].get(n),
                "max": max(s.get(n, 0.0) for _, s in self.samples),
            }
            for n in nodes
        }


def load_test(
    base: str, graph, requests: list[Request], clients: int, warm: bool = True
) -> tuple[dict, list[Outcome], RssSampler]:
    if warm:
        solo_runs(base, [Request(-1, "预热。", "zh", False), Request(-1, "Warm up.", "en", False)])
    sampler = RssSampler(graph)
    sampler.start()
    started = time.perf_counter()
    outcomes = run_concurrently(base, requests, clients)
    wall = time.perf_counter() - started
    sampler.stopped.set()
    sampler.join()
    solos = solo_runs(base, requests)
    summary = compare(outcomes, solos) | {
        "requests": len(requests),
        "clients": clients,
        "wall_s": round(wall, 1),
        "audio_s": round(sum(len(o.pcm) for o in outcomes) / 48000, 1),
        "rss_mib": sampler.summary(),
    }
    summary["ok"] = (
        summary["failed"] == 0
        and summary["equal"] == summary["completed"]
        and summary["cancelled_prefix"] == summary["cancelled"]
    )
    return summary, outcomes, sampler


def markdown(summary: dict) -> str:
    rows = "\n".join(
        f"| {n} | {v['first']} | {v['quarter']} | {v['last']} | {v['max']} |" for n, v in summary["rss_mib"].items()
    )
    return (
        f"{summary['requests']} requests from {summary['clients']} clients in {summary['wall_s']} s "
        f"({summary['audio_s']} s of audio): completed {summary['completed']}, equal to their solo run "
        f"{summary['equal']}; cancelled {summary['cancelled']} (prefix of solo: {summary['cancelled_prefix']}); "
        f"failed {summary['failed']}; 429s retried {summary['busy_retries']}; ok {summary['ok']}\n\n"
        f"| node | RSS first (MiB) | at 1/4 | last | max |\n|---|---|---|---|---|\n{rows}\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--cancel", type=float, default=0.1, help="fraction of requests that leave midway")
    parser.add_argument("--tokens", type=int, default=30, help="GPT token budget per segment (dev model)")
    parser.add_argument("--seed", type=int, default=0, help="GSV_SEED, and the request plan's shuffle")
    parser.add_argument("--model-dir", type=absolute_path, default=None, help="default: a tiny v2 dev model built here")
    parser.add_argument("--out", type=absolute_path, default=REPO / "out" / "load_test")
    parser.add_argument(
        "--coalesce-lead",
        default="0",
        help="the vocoder's GSV_COALESCE_LEAD_SECONDS (default 0 here: its holding of token chunks depends on "
        "timing, so the runs it vocodes, and with them the audio, vary between a solo and a concurrent run)",
    )
    parser.add_argument(
        "--coalesce-queued",
        default="0",
        help="the vocoder's GSV_COALESCE_QUEUED (default 0 here, for the same reason: whether a chunk's successor "
        "has already arrived depends on timing)",
    )
    args = parser.parse_args()

    from dora_gpt_sovits.benchmark.concurrency import ServerGraph, server_env
    from dora_gpt_sovits.devmodels.bundle import build_bundle
    from dora_gpt_sovits.model_paths import resolve

    work = Path(tempfile.mkdtemp(prefix="gsv-load-"))
    models = args.model_dir or build_bundle(work / "dev-tiny", size="tiny", version="v2")
    paths = resolve({"GSV_MODEL_DIR": str(Path(models).resolve())}, need=("gpt", "sovits", "bert", "hubert"))
    env = server_env(paths, work, args.tokens, args.seed) | {
        "GSV_COALESCE_LEAD_SECONDS": args.coalesce_lead,
        "GSV_COALESCE_QUEUED": args.coalesce_queued,
    }
    graph = ServerGraph(REPO, work, env)
    print(f"load test: starting the OpenAI server graph in {work}", flush=True)
    graph.start()
    try:
        requests = plan(args.requests, args.cancel, args.seed)
        summary, _, sampler = load_test(graph.base_url, graph, requests, args.clients)
    finally:
        graph.stop()
    summary |= {"log": str(graph.log_path), "tokens_per_segment": args.tokens, "seed": args.seed}
    summary["coalesce_lead_seconds"] = args.coalesce_lead
    summary["coalesce_queued"] = args.coalesce_queued
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps(summary | {"rss_samples": sampler.samples}, indent=1, ensure_ascii=False)
    )
    args.out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
