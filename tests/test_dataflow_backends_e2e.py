"""dataflows/onnx-cpu.yml end to end through the real dora CLI: every model node on ONNX Runtime's
CPU provider, graphs exported from the tiny development bundle in the fixture."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import REPO
from test_dataflow_e2e import assert_plausible_speech_file, dora_run_batch_retrying_a_hang, log_records, node_env

pytestmark = pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed")
TEXT = "你好，世界。Hello from ONNX Runtime."


def test_onnx_cpu_graph_speaks_with_every_model_node_on_onnxruntime(exported_tiny_bundle, tmp_path):
    wav_path = tmp_path / "speech.wav"
    env = node_env(exported_tiny_bundle, GSV_TEXT=TEXT, GSV_WAV_PATH=str(wav_path))
    returncode, output = dora_run_batch_retrying_a_hang("dataflows/onnx-cpu.yml", env, timeout=300)
    assert returncode == 0, output[-4000:]
    records = log_records(output)
    loaded = {r["node_id"] for r in records if "onnxruntime@cpu/float32" in r["message"]}
    assert loaded == {"reference", "bert", "gpt", "vocoder"}, loaded
    decoded = [r for r in records if r["node_id"] == "gpt" and " tokens in " in r["message"]]
    assert len(decoded) == 2
    assert_plausible_speech_file(wav_path, min_seconds=2 * 0.74)


def test_a_missing_export_stops_the_graph_with_the_reason(tmp_path):
    from dora_gpt_sovits.devmodels.bundle import build_bundle

    models = build_bundle(tmp_path / "dev-tiny", size="tiny", version="v2")  # no onnx/ folder
    env = node_env(models, GSV_TEXT="你好。", GSV_WAV_PATH=str(tmp_path / "x.wav"))
    result = subprocess.run(
        ["dora", "run", "dataflows/onnx-cpu.yml"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no gpt_prefill float32 graph at" in output and "scripts/export_onnx.py" in output, output[-3000:]
