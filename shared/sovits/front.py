"""What every SoVITS generation has before its decoder: the prompt codebook, the text encoder and
the reference (style) encoder. ``Synthesizer`` (v1/v2/Pro) and ``MelSynthesizer`` (v3/v4) build on it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import SoVITSConfig
from .quantizer import SemanticCodebook
from .style_encoder import MelStyleEncoder
from .text_encoder import TextEncoder
from .version import SoVITSVersion

SSL_DIM = 768


class SoVITSFront(nn.Module):
    def __init__(self, config: SoVITSConfig):
        super().__init__()
        self.config = config
        self.version: SoVITSVersion | None = None  # set by the loader
        self.load_seconds: float | None = None  # set by the loader
        c = config
        self.ssl_proj = nn.Conv1d(SSL_DIM, SSL_DIM, 2, stride=2)
        self.quantizer = SemanticCodebook(1024, SSL_DIM)
        self.enc_p = TextEncoder(
            c.inter_channels, c.hidden_channels, c.filter_channels, c.n_heads, c.n_layers, c.kernel_size, c.n_symbols
        )
        self.ref_enc = MelStyleEncoder(c.ref_enc_bins, c.gin_channels)

    @property
    def dtype(self) -> torch.dtype:
        return self.ssl_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.ssl_proj.weight.device

    def semantic_frames(self, codes: Tensor) -> Tensor:
        """codes [1, 1, T25] -> codebook vectors at 50 Hz [1, 768, 2*T25] (each token held for 2 frames)."""
        vectors = self.quantizer.decode(codes.to(self.device))  # [1, 768, T25]
        # = repeat_interleave(vectors, 2, dim=-1), written as expand+reshape: the ONNX export of
        # repeat_interleave came out wrong once combined with the text encoder.
        return vectors.unsqueeze(-1).expand(*vectors.shape, 2).reshape(*vectors.shape[:-1], -1)

    @torch.inference_mode()
    def extract_prompt_codes(self, hubert_features: Tensor) -> Tensor:
        """HuBERT last hidden state [1, 768, F] (50 Hz) -> semantic ids [1, 1, F // 2] (25 Hz)."""
        x = self.ssl_proj(hubert_features.to(self.device, self.dtype))
        return self.quantizer.encode(x)
