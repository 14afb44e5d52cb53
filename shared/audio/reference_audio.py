"""Loading and validating a reference voice recording.

A reference is read with libsndfile (WAV, FLAC, OGG/Vorbis/Opus, MP3 with libsndfile >= 1.1, AIFF, …)
at its native rate with any channel count; channels are averaged. As upstream GPT-SoVITS does, the
mix is resampled to 32 kHz with torchaudio's default sinc filter (our :func:`resample`), divided by
``min(2, peak)`` when its peak exceeds 1, and resampled from that 32 kHz signal to 16 kHz.
``wav32k`` feeds the reference spectrogram, ``wav16k`` the speaker-verification and HuBERT encoders
(upstream's HuBERT path decodes the file again with librosa's soxr resampler straight to 16 kHz; the
two 16 kHz signals differ only near 8 kHz, inside the resamplers' transition bands).

Refused, each with a one-line :class:`ReferenceAudioError` naming the file:

* missing or unreadable files, paths that are not regular files (a FIFO or ``/dev/zero`` would
  block the node for ever: checked on the open descriptor before anything is read or hashed),
  files over 128 MiB, and files that are not audio;
* sample rates outside 8–384 kHz. 8 kHz (telephone band, 4 kHz of audio) is the least that still
  carries the formants and fricatives a voice is recognised by; the encoders work at 16 kHz. A
  1 Hz "recording" of 5 samples would otherwise pass the duration rule as 5 s. 384 kHz is the
  highest rate audio hardware records at, and it bounds the resampling work per second;
* more than 2^25 decoded samples (frames × channels, 128 MiB as float32), before decoding: a 10 s
  file at 384 kHz with 8 channels is 31 M; a header claiming 1024 channels is not a voice;
* NaN/inf samples;
* shorter than 3 s or longer than 10 s. Upstream refuses references outside 3–10 s (measured in
  16 kHz samples, 48000..160000 inclusive) because the prompt semantic tokens and the GPT prefix
  are trained on that range; longer prompts also slow every request. Trim a long recording to
  3–10 s of clean speech rather than expecting us to cut it;
* silence: peak below 1e-3, or less than 0.5 s of 20 ms frames whose RMS reaches 1e-3 (−60 dBFS),
  e.g. a few clicks in silence; either would give a meaningless voice;
* a constant level (a DC offset and nothing else): the peak of the signal minus its mean is below
  1e-3. Frame activity is measured after removing each frame's mean, so an offset never counts as
  sound (a 20 ms frame's mean is the content below 50 Hz, where speech has none);
* heavy clipping: more than 1 % of samples within 0.1 % of full scale (full scale is 1.0, or the
  peak for float files that exceed 1.0), which colours the voice with distortion.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch

from dora_gpt_sovits.audio.resample import resample, resample_length
from dora_gpt_sovits.regular_file import open_regular_file

MODEL_SR = 32000
ENCODER_SR = 16000
MIN_SECONDS = 3.0
MAX_SECONDS = 10.0
SILENT_PEAK = 1e-3
ACTIVE_FRAME_RMS = 1e-3
ACTIVE_FRAME_SECONDS = 0.02
MIN_ACTIVE_SECONDS = 0.5
CLIP_LEVEL = 0.999
MAX_CLIPPED_FRACTION = 0.01
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 384000
MAX_FILE_BYTES = 128 << 20
MAX_DECODED_SAMPLES = 1 << 25


class ReferenceAudioError(ValueError):
    """A reference recording cannot be used; the message is one line and names the file."""


@dataclass(frozen=True)
class ReferenceAudio:
    wav32k: torch.Tensor  # float32 [n32], peak-normalised as upstream
    wav16k: torch.Tensor  # float32 [n16], resampled from wav32k
    duration_s: float  # of the source recording
    source_sr: int
    mono: torch.Tensor  # float32 [n]: the channel mean at source_sr, as decoded (v3/v4 reference mels)


def load_reference(path: str | os.PathLike[str]) -> ReferenceAudio:
    """Read, validate and resample a reference recording (see the module docstring)."""
    path = os.fspath(path)
    data, sr = read_audio(path)
    check_finite(data, path)
    check_duration(len(data), sr, path)
    check_clipping(data, path)
    mono = data.mean(axis=1)
    check_not_silent(mono, sr, path)
    wav32k = normalise_peak(resample(torch.from_numpy(mono), sr, MODEL_SR))
    wav16k = resample(wav32k, MODEL_SR, ENCODER_SR)
    return ReferenceAudio(wav32k.contiguous(), wav16k.contiguous(), len(data) / sr, sr, torch.from_numpy(mono).float())


def open_reference(path: str) -> BinaryIO:
    """The file opened for reading, once it is known to be a regular file of a sane size."""
    return open_regular_file(path, MAX_FILE_BYTES, "reference audio", ReferenceAudioError)


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """``(float32 [frames, channels], sample_rate)``; refuses absurd rates and sizes before decoding."""
    try:
        with open_reference(path) as raw, sf.SoundFile(raw) as f:
            check_sample_rate(f.samplerate, path)
            # Header lengths can be approximate (MP3), so only a clear excess is refused here.
            if f.frames > 0 and f.frames > 2 * MAX_SECONDS * f.samplerate:
                raise ReferenceAudioError(_too_long(path, f.frames / f.samplerate))
            check_decoded_size(f.frames, f.channels, path)
            data = f.read(dtype="float32", always_2d=True)
            sr = f.samplerate
    except ReferenceAudioError:
        raise
    except sf.LibsndfileError as e:
        raise ReferenceAudioError(f"{path}: not a readable audio file ({_first_line(e)})") from None
    except OSError as e:
        raise ReferenceAudioError(f"{path}: cannot read reference audio ({e.strerror or e})") from None
    except RuntimeError as e:  # libsndfile decode errors surface as RuntimeError in some versions
        raise ReferenceAudioError(f"{path}: cannot decode reference audio ({_first_line(e)})") from None
    if data.shape[0] == 0:
        raise ReferenceAudioError(f"{path}: reference audio contains no samples")
    return data, sr


def check_sample_rate(sr: int, path: str) -> None:
    """8-384 kHz (see the module docstring for why)."""
    if sr < MIN_SAMPLE_RATE:
        raise ReferenceAudioError(
            f"{path}: reference audio sample rate {sr} Hz is too low for a voice; record at 8 kHz or more (16 kHz or more is better)"
        )
    if sr > MAX_SAMPLE_RATE:
        raise ReferenceAudioError(f"{path}: reference audio sample rate {sr} Hz is above {MAX_SAMPLE_RATE} Hz")


def check_decoded_size(frames: int, channels: int, path: str) -> None:
    if frames * channels > MAX_DECODED_SAMPLES:
        raise ReferenceAudioError(
            f"{path}: reference audio would decode to {frames * channels} samples ({channels} channels); "
            f"at most {MAX_DECODED_SAMPLES}: use a mono or stereo 3-10 s recording"
        )


def check_finite(data: np.ndarray, path: str) -> None:
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ReferenceAudioError(f"{path}: reference audio contains {bad} NaN/inf samples")


def check_duration(num_samples: int, sr: int, path: str) -> None:
    """Upstream's rule on the 16 kHz length: 48000..160000 samples inclusive."""
    n16 = resample_length(num_samples, sr, ENCODER_SR)
    seconds = num_samples / sr
    if n16 < MIN_SECONDS * ENCODER_SR:
        raise ReferenceAudioError(f"{path}: reference audio is too short ({seconds:.2f} s); use 3-10 s of clean speech")
    if n16 > MAX_SECONDS * ENCODER_SR:
        raise ReferenceAudioError(_too_long(path, seconds))


def _too_long(path: str, seconds: float) -> str:
    return (
        f"{path}: reference audio is too long ({seconds:.2f} s); GPT-SoVITS accepts at most 10 s, "
        f"trim it to 3-10 s of clean speech"
    )


def check_clipping(data: np.ndarray, path: str) -> None:
    peak = float(np.max(np.abs(data)))
    level = CLIP_LEVEL * max(1.0, peak)
    fraction = float(np.count_nonzero(np.abs(data) >= level)) / data.size
    if fraction > MAX_CLIPPED_FRACTION:
        raise ReferenceAudioError(
            f"{path}: reference audio is heavily clipped ({100 * fraction:.1f}% of samples at full scale); "
            f"use a recording made at a lower level"
        )


def check_not_silent(mono: np.ndarray, sr: int, path: str) -> None:
    peak = float(np.max(np.abs(mono)))
    if peak < SILENT_PEAK:
        raise ReferenceAudioError(f"{path}: reference audio is silent (peak {peak:.2g})")
    offset = float(np.mean(mono, dtype=np.float64))
    if float(np.max(np.abs(mono - offset))) < SILENT_PEAK:
        raise ReferenceAudioError(
            f"{path}: reference audio is a constant level (DC offset {offset:.3g}) with no sound; not a voice"
        )
    active = active_seconds(mono, sr)
    if active < MIN_ACTIVE_SECONDS:
        raise ReferenceAudioError(f"{path}: reference audio contains almost no sound ({active:.2f} s above -60 dBFS)")


def active_seconds(mono: np.ndarray, sr: int) -> float:
    """Total length of the 20 ms frames whose RMS, after removing the frame's mean, reaches -60 dBFS."""
    hop = max(1, int(sr * ACTIVE_FRAME_SECONDS))
    frames = mono[: len(mono) // hop * hop].reshape(-1, hop).astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)  # a DC offset is not sound
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return float(np.count_nonzero(rms >= ACTIVE_FRAME_RMS)) * hop / sr


def normalise_peak(wav: torch.Tensor) -> torch.Tensor:
    """Upstream's only level change: if the peak exceeds 1, divide by ``min(2, peak)``."""
    peak = float(wav.abs().max())
    return wav / min(2.0, peak) if peak > 1.0 else wav


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of the file bytes (cache key for derived reference features)."""
    path = os.fspath(path)
    digest = hashlib.sha256()
    try:
        with open_reference(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise ReferenceAudioError(f"{path}: cannot read reference audio ({e.strerror or e})") from None
    return digest.hexdigest()


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]
