#!/usr/bin/env python3
"""What a model node pays for having been idle: the gpt's prefill and the vocoder's first run,
back to back against after an idle pause, under OpenMP / glibc malloc settings.

    flock /tmp/gsv-bench.lock python scripts/bench_idle_penalty.py --model-dir $PWD/models/bench-full-v2 \\
        --setting passive:OMP_WAIT_POLICY=PASSIVE --setting unset:OMP_WAIT_POLICY= \\
        --setting spin10k:OMP_WAIT_POLICY=PASSIVE,GOMP_SPINCOUNT=10000

A setting is ``name[:VARIABLE=value,...]``; ``VARIABLE=`` (empty) removes it from the environment.
Each setting runs in a fresh Python process, because libgomp and glibc read their variables once,
when the library loads. In it, the gpt node's own ``load()`` (``nodes/gpt_decoder.py``) and the
vocoder node's engine (``open_engine`` + ``warm_up``) are loaded as the graph loads them, with
``GSV_THREADS`` threads; then, for each pause (0 s = back to back, then each ``--idle``), each call is
timed after sleeping that long: the gpt's time to its first token (prefill + first sample) on
``--phones`` phones and a ``--prompt``-token voice prompt, and the vocoder's first run of a segment
(4 tokens + 4 of lookahead on 40 phones). Beside each time: the process's minor page faults and
context switches (voluntary + involuntary) during the call, from ``getrusage`` (all threads) -- page
faults say memory was handed back to the kernel while idle, context switches say threads slept.
Medians over ``--repeats`` calls (one more is run first and left out). Prints a markdown table and
writes ``idle_penalty.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dora_gpt_sovits.benchmark import absolute_path

REPO = Path(__file__).resolve().parents[1]
# Set by the harness itself: a setting that named them would measure something else.
RESERVED = ("GSV_MODEL_DIR", "GSV_THREADS")
STAGES = ("gpt", "vocoder")
DEFAULT_SETTINGS = (
    "passive:OMP_WAIT_POLICY=PASSIVE",
    "unset:OMP_WAIT_POLICY=",
    "passive-spin10k:OMP_WAIT_POLICY=PASSIVE,GOMP_SPINCOUNT=10000",
)


@dataclass(frozen=True)
class Setting:
    """A named environment change; ``None`` values are removed from the environment."""

    name: str
    env: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Setting:
        name, _, assignments = text.partition(":")
        if not name.strip():
            raise ValueError(f"setting {text!r}: expected name[:VARIABLE=value,...]")
        env: dict[str, str | None] = {}
        for item in filter(None, (a.strip() for a in assignments.split(","))):
            variable, eq, value = item.partition("=")
            if not eq or not variable or not variable.replace("_", "").isalnum():
                raise ValueError(f"setting {text!r}: {item!r} is not VARIABLE=value")
            if variable in RESERVED:
                raise ValueError(f"setting {text!r}: {variable} is set by --model-dir / --threads")
            env[variable] = value or None
        return cls(name.strip(), env)

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if k not in self.env}
        env.update({k: v for k, v in self.env.items() if v is not None})
        return env

    def label(self) -> str:
        return ", ".join(f"{k}={v}" if v is not None else f"{k} unset" for k, v in self.env.items()) or "as inherited"


@dataclass(frozen=True)
class Usage:
    """A call's cost: wall time and what the kernel counted for the whole process meanwhile."""

    ms: float
    minor_faults: int
    switches: int


def measure(call: Callable[[], Any]) -> Usage:
    before, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    call()
    elapsed, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    switches = (after.ru_nvcsw - before.ru_nvcsw) + (after.ru_nivcsw - before.ru_nivcsw)
    return Usage(1000 * elapsed, after.ru_minflt - before.ru_minflt, switches)


def summarize(usages: Iterable[Usage]) -> dict[str, float]:
    """Medians of the measured calls (the caller leaves out the first)."""
    usages = list(usages)
    if not usages:
        raise ValueError("no measured calls to summarize")
    return {
        "ms": round(statistics.median(u.ms for u in usages), 1),
        "minor_faults": statistics.median(u.minor_faults for u in usages),
        "switches": statistics.median(u.switches for u in usages),
        "n": len(usages),
        "all_ms": [round(u.ms) for u in usages],
    }


def markdown(rows: list[dict[str, Any]], idles: list[float]) -> str:
    """One line per setting and stage: back to back, after each idle pause, the penalty after the
    longest, and why (minor faults, context switches: back to back / after the longest)."""
    longest = f"{max(idles):g}"
    after = "".join(f" after {i:g} s idle ms |" for i in idles)
    lines = [
        f"| setting | stage | back to back ms |{after} penalty ms | minor faults b2b / idle | context switches b2b / idle |",
        "|---|---|---|" + "---|" * len(idles) + "---|---|---|",
    ]
    for row in rows:
        for stage in STAGES:
            results = row["results"][stage]
            b2b, idled = results["0"], results[longest]
            cells = "".join(f" {results[f'{i:g}']['ms']:.0f} |" for i in idles)
            lines.append(
                f"| {row['setting']} | {stage} | {b2b['ms']:.0f} |{cells} {idled['ms'] - b2b['ms']:+.0f} "
                f"| {b2b['minor_faults']:g} / {idled['minor_faults']:g} | {b2b['switches']:g} / {idled['switches']:g} |"
            )
    return "\n".join(lines)


# ---- the child: one setting, in a fresh process -----------------------------------------------------


def load_stages(phones: int, prompt: int) -> dict[str, Callable[[], Any]]:
    """Each node's model loaded as the graph loads it, and one call of the step that the first audio waits for."""
    import numpy as np

    from dora_gpt_sovits import messages as m
    from dora_gpt_sovits.node_runtime import configure_threads
    from dora_gpt_sovits.runtime_config import load_or_exit
    from dora_gpt_sovits.settings import VocoderSettings

    configure_threads()
    sys.path.insert(0, str(REPO))
    from nodes import gpt_decoder, vocoder

    stage, _ = gpt_decoder.load()
    engine, _ = vocoder.open_engine(load_or_exit(need=("sovits",)), VocoderSettings.from_env())
    engine.warm_up()
    rng = np.random.default_rng(0)
    phone_ids = rng.integers(1, 300, phones)
    features = np.zeros((m.FEATURE_DIM, phones), np.float32)
    prompt_ids = rng.integers(0, 1024, prompt)
    voice = engine.condition(np.abs(rng.standard_normal((1025, 200))).astype(np.float32), None)
    vocoder_phones = rng.integers(1, 300, 40)
    tokens = rng.integers(0, 1024, 8)

    def first_token() -> None:
        tokens_out = stage.decode(phone_ids, features, prompt_ids, 0, m.RequestOptions())
        next(tokens_out)
        tokens_out.close()

    def first_run() -> None:
        engine.make_decoder(voice, vocoder_phones, 0, None)(np.zeros(0, np.int64), tokens[:4], tokens[4:], 0)

    return {"gpt": first_token, "vocoder": first_run}


def busy_wait(seconds: float) -> None:
    """Idle without letting this CPU go idle: tells the CPU's own idle states from the process's."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def child(pauses: list[float], repeats: int, phones: int, prompt: int, busy: bool = False) -> dict[str, Any]:
    calls = load_stages(phones, prompt)
    wait = busy_wait if busy else time.sleep
    results: dict[str, dict[str, Any]] = {stage: {} for stage in STAGES}
    for pause in pauses:
        usages: dict[str, list[Usage]] = {stage: [] for stage in STAGES}
        for _ in range(repeats + 1):
            for stage in STAGES:
                wait(pause)
                usages[stage].append(measure(calls[stage]))
        for stage in STAGES:
            results[stage][f"{pause:g}"] = summarize(usages[stage][1:])
    return results


# ---- the parent ---------------------------------------------------------------------------------------


def run_setting(setting: Setting, a: argparse.Namespace) -> dict[str, Any]:
    base = {**os.environ, "GSV_MODEL_DIR": str(a.model_dir), "GSV_THREADS": str(a.threads)}
    command = [sys.executable, __file__, "--child", "--idle", *map(str, a.idle), "--repeats", str(a.repeats)]
    command += ["--phones", str(a.phones), "--prompt", str(a.prompt), "--model-dir", str(a.model_dir)]
    command += ["--busy-idle"] if a.busy_idle else []
    done = subprocess.run(command, env=setting.environment(base), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: setting {setting.name} failed:\n{done.stderr[-3000:]}")
    return {"setting": setting.name, "env": setting.label(), "results": json.loads(done.stdout.splitlines()[-1])}


def hold_cpu_latency(microseconds: int) -> Any:
    """Ask the kernel (PM QoS) to keep every CPU's wake-up latency under this many microseconds while the
    returned file stays open: 0 keeps idle CPUs polling instead of halting (root only)."""
    try:
        handle = open("/dev/cpu_dma_latency", "wb", buffering=0)  # noqa: SIM115 -- held open on purpose
    except OSError as e:
        raise SystemExit(f"error: --cpu-latency-us needs /dev/cpu_dma_latency (root): {e}") from e
    handle.write(struct.pack("i", microseconds))
    return handle


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model-dir", type=absolute_path, required=True, help="models (a full-size development model or real weights)"
    )
    p.add_argument("--setting", action="append", type=Setting.parse, default=None, help="name[:VARIABLE=value,...]")
    p.add_argument("--idle", type=float, nargs="+", default=[4.0], help="idle pauses (s) measured after back to back")
    p.add_argument("--repeats", type=int, default=6, help="measured calls per stage and pause (one more runs first)")
    p.add_argument("--threads", type=int, default=2, help="GSV_THREADS, as the graph's nodes run")
    p.add_argument("--phones", type=int, default=45, help="the gpt's segment length in phones")
    p.add_argument("--prompt", type=int, default=114, help="the voice prompt's length in semantic tokens")
    p.add_argument("--out", type=absolute_path, default=REPO / "out" / "bench-idle-penalty")
    p.add_argument(
        "--busy-idle", action="store_true", help="spin through each pause instead of sleeping (a diagnosis, not a fix)"
    )
    p.add_argument(
        "--cpu-latency-us",
        type=int,
        default=None,
        help="hold /dev/cpu_dma_latency at this value for the run (0: idle CPUs poll; a diagnosis)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if min(a.idle) <= 0 or a.repeats < 1:
        p.error("--idle must be > 0 and --repeats >= 1")
    if a.child:
        print(json.dumps(child([0.0, *a.idle], a.repeats, a.phones, a.prompt, a.busy_idle)))
        return
    held = hold_cpu_latency(a.cpu_latency_us) if a.cpu_latency_us is not None else None
    rows = []
    for setting in a.setting or [Setting.parse(s) for s in DEFAULT_SETTINGS]:
        rows.append(run_setting(setting, a))
        print("\n".join(markdown(rows[-1:], a.idle).splitlines()[2:]), file=sys.stderr)
    if held:
        held.close()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "idle_penalty.json").write_text(
        json.dumps(
            {"idle_s": a.idle, "busy_idle": a.busy_idle, "cpu_latency_us": a.cpu_latency_us, "rows": rows}, indent=2
        ),
        encoding="utf-8",
    )
    print(markdown(rows, a.idle))
    for row in rows:
        print(f"{row['setting']}: {row['env']}")


if __name__ == "__main__":
    main()
