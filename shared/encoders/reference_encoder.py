"""A voice's recording -> what the graph needs of it: prompt tokens, reference spectrogram, speaker
embedding (the reference node's model work, as a library engine).

* prompt tokens: CN-HuBERT features of the 16 kHz recording through the voice's SoVITS quantizer
  (its own weights when the voice names them; an LRU of ``max_models``); none for a reference-free
  voice (empty prompt text);
* spectrogram: the linear STFT of the 32 kHz recording, [1025, F] float32;
* speaker embedding: ERes2NetV2 [20480] for v2Pro/v2ProPlus, else None;
* reference mel (v3/v4): the normalised 100-band log-mel the flow-matching model is prompted
  with, from the recording at its own rate (24 kHz mels for v3, 32 kHz for v4), else None.

``nodes/reference.py`` serves :meth:`ReferenceEncoder.encode` (cached by content there); the
benchmark calls it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model_cache import ModelCache
from ..voices import Voice


@dataclass
class VoiceFeatures:
    prompt_semantic: np.ndarray  # int64 [P]; empty for a reference-free voice
    spectrogram: np.ndarray  # float32 [1025, F]
    speaker_embedding: np.ndarray | None  # float32 [20480] for v2Pro/v2ProPlus
    reference_mel: np.ndarray | None = None  # float32 [100, F] for v3/v4


def is_pro(sovits: Any) -> bool:
    return sovits.version.model_version in ("v2Pro", "v2ProPlus")


def is_flow_matching(sovits: Any) -> bool:
    return sovits.version.is_flow_matching


class ReferenceEncoder:
    """``hubert``: a CN-HuBERT model object for ``encoders.hubert`` (torch or an exported graph);
    ``sovits``: the graph's SoVITS model (its quantizer makes the prompt tokens); ``sv_model``: the
    speaker-verification model (v2Pro/v2ProPlus) or None."""

    def __init__(
        self,
        hubert: Any,
        sovits: Any,
        sv_model: Any = None,
        device: torch.device = torch.device("cpu"),
        sovits_path: Path | None = None,
        open_sovits: Callable[[Path], Any] | None = None,
        max_models: int | None = None,
    ):
        self.hubert = hubert
        self.sovits = sovits
        self.sv_model = sv_model
        self.device = device
        self.sovits_models = ModelCache(
            open_sovits or _no_own_weights, sovits, sovits_path, capacity=max_models, kind="SoVITS"
        )

    @classmethod
    def load(
        cls,
        hubert: Any,
        sovits: Any,
        sovits_path: Path,
        sv_path: Path | None,
        device: torch.device,
        dtype: torch.dtype,
        max_models: int | None = None,
    ) -> ReferenceEncoder:
        """The encoder over loaded models; loads the speaker-verification model when ``sovits`` is a
        v2Pro/v2ProPlus model (``sv_path``), and a voice's own SoVITS weights on first use."""
        from ..sovits.loader import load_sovits

        sv_model = None
        if is_pro(sovits):
            from .speaker_verification import load_speaker_verification

            sv_model = load_speaker_verification(sv_path, device=device, dtype=dtype)
        return cls(
            hubert,
            sovits,
            sv_model,
            device,
            sovits_path,
            lambda p: load_sovits(p, device=device, dtype=dtype),
            max_models,
        )

    @torch.inference_mode()
    def encode(self, voice: Voice) -> VoiceFeatures:
        from ..audio.reference_audio import load_reference
        from ..audio.spectrogram import reference_spectrogram
        from .hubert import hubert_features

        audio = load_reference(voice.ref_audio)
        spec = reference_spectrogram(audio.wav32k[None].float())[0]
        tokens = np.zeros(0, dtype=np.int64)
        if voice.prompt_text.strip():
            ssl = hubert_features(self.hubert, audio.wav16k)
            quantizer = self.sovits_models.get(voice.sovits_weights)
            tokens = quantizer.extract_prompt_codes(ssl)[0, 0].cpu().numpy().astype(np.int64)
        embedding = None
        if self.sv_model is not None:
            from .speaker_verification import speaker_embedding

            embedding = speaker_embedding(self.sv_model, audio.wav16k.to(self.device)).float().cpu().numpy()
        mel = None
        if is_flow_matching(self.sovits):
            from ..sovits.mel_synthesis import reference_mel

            mel = reference_mel(audio.mono, audio.source_sr, self.sovits.version.model_version)[0].numpy()
        return VoiceFeatures(tokens, spec.float().cpu().numpy(), embedding, mel)

    __call__ = encode


def _no_own_weights(path: Path) -> Any:
    raise ValueError(f"{path}: this reference encoder cannot open a voice's own SoVITS weights")
