"""The vocoder as a library engine: a SoVITS model (any backend) -> per-voice conditioning ->
per-segment streaming decoders of token runs.

``nodes/vocoder.py`` serves it (its ``VocoderStage`` takes :meth:`VocoderEngine.condition` and
:meth:`VocoderEngine.make_decoder`); the benchmark and any in-process user call it directly.
:func:`load_torch_sovits` is the torch model exactly as the vocoder node runs it (``GSV_VOCODER_FFT``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model_cache import ModelCache
from .token_stream import RunDecoder


def load_torch_sovits(source: Path, device: torch.device, dtype: torch.dtype, env: Mapping[str, str] | None = None):
    """A SoVITS checkpoint on torch as the vocoder node runs it: the generator's long convolutions
    in the frequency domain on a CPU in float32 (``GSV_VOCODER_FFT``); on a CPU the generator runs on
    bucketed lengths (``cpu_generator.py``), and where a half dtype is asked for only the generator
    takes it, on the matrix units where the CPU has them — the text encoder and flow cost a few %
    and stay float32, as every part does on a CPU without them."""
    from .cpu_generator import for_cpu
    from .loader import load_sovits
    from .spectral_conv import spectral_convs_wanted

    on_cpu = torch.device(device).type == "cpu"
    model = load_sovits(source, device=device, dtype=torch.float32 if on_cpu else dtype)
    model.dec.use_spectral_convs(spectral_convs_wanted(os.environ if env is None else env, device, model.dtype))
    if on_cpu:
        model.dec = for_cpu(model.dec, dtype)
    return model


class VocoderEngine:
    """A vocoder (``backends.stages.VocoderBackend``) plus the voices' own SoVITS weights (an LRU of
    ``max_models``, opened by ``open_weights`` on the same backend) and the decode knobs."""

    extra_voice_ports: tuple[str, ...] = ()  # a voice needs only its spectrogram (+ embedding for Pro)

    def __init__(
        self,
        vocoder: Any,
        open_weights: Callable[[Path], Any] | None = None,
        source: Path | None = None,
        noise_scale: float = 0.5,
        speed: float = 1.0,
        max_models: int | None = None,
    ):
        self.vocoder = vocoder
        self.noise_scale = noise_scale
        self.speed = speed
        self.models = ModelCache(open_weights or _no_own_weights, vocoder, source, capacity=max_models, kind="SoVITS")

    @classmethod
    def open(
        cls, source: Path, choice: Any, noise_scale: float = 0.5, speed: float = 1.0, max_models: int | None = None
    ) -> tuple[VocoderEngine, Any]:
        """The vocoder of ``source`` on ``choice`` (a ``BackendChoice``, fallbacks included); returns
        the engine and the choice that was used. Raises ``BackendError`` with the reason."""
        from ..backends.registry import open_stage
        from ..backends.stages import vocoder_builders

        vocoder, used = open_stage("vocoder", choice, vocoder_builders(source))
        return cls.for_backend(vocoder, used, source, noise_scale, speed, max_models), used

    @classmethod
    def for_backend(
        cls,
        vocoder: Any,
        choice: Any,
        source: Path,
        noise_scale: float = 0.5,
        speed: float = 1.0,
        max_models: int | None = None,
    ) -> VocoderEngine:
        """An engine over an opened vocoder; a voice's own weights open on the same backend (an ONNX
        backend needs their export: docs/backends.md)."""
        from ..backends.stages import vocoder_builders

        return cls(
            vocoder, lambda p: vocoder_builders(p)[choice.backend](choice), source, noise_scale, speed, max_models
        )

    @property
    def sample_rate(self) -> int:
        return self.vocoder.sampling_rate

    @property
    def needs_speaker_embedding(self) -> bool:
        return self.vocoder.is_pro

    @property
    def model_version(self) -> str:
        return self.vocoder.model_version

    def condition(self, spec: np.ndarray, sv: np.ndarray | None, weights: str = "") -> Any:
        """A voice's conditioning: (spectrogram [1025, F], speaker embedding [20480] or None[, its own
        SoVITS file]) -> what :meth:`make_decoder` takes."""
        voice = self.models.get(weights)
        if voice.sampling_rate != self.vocoder.sampling_rate:
            raise ValueError(
                f"{weights} runs at {voice.sampling_rate} Hz, this graph at {self.vocoder.sampling_rate} Hz"
            )
        return voice.chunks, voice.condition(spec, sv)

    def make_decoder(
        self, voice: Any, phone_ids: np.ndarray, seed: int, request_speed: float | None = None
    ) -> RunDecoder:
        """A decoder of one segment's token runs: (history, run, lookahead, position) -> (samples, tail)."""
        from .streaming import decode_chunk

        voice_model, cond = voice
        phones = torch.from_numpy(phone_ids)[None]
        segment_speed = self.speed if request_speed is None else request_speed
        noise_scale = self.noise_scale

        def decode(history: np.ndarray, run: np.ndarray, lookahead: np.ndarray, position: int):
            out = decode_chunk(
                voice_model,
                cond,
                phones,
                torch.from_numpy(history),
                torch.from_numpy(run),
                torch.from_numpy(lookahead),
                position=position,
                speed=segment_speed,
                noise_scale=noise_scale,
                noise_seed=seed,
            )
            return out.samples.reshape(-1), out.tail.reshape(-1)

        return decode

    def warm_up(self) -> None:
        """The first decode pays one-off costs (allocator, kernels): pay them before serving."""
        spec = np.ones((1025, 50), np.float32)
        voice = self.condition(spec, np.zeros(20480, np.float32) if self.needs_speaker_embedding else None)
        self.make_decoder(voice, np.arange(1, 9), 0, None)(
            np.zeros(0, np.int64), np.arange(12), np.zeros(0, np.int64), 0
        )


def _no_own_weights(path: Path) -> Any:
    raise ValueError(f"{path}: this vocoder engine cannot open a voice's own weights")
