"""``scripts/bench.py``: speed per stage and end to end, through the dataflow, and beside upstream.

    python scripts/bench.py                                 # full-size dev model, CPU fp32, zh+en x 3 lengths
    python scripts/bench.py --upstream ~/src/GPT-SoVITS     # + upstream's own inference, same files and inputs
    GSV_MODEL_DIR=~/pretrained_models python scripts/bench.py --device cuda --dtype bfloat16

Writes ``bench.json``, ``bench.md`` and ``bench.png`` into ``--out``. Without ``--model-dir`` or
``GSV_MODEL_DIR`` a full-size random-weight development model is built once under ``models/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..model_paths import ModelPaths, resolve
from ..settings import DTYPES
from .cases import LANGUAGES, LENGTHS, TextCase, select_cases, warmup_cases
from .dataflow import DataflowError, DataflowResult, clip, run_dataflow
from .inprocess import SPLIT_METHOD, Pipeline, load_models, prepare_voice
from .report import to_markdown
from .results import CaseRecord, case_document, decode_bandwidth, mean_cached_positions, overall
from .system import LoadSampler, git_commit, host_info
from .upstream import Upstream, UpstreamError

REPO = Path(__file__).resolve().parents[2]
BACKEND = "torch"  # the only backend today; the document and chart are keyed by it


@dataclass
class Options:
    out: Path = REPO / "out" / "bench"
    model_dir: Path | None = None
    size: str = "full"  # for the development model built when no model directory is given
    version: str = "v2"
    device: str = "cpu"
    dtype: str = "float32"
    vocoder_dtype: str | None = None  # None: dtype
    threads: int | None = None
    tokens: int = 60
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    languages: list[str] = field(default_factory=lambda: list(LANGUAGES))
    lengths: list[str] = field(default_factory=lambda: list(LENGTHS))
    upstream: Path | None = None
    upstream_python: str | None = None
    dataflow: bool = True
    chart: bool = True
    progress: bool = True
    render: Path | None = None
    gpt_variants: str | None = None
    sample_steps: list[int] | None = None
    concurrency: list[int] | None = None


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    p.add_argument("--out", type=Path, default=Options.out, help="folder for bench.json, bench.md, bench.png")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="model directory (default: $GSV_MODEL_DIR, else a development model under models/)",
    )
    p.add_argument(
        "--size", choices=("full", "tiny"), default="full", help="size of the development model built when needed"
    )
    p.add_argument("--version", default=os.environ.get("GSV_VERSION", "v2"), help="GPT-SoVITS version (GSV_VERSION)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument(
        "--vocoder-dtype",
        choices=sorted(DTYPES),
        default=None,
        help="the vocoder's precision (default: --dtype); on a CPU a half dtype runs only the SoVITS generator "
        "in it, on the matrix units (docs/performance.md, 'Vocoder on the matrix units'); for v3/v4 the DiT and "
        "the v4 vocoder, the GPT and BERT staying at --dtype, as dataflows/fast-cpu.yml runs them",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument(
        "--tokens", type=int, default=60, help="GPT early_stop_num per segment: N gives N+1 tokens (default 60)"
    )
    p.add_argument("--repeats", type=int, default=3, help="measured runs per case (default 3)")
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unmeasured rounds first, over the shortest text of each language (default 1)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--languages", default=",".join(LANGUAGES), help="comma-separated subset of zh,en")
    p.add_argument("--lengths", default=",".join(LENGTHS), help="comma-separated subset of short,medium,long")
    p.add_argument("--upstream", type=Path, default=None, help="a checkout of upstream GPT-SoVITS: run it side by side")
    p.add_argument(
        "--upstream-python", default=None, help="interpreter with upstream's requirements (default: this one)"
    )
    p.add_argument("--skip-dataflow", action="store_true", help="do not measure TTFA through `dora run`")
    p.add_argument("--no-chart", action="store_true", help="do not draw bench.png")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--gpt-variants",
        default=None,
        metavar="LIST",
        help="only compare GPT decode speed of PyTorch options, e.g. none,fp16,int8,fp16+compile "
        "(benchmark/gpt_variants.py); writes gpt_variants.json/.md",
    )
    p.add_argument(
        "--sample-steps",
        default=None,
        metavar="LIST",
        help="v3/v4 only: speed per flow-matching step count, e.g. 4,8,16,32 (benchmark/flow_matching.py); "
        "writes flow_matching.json/.md",
    )
    p.add_argument(
        "--concurrency",
        default=None,
        metavar="LIST",
        help="only concurrent streams through the OpenAI server graph, e.g. 1,2,4,8 (benchmark/concurrency.py); "
        "--repeats rounds per level; writes concurrency.json/.md",
    )
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="measure nothing: redraw bench.md and bench.png from an earlier bench.json into --out",
    )
    a = p.parse_args(argv)
    return Options(
        out=a.out,
        model_dir=a.model_dir,
        size=a.size,
        version=a.version,
        device=a.device,
        dtype=a.dtype,
        vocoder_dtype=a.vocoder_dtype,
        threads=a.threads,
        tokens=a.tokens,
        repeats=a.repeats,
        warmup=a.warmup,
        seed=a.seed,
        languages=[x for x in a.languages.split(",") if x],
        lengths=[x for x in a.lengths.split(",") if x],
        upstream=a.upstream,
        upstream_python=a.upstream_python,
        dataflow=not a.skip_dataflow,
        chart=not a.no_chart,
        progress=not a.no_progress,
        render=a.render,
        gpt_variants=a.gpt_variants,
        sample_steps=parse_steps(a.sample_steps, a.version),
        concurrency=[int(x) for x in a.concurrency.split(",") if x] if a.concurrency else None,
    )


def parse_steps(text: str | None, version: str) -> list[int] | None:
    if text is None:
        return None
    if version not in ("v3", "v4"):
        raise SystemExit(f"error: --sample-steps is for --version v3 or v4 (flow matching), not {version}")
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise SystemExit(f"error: --sample-steps takes integers, e.g. 4,8,16,32 (got {text!r})") from None


def model_paths(opts: Options) -> ModelPaths:
    env = dict(os.environ)
    if opts.model_dir is not None:
        env["GSV_MODEL_DIR"] = str(Path(opts.model_dir).resolve())  # the graph's nodes run in another folder
    env["GSV_VERSION"] = opts.version
    if not env.get("GSV_MODEL_DIR"):
        env["GSV_MODEL_DIR"] = str(development_model(opts))
    extra = ("sv",) if "Pro" in opts.version else ("vocoder",) if opts.version in ("v3", "v4") else ()
    return resolve(env, need=("gpt", "sovits", "bert", "hubert") + extra)


def development_model(opts: Options) -> Path:
    from ..devmodels.bundle import build_bundle
    from ..model_paths import DEVELOPMENT_MARKER

    target = REPO / "models" / f"bench-{opts.size}-{opts.version}"
    if not (target / DEVELOPMENT_MARKER).exists():
        print(f"building a {opts.size} {opts.version} development model in {target} (once)", file=sys.stderr)
        build_bundle(target, opts.size, opts.version, seed=0)
    return target


class Progress:
    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, disable=not enabled, unit="run", dynamic_ncols=True)

    def step(self, label: str, advance: bool = True) -> None:
        self.bar.set_description(label)
        if advance:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_benchmark(opts: Options) -> dict[str, Any]:
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device, dtype = torch.device(opts.device), DTYPES[opts.dtype]
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {opts.device} but no CUDA GPU is available")
    if opts.tokens < 0 or opts.repeats < 1 or opts.warmup < 0:
        raise SystemExit("error: --tokens must be >= 0, --repeats >= 1, --warmup >= 0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = model_paths(opts)
    cases = select_cases(opts.languages, opts.lengths)
    workdir = opts.out.resolve() / "work"  # absolute: the graph's nodes run in other folders
    workdir.mkdir(parents=True, exist_ok=True)
    host = host_info(device, dtype, REPO)
    load = LoadSampler()
    load.sample()

    warm = warmup_cases(cases)
    dataflow_steps = len(warm) + len(cases) * opts.repeats if opts.dataflow else 0
    progress = Progress(opts.warmup * len(warm) + opts.repeats * len(cases) + dataflow_steps, opts.progress)
    try:
        progress.step("loading models", advance=False)
        records, in_process = measure_in_process(opts, paths, device, dtype, cases, workdir, load, progress)
        dataflow_result, dataflow_doc = None, {}
        if opts.dataflow:
            dataflow_result, dataflow_doc = run_graph(opts, paths, cases, workdir, load, progress)
    finally:
        progress.close()

    doc: dict[str, Any] = {
        "schema": 1,
        "host": host.to_dict(),
        "load_during_run": load.summary(),
        "config": {
            "backend": BACKEND,
            "vocoder_dtype": opts.vocoder_dtype or opts.dtype,
            "model_dir": str(paths.model_dir),
            "model_version": paths.version,
            "development_model": paths.development,
            "tokens_per_segment": opts.tokens,
            "repeats": opts.repeats,
            "warmup": opts.warmup,
            "seed": opts.seed,
            "split_method": SPLIT_METHOD,
            "sampling": in_process.pop("sampling"),
            "gpt_options": in_process.pop("gpt_options"),
            "cases": [c.name for c in cases],
        },
        "in_process": in_process,
        "upstream": in_process.pop("upstream"),
        "dataflow": dataflow_doc,
        "cases": {name: case_document(rec, dataflow_result) for name, rec in records.items()},
    }
    doc["overall"] = overall(doc["cases"])
    bandwidth = decode_bandwidth(
        in_process.get("gpt_decode_weight_bytes", 0),
        doc["overall"]["ours"].get("gpt_decode_ms_per_token"),
        host.read_bandwidth_gbs,
        host.threads,
        in_process.get("gpt_cache_bytes_per_position", 0) * mean_cached_positions(doc["cases"]),
    )
    if bandwidth:
        doc["overall"]["gpt_decode_bandwidth"] = bandwidth
    return doc


def measure_in_process(
    opts: Options,
    paths: ModelPaths,
    device: torch.device,
    dtype: torch.dtype,
    cases: list[TextCase],
    workdir: Path,
    load: LoadSampler,
    progress: Progress,
) -> tuple[dict[str, CaseRecord], dict[str, Any]]:
    """Warm-up rounds, then measured rounds; in each round every case runs on ours, then on upstream."""
    from ..voices import find_voice, load_registry

    vocoder_dtype = DTYPES[opts.vocoder_dtype] if opts.vocoder_dtype else None
    models = load_models(paths, device, dtype, vocoder_dtype)
    voice = prepare_voice(models, find_voice("default", load_registry(model_dir=paths.model_dir)))
    pipeline = Pipeline(models, voice, opts.tokens, opts.seed)
    upstream, upstream_doc = start_upstream(opts, pipeline, cases, workdir)
    records = {case.name: CaseRecord(case) for case in cases}
    try:
        for round_index in range(opts.warmup + opts.repeats):
            warm = round_index < opts.warmup
            label = "warm-up" if warm else f"repeat {round_index - opts.warmup + 1}/{opts.repeats}"
            for case in warmup_cases(cases) if warm else cases:
                progress.step(f"{case.name} {label}", advance=False)
                load.sample()
                ours = pipeline.run(case)
                theirs = None
                if upstream is not None:
                    try:
                        theirs = upstream.run(case, ours, measured=not warm)
                    except UpstreamError as e:
                        upstream_doc["error"] = f"failed on {case.name}: {e}"
                        upstream.close()
                        upstream = None
                if not warm:
                    records[case.name].ours.append(ours)
                    if theirs is not None:
                        records[case.name].upstream.append(theirs)
                progress.step(f"{case.name} {label}")
    finally:
        if upstream is not None:
            upstream.close()
    if upstream_doc.get("error"):  # a partial comparison would mislead: drop it
        for record in records.values():
            record.upstream.clear()
    info = {
        "gpt_options": models.gpt_options,
        "load_s": models.load_s,
        "rss_after_load_mib": models.rss_after_load_mib,
        "gpt_decode_weight_bytes": models.gpt_decode_weight_bytes,
        "gpt_cache_bytes_per_position": models.gpt_cache_bytes_per_position,
        "voice_encode_s": round(voice.encode_s, 3),
        "load_average": load.summary(),
        "sampling": {k: getattr(pipeline.params, k) for k in ("top_k", "top_p", "temperature", "repetition_penalty")},
        "upstream": upstream_doc,
    }
    return records, info


def start_upstream(
    opts: Options, pipeline: Pipeline, cases: list[TextCase], workdir: Path
) -> tuple[Upstream | None, dict[str, Any]]:
    if opts.upstream is None:
        return None, {}
    doc: dict[str, Any] = {
        "checkout": str(opts.upstream),
        "commit": checkout_commit(opts.upstream),
        "python": opts.upstream_python or sys.executable,
    }
    upstream = None
    try:
        upstream = Upstream(opts.upstream, opts.upstream_python, workdir, pipeline, cases)
        doc["worker"] = upstream.start()
        return upstream, doc
    except UpstreamError as e:
        if upstream is not None:
            upstream.close()
        doc["error"] = str(e)
        print(f"upstream side by side not run: {e}", file=sys.stderr)
        return None, doc


def checkout_commit(checkout: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or "unknown (not a git checkout)"


def run_graph(
    opts: Options, paths: ModelPaths, cases: list[TextCase], workdir: Path, load: LoadSampler, progress: Progress
) -> tuple[DataflowResult | None, dict[str, Any]]:
    if shutil.which("dora") is None and not (Path(sys.executable).parent / "dora").exists():
        return None, {"error": "the dora CLI is not installed"}
    threads = opts.threads or torch.get_num_threads()
    commit = git_commit(REPO)  # the nodes run the code as it is now, which may differ from the start's
    load.sample()
    try:
        result = run_dataflow(
            REPO,
            workdir,
            paths,
            cases,
            opts.repeats,
            opts.tokens,
            opts.device,
            opts.dtype,
            threads,
            opts.seed,
            progress=lambda label: progress.step(label, advance="starting" not in label),
            vocoder_dtype=opts.vocoder_dtype,
        )
    except DataflowError as e:
        return None, {"error": clip(str(e))}
    load.sample()
    return result, {
        "git_commit": commit,
        **({"error": clip(result.error)} if result.error else {}),
        "startup_s": round(result.startup_s, 2),
        "gpt_tokens_per_segment": result.gpt_tokens_per_segment,
        "threads_per_node": threads,
        "node_peak_rss_mib": result.node_peak_rss_mib,
        "total_peak_rss_mib": round(sum(result.node_peak_rss_mib.values()), 1) or None,
        "log": result.log_path,
        "requests": [  # every request's own figures: the medians above hide bimodal latencies
            {
                "case": r.case,
                "warmup": r.warmup,
                **{k: r.metrics.get(k) for k in ("ttfa_s", "wall_s", "audio_s", "rtf", "errors")},
            }
            for r in result.requests
        ],
    }


def write_outputs(doc: dict[str, Any], opts: Options) -> list[Path]:
    opts.out.mkdir(parents=True, exist_ok=True)
    written = [opts.out / "bench.json", opts.out / "bench.md"]
    written[0].write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written[1].write_text(to_markdown(doc), encoding="utf-8")
    if opts.chart:
        try:
            from .chart import write_chart

            written.append(write_chart(doc, opts.out / "bench.png"))
        except ImportError:
            print("no chart: matplotlib is missing (pip install -e '.[bench]')", file=sys.stderr)
    return written


def run_gpt_variants(opts: Options) -> None:
    from . import gpt_variants

    try:
        capacity = gpt_variants.TEXT_LEN + gpt_variants.PROMPT_LEN + opts.tokens + 1
        variants = gpt_variants.parse_variants(opts.gpt_variants or "", capacity)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    doc = gpt_variants.compare_variants(model_paths(opts).gpt, variants, device, opts.tokens, opts.repeats, opts.seed)
    doc["host"] = host_info(device, torch.float32, REPO).to_dict()
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "gpt_variants.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    markdown = gpt_variants.to_markdown(doc)
    (opts.out / "gpt_variants.md").write_text(markdown, encoding="utf-8")
    print(markdown)


def run_flow_matching_sweep(opts: Options) -> None:
    from ..voices import find_voice, load_registry
    from . import flow_matching

    if opts.threads:
        torch.set_num_threads(opts.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device, dtype = torch.device(opts.device), DTYPES[opts.dtype]
    paths = model_paths(opts)
    models = load_models(paths, device, dtype, DTYPES[opts.vocoder_dtype] if opts.vocoder_dtype else None)
    voice = prepare_voice(models, find_voice("default", load_registry(model_dir=paths.model_dir)))
    cases = select_cases(opts.languages, opts.lengths)
    workdir = opts.out.resolve() / "work"  # absolute: the graph's nodes run in other folders
    workdir.mkdir(parents=True, exist_ok=True)
    upstream = (lambda pipeline: start_upstream(opts, pipeline, cases, workdir)) if opts.upstream else None
    doc = flow_matching.sweep(
        models, voice, cases, opts.sample_steps or [], opts.tokens, opts.seed, opts.repeats, upstream=upstream
    )
    host = host_info(device, dtype, REPO)
    doc["host"] = host.to_dict()
    doc["development_model"] = paths.development
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "flow_matching.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    precision = opts.dtype + (f", vocoder stage {opts.vocoder_dtype}" if opts.vocoder_dtype else "")
    markdown = flow_matching.to_markdown(doc, f"{host.cpu_model}, {torch.get_num_threads()} threads, {precision}")
    (opts.out / "flow_matching.md").write_text(markdown, encoding="utf-8")
    print(markdown)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    if opts.gpt_variants:
        run_gpt_variants(opts)
        return
    if opts.sample_steps:
        run_flow_matching_sweep(opts)
        return
    if opts.concurrency:
        from . import concurrency

        concurrency.run_from_options(opts, model_paths(opts), REPO)
        return
    doc = json.loads(opts.render.read_text(encoding="utf-8")) if opts.render else run_benchmark(opts)
    written = write_outputs(doc, opts)
    print(to_markdown(doc))
    print(f"wrote {', '.join(map(str, written))} in {time.perf_counter() - started:.0f} s")
