import math

import numpy as np
import pytest
import torch

from dora_gpt_sovits.audio.synthetic_voice import speech_like_signal
from dora_gpt_sovits.checkpoint_io import CheckpointError, read_checkpoint
from dora_gpt_sovits.devmodels.speaker_verification import write_random_sv
from dora_gpt_sovits.encoders.fbank import (
    DEFAULT_OPTIONS,
    FLT_EPSILON,
    fbank,
    mel_filterbank,
    mel_scale,
    num_frames,
)
from dora_gpt_sovits.encoders.speaker_verification import (
    EMBEDDING_DIM,
    checkpoint_keys,
    load_speaker_verification,
    speaker_embedding,
)

# torchaudio 2.8 ``compliance.kaldi.fbank(x, num_mel_bins=80, sample_frequency=16000, dither=0)`` of the
# float64 chirp below (upstream's eres2net/kaldi.py is a copy of it): frame 1 bins ::8, frame 2 bins 3::8.
TORCHAUDIO_FBANK_FRAME1 = [
    -11.361204,
    -11.631664,
    -3.370039,
    -13.196519,
    -9.05524,
    -1.328629,
    3.580415,
    5.478383,
    4.265152,
    -9.79478,
]
TORCHAUDIO_FBANK_FRAME2 = [
    -14.628514,
    -5.845797,
    -10.142409,
    -15.942385,
    -15.942385,
    -13.138277,
    -6.207323,
    4.026866,
    6.375431,
    0.06926,
]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    # The CI box has 2 cores shared with other jobs; a 2-thread OpenMP pool then waits on a descheduled
    # thread at every op barrier and runs ~20x slower than one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def chirp_with_tone() -> torch.Tensor:
    t = torch.arange(800, dtype=torch.float64) / 16000
    chirp = torch.sin(2 * math.pi * (100 * t + 0.5 * 150000 * t**2))  # 100 Hz → 7.6 kHz in 50 ms
    return 0.3 * chirp + 0.1 * torch.sin(2 * math.pi * 440 * t)


def voice16k(seconds: float, f0: float = 140.0, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(speech_like_signal(seconds, 16000, f0=f0, seed=seed))


def band_centres_hz() -> np.ndarray:
    lo, hi = mel_scale(20.0), mel_scale(8000.0)
    mels = lo + (hi - lo) / 81 * np.arange(1, 81)
    return 700.0 * (np.exp(mels / 1127.0) - 1.0)


# ---------------------------------------------------------------- fbank


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 48000])
def test_frame_count_is_snip_edges_formula(n):
    assert fbank(torch.zeros(n)).shape == (1 + (n - 400) // 160, 80) == (num_frames(n), 80)


def test_too_short_for_one_frame():
    assert num_frames(399) == 0
    with pytest.raises(ValueError):
        fbank(torch.zeros(399))


def test_mel_filterbank_layout():
    bank = mel_filterbank(DEFAULT_OPTIONS).double()
    assert bank.shape == (80, 257)
    assert (bank >= 0).all() and (bank[:, -1] == 0).all()  # Nyquist bin unused, as Kaldi
    freqs = np.arange(257) * 16000 / 512
    assert (bank[:, freqs <= 20.0] == 0).all()
    # each filter peaks at the FFT bin nearest its mel centre
    centres = band_centres_hz()
    peaks = bank.argmax(dim=1).numpy()
    assert np.all(np.abs(freqs[peaks] - centres) <= 16000 / 512)
    # neighbouring triangles cross-fade linearly in mel: they sum to one between the outer centres
    inner = (freqs > centres[0]) & (freqs < centres[-1])
    total = bank[:, inner].sum(0)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_pure_tone_lands_in_the_nearest_band(freq):
    t = torch.arange(16000) / 16000
    feats = fbank(0.5 * torch.sin(2 * math.pi * freq * t))
    centres_mel = 1127.0 * np.log1p(band_centres_hz() / 700.0)
    expected = int(np.argmin(np.abs(mel_scale(freq) - centres_mel)))
    assert (feats.argmax(dim=1) == expected).float().mean() == 1.0


def test_gain_adds_a_constant_log_offset_and_silence_hits_the_floor():
    x = voice16k(0.5)
    loud, quiet = fbank(2 * x), fbank(x)
    above_floor = quiet > -10
    offset = (loud - quiet)[above_floor]
    torch.testing.assert_close(offset, torch.full_like(offset, math.log(4)), atol=1e-4, rtol=0)
    assert torch.equal(fbank(torch.zeros(1600)), torch.full((8, 80), math.log(FLT_EPSILON)))
    # a constant (DC) signal is removed per frame before anything else
    assert torch.equal(fbank(torch.full((1600,), 0.3)), torch.full((8, 80), math.log(FLT_EPSILON)))


def test_matches_torchaudio_kaldi_golden_values():
    x = chirp_with_tone()
    out64 = fbank(x)
    assert out64.dtype == torch.float64 and out64.shape == (3, 80)
    assert out64[1, ::8].tolist() == pytest.approx(TORCHAUDIO_FBANK_FRAME1, abs=5e-4)
    assert out64[2, 3::8].tolist() == pytest.approx(TORCHAUDIO_FBANK_FRAME2, abs=5e-4)
    # float32 only differs in near-floor bands, where single-precision FFT noise dominates
    out32 = fbank(x.float())
    assert out32.dtype == torch.float32
    assert out32[1, ::8].tolist() == pytest.approx(TORCHAUDIO_FBANK_FRAME1, abs=5e-3)


def test_matches_kaldi_native_fbank():
    knf = pytest.importorskip("kaldi_native_fbank", reason="independent Kaldi implementation not installed")
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 80
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    x = voice16k(1.0, seed=3)
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, x.tolist())
    online.input_finished()
    reference = torch.tensor(np.array([online.get_frame(i) for i in range(online.num_frames_ready)]))
    ours = fbank(x)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() < 1e-3


# ---------------------------------------------------------------- checkpoint format and loader


@pytest.fixture(scope="module")
def dev_checkpoint(tmp_path_factory):
    return write_random_sv(tmp_path_factory.mktemp("sv") / "pretrained_eres2netv2w24s4ep4.ckpt", seed=0)


@pytest.fixture(scope="module")
def model(dev_checkpoint):
    return load_speaker_verification(dev_checkpoint)


def shape_only_checkpoint(path, drop=(), add=None, reshape=None, counters=True):
    """An official-layout file whose tensors are stride-0 views of one zero, so it is tiny."""
    state = {k: torch.zeros(()).expand(shape) for k, shape in checkpoint_keys().items() if k not in drop}
    if counters:
        for key in [k for k in state if k.endswith("running_mean")]:
            state[key[: -len("running_mean")] + "num_batches_tracked"] = torch.tensor(1)
    state.update(add or {})
    for k, shape in (reshape or {}).items():
        state[k] = torch.zeros(()).expand(shape)
    torch.save(state, path)
    return path


def test_dev_state_dict_has_the_official_layout(dev_checkpoint):
    state = read_checkpoint(dev_checkpoint).content
    assert len(state) == 1001  # as ERes2NetV2(baseWidth=24, scale=4, expansion=4).state_dict()
    assert state["conv1.weight"].shape == (64, 1, 3, 3)
    assert state["layer1.0.shortcut.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer3.5.fuse_models.2.local_att.0.weight"].shape == (24, 192, 1, 1)
    assert state["layer4.0.convs.3.weight"].shape == (192, 192, 3, 3)
    assert state["layer3_ds.weight"].shape == (2048, 1024, 3, 3)
    assert state["fuse34.local_att.3.bias"].shape == (2048,)
    assert state["seg_1.weight"].shape == (192, 40960)
    assert state["bn1.num_batches_tracked"].dtype == torch.int64
    params = sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
    assert 53e6 < params < 54e6
    variances = torch.cat([v for k, v in state.items() if k.endswith("running_var")])
    assert (variances > 0).all() and torch.isfinite(variances).all()


def test_round_trip_and_batchnorm_folding(dev_checkpoint, model):
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    unfolded = load_speaker_verification(dev_checkpoint, fold_bn=False)
    x = voice16k(0.4)
    a, b = speaker_embedding(model, x), speaker_embedding(unfolded, x)
    torch.testing.assert_close(a, b, atol=1e-5 * float(b.abs().max()), rtol=1e-5)


def test_missing_key_is_named(tmp_path):
    path = shape_only_checkpoint(tmp_path / "m.ckpt", drop=("layer2.1.convs.2.weight",))
    with pytest.raises(CheckpointError, match=r"missing 1: layer2\.1\.convs\.2\.weight") as info:
        load_speaker_verification(path)
    assert "\n" not in str(info.value)


def test_unexpected_key_is_named(tmp_path):
    path = shape_only_checkpoint(tmp_path / "u.ckpt", add={"seg_bn_1.weight": torch.zeros(192)})
    with pytest.raises(CheckpointError, match=r"unexpected 1: seg_bn_1\.weight"):
        load_speaker_verification(path)


def test_wrong_shape_is_named(tmp_path):
    path = shape_only_checkpoint(tmp_path / "s.ckpt", reshape={"layer1.0.conv1.weight": (64, 64, 1, 1)})
    expected = r"layer1\.0\.conv1\.weight \(64, 64, 1, 1\) != \(96, 64, 1, 1\)"
    with pytest.raises(CheckpointError, match=expected):
        load_speaker_verification(path)


def test_counters_are_optional(tmp_path):
    path = shape_only_checkpoint(tmp_path / "c.ckpt", counters=False)
    load_speaker_verification(path)


def test_truncated_and_foreign_files(tmp_path):
    whole = shape_only_checkpoint(tmp_path / "w.ckpt").read_bytes()
    truncated = tmp_path / "t.ckpt"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_speaker_verification(truncated)
    wrapped = tmp_path / "wrapped.ckpt"
    torch.save({"model": {"conv1.weight": torch.zeros(64, 1, 3, 3)}}, wrapped)
    with pytest.raises(CheckpointError, match="not an ERes2NetV2 state_dict"):
        load_speaker_verification(wrapped)
    with pytest.raises(CheckpointError, match="not found"):
        load_speaker_verification(tmp_path / "absent.ckpt")


# ---------------------------------------------------------------- embeddings


def test_embedding_shape_finite_deterministic(model):
    x = voice16k(0.6)
    e = speaker_embedding(model, x)
    assert e.shape == (EMBEDDING_DIM,) and e.dtype == torch.float32
    assert torch.isfinite(e).all() and e.std() > 0
    assert torch.equal(e, speaker_embedding(model, x.clone()))


def test_different_voices_give_different_embeddings(model):
    cos = torch.nn.functional.cosine_similarity
    low_a, low_b = (speaker_embedding(model, voice16k(0.6, 110, seed=s)) for s in (0, 5))
    high_a, high_b = (speaker_embedding(model, voice16k(0.6, 220, seed=s)) for s in (0, 7))
    same = min(float(cos(low_a, low_b, 0)), float(cos(high_a, high_b, 0)))
    different = max(float(cos(low_a, high_a, 0)), float(cos(low_b, high_b, 0)))
    # measured with the seed-0 dev model: same voice ≈ 0.82–0.90, different voices ≈ 0.67–0.69
    assert same > different + 0.08


@pytest.mark.parametrize("dtype,min_cosine", [(torch.float16, 0.9995), (torch.bfloat16, 0.995)])
def test_half_precision_loading(dev_checkpoint, model, dtype, min_cosine):
    half = load_speaker_verification(dev_checkpoint, dtype=dtype)
    assert next(half.parameters()).dtype == dtype
    x = voice16k(0.06)  # CPU half convolutions are slow; 4 frames still pass through every layer
    e = speaker_embedding(half, x)
    assert e.dtype == dtype and e.shape == (EMBEDDING_DIM,) and torch.isfinite(e.float()).all()
    reference = speaker_embedding(model, x)
    # bf16 keeps 8 mantissa bits, fp16 11: measured cosines ≈ 0.9992 and 0.99999
    assert float(torch.nn.functional.cosine_similarity(e.float(), reference, 0)) > min_cosine
