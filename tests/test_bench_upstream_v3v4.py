"""The benchmark's v3/v4 side by side with upstream. The worker (shared/benchmark/upstream_worker.py) (shared/benchmark/upstream_worker.py), on the tiny parity
fixtures (tests/fixtures/upstream-v3v4): ``load`` builds upstream's SynthesizerTrnV3 + vocoder through
its own ``TTS.init_vits_weights`` and reference spectrogram, ``vocoder`` runs its
``using_vocoder_synthesis`` with the given seed and step count, and the waveform is the one upstream
recorded for the same inputs (``v3/v4_synth_s8_wav``). And the sweep's upstream columns
(shared/benchmark/flow_matching.py), fed with stand-in runs.

Needs an interpreter with upstream's requirements and an upstream tree at 48b1a01 (see
scripts/record_upstream_v3v4.py): ``GSV_UPSTREAM_V3V4_PYTHON`` (default /tmp/upstream-v3v4-venv/bin/python)
and ``GSV_UPSTREAM_V3V4_TREE`` (default /tmp/up48); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import UPSTREAM_INSTALL_MISSING

from dora_gpt_sovits.benchmark import flow_matching
from dora_gpt_sovits.benchmark.cases import select_cases
from dora_gpt_sovits.benchmark.inprocess import CaseRun, SegmentRun
from dora_gpt_sovits.benchmark.upstream import UpstreamCaseRun, UpstreamWorker

FIXTURES = Path(__file__).parent / "fixtures" / "upstream-v3v4"
PYTHON = Path(os.environ.get("GSV_UPSTREAM_V3V4_PYTHON", "/tmp/upstream-v3v4-venv/bin/python"))
TREE = Path(os.environ.get("GSV_UPSTREAM_V3V4_TREE", "/tmp/up48"))
FILES = {
    "v3": ("sovits_v3_tiny_02.pth", "bigvgan_tiny"),
    "v4": ("sovits_v4_tiny_pk.pth", "vocoder_v4_tiny.pth"),
}


def missing_upstream() -> str | None:
    if not PYTHON.is_file():
        return f"{UPSTREAM_INSTALL_MISSING}: no interpreter at {PYTHON} (GSV_UPSTREAM_V3V4_PYTHON)"
    if not (TREE / "GPT_SoVITS" / "TTS_infer_pack" / "TTS.py").is_file():
        return f"{UPSTREAM_INSTALL_MISSING}: no tree at {TREE} (GSV_UPSTREAM_V3V4_TREE)"
    return None


@pytest.fixture(scope="module")
def expected():
    reason = missing_upstream()
    if reason:
        pytest.skip(reason)
    with np.load(FIXTURES / "expected.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow  # a subprocess that imports upstream's TTS.py and runs its synthesis (~15 s each)
@pytest.mark.parametrize("version", ["v3", "v4"])
def test_worker_runs_upstream_v3v4_synthesis(version, expected, tmp_path):
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    run = manifest["synthesis_runs"][f"{version}_s8"]
    wav = tmp_path / "ref.wav"  # the recorded reference, on its 16-bit grid: read back exactly
    sf.write(wav, np.round(expected["ref_wav32k"] * 32768).astype(np.int16), 32000, subtype="PCM_16")
    inputs = tmp_path / "inputs.pt"
    torch.save(
        {
            "cases": {"fixture": [{"target_ids": torch.from_numpy(expected["target_phones"])}]},
            "prompt_tokens": torch.from_numpy(expected["prompt_codes"]),
            "prompt_phones": torch.from_numpy(expected["prompt_phones"]),
            "spectrogram": torch.from_numpy(expected["ref_spec"])[None],
        },
        inputs,
    )
    sovits, vocoder = FILES[version]
    worker = UpstreamWorker(TREE.resolve(), str(PYTHON), tmp_path)
    worker.start()
    try:
        info = worker.call(
            "load",
            sovits_path=str(FIXTURES / sovits),
            model_version=version,
            vocoder_path=str(FIXTURES / vocoder),
            ref_audio=str(wav),
            checkout=str(TREE.resolve()),
            tiny_fixture=True,
            threads=1,
            device="cpu",
            dtype="float32",
            inputs_path=str(inputs),
        )
        assert info["vocoder"] == ("BigVGAN" if version == "v3" else "Generator")
        assert info["vocoder_configs"]["sr"] == (24000 if version == "v3" else 48000)
        assert info["sovits_md5_registered"] == (version == "v4")  # the untagged v4 base is told, as upstream must be
        # Upstream's own spectrogram of the recorded reference, recomputed here: bit-equal on the CPU
        # that recorded it (an Intel Xeon), 3e-5 off on an AMD EPYC (its FFT rounds differently;
        # peak ~166), so float32 rounding of the peak is the bound.
        assert info["ref_spec_max_abs_diff"] <= 1e-6 * float(np.abs(expected["ref_spec"]).max())
        audio = tmp_path / "audio.pt"
        reply = worker.call(
            "vocoder",
            case="fixture",
            seeds=[run["seed"]],
            tokens=[expected["target_codes"].tolist()],
            sample_steps=run["sample_steps"],
            save_audio=str(audio),
        )
    finally:
        worker.close()
    (segment,) = reply["segments"]
    assert segment["vocoder_s"] > 0 and segment["samples"] == run["wav_samples"]
    (samples,) = torch.load(audio, weights_only=True)
    recorded = torch.from_numpy(expected[f"{version}_synth_s8_wav"]).reshape(-1)
    assert float((samples - recorded).abs().max()) <= 1e-4


def test_sweep_rows_and_markdown_carry_upstream_columns():
    case = select_cases(["en"], ["short"])[0]
    audio = torch.zeros(48000)
    segment = SegmentRun("t", 10, 5, 20, 0.01, 0.02, 0.1, 0.4, 11, list(range(11)), 1.0, 1.0, audio)
    ours = CaseRun(case.name, [segment], wall_s=2.0, first_audio_s=2.0)  # played: 1 s + the 0.3 s pause
    theirs = UpstreamCaseRun(
        case.name, [0.2], [0.8], [11], [list(range(11))], [3.0], [0.0], [48000], 48000, None, audio_max_abs_diff=2e-6
    )
    row = flow_matching.ours_row(8, case, [ours])
    row["streamed_ttfa_s"] = 0.9
    row["upstream"] = flow_matching.upstream_row(case, [ours], [theirs])
    u = row["upstream"]
    assert u["wall_s"] == 4.0 and u["rtf"] == pytest.approx(4.0 / 1.3, abs=1e-3)
    assert u["speedup_end_to_end_at_least"] == 2.0 and u["speedup_vocoder"] == 3.0
    assert u["tokens_equal_ours"] and u["audio_samples_equal_ours"] and u["first_audio_s"] == 4.0
    doc = {
        "version": "v4",
        "dtype": "bfloat16",
        "rows": [row],
        "streamed_vs_one_shot": {
            "case": case.name,
            "tokens": 11,
            "first_run_tokens": 4,
            "run_tokens": 25,
            "lookahead_tokens": 4,
            **{
                name: {"setting": name, "whole": distance, "first_run": distance}
                for name in ("exact", "first_run")
                for distance in [{"snr_db": 30.0, "max_abs_diff": 0.01, "peak": 0.5, "lsd_db": 1.0}]
            },
        },
        "upstream": {"commit": "48b1a01", "worker": {"torch": "2.13", "threads": 2}},
    }
    markdown = flow_matching.to_markdown(doc, "cpu")
    assert "## Side by side with upstream GPT-SoVITS" in markdown and "| 8 | en-short | 4.0 |" in markdown
    assert "Ours: bfloat16." in markdown and "2.0×" in markdown
    # --vocoder-dtype: the GPT at --dtype, the flow matching and vocoder at their own (fast-cpu.yml's mix)
    doc |= {"dtype": "float32", "vocoder_dtype": "bfloat16"}
    assert "Ours: float32, vocoder stage bfloat16." in flow_matching.to_markdown(doc, "cpu")
    doc["upstream"] = {"error": "upstream 'load' failed: boom\ntrace"}
    assert "Not run: upstream 'load' failed: boom" in flow_matching.to_markdown(doc, "cpu")
