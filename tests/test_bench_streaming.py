"""The streaming-settings benchmark's settings: parsed strictly, applied to the graph's own nodes."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO

from dora_gpt_sovits.benchmark.streaming_settings import Setting, markdown, summarize


def service_graph() -> dict:
    return yaml.safe_load((REPO / "dataflows/service.yml").read_text(encoding="utf-8"))


def test_a_setting_reads_node_and_all_node_variables():
    setting = Setting.parse("fp16-t1:gpt.GSV_GPT_QUANT=fp16,*.GSV_THREADS=1,gpt.GSV_THREADS=2")
    assert setting.name == "fp16-t1"
    assert setting.env == {"gpt": {"GSV_GPT_QUANT": "fp16", "GSV_THREADS": "2"}, "*": {"GSV_THREADS": "1"}}
    assert Setting.parse("defaults") == Setting("defaults", {})


@pytest.mark.parametrize("text", [":gpt.X=1", "bad:gpt.X", "bad:GSV_THREADS=1", "bad:.X=1"])
def test_a_malformed_setting_is_refused_with_the_expected_form(text):
    with pytest.raises(ValueError, match="setting"):
        Setting.parse(text)


def test_applying_a_setting_touches_only_our_nodes_and_a_node_entry_wins():
    graph = Setting.parse("s:*.GSV_THREADS=1,gpt.GSV_THREADS=2,vocoder.GSV_LOOKAHEAD_TOKENS=2").apply(service_graph())
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["gpt"]["env"]["GSV_THREADS"] == "2"
    assert nodes["vocoder"]["env"]["GSV_THREADS"] == "1" and nodes["vocoder"]["env"]["GSV_LOOKAHEAD_TOKENS"] == "2"
    assert nodes["bert"]["env"]["GSV_THREADS"] == "1"
    assert nodes["bert"]["env"]["OMP_WAIT_POLICY"] == "PASSIVE"  # the graph's own env is kept
    assert "GSV_THREADS" not in nodes["level-meter"].get("env", {})  # dora's runtime node, not ours


def test_a_setting_naming_a_missing_node_is_refused():
    with pytest.raises(ValueError, match="vocodr"):
        Setting.parse("typo:vocodr.GSV_THREADS=1").apply(service_graph())


def test_the_summary_leaves_the_warm_up_request_out():
    reports = [{"ttfa_s": 5.0, "rtf": 3.0, "stall_s": 2.0, "errors": []}] + [
        {"ttfa_s": t, "rtf": 0.7, "stall_s": 0.4, "errors": []} for t in (0.6, 0.7, 0.8)
    ]
    row = summarize("defaults", reports) | {"env": {}}
    assert (row["requests"], row["ttfa_s"], row["rtf"], row["stall_s"]) == (3, 0.7, 0.7, 0.4)
    assert row["ttfa_p90_s"] == 0.78  # between the 2nd and 3rd of three, 80% of the way
    assert "| defaults | graph defaults | 0.700 | 0.780 | 0.700 | 0.40 | 3 |" in markdown([row])
