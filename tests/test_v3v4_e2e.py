"""v3 and v4 through the real graph (dora run dataflow.yml) with tiny development models: GSV_VERSION
alone switches the graph; the audio comes at the model's rate (24 kHz v3, 48 kHz v4), streamed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_dataflow_e2e import dora_run_batch_retrying_a_hang, log_records, node_env

pytestmark = pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed")
TEXT = "Hello there. 今天天气很好。"
RATES = {"v3": 24000, "v4": 48000}


@pytest.fixture(scope="module", params=["v3", "v4"])
def bundle(request, tmp_path_factory) -> tuple[str, Path]:
    from dora_gpt_sovits.devmodels.bundle import build_bundle

    version = request.param
    return version, build_bundle(
        tmp_path_factory.mktemp("models") / f"dev-tiny-{version}", size="tiny", version=version
    )


def test_the_default_graph_speaks_v3_and_v4_by_gsv_version_alone(bundle, tmp_path):
    version, models = bundle
    wav_path = tmp_path / "speech.wav"
    env = node_env(models, GSV_TEXT=TEXT, GSV_WAV_PATH=str(wav_path), GSV_VERSION=version, GSV_SAMPLE_STEPS="2")
    returncode, output = dora_run_batch_retrying_a_hang("dataflow.yml", env, timeout=420)
    assert returncode == 0, output[-4000:]
    records = log_records(output)
    assert any(f"SoVITS {version} loaded" in r["message"] for r in records if r["node_id"] == "vocoder"), output[-3000:]
    chunks = [r for r in records if r["node_id"] == "audio-sink" and r["message"].startswith("audio chunk")]
    segments = sorted({int(re.search(r"segment (\d+)", r["message"]).group(1)) for r in chunks})
    assert segments == [0, 1], output[-3000:]
    assert not [r for r in records if "error" in r["message"].lower() and r["node_id"] == "audio-sink"]
    wav, rate = sf.read(wav_path, dtype="float32")
    assert rate == RATES[version]
    assert np.isfinite(wav).all() and np.sqrt(np.mean(wav**2)) > 1e-3
