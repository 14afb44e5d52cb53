"""The TTFA breakdown through the real graph (dora CLI, tiny development model): every node stamps
its messages, and the steps of the first segment's path add up to the sink's own TTFA."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO

from dora_gpt_sovits.benchmark.stage_trace import STEPS, read_trace
from dora_gpt_sovits.benchmark.streaming_settings import Setting, probe
from dora_gpt_sovits.model_paths import resolve

pytestmark = pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed")


@pytest.fixture(scope="module")
def dev_models(tmp_path_factory) -> Path:
    from dora_gpt_sovits.devmodels.bundle import build_bundle

    return build_bundle(tmp_path_factory.mktemp("models") / "dev-tiny", size="tiny", version="v2")


def test_a_traced_probe_breaks_the_first_audio_down_node_by_node(dev_models, tmp_path):
    paths = resolve({"GSV_MODEL_DIR": str(dev_models)}, need=("gpt", "sovits", "bert", "hubert"))
    setting = Setting.parse("traced:*.GSV_THREADS=1")
    row = probe(REPO, tmp_path, paths, setting, "Hello there. It streams.", "en", 3, 12, 1, trace=True)
    assert not row["errors"]
    breakdown = row["breakdown"]
    assert breakdown["requests"] == 2  # three requests, the warm-up left out
    steps = breakdown["steps"]
    assert list(steps)[: len(STEPS)] == list(STEPS)
    assert all(s["min_s"] >= 0 for s in steps.values()), steps  # one clock, points in causal order
    # the stamps' total is the sink's own figure, give or take its handling of the message
    total = steps["total (text received → sink)"]["median_s"]
    assert total == pytest.approx(row["ttfa_s"], abs=0.05)
    nodes = {r["node"] for r in read_trace(tmp_path / "trace")}
    assert {"text-input", "text-frontend", "bert", "gpt", "vocoder", "audio-sink"} <= nodes
