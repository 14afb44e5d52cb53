"""Concurrent requests through the OpenAI server graph (tiny development model, GSV_MAX_BATCH 4):
each completed stream equals the same request run alone, a cancelled one is a prefix of it.
A CI-sized `scripts/load_test.py`; also the benchmark's stall arithmetic."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import pytest
from conftest import REPO

from dora_gpt_sovits.benchmark.concurrency import BYTES_PER_SECOND, Stream


def load_test_module():
    spec = importlib.util.spec_from_file_location("load_test", REPO / "scripts" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_test"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_stalls_are_the_gaps_a_real_time_player_hears():
    s = Stream("t", "zh", started=0.0)
    second = BYTES_PER_SECOND
    # 1 s of audio at t=1, the next second at t=1.5 (in time), the third at t=3.5 (0.5 s late:
    # playback ran out at 3.0), the fourth at t=4.4 (due at 4.5 once the clock moved by 0.5).
    s.arrivals = [(1.0, second), (1.5, 2 * second), (3.5, 3 * second), (4.4, 4 * second)]
    assert [round(g, 3) for g in s.stalls()] == [0.5]
    assert [(played, round(gap, 3)) for played, gap in s.stalls_at()] == [(2.0, 0.5)]  # after 2 s of audio
    assert s.ttfa_s == 1.0


def test_a_level_reports_each_nodes_cpu_seconds_per_second_of_audio():
    from dora_gpt_sovits.benchmark.concurrency import cpu_table, level_summary

    streams = []
    for started in (0.0, 0.5):
        s = Stream("t", "zh", started=started)
        s.arrivals = [(started + 1.0, BYTES_PER_SECOND), (started + 2.0, 2 * BYTES_PER_SECOND)]
        s.pcm = b"\0" * 2 * BYTES_PER_SECOND
        streams.append(s)
    level = level_summary(2, streams, [2.5], {}, {"gpt": 2.0, "vocoder": 1.0})
    assert level["cpu_s_per_audio_s"] == {"gpt": 0.5, "vocoder": 0.25}  # 4 s of audio in all
    assert "| 2 | 0.5 | 0.25 | 0.750 |" in cpu_table([level])


def test_the_server_graph_copy_carries_per_node_env_over_the_yaml(tmp_path):
    import yaml

    from dora_gpt_sovits.benchmark.concurrency import ServerGraph

    graph = ServerGraph(REPO, tmp_path, {}, {"vocoder": {"GSV_DTYPE": "bfloat16"}})
    nodes = {n["id"]: n for n in yaml.safe_load(graph.graph.read_text(encoding="utf-8"))["nodes"]}
    assert nodes["vocoder"]["env"]["GSV_DTYPE"] == "bfloat16"
    assert nodes["vocoder"]["env"]["GSV_OUTPUT_SAMPLE_RATE"] == "24000"  # the YAML's own env kept
    assert "GSV_DTYPE" not in nodes["gpt"].get("env", {})


# ~75 s on 2 busy cores (load ~8), most of it the seven nodes starting: CI-sized, not marked slow
@pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed")
def test_concurrent_streams_equal_their_solo_runs(tmp_path):
    from dora_gpt_sovits.benchmark.concurrency import ServerGraph, server_env
    from dora_gpt_sovits.devmodels.bundle import build_bundle
    from dora_gpt_sovits.model_paths import resolve

    lt = load_test_module()
    models = build_bundle(tmp_path / "dev-tiny", size="tiny", version="v2")
    paths = resolve({"GSV_MODEL_DIR": str(models)}, need=("gpt", "sovits", "bert", "hubert"))
    # Coalescing off: which token runs the vocoder holds together depends on timing (see load_test.py).
    # Chunks of 2, 3, 4, ... tokens: the graph's GSV_DECODE_AHEAD starts a next segment after 9 of
    # the current one's 20 tokens, so segments decoded ahead are part of what must equal solo runs.
    env = server_env(paths, tmp_path, tokens=20, seed=0) | {
        "GSV_COALESCE_LEAD_SECONDS": "0",
        "GSV_COALESCE_QUEUED": "0",
        "GSV_FIRST_CHUNK_TOKENS": "2",
    }
    graph = ServerGraph(REPO, tmp_path, env)
    graph.start()
    try:
        requests = [lt.Request(i, *lt.TEXTS[i % len(lt.TEXTS)], cancel=i == 2) for i in range(6)]
        summary, outcomes, _ = lt.load_test(graph.base_url, graph, requests, clients=4, warm=False)
    finally:
        graph.stop()
    assert summary["failed"] == 0, summary["mismatches"]
    assert summary["completed"] == 5 and summary["equal"] == 5, summary["mismatches"]
    assert summary["cancelled"] == 1 and summary["cancelled_prefix"] == 1
    assert all(len(o.pcm) > 0 for o in outcomes)
