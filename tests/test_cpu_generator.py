"""The SoVITS generator as a CPU runs it (sovits/cpu_generator.py): bucketed run lengths that change
nothing, in float32 and on the matrix units; bfloat16 within its published agreement, never NaN, and
float32 where it would not pay."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES

from dora_gpt_sovits.finite_guard import module_dtype
from dora_gpt_sovits.sovits import cpu_generator
from dora_gpt_sovits.sovits.cpu_generator import (
    BucketedGenerator,
    buckets_up_to,
    for_cpu,
    length_bucket,
)
from dora_gpt_sovits.sovits.engine import load_torch_sovits
from dora_gpt_sovits.sovits.generator import Generator

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def tiny_generator(gin_channels: int = 8, seed: int = 0) -> Generator:
    """The v2 generator's shape at a small width (v2: 192 -> 512 channels, rates 10,8,2,2,2)."""
    torch.manual_seed(seed)
    gen = Generator(12, 32, (4, 2, 2), (8, 4, 4), (3, 7, 11), ((1, 3, 5),) * 3, gin_channels)
    with torch.no_grad():
        for p in gen.parameters():  # scaled so the activations neither vanish nor saturate tanh
            p.mul_(0.6)
    return gen.eval()


def snr_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float(10 * torch.log10(reference.pow(2).sum() / (other - reference).pow(2).sum()))


def test_length_buckets_bound_the_padding_and_are_stable():
    for frames in range(1, 2000):
        bucket = length_bucket(frames)
        assert bucket >= frames and length_bucket(bucket) == bucket
        assert bucket <= max(cpu_generator.SMALLEST_BUCKET, 1.25 * frames)
    assert buckets_up_to(64) == [16, 20, 24, 28, 32, 40, 48, 56, 64]
    assert len({length_bucket(f) for f in range(1, 1025)}) == len(buckets_up_to(1024)) == 25


@pytest.mark.parametrize("gin", [8, 0])  # SoVITS (speaker-conditioned) and v4's mel vocoder
@pytest.mark.parametrize("frames,pad", [(1, 15), (5, 3), (37, 11), (40, 0)])
def test_padded_run_computes_the_unpadded_one(gin, frames, pad):
    """Zeroing past the end after every layer = each convolution's own zero padding."""
    gen = tiny_generator(gin)
    z, g = torch.randn(1, 12, frames), (torch.randn(1, gin, 1) if gin else None)
    with torch.inference_mode():
        plain = gen(z, g)
        padded = gen(
            F.pad(z, (0, pad), value=3.0 if pad else 0.0).index_fill(2, torch.arange(frames, frames + pad), 0),
            g,
            valid_frames=frames,
        )
    assert padded.shape == plain.shape == (1, 1, frames * 16)
    torch.testing.assert_close(padded, plain, rtol=0, atol=2e-6)


def test_without_zeroing_the_padding_would_change_the_end():
    """The masking is needed: padding alone leaks bias into the last samples (so the test above can fail)."""
    gen = tiny_generator()
    z, g = torch.randn(1, 12, 20), torch.randn(1, 8, 1)
    with torch.inference_mode():
        plain = gen(z, g)
        leaky = gen(F.pad(z, (0, 12)), g)[..., : plain.shape[-1]]
    assert (leaky - plain)[..., -64:].abs().max() > 1e-3


@pytest.mark.parametrize("frames", [3, 29, 70])
def test_bfloat16_generator_agrees_with_float32(frames):
    """bfloat16 keeps 8 mantissa bits: ~40 dB SNR against float32 (42 dB on the full-size model)."""
    reference = tiny_generator()
    half = BucketedGenerator(tiny_generator(), torch.bfloat16)
    z, g = torch.randn(1, 12, frames), torch.randn(1, 8, 1)
    with torch.inference_mode():
        expected, got = reference(z, g), half(z, g)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.isfinite(got).all()
    assert snr_db(expected, got) > 30


def test_non_finite_half_output_moves_the_generator_to_float32(monkeypatch, caplog):
    half = BucketedGenerator(tiny_generator(), torch.bfloat16)
    reference = tiny_generator()
    forward = Generator.forward

    def nan_in_bfloat16(self, z, g=None, valid_frames=None):  # a kernel defect, in bfloat16 only
        out = forward(self, z, g, valid_frames)
        return out.fill_(float("nan")) if out.dtype == torch.bfloat16 else out

    monkeypatch.setattr(Generator, "forward", nan_in_bfloat16)
    z, g = torch.randn(1, 12, 9), torch.randn(1, 8, 1)
    with torch.inference_mode(), caplog.at_level(logging.WARNING):
        first, second = half(z, g), half(z, g)
        expected = reference(z, g)
    for out in (first, second):  # the float32 twin's output (rounded to bfloat16 on the way out)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-2)
    assert caplog.text.count("float32 from now on") == 1


def test_half_dtype_without_matrix_units_keeps_float32(monkeypatch, caplog):
    monkeypatch.setattr(cpu_generator, "matrix_units_for", lambda dtype: None)
    gen = tiny_generator()
    with caplog.at_level(logging.WARNING):
        chosen = for_cpu(gen, torch.bfloat16, warm_up=False)
    assert chosen.generator is gen and module_dtype(chosen) == torch.float32
    assert "no matrix units" in caplog.text


@pytest.mark.parametrize("frames", [1, 17, 37, 64, 90])
def test_float32_on_bucketed_lengths_computes_the_plain_run(monkeypatch, frames):
    """Padded to a bucket (a kernel oneDNN already built): the same samples to rounding, the
    spectral convolutions kept."""
    plans = {(16, 7): (32, 0), (16, 11): (32, 0)}
    plain = tiny_generator()
    plain.use_spectral_convs(True, plans)
    bucketed = for_cpu(tiny_generator(), torch.float32, warm_up=False)
    assert bucketed.generator.use_spectral_convs(True, plans) == 12
    z, g = torch.randn(1, 12, frames), torch.randn(1, 8, 1)
    with torch.inference_mode():
        expected = plain(z, g)
        seen: list[int] = []
        forward = Generator.forward
        monkeypatch.setattr(
            Generator,
            "forward",
            lambda self, z, g=None, valid_frames=None: seen.append(z.shape[-1]) or forward(self, z, g, valid_frames),
        )
        got = bucketed(z, g)
    assert seen == [length_bucket(frames)]
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)


def test_float32_warms_its_buckets(monkeypatch):
    seen: list[int] = []
    original = BucketedGenerator.forward
    monkeypatch.setattr(
        BucketedGenerator, "forward", lambda self, z, g=None: seen.append(z.shape[-1]) or original(self, z, g)
    )
    monkeypatch.setattr(cpu_generator, "WARM_UP_FRAMES", 20)
    chosen = for_cpu(tiny_generator(), torch.float32)
    assert module_dtype(chosen) == torch.float32 and seen == [16, 20]


def test_half_dtype_with_matrix_units_warms_its_buckets(monkeypatch):
    monkeypatch.setattr(cpu_generator, "matrix_units_for", lambda dtype: "amx_bf16")
    seen: list[int] = []
    original = BucketedGenerator.forward
    monkeypatch.setattr(
        BucketedGenerator, "forward", lambda self, z, g=None: seen.append(z.shape[-1]) or original(self, z, g)
    )
    monkeypatch.setattr(cpu_generator, "WARM_UP_FRAMES", 24)
    chosen = cpu_generator.for_cpu(tiny_generator(), torch.bfloat16, warm_up=False)
    assert isinstance(chosen, BucketedGenerator) and seen == []
    chosen.warm_up(24)
    assert seen == [16, 20, 24]


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="upstream-v2 fixtures not present")
def test_cpu_vocoder_in_bfloat16_keeps_encoder_and_flow_float32(monkeypatch):
    monkeypatch.setattr(cpu_generator, "matrix_units_for", lambda dtype: "amx_bf16")
    monkeypatch.setattr(cpu_generator, "WARM_UP_FRAMES", 16)
    path = FIXTURES / "sovits_v2_tiny_pk_dict.pth"
    fast = load_torch_sovits(path, torch.device("cpu"), torch.bfloat16, env={})
    exact = load_torch_sovits(path, torch.device("cpu"), torch.float32, env={})
    assert fast.dtype == torch.float32 and isinstance(fast.dec, BucketedGenerator)
    assert module_dtype(fast.dec.generator) == torch.bfloat16 and module_dtype(fast.flow) == torch.float32
    g = torch.Generator().manual_seed(0)
    codes, phones = torch.randint(0, 1024, (1, 1, 12), generator=g), torch.randint(1, 300, (1, 9), generator=g)
    spec = torch.rand(1, 1025, 40, generator=g)
    a = fast.decode(codes, phones, [spec], noise_scale=0)
    b = exact.decode(codes, phones, [spec], noise_scale=0)
    assert a.dtype == torch.float32 and a.shape == b.shape
    assert snr_db(b, a) > 25


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_v3_v4_cpu_engine_in_bfloat16(monkeypatch, tmp_path, version):
    """v4's HiFi-GAN vocoder takes the matrix units as v1/v2's generator does; v3's BigVGAN stays float32."""
    from dora_gpt_sovits.devmodels.mel_sovits import write_random_mel_sovits
    from dora_gpt_sovits.devmodels.mel_vocoders import write_random_mel_vocoder
    from dora_gpt_sovits.sovits.mel_engine import MelVocoderEngine

    monkeypatch.setattr(cpu_generator, "matrix_units_for", lambda dtype: "amx_bf16")
    monkeypatch.setattr(cpu_generator, "WARM_UP_FRAMES", 16)
    sovits, vocoder = tmp_path / "sovits.pth", tmp_path / ("bigvgan" if version == "v3" else "vocoder.pth")
    write_random_mel_sovits(sovits, version, "tiny", seed=0)
    write_random_mel_vocoder(vocoder, version, "tiny", seed=0)
    engine = MelVocoderEngine.load(sovits, vocoder, version, torch.device("cpu"), torch.bfloat16)
    exact = MelVocoderEngine.load(sovits, vocoder, version, torch.device("cpu"), torch.float32)
    assert module_dtype(engine.model.cfm.estimator) == torch.bfloat16
    assert isinstance(engine.vocoder, BucketedGenerator) == (version == "v4")
    assert engine.vocoder.sample_rate == exact.vocoder.sample_rate
    mel = torch.randn(1, 100, 23) * 0.5 - 4
    with torch.inference_mode():
        a, b = engine.vocoder(mel), exact.vocoder(mel)
    assert a.dtype == torch.float32 and a.shape == b.shape and snr_db(b, a) > 25
