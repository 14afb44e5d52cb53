"""SoVITS v3/v4 end to end against upstream's own outputs (tests/fixtures/upstream-v3v4, recorded by
scripts/record_upstream_v3v4.py from upstream 48b1a01 on tiny random models in the official formats).

Covered here: the files load through our loader (tags, an untagged v4 base, LoRA fine-tunes merged
into their base), the reference spectrogram / 24 kHz resampling / log-mels, ``decode_encp``, the
whole chunked synthesis loop (4 and 8 steps, speed 1.25) down to the waveform, and the LoRA model.
The DiT and the vocoders alone are in tests/test_cfm_dit.py and tests/test_mel_vocoders.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dora_gpt_sovits.audio.mel import MEL_SETTINGS, log_mel
from dora_gpt_sovits.audio.resample import resample
from dora_gpt_sovits.audio.spectrogram import reference_spectrogram
from dora_gpt_sovits.checkpoint_io import CheckpointError
from dora_gpt_sovits.sovits import load_sovits
from dora_gpt_sovits.sovits import mel_synthesis as ms
from dora_gpt_sovits.sovits.cfm import sample_mel
from dora_gpt_sovits.sovits.mel_vocoders import load_mel_vocoder

FIXTURES = Path(__file__).parent / "fixtures" / "upstream-v3v4"
BASE = {"v3": FIXTURES / "sovits_v3_tiny_02.pth", "v4": FIXTURES / "sovits_v4_tiny_pk.pth"}
LORA = {"v3": FIXTURES / "sovits_v3_tiny_lora_03.pth", "v4": FIXTURES / "sovits_v4_tiny_lora_04.pth"}
VOCODER = {"v3": FIXTURES / "bigvgan_tiny", "v4": FIXTURES / "vocoder_v4_tiny.pth"}
SEEDS = {"s4": 11, "s8": 12, "s4_speed1.25": 13}

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected.npz") as data:
        return {k: torch.from_numpy(data[k]) for k in data.files}


@pytest.fixture(scope="module", params=["v3", "v4"])
def version(request):
    return request.param


@pytest.fixture(scope="module")
def model(version):
    return load_sovits(BASE[version], expected_version=version)


def close(ours: torch.Tensor, theirs: torch.Tensor, atol: float = 5e-5, rtol: float = 1e-5) -> None:
    """Float32 agreement up to summation order (the speaker vector reaches ~40: relative too). The
    recordings come from an Intel Xeon; an AMD EPYC's kernels (GEMM, FFT) are up to 1.9e-5 apart."""
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=rtol, atol=atol)


def reference_mel(version: str, expected) -> torch.Tensor:
    """As upstream: v3 resamples the 32 kHz reference to 24 kHz; v4 takes it as it is."""
    return ms.reference_mel(expected["ref_wav32k"], 32000, version)


def voice(model, version: str, expected) -> ms.MelVoice:
    return ms.prepare_voice(
        model,
        expected["prompt_codes"].view(1, 1, -1),
        expected["prompt_phones"].view(1, -1),
        expected["ref_spec"][None],
        reference_mel(version, expected),
    )


class RecordingVocoder(torch.nn.Module):
    """Wraps the real vocoder and keeps the mel it was given (upstream's recorded intermediate)."""

    def __init__(self, vocoder: torch.nn.Module):
        super().__init__()
        self.vocoder, self.mels = vocoder, []

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        self.mels.append(mel)
        return self.vocoder(mel)


# ---- loading -----------------------------------------------------------------------------------


def test_versions_are_read_from_tag_and_config(version, model):
    assert model.version.model_version == version and not model.version.is_lora
    assert model.version.source == ("tag:02" if version == "v3" else "config model.version")


def test_a_file_of_one_version_is_refused_as_the_other():
    with pytest.raises(CheckpointError, match="this is a SoVITS v3 model \\(by tag:02\\), not v4"):
        load_sovits(BASE["v3"], expected_version="v4")
    with pytest.raises(CheckpointError, match="this is a SoVITS v4 model \\(by config model.version\\), not v3"):
        load_sovits(BASE["v4"], expected_version="v3")


def test_a_lora_file_without_its_base_is_one_line(version):
    with pytest.raises(CheckpointError) as e:
        load_sovits(LORA[version], expected_version=version)
    assert "LoRA fine-tune needs its base model" in str(e.value) and "\n" not in str(e.value)


# ---- reference inputs ----------------------------------------------------------------------------


def test_reference_spectrogram_resampling_and_log_mels(expected):
    close(reference_spectrogram(expected["ref_wav32k"][None])[0], expected["ref_spec"])
    close(resample(expected["ref_wav32k"], 32000, 24000), expected["ref_wav24k"])
    close(log_mel(expected["ref_wav24k"][None], MEL_SETTINGS["v3"])[0], expected["ref_logmel_v3"], atol=1e-4)
    close(log_mel(expected["ref_wav32k"][None], MEL_SETTINGS["v4"])[0], expected["ref_logmel_v4"], atol=1e-4)


# ---- decode_encp ---------------------------------------------------------------------------------


def test_features_equal_decode_encp(version, model, expected):
    p = f"{version}_"
    close(model.extract_prompt_codes(expected["ssl_in"]), expected[p + "extract_latent"], atol=0, rtol=0)
    ge = model.speaker_vector(expected["ref_spec"][None])
    close(ge, expected[p + "ge"])
    close(
        model.features(expected["prompt_codes"].view(1, 1, -1), expected["prompt_phones"].view(1, -1), ge),
        expected[p + "fea_ref"],
    )
    codes, phones = expected["target_codes"].view(1, 1, -1), expected["target_phones"].view(1, -1)
    close(model.features(codes, phones, ge), expected[p + "fea_todo"])
    close(model.features(codes, phones, ge, speed=1.25), expected[p + "fea_todo_speed1.25"])


# ---- the synthesis loop ----------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["s4", "s8", "s4_speed1.25"])
def test_synthesis_equals_upstreams_loop(version, model, expected, run):
    steps, speed = (4 if run.startswith("s4") else 8), (1.25 if "speed" in run else 1.0)
    vocoder = RecordingVocoder(load_mel_vocoder(version, VOCODER[version]))
    wav = ms.synthesize(
        model,
        vocoder,
        voice(model, version, expected),
        expected["target_codes"],
        expected["target_phones"].view(1, -1),
        steps,
        speed,
        noise=ms.upstream_noise(torch.Generator().manual_seed(SEEDS[run])),
    )
    close(vocoder.mels[0], expected[f"{version}_synth_{run}_mel"], atol=1e-4)
    if f"{version}_synth_{run}_wav" in expected:
        close(wav, expected[f"{version}_synth_{run}_wav"], atol=1e-4)


# ---- LoRA ----------------------------------------------------------------------------------------


def test_lora_fine_tune_merged_as_upstream(version, expected):
    p = f"{version}_"
    model = load_sovits(LORA[version], expected_version=version, lora_base=BASE[version])
    assert model.version.is_lora
    close(model.estimator.transformer_blocks[0].attn.to_q.weight, expected[p + "lora_merged_to_q_block0"])
    ge = model.speaker_vector(expected["ref_spec"][None])
    close(ge, expected[p + "lora_ge"])
    fea_ref = model.features(expected["prompt_codes"].view(1, 1, -1), expected["prompt_phones"].view(1, -1), ge)
    close(fea_ref[..., :8], expected[p + "lora_fea_ref_first8"])
    mel = sample_mel(
        model.estimator, expected[p + "cfm_in_mu"], expected[p + "cfm_in_prompt"], 4, noise=expected[p + "cfm_noise"]
    )
    close(mel, expected[p + "lora_cfm_out_steps4"], atol=1e-4)
