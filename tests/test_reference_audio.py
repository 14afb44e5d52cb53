import hashlib

import numpy as np
import pytest
import soundfile as sf
import torch

from dora_gpt_sovits.audio.reference_audio import ReferenceAudioError, content_hash, load_reference
from dora_gpt_sovits.audio.resample import resample, resample_length
from dora_gpt_sovits.audio.synthetic_voice import speech_like_signal


def write(tmp_path, name, data, sr, **kwargs):
    path = tmp_path / name
    sf.write(path, data, sr, **kwargs)
    return path


def voice(seconds=4.0, sr=32000, **kwargs):
    return speech_like_signal(seconds, sr, **kwargs)


def refused(path, *words):
    with pytest.raises(ReferenceAudioError) as info:
        load_reference(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message
    return message


def test_mono_32k_wav_is_passed_through_and_downsampled(tmp_path):
    x = voice(4.0, 32000)
    ref = load_reference(write(tmp_path, "a.wav", x, 32000, subtype="FLOAT"))
    assert ref.source_sr == 32000 and ref.duration_s == pytest.approx(4.0)
    assert ref.wav32k.dtype == torch.float32 and ref.wav32k.shape == (128000,)
    torch.testing.assert_close(ref.wav32k, torch.from_numpy(x))
    torch.testing.assert_close(ref.wav16k, resample(ref.wav32k, 32000, 16000))
    assert ref.wav16k.shape == (64000,)


@pytest.mark.parametrize("sr", [44100, 48000, 8000, 22050])
def test_stereo_at_common_rates_is_mixed_and_resampled(tmp_path, sr):
    left, right = voice(3.5, sr, f0=120), voice(3.5, sr, f0=180, seed=4)
    path = write(tmp_path, "s.wav", np.stack([left, right], axis=1), sr)  # 16-bit PCM
    ref = load_reference(path)
    stored, _ = sf.read(path, dtype="float32")
    expected = resample(torch.from_numpy(stored.mean(axis=1)), sr, 32000)
    assert ref.wav32k.shape == (112000,) and ref.wav16k.shape == (56000,)
    torch.testing.assert_close(ref.wav32k, expected, atol=1e-6, rtol=0)
    assert ref.source_sr == sr


def test_more_than_two_channels_are_averaged(tmp_path):
    chans = np.stack([voice(3.2, 16000, seed=i) for i in range(4)], axis=1)
    ref = load_reference(write(tmp_path, "quad.wav", chans, 16000, subtype="FLOAT"))
    torch.testing.assert_close(ref.wav32k, resample(torch.from_numpy(chans.mean(1)), 16000, 32000))


@pytest.mark.parametrize("ext,fmt", [("flac", "FLAC"), ("ogg", "OGG"), ("mp3", "MP3")])
def test_compressed_formats(tmp_path, ext, fmt):
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} has no {fmt} support")
    path = write(tmp_path, f"v.{ext}", voice(4.0, 48000), 48000)
    ref = load_reference(path)
    assert abs(ref.duration_s - 4.0) < 0.1  # lossy codecs may pad a frame
    assert ref.wav32k.abs().max() == pytest.approx(0.6, abs=0.1)


def test_loud_float_file_is_normalised_like_upstream(tmp_path):
    x = voice(4.0, 32000, peak=1.5)
    ref = load_reference(write(tmp_path, "loud.wav", x, 32000, subtype="FLOAT"))
    assert float(ref.wav32k.abs().max()) == pytest.approx(1.0, abs=1e-6)
    very = voice(4.0, 32000, peak=3.0)
    ref = load_reference(write(tmp_path, "very.wav", very, 32000, subtype="FLOAT"))
    # divided by min(2, peak): the peak stays above 1
    assert float(ref.wav32k.abs().max()) == pytest.approx(1.5, abs=1e-6)
    quiet = load_reference(write(tmp_path, "q.wav", voice(4.0, 32000, peak=0.3), 32000, subtype="FLOAT"))
    assert float(quiet.wav32k.abs().max()) == pytest.approx(0.3, abs=1e-6)


def test_missing_directory_and_non_audio_files(tmp_path):
    refused(tmp_path / "nope.wav", "not found")
    refused(tmp_path, "not a file")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 100)
    refused(text, "not a readable audio file")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    refused(empty)


def test_truncated_header(tmp_path):
    path = write(tmp_path, "t.wav", voice(4.0, 16000), 16000)
    path.write_bytes(path.read_bytes()[:30])
    refused(path)


def test_duration_limits(tmp_path):
    refused(write(tmp_path, "short.wav", voice(2.5, 16000), 16000), "too short", "2.50 s")
    message = refused(write(tmp_path, "long.wav", voice(10.5, 16000), 16000), "too long", "trim")
    assert "10.50 s" in message
    refused(write(tmp_path, "huge.wav", np.zeros(16000 * 30, np.float32), 16000), "too long")
    # upstream's inclusive bounds: exactly 3 s and exactly 10 s are accepted
    assert load_reference(write(tmp_path, "three.wav", voice(3.0, 44100), 44100)).wav16k.shape == (48000,)
    assert load_reference(write(tmp_path, "ten.wav", voice(10.0, 16000), 16000)).wav16k.shape == (160000,)


def test_silent_and_near_silent(tmp_path):
    refused(write(tmp_path, "zero.wav", np.zeros(16000 * 4, np.float32), 16000), "silent")
    refused(write(tmp_path, "hiss.wav", voice(4.0, 16000, peak=5e-4), 16000, subtype="FLOAT"), "silent")
    clicks = np.zeros(16000 * 4, np.float32)
    clicks[1000::8000] = 0.5  # a few clicks in silence are not a voice
    refused(write(tmp_path, "click.wav", clicks, 16000, subtype="FLOAT"), "almost no sound")
    # quiet but real speech (peak -40 dBFS) is accepted
    quiet = write(tmp_path, "quiet.wav", voice(4.0, 16000, peak=0.01), 16000)
    assert load_reference(quiet).source_sr == 16000


def test_heavy_clipping(tmp_path):
    clipped = np.clip(voice(4.0, 16000) * 6, -1, 1)
    refused(write(tmp_path, "clip.wav", clipped, 16000), "clipped")
    # a peak-normalised recording touching full scale a few times is fine
    ok = voice(4.0, 16000, peak=1.0)
    assert load_reference(write(tmp_path, "full.wav", ok, 16000)).source_sr == 16000


def test_nan_and_inf(tmp_path):
    x = voice(4.0, 16000)
    x[100], x[200] = np.nan, np.inf
    refused(write(tmp_path, "nan.wav", x, 16000, subtype="FLOAT"), "NaN/inf", "2 ")


def test_content_hash(tmp_path):
    path = write(tmp_path, "h.wav", voice(3.5, 16000), 16000)
    assert content_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    other = write(tmp_path, "h2.wav", voice(3.5, 16000, seed=9), 16000)
    assert content_hash(other) != content_hash(path)
    with pytest.raises(ReferenceAudioError, match="not found"):
        content_hash(tmp_path / "missing.wav")


# --- paths that are not regular files, sample rates, "not a voice" (issue #15, class 4) ---


def finishes(call):
    """Run ``call`` in a thread; return its exception. A hang is a failure, not a stuck suite: the
    60 s guard is for a call that takes milliseconds (it only matters if it blocks for ever)."""
    import threading

    outcome = {}

    def run():
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "blocked on a path that is not a regular file"
    return outcome.get("error")


@pytest.mark.parametrize("call", [load_reference, content_hash], ids=["load", "hash"])
def test_fifo_and_devices_are_refused_without_reading(tmp_path, call):
    import os

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    link = tmp_path / "link.wav"
    link.symlink_to(fifo)
    for path, kind in ((fifo, "FIFO"), (link, "FIFO"), ("/dev/zero", "character device")):
        error = finishes(lambda path=path: call(path))
        assert isinstance(error, ReferenceAudioError), error
        assert "not a file" in str(error) and kind in str(error) and str(path) in str(error)


@pytest.mark.parametrize("call", [load_reference, content_hash], ids=["load", "hash"])
def test_oversized_file_is_refused_before_reading(tmp_path, call):
    path = tmp_path / "big.wav"
    with open(path, "wb") as f:
        f.truncate(129 << 20)  # sparse: no disk used, never read
    with pytest.raises(ReferenceAudioError, match="too large .*129.0 MiB"):
        call(path)


@pytest.mark.parametrize("sr, words", [(1, "1 Hz is too low"), (4000, "4000 Hz is too low"), (400000, "above 384000")])
def test_sample_rates_outside_8_to_384_khz_are_refused(tmp_path, sr, words):
    samples = 5 if sr == 1 else int(sr * 4)  # the case: 5 samples at 1 Hz "last" 5 s
    data = voice(4.0, 8000)[:samples] if sr == 1 else speech_like_signal(4.0, sr)
    refused(write(tmp_path, "rate.wav", data, sr, subtype="FLOAT"), words)


@pytest.mark.slow
def test_a_coprime_rate_reference_is_resampled_through_the_bounded_path(tmp_path):
    # 44,101 Hz asked the exact resampler for an 11.3 GB filter bank; now it takes the direct path.
    sr = 44101
    path = write(tmp_path, "odd.wav", voice(3.5, sr), sr, subtype="FLOAT")
    ref = load_reference(path)
    stored, _ = sf.read(path, dtype="float32")
    assert ref.wav32k.shape == (resample_length(len(stored), sr, 32000),) == (112001,)
    torch.testing.assert_close(ref.wav32k, resample(torch.from_numpy(stored), sr, 32000))


def test_a_dc_offset_is_not_a_voice(tmp_path):
    refused(
        write(tmp_path, "dc.wav", np.full(16000 * 5, 0.5, np.float32), 16000, subtype="FLOAT"),
        "constant level",
        "DC offset 0.5",
        "not a voice",
    )
    clicks = np.full(16000 * 4, -0.4, np.float32)
    clicks[1000::8000] = 0.5  # an offset does not count as sound, so this is still a few clicks
    refused(write(tmp_path, "dcclick.wav", clicks, 16000, subtype="FLOAT"), "almost no sound")
    # a real voice riding on an offset is still a voice
    offset = write(tmp_path, "offset.wav", voice(4.0, 16000, peak=0.5) + 0.3, 16000, subtype="FLOAT")
    assert load_reference(offset).source_sr == 16000


def test_decoded_size_is_bounded_before_decoding():
    from dora_gpt_sovits.audio.reference_audio import MAX_DECODED_SAMPLES, check_decoded_size

    check_decoded_size(10 * 384000, 8, "x.wav")  # 10 s at 384 kHz in 8 channels fits
    with pytest.raises(ReferenceAudioError, match=r"x.wav: .*\(1024 channels\)"):
        check_decoded_size(MAX_DECODED_SAMPLES // 1000, 1024, "x.wav")
