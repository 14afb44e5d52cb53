"""scripts/bench_backends.py on the tiny exported bundle: it runs every stage on both CPU backends,
reports each figure, and the greedy GPT tokens agree between torch and ONNX Runtime (no timing is
asserted: speed is for the benchmark to measure, not for tests)."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.usefixtures("torch_single_thread"), pytest.mark.slow]


def test_bench_reports_every_stage_for_both_backends(exported_tiny_bundle, tmp_path):
    from dora_gpt_sovits.benchmark.backends import main

    main(
        [
            "--model-dir",
            str(exported_tiny_bundle),
            "--threads",
            "1",
            "--repeats",
            "1",
            "--tokens",
            "16",
            "--out",
            str(tmp_path),
        ]
    )
    results = json.loads((tmp_path / "backends.json").read_text())["results"]
    assert set(results) == {"torch", "onnxruntime"}
    for figures in results.values():
        for key in ("bert_ms", "hubert_ms_per_5s", "gpt_prefill_ms", "gpt_ms_per_token", "vocoder_rtf"):
            assert figures[key] > 0, key
        assert figures["gpt_tokens"] == 16
    assert results["torch"]["gpt_tokens_hash"] == results["onnxruntime"]["gpt_tokens_hash"]
    assert "| GPT decode (ms/token) |" in (tmp_path / "backends.md").read_text()
