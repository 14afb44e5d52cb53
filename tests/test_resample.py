import numpy as np
import pytest
import soxr
import torch

from dora_gpt_sovits.audio.resample import StreamResampler, polyphase_kernel, resample, resample_length

# Reference values produced by torchaudio 2.8 ``transforms.Resample`` (default Hann sinc, width 6,
# rolloff 0.99), which upstream GPT-SoVITS uses for the reference audio.
TORCHAUDIO_KERNEL_48K_32K_PHASE1_EVERY4 = [
    -0.0,
    0.000489181955344975,
    0.05090378597378731,
    0.5438855886459351,
    0.0033806809224188328,
    -0.0003660349757410586,
]
TORCHAUDIO_22K_16K_RAMP_EVERY37 = [
    3.0277587939053774e-06,
    0.09521105885505676,
    -0.31603556871414185,
    0.5010893940925598,
    -0.47672465443611145,
    0.15380531549453735,
]


def tone(freq: float, sr: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def fit_tone(y: np.ndarray, freq: float, sr: int) -> tuple[float, float]:
    """Amplitude of ``freq`` in the middle of ``y`` and the RMS of everything else."""
    t = np.arange(len(y)) / sr
    mid = slice(len(y) // 8, len(y) - len(y) // 8)
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)[mid]
    coef, *_ = np.linalg.lstsq(basis, y[mid].astype(np.float64), rcond=None)
    return float(np.hypot(*coef)), float(np.sqrt(np.mean((y[mid] - basis @ coef) ** 2)))


def level_db(y: np.ndarray, amp: float) -> float:
    mid = y[len(y) // 8 : len(y) - len(y) // 8]
    return 20 * np.log10(np.sqrt(np.mean(np.square(mid, dtype=np.float64))) / (amp / np.sqrt(2)))


def test_kernel_matches_torchaudio_golden_values():
    kernel, width = polyphase_kernel(48000, 32000)
    assert kernel.shape == (2, 1, 23) and width == 10
    assert kernel[1, 0, ::4].tolist() == pytest.approx(TORCHAUDIO_KERNEL_48K_32K_PHASE1_EVERY4, abs=1e-9)


def test_output_matches_torchaudio_golden_values():
    x = torch.sin(torch.arange(300, dtype=torch.float32) * 0.05) * torch.linspace(0, 1, 300)
    y = resample(x, 22050, 16000)
    assert y.shape == (218,)
    assert y[::37].tolist() == pytest.approx(TORCHAUDIO_22K_16K_RAMP_EVERY37, abs=1e-6)


@pytest.mark.parametrize("from_sr,to_sr", [(44100, 32000), (48000, 32000), (8000, 32000), (32000, 16000)])
def test_length_type_and_batch_shape(from_sr, to_sr):
    x = np.random.default_rng(0).standard_normal((2, 3, 4567)).astype(np.float32)
    y = resample(x, from_sr, to_sr)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert y.shape == (2, 3, resample_length(4567, from_sr, to_sr))
    assert y.shape[-1] == int(np.ceil(4567 * to_sr / from_sr))
    # channels are independent
    np.testing.assert_allclose(resample(x[1, 2], from_sr, to_sr), y[1, 2], atol=1e-6)


def test_same_rate_is_identity_and_rejects_bad_rates():
    x = torch.randn(100)
    assert resample(x, 32000, 32000) is x
    with pytest.raises(ValueError):
        resample(x, 44100.5, 32000)
    with pytest.raises(TypeError):
        resample(torch.ones(10, dtype=torch.int16), 16000, 32000)


@pytest.mark.parametrize(
    "from_sr,to_sr,freq",
    [(32000, 16000, 1000), (44100, 32000, 3000), (48000, 32000, 440), (8000, 32000, 1000)],
)
def test_sine_stays_a_sine(from_sr, to_sr, freq):
    amp, residual = fit_tone(resample(tone(freq, from_sr), from_sr, to_sr), freq, to_sr)
    assert amp == pytest.approx(0.5, abs=1e-3)
    assert residual < 1e-4


def test_tone_above_new_nyquist_is_rejected():
    # 12 kHz cannot exist at 16 kHz; anything left would alias to 4 kHz.
    assert level_db(resample(tone(12000, 32000), 32000, 16000), 0.5) < -50


@pytest.mark.parametrize("from_sr,to_sr", [(32000, 24000), (32000, 16000), (32000, 44100)])
def test_stream_over_random_chunks_equals_one_shot(from_sr, to_sr):
    rng = np.random.default_rng(1)
    x = (0.3 * rng.standard_normal(from_sr * 2)).astype(np.float32)
    stream = StreamResampler(from_sr, to_sr)
    pieces, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        pieces.append(stream.process(x[i : i + n]))
        i += n
    pieces.append(stream.flush())
    y = np.concatenate(pieces)
    one_shot = soxr.resample(x, from_sr, to_sr, quality="HQ")
    # The stream carries soxr's filter state, so chunking changes nothing: in practice the outputs
    # are bit-identical; the tolerance only allows for float reassociation in other soxr builds.
    assert len(y) == len(one_shot) == len(x) * to_sr // from_sr
    np.testing.assert_allclose(y, one_shot, rtol=0, atol=1e-6)
    # flush() leaves the resampler ready for the next utterance
    again = np.concatenate([stream.process(x[:777]), stream.process(x[777:]), stream.flush()])
    np.testing.assert_allclose(again, one_shot, rtol=0, atol=1e-6)


def test_stream_preserves_tone_and_rejects_alias():
    stream = StreamResampler(32000, 24000)
    y = np.concatenate([stream.process(c) for c in np.array_split(tone(1000, 32000), 7)] + [stream.flush()])
    amp, residual = fit_tone(y, 1000, 24000)
    assert amp == pytest.approx(0.5, abs=1e-4) and residual < 1e-5
    stream = StreamResampler(32000, 24000)
    y = np.concatenate([stream.process(c) for c in np.array_split(tone(13000, 32000), 7)] + [stream.flush()])
    assert level_db(y, 0.5) < -100


def test_stream_equal_rates_pass_through_and_accepts_tensors():
    stream = StreamResampler(32000, 32000)
    x = torch.randn(500)
    np.testing.assert_array_equal(stream.process(x), x.numpy())
    assert stream.flush().shape == (0,)
    with pytest.raises(ValueError):
        StreamResampler(32000, 16000).process(np.zeros((10, 2), np.float32))


# --- rates whose exact filter bank would be huge (issue #15, class 4) ---

from dora_gpt_sovits.audio.resample import direct_resample, exact_path_fits, polyphase_resample  # noqa: E402

RECORDING_RATES = [
    8000,
    11025,
    12000,
    16000,
    22050,
    24000,
    32000,
    44100,
    48000,
    88200,
    96000,
    176400,
    192000,
    352800,
    384000,
]


@pytest.mark.parametrize("from_sr", RECORDING_RATES)
def test_every_recording_rate_keeps_the_exact_torchaudio_path(from_sr):
    # The parity tests against upstream rely on this: only odd rates take the direct path.
    assert exact_path_fits(from_sr, 32000) and exact_path_fits(32000, 16000)


@pytest.mark.parametrize(
    "from_sr,to_sr", [(44100, 32000), (22050, 16000), (8000, 32000), (11025, 32000), (32000, 16000)]
)
def test_direct_path_computes_the_same_filter(from_sr, to_sr):
    x = 0.5 * torch.randn(2, from_sr // 2, generator=torch.Generator().manual_seed(3))
    exact, direct = polyphase_resample(x, from_sr, to_sr), direct_resample(x, from_sr, to_sr)
    assert direct.shape == exact.shape
    torch.testing.assert_close(direct, exact, atol=1e-6, rtol=0)  # float32 summation order only


@pytest.mark.slow
@pytest.mark.parametrize("from_sr", [44101, 44056, 8001, 383999])
def test_coprime_rates_take_the_bounded_path_and_stay_accurate(from_sr):
    assert not exact_path_fits(from_sr, 32000)
    with pytest.raises(ValueError, match="too large to build"):
        polyphase_kernel(from_sr, 32000)  # the 1.4 G-tap bank of 44,101 Hz is never allocated
    y = resample(tone(1000, from_sr, seconds=0.5), from_sr, 32000)
    assert y.shape == (resample_length(from_sr // 2, from_sr, 32000),)
    amp, residual = fit_tone(y, 1000, 32000)
    assert amp == pytest.approx(0.5, abs=1e-3) and residual < 1e-4
