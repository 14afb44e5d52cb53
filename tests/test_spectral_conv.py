"""The vocoder's long convolutions in the frequency domain (sovits/spectral_conv.py): equal to the direct ones to
float rounding, for every shape the generator meets; chosen per layer and per option.

Upstream's waveforms through the FFT path: tests/test_sovits_parity.py (its models run both ways).
"""

from __future__ import annotations

import pytest
import torch
from conftest import FIXTURES
from torch import nn

from dora_gpt_sovits.sovits.generator import conv
from dora_gpt_sovits.sovits.loader import load_sovits
from dora_gpt_sovits.sovits.spectral_conv import FFT_PLAN, SpectralKernel, spectral_conv, spectral_convs_wanted

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def channels_last(batch: int, channels: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, 1, length, generator=g).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("taps, dilation", [(7, 1), (11, 1), (11, 3), (7, 5), (3, 1), (5, 2)])
@pytest.mark.parametrize("n_fft", [32, 64, 128])
@pytest.mark.parametrize("length", [1, 2, 23, 100, 1001])
def test_equals_the_direct_convolution(taps, dilation, n_fft, length):
    torch.manual_seed(taps * dilation + n_fft)
    layer = nn.Conv1d(24, 16, taps, dilation=dilation, padding=dilation * (taps - 1) // 2)
    x = channels_last(2, 24, length, seed=length)
    want = conv(x, layer)
    got = spectral_conv(x, SpectralKernel.of(layer, n_fft))
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, atol=5e-6 * want.abs().max().item(), rtol=0)


def test_a_layer_without_bias():
    layer = nn.Conv1d(8, 8, 7, padding=3, bias=False)
    x = channels_last(1, 8, 50, seed=0)
    torch.testing.assert_close(spectral_conv(x, SpectralKernel.of(layer, 32)), conv(x, layer), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "layer, problem",
    [
        (nn.Conv1d(8, 8, 7, padding=0), "'same' convolutions"),
        (nn.Conv1d(8, 8, 6, padding=2), "odd kernel"),
        (nn.Conv1d(8, 8, 7, padding=3, stride=2), "'same' convolutions"),
        (nn.Conv1d(8, 8, 7, padding=3, groups=2), "'same' convolutions"),
    ],
)
def test_convolutions_it_does_not_compute_are_refused(layer, problem):
    with pytest.raises(ValueError, match=problem):
        SpectralKernel.of(layer, 32)


def test_a_block_too_short_for_the_kernel_is_refused():
    with pytest.raises(ValueError, match="too short"):
        SpectralKernel.of(nn.Conv1d(8, 8, 11, padding=5), 16)


def test_only_wide_layers_with_long_kernels_go_by_fft():
    assert SpectralKernel.plan(nn.Conv1d(128, 128, 11, padding=5)) == (64, 1280)
    assert SpectralKernel.plan(nn.Conv1d(256, 256, 7, padding=3)) == (32, 480)
    assert SpectralKernel.plan(nn.Conv1d(64, 64, 11, padding=5)) == (32, 2560)
    assert SpectralKernel.plan(nn.Conv1d(128, 128, 3, padding=1)) is None  # direct is faster
    assert SpectralKernel.plan(nn.Conv1d(64, 64, 7, padding=3)) is None  # too narrow to pay
    assert SpectralKernel.plan(nn.Conv1d(128, 64, 11, padding=5)) is None  # not a residual block's
    assert all(2 * taps <= n for (_, taps), (n, _) in FFT_PLAN.items())


def test_short_inputs_are_convolved_directly(monkeypatch):
    from dora_gpt_sovits.sovits import generator

    layer = nn.Conv1d(8, 8, 7, padding=3)
    layer.spectral = SpectralKernel.of(layer, 32, min_length=100)
    used = []
    monkeypatch.setattr(generator, "spectral_conv", lambda x, k: used.append(x.shape[-1]) or x)
    for length in (99, 100):
        conv(channels_last(1, 8, length, seed=0), layer)
    assert used == [100]


@pytest.fixture(scope="module")
def tiny():
    return load_sovits(FIXTURES / "sovits_v2_tiny_pk_dict.pth")


def test_fft_generator_matches_the_direct_one(tiny):
    gen = tiny.dec
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, gen.conv_pre.in_channels, 37, generator=g)
    cond = torch.randn(1, gen.cond.in_channels, 1, generator=g)
    try:
        assert gen.use_spectral_convs(True) == 6  # by default only its 64-channel 11-tap convolutions
        gen.use_spectral_convs(False)
        want = gen(z, cond)
        used = gen.use_spectral_convs(True, {(64, 7): (64, 0), (64, 11): (32, 0)})
        got = gen(z, cond)
    finally:
        gen.use_spectral_convs(False)
    assert used == 12  # the 64-channel stage's 7- and 11-tap convolutions, 6 each
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)


def test_the_option():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert spectral_convs_wanted({}, cpu, torch.float32)
    assert not spectral_convs_wanted({}, cpu, torch.bfloat16)
    assert not spectral_convs_wanted({}, cuda, torch.float32)  # cuDNN's direct kernels: unmeasured against
    assert not spectral_convs_wanted({"GSV_VOCODER_FFT": "0"}, cpu, torch.float32)
    assert spectral_convs_wanted({"GSV_VOCODER_FFT": "1"}, cuda, torch.float32)
    with pytest.raises(ValueError, match="GSV_VOCODER_FFT='fast'"):
        spectral_convs_wanted({"GSV_VOCODER_FFT": "fast"}, cpu, torch.float32)
    with pytest.raises(ValueError, match="needs a float32 model"):
        spectral_convs_wanted({"GSV_VOCODER_FFT": "1"}, cpu, torch.float16)


@pytest.mark.parametrize("setting, wanted", [(None, True), ("0", False), ("1", True)])
def test_the_torch_vocoder_backend_follows_the_option(monkeypatch, setting, wanted):
    from dora_gpt_sovits.backends.config import BackendChoice
    from dora_gpt_sovits.backends.stages import vocoder_builders
    from dora_gpt_sovits.sovits.generator import Generator

    calls = []
    monkeypatch.setattr(Generator, "use_spectral_convs", lambda self, enabled: calls.append(enabled) or 0)
    if setting is None:
        monkeypatch.delenv("GSV_VOCODER_FFT", raising=False)
    else:
        monkeypatch.setenv("GSV_VOCODER_FFT", setting)
    vocoder_builders(FIXTURES / "sovits_v2_tiny_pk_dict.pth")["torch"](BackendChoice("torch", "cpu", "float32"))
    assert calls == [wanted]


@pytest.mark.parametrize("n, taps", [(32, 7), (64, 11), (33, 5)])
def test_the_block_transforms_are_the_real_dft_and_its_inverse(n, taps):
    from dora_gpt_sovits.sovits.spectral_conv import dft_matrices

    analysis, synthesis = dft_matrices(n, taps)
    block = torch.randn(n, 3, dtype=torch.float64)
    spectrum = torch.fft.rfft(block, dim=0)
    got = (analysis @ block).view(-1, 2, 3)
    torch.testing.assert_close(got[:, 0], spectrum.real)
    torch.testing.assert_close(got[:, 1], spectrum.imag)
    kept = synthesis[0] @ spectrum.real + synthesis[1] @ spectrum.imag
    torch.testing.assert_close(kept, torch.fft.irfft(spectrum, n=n, dim=0)[taps - 1 :])
