"""The benchmark's code path on the tiny development model: structure only, never speed."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from dora_gpt_sovits.benchmark.cases import select_cases
from dora_gpt_sovits.benchmark.cli import Options, run_benchmark, write_outputs
from dora_gpt_sovits.benchmark.dataflow import (
    DataflowRequest,
    DataflowResult,
    GraphRun,
    budget_gpt_checkpoint,
    clip,
    error_cause,
    without_backtraces,
    write_graph,
)
from dora_gpt_sovits.benchmark.inprocess import CaseRun, SegmentRun
from dora_gpt_sovits.benchmark.report import to_markdown
from dora_gpt_sovits.benchmark.results import CaseRecord, case_document, mean_cached_positions, overall
from dora_gpt_sovits.benchmark.upstream import UpstreamCaseRun

pytestmark = pytest.mark.slow  # builds and exports models once per module (seconds)

TOKENS = 4  # early_stop_num: every segment decodes TOKENS + 1 tokens
SUMMARY_KEYS = {"median", "p25", "p75", "min", "max", "n", "spread"}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    from dora_gpt_sovits.devmodels.bundle import build_bundle

    return build_bundle(tmp_path_factory.mktemp("models") / "dev-tiny", size="tiny", version="v2")


@pytest.fixture(scope="module")
def bench(tiny_models, tmp_path_factory) -> tuple[dict, list[Path]]:
    out = tmp_path_factory.mktemp("bench")
    opts = Options(
        out=out,
        model_dir=tiny_models,
        tokens=TOKENS,
        repeats=1,
        warmup=0,
        lengths=["short"],
        upstream=out / "no-such-checkout",
        dataflow=False,
        progress=False,
        chart=_has_matplotlib(),
    )
    doc = run_benchmark(opts)
    return doc, write_outputs(doc, opts)


def _has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def test_document_records_conditions_and_every_case(bench):
    doc, _ = bench
    assert doc["schema"] == 1
    for key in ("date", "cpu_model", "torch", "threads", "device", "dtype", "load_average"):
        assert key in doc["host"]
    assert all(gbs > 0 for gbs in doc["host"]["read_bandwidth_gbs"].values())  # measured on a CPU run
    assert set(doc["host"]["read_bandwidth_gbs"]) == {"1", str(doc["host"]["threads"])}
    decode = doc["overall"]["gpt_decode_bandwidth"]  # weights per token / time per token, against the machine
    assert decode["used_gbs"] > 0 and decode["weight_mb"] > 0 and decode["vs_floor"] > 0
    # the step reads the cache too: a floor that counts it is higher, so decode is nearer to it
    assert decode["cache_mb_per_step"] > 0 and decode["vs_floor_with_cache"] < decode["vs_floor"]
    cfg = doc["config"]
    assert cfg["backend"] == "torch" and cfg["development_model"] is True
    assert cfg["tokens_per_segment"] == TOKENS and cfg["repeats"] == 1
    assert set(doc["cases"]) == {"zh-short", "en-short"}
    assert doc["in_process"]["load_s"].keys() >= {"gpt", "sovits", "bert", "hubert"}


def test_each_case_has_stage_times_rates_and_a_token_hash(bench):
    doc, _ = bench
    for case in doc["cases"].values():
        assert case["segments"] == len(case["target_phones"]) >= 1
        assert case["tokens_per_segment"] == [TOKENS + 1] * case["segments"]  # the budget, as configured
        assert re.fullmatch(r"[0-9a-f]{12}", case["token_hash"]) and case["token_hash_stable"]
        ours = case["ours"]
        assert set(ours["stages_s"]) == {"frontend", "bert", "gpt_prefill", "gpt_decode", "vocoder"}
        for key in (
            "gpt_prefill_ms_per_segment",
            "gpt_decode_tok_per_s",
            "gpt_decode_ms_per_token",
            "vocoder_rtf",
            "model_rtf",
            "e2e_rtf",
            "wall_s",
            "first_audio_s",
            "chars_per_s",
        ):
            assert set(ours[key]) == SUMMARY_KEYS and ours[key]["n"] == 1
        assert ours["audio_s"] > ours["speech_s"] > 0  # played audio includes the inter-segment pauses
        assert ours["peak_rss_mib"] is None or ours["peak_rss_mib"] > 0
    assert doc["overall"]["ours"]["gpt_decode_ms_per_token"] is not None


def test_a_missing_upstream_checkout_is_reported_not_fatal(bench):
    doc, _ = bench
    assert "not a GPT-SoVITS checkout" in doc["upstream"]["error"]
    assert all("upstream" not in case for case in doc["cases"].values())


def test_outputs_are_json_markdown_and_png(bench):
    doc, written = bench
    names = {p.name for p in written}
    assert {"bench.json", "bench.md"} <= names
    assert json.loads((written[0]).read_text(encoding="utf-8"))["cases"].keys() == doc["cases"].keys()
    markdown = written[1].read_text(encoding="utf-8")
    assert "## Ours, in-process" in markdown and "## Inputs and token hashes" in markdown
    assert "| zh-short |" in markdown and "| en-short |" in markdown
    assert "Not run: " in markdown  # the upstream section says why it is missing
    if _has_matplotlib():
        png = next(p for p in written if p.suffix == ".png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def fake_upstream(run: CaseRun, slower: float) -> UpstreamCaseRun:
    return UpstreamCaseRun(
        case=run.case,
        prefill_s=[slower * s.gpt_prefill_s for s in run.segments],
        decode_s=[slower * s.gpt_decode_s for s in run.segments],
        steps=[s.gpt_steps for s in run.segments],
        tokens=[s.tokens for s in run.segments],
        vocoder_s=[slower * s.vocoder_s for s in run.segments],
        bert_s=[slower * s.bert_s for s in run.segments],
        samples=[s.audio.numel() for s in run.segments],
        sample_rate=32000,
        peak_rss_mib=1.0,
        audio_max_abs_diff=0.0,
    )


def fake_case_run(case: str) -> CaseRun:
    segment = SegmentRun(
        text="x",
        target_phones=10,
        prompt_phones=5,
        prompt_tokens=20,
        frontend_s=0.01,
        bert_s=0.0,
        gpt_prefill_s=0.1,
        gpt_decode_s=0.4,
        gpt_steps=TOKENS + 1,
        tokens=list(range(TOKENS + 1)),
        vocoder_s=0.2,
        audio_s=0.2,
        audio=torch.zeros(6400),
    )
    return CaseRun(case, [segment, segment], split_s=0.001, wall_s=1.5, first_audio_s=0.8, peak_rss_mib=100.0)


def test_side_by_side_and_dataflow_sections(bench):
    """Report code for upstream and dataflow results, fed with stand-ins (no upstream, no dora run)."""
    case = select_cases(["en"], ["short"])[0]
    ours = fake_case_run(case.name)
    record = CaseRecord(case, ours=[ours], upstream=[fake_upstream(ours, slower=2.0)])
    metrics = {"ttfa_s": 0.5, "rtf": 0.8, "wall_s": 2.0, "audio_s": 2.5, "errors": []}
    flow = DataflowResult([DataflowRequest(case.name, True, metrics), DataflowRequest(case.name, False, metrics)])
    document = case_document(record, flow)
    assert document["upstream"]["tokens_equal_ours"] is True
    assert document["speedup_vs_upstream"]["gpt_plus_vocoder"] == pytest.approx(2.0, rel=1e-3)
    # Played: 2 x (0.2 s of speech + the 0.3 s pause) = 1 s. Ours: 1.5 s of wall time; upstream's
    # stages (2x ours: BERT 0, prefill 0.1, decode 0.4, vocoder 0.2 per segment, 2 segments) 2.8 s.
    assert document["upstream"]["e2e_rtf_lower_bound"]["median"] == pytest.approx(2.8)
    assert document["speedup_vs_upstream"]["end_to_end_at_least"] == pytest.approx(2.8 / 1.5, rel=1e-3)
    assert document["ours"]["gpt_decode_tok_per_s"]["median"] == pytest.approx(TOKENS / 0.4)
    assert document["dataflow"]["ttfa_s"]["median"] == 0.5 and document["dataflow"]["ttfa_s"]["n"] == 1

    doc = dict(
        bench[0],
        cases={case.name: document},
        upstream={"checkout": "x", "commit": "y"},
        dataflow={
            "startup_s": 1.0,
            "gpt_tokens_per_segment": TOKENS,
            "node_peak_rss_mib": {"gpt": 1.0},
            "total_peak_rss_mib": 1.0,
        },
    )
    doc["overall"] = overall(doc["cases"])
    markdown = to_markdown(doc)
    assert "## Side by side with upstream GPT-SoVITS" in markdown and "2.00×" in markdown
    assert "## Through the dataflow" in markdown and "| en-short | 0.500 |" in markdown


def test_graph_copy_adds_the_metrics_collector(tmp_path):
    graph_path = write_graph(REPO, tmp_path, 12345, tmp_path / "metrics.jsonl")
    graph = yaml.safe_load(graph_path.read_text(encoding="utf-8"))
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["text-input"]["env"]["GSV_TEXT_LISTEN"] == "127.0.0.1:12345"
    assert nodes["bench-metrics"]["inputs"]["metrics"]["source"] == "audio-sink/metrics"
    assert Path(nodes["level-meter"]["operator"]["python"]).is_file()


def test_mean_cached_positions_averages_every_decode_step():
    # one segment: 10 + 5 + 20 = 35 positions after the prefill, 3 decode steps see 36, 37, 38;
    # another: 10 + 7 + 20 = 37, one step sees 38; the prefill's own step reads no cache
    case = {"prompt_phones": 10, "prompt_tokens": 20, "target_phones": [5, 7], "gpt_steps_per_segment": [4, 2]}
    assert mean_cached_positions({"a": case}) == (36 + 37 + 38 + 38) / 4
    assert mean_cached_positions({}) == 0.0


def test_folders_given_to_the_graph_scripts_are_made_absolute(tmp_path, monkeypatch):
    from dora_gpt_sovits.benchmark import absolute_path

    monkeypatch.chdir(tmp_path)
    assert absolute_path("out/x") == tmp_path / "out" / "x"
    for script in ("bench_streaming.py", "soak.py", "load_test.py", "multi_machine_load.py", "bench_idle_penalty.py"):
        text = (Path(REPO) / "scripts" / script).read_text(encoding="utf-8")
        assert '"--out", type=absolute_path' in text, script


def test_a_relative_work_folder_gives_dora_absolute_paths(tmp_path, monkeypatch):
    """`dora run` starts in the work folder: a graph named relative to the caller's folder was not
    found there (`bench.py --out out/x` lost its dataflow phase)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    run = GraphRun(Path(REPO), Path("out"), {})
    assert run.workdir == tmp_path / "out" and run.graph.is_absolute() and run.graph.is_file()
    assert run.metrics_path.is_absolute() and run.log_path.is_absolute()


def test_budget_checkpoint_is_named_absolutely(tiny_models, tmp_path, monkeypatch):
    from dora_gpt_sovits.benchmark.cli import model_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    path = budget_gpt_checkpoint(model_paths(Options(model_dir=tiny_models)), 30, Path("work"))
    assert path == tmp_path / "work" / "gpt-budget-30.ckpt" and path.is_file()


# What `dora run` printed when it could not read its graph (2026-12-07, dora-rs 1.1.0), shortened.
DORA_FAILURE = """\
2026-12-07T17:21:10Z INFO dora_cli: starting
[ERROR]
failed to build dataflow before run

Caused by:
   0: failed to read dataflow at `out/x/work/bench-graph.yml`
   1: No such file or directory (os error 2)

Location:
    libraries/core/src/descriptor/mod.rs:482:39

Stack backtrace:
   0: <unknown>
  16: PyEval_EvalCode
             at /tmp/python-build/Python-3.11.7/Python/ceval.c:1148:21
  17: run_eval_code_obj
"""


def test_a_dora_failure_is_reported_by_its_cause_not_its_backtrace():
    cause = error_cause(DORA_FAILURE)
    assert cause.startswith("failed to build dataflow before run / Caused by:")
    assert "No such file or directory" in cause and "ceval" not in cause
    cut = without_backtraces(DORA_FAILURE)
    assert "Stack backtrace: (cut)" in cut and "ceval.c" not in cut and "PyEval_EvalCode" not in cut
    assert "libraries/core/src/descriptor/mod.rs" in cut  # what is not a frame stays
    assert error_cause("INFO a\nsomething broke\n\n") == "something broke"
    long = "head " + "x" * 5000 + " tail"
    assert clip(long).startswith("head ") and clip(long).endswith(" tail") and len(clip(long)) < 1510
    assert clip("short") == "short"


def test_budget_checkpoint_sets_early_stop(tiny_models, tmp_path):
    from dora_gpt_sovits.benchmark.cli import model_paths
    from dora_gpt_sovits.gpt.loader import load_gpt

    path = budget_gpt_checkpoint(model_paths(Options(model_dir=tiny_models)), 37, tmp_path)
    assert load_gpt(path).early_stop_num == 37


def test_gpt_variants_table(tiny_models, tmp_path):
    from dora_gpt_sovits.benchmark.cli import main
    from dora_gpt_sovits.benchmark.gpt_variants import parse_variants

    main(
        [
            "--model-dir",
            str(tiny_models),
            "--out",
            str(tmp_path),
            "--tokens",
            "5",
            "--repeats",
            "1",
            "--gpt-variants",
            "none,fp16,fp16+unfused",
        ]
    )
    doc = json.loads((tmp_path / "gpt_variants.json").read_text())
    assert list(doc["variants"]) == ["none", "fp16", "fp16+unfused"] and doc["tokens"] == 6
    assert doc["variants"]["fp16"]["same_tokens_as_first"]  # lossless
    assert all(v["ms_per_token_median"] > 0 for v in doc["variants"].values())
    assert [v["decoder"].split()[0] for v in doc["variants"].values()] == ["module", "fused", "module"]
    assert "| fp16+unfused |" in (tmp_path / "gpt_variants.md").read_text()
    assert parse_variants("fp16+compile", 300)[0].options.compile
    assert [v.options.half_matvec for v in parse_variants("fp16,fp16+fbgemm", 300)] == ["auto", "fbgemm"]
    assert [v.options.fused_decode for v in parse_variants("fp16,fp16+unfused", 300)] == [True, False]
    for removed in ("fp16+int8", "int8"):  # int8 was removed (docs/performance.md)
        with pytest.raises(ValueError, match="not a variant"):
            parse_variants(removed, 300)
