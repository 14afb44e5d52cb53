"""SoVITS v2 parity against upstream GPT-SoVITS golden outputs (fixtures/upstream-v2).

Tolerances (fixture README §3: intermediates ~1e-4 of their scale, waveforms ~1e-3 absolute):
our float32 pipeline reorders a few reductions (attention via matmul/SDPA, relative-position
terms added per diagonal, channels-last convolutions), which moves results by float32 round-off
only. Measured worst cases are ~1e-6 (spectrogram 3e-5 on values up to 155), so the bounds below
leave one to two orders of magnitude of headroom while still catching any real mistake (a wrong
slope, padding or scale moves these values by >1e-2).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES  # noqa: E402

from dora_gpt_sovits.audio.spectrogram import reference_spectrogram
from dora_gpt_sovits.sovits import load_sovits

FILES = ("sovits_v2_tiny_pk_dict", "sovits_v2_tiny_01_hparams")
PREFIX = "dec_sovits_v2_tiny_pk_dict"  # the decode expectations hold for both files

pytestmark = [
    pytest.mark.skipif(not FIXTURES.is_dir(), reason="upstream-v2 fixtures not present"),
    pytest.mark.usefixtures("torch_single_thread"),
]


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURES / "expected.npz")


@pytest.fixture(scope="module")
def manifest():
    import json

    return json.loads((FIXTURES / "manifest.json").read_text())


# Each file with the generator's direct convolutions and with its long ones by FFT (spectral_conv.py,
# what a CPU vocoder runs): both must give upstream's waveforms. The fixture's residual blocks are
# narrower (64 channels and less) than the full-size ones FFT is used for; the 64-channel ones are
# computed by FFT here, with the full-size models' block size.
FIXTURE_FFT_PLANS = {(64, 7): (64, 0), (64, 11): (64, 0)}  # no minimum length: every decode goes by FFT


@pytest.fixture(
    scope="module", params=[(name, fft) for name in FILES for fft in ("direct", "fft")], ids=lambda p: "-".join(p)
)
def model(request):
    name, convs = request.param
    model = load_sovits(FIXTURES / f"{name}.pth")
    used = model.dec.use_spectral_convs(convs == "fft", FIXTURE_FFT_PLANS)
    assert used == (12 if convs == "fft" else 0)
    return model


@pytest.fixture(scope="module")
def inputs(expected):
    return (
        torch.from_numpy(expected[f"{PREFIX}_codes"]).view(1, 1, -1),
        torch.from_numpy(expected[f"{PREFIX}_text_ids"]).view(1, -1),
        torch.from_numpy(expected["ref_spec"]).unsqueeze(0),
    )


def assert_close(actual: torch.Tensor, wanted: np.ndarray, rel: float = 1e-4, abs_floor: float = 0.0) -> None:
    """max |a - w| <= rel * max|w| (+ abs_floor): tolerance relative to the tensor's own scale."""
    actual = actual.detach().float().cpu().numpy()
    assert actual.shape == wanted.shape, (actual.shape, wanted.shape)
    err = np.abs(actual - wanted).max()
    bound = rel * np.abs(wanted).max() + abs_floor
    assert err <= bound, f"max abs error {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("name", FILES)
def test_loader_detects_versions_as_upstream(name, manifest):
    model = load_sovits(FIXTURES / f"{name}.pth")
    detected = manifest["sovits_models"][name]["detected"]
    v = model.version
    assert v.header_or_hash_version == detected["header_or_hash_version"]
    assert v.model_version == detected["model_version"]
    assert v.symbol_version == detected["symbol_version"]
    assert v.is_lora == detected["is_lora"]
    cfg = model.config
    assert (cfg.filter_channels, cfg.n_layers, cfg.upsample_initial_channel, cfg.gin_channels) == (64, 2, 128, 512)
    assert cfg.ref_enc_bins == 704 and cfg.n_symbols == 732
    # Weight norm is folded: no parametrisations, no _g/_v tensors left.
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith(("weight_g", "weight_v")) or "parametrizations" in n for n in names)


def test_both_files_give_identical_models():
    a, b = (load_sovits(FIXTURES / f"{n}.pth").state_dict() for n in FILES)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reference_spectrogram(expected):
    spec = reference_spectrogram(torch.from_numpy(expected["ref_wav32k"]).unsqueeze(0))
    assert spec.shape == (1, 1025, 160) and spec.dtype == torch.float32
    assert_close(spec[0], expected["ref_spec"], rel=1e-6)


def test_prompt_ssl_proj_and_codes(model, expected):
    hubert = torch.from_numpy(expected["prompt_hubert_last_hidden"]).unsqueeze(0)
    with torch.inference_mode():
        assert_close(model.ssl_proj(hubert)[0], expected["prompt_ssl_proj"])
    codes = model.extract_prompt_codes(hubert)
    assert codes.shape == (1, 1, 102) and codes.dtype == torch.long
    np.testing.assert_array_equal(codes[0, 0].numpy(), expected["prompt_codes"])


def test_global_conditioning(model, expected, inputs):
    _, _, spec = inputs
    with torch.inference_mode():
        cond = model.global_condition([spec])
    assert cond.ge.shape == (1, 512, 1)
    assert_close(cond.ge[0, :, 0], expected[f"{PREFIX}_ge_refenc"])
    assert_close(cond.ge[0, :, 0], expected[f"{PREFIX}_ge_cond"])
    assert_close(cond.ge_text[0, :, 0], expected[f"{PREFIX}_ge_mrte"])


def test_codebook_lookup(model, expected, inputs):
    codes, _, _ = inputs
    np.testing.assert_array_equal(model.quantizer.decode(codes)[0].numpy(), expected[f"{PREFIX}_quantized"])


@pytest.mark.parametrize("speed", ["1", "1.25"])
def test_decode_intermediates_and_waveform(model, expected, inputs, speed):
    codes, phones, spec = inputs
    key = f"{PREFIX}_speed{speed}"
    with torch.inference_mode():
        cond = model.global_condition([spec])
        m_p, logs_p = model.prior(codes, phones, cond, float(speed))
        assert_close(m_p[0], expected[f"{key}_m_p"])
        assert_close(logs_p[0], expected[f"{key}_logs_p"])
        z = model.flow.reverse(m_p, cond.ge)  # noise_scale 0: z_p = m_p
        assert_close(z[0], expected[f"{key}_z"])
    wav = model.decode(codes, phones, [spec], noise_scale=0, speed=float(speed))
    assert wav.shape == (1, 1, expected[f"{key}_wav"].shape[0])
    assert_close(wav[0, 0], expected[f"{key}_wav"], rel=0, abs_floor=1e-4)


def test_multiple_references_average_ge(model, inputs, expected):
    codes, phones, spec = inputs
    quiet = spec * 0.5
    with torch.inference_mode():
        one, other = model.global_condition([spec]).ge, model.global_condition([quiet]).ge
        both = model.global_condition([spec, quiet]).ge
    torch.testing.assert_close(both, (one + other) / 2, rtol=0, atol=1e-6)
    # Two copies of the same reference are the same as one.
    twice = model.decode(codes, phones, [spec, spec], noise_scale=0)
    assert_close(twice[0, 0], expected[f"{PREFIX}_speed1_wav"], rel=0, abs_floor=1e-4)


def test_noise_scale_uses_the_generator(model, inputs):
    codes, phones, spec = inputs
    a = model.decode(codes, phones, [spec], generator=torch.Generator().manual_seed(7))
    b = model.decode(codes, phones, [spec], generator=torch.Generator().manual_seed(7))
    c = model.decode(codes, phones, [spec], generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_smoke(dtype, expected, inputs):
    """Same code in bf16/fp16 (spectrogram stays fp32, cast inside). CPU half kernels are slow,
    so a short clip; bf16 keeps 8 mantissa bits, hence the loose bound."""
    model = load_sovits(FIXTURES / f"{FILES[0]}.pth", dtype=dtype)
    assert model.dtype == dtype
    codes, phones, spec = inputs
    wav = model.decode(codes[..., :6], phones, [spec], noise_scale=0)
    assert wav.dtype == dtype and wav.shape == (1, 1, 6 * 1280)
    full = load_sovits(FIXTURES / f"{FILES[0]}.pth").decode(codes[..., :6], phones, [spec], noise_scale=0)
    assert torch.isfinite(wav).all()
    assert (wav.float() - full).abs().max() < 0.05
    hubert = torch.from_numpy(expected["prompt_hubert_last_hidden"]).unsqueeze(0)
    agree = (model.extract_prompt_codes(hubert)[0, 0].numpy() == expected["prompt_codes"]).mean()
    assert agree > 0.9


def test_padding_masks_do_not_leak(model):
    """Masks ([B, 1, T], 1 = valid) make padded frames/phones invisible to the valid ones."""
    g = torch.Generator().manual_seed(0)
    t, pad = 30, 7
    semantic, phones = torch.randn(1, 768, t, generator=g), torch.randint(0, 732, (1, 12), generator=g)
    ge = torch.randn(1, 512, 1, generator=g)
    mask = torch.cat([torch.ones(1, 1, t), torch.zeros(1, 1, pad)], dim=-1)
    phone_mask = torch.cat([torch.ones(1, 1, 12), torch.zeros(1, 1, 5)], dim=-1)
    padded_semantic = torch.cat([semantic, torch.randn(1, 768, pad, generator=g)], dim=-1)
    padded_phones = torch.cat([phones, torch.randint(0, 732, (1, 5), generator=g)], dim=-1)
    with torch.inference_mode():
        plain = model.enc_p.content(semantic, phones, ge)
        padded = model.enc_p.content(padded_semantic, padded_phones, ge, mask, phone_mask)
        torch.testing.assert_close(padded[..., :t], plain, rtol=0, atol=1e-5)
        assert padded[..., t:].abs().max() == 0
        m, _, _ = model.enc_p.prior(plain)
        m_pad, _, mask_out = model.enc_p.prior(padded, mask=mask)
        z, z_pad = model.flow.reverse(m, ge), model.flow.reverse(m_pad, ge, mask_out)
        torch.testing.assert_close(z_pad[..., :t], z, rtol=0, atol=1e-5)
