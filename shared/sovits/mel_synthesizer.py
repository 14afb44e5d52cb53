"""SoVITS v3/v4 synthesizer (inference half of upstream's ``SynthesizerTrnV3``): tokens -> mel features.

semantic tokens (25 Hz) + target phones + reference spectrogram -> conditioning features for the
flow-matching mel generator:

    codebook lookup -> x2 in time -> enc_p content (MRTE on ge) -> [speed resample]
    -> bridge (1x1 conv + leaky ReLU) -> nearest x1.875 (v3, 93.75 Hz mels) or x2 (v4, 100 Hz)
    -> WaveNet encoder ``wns1`` (conditioned on ge) -> features [1, C, T_mel]

The text encoder, reference encoder and codebook are the v2 ones; what differs from v2 is that
the features are not a latent for a HiFi-GAN but the condition of a DiT that draws a mel
(``cfm.estimator``), vocoded by a separate network (BigVGAN for v3, a HiFi-GAN for v4).
The widths of ``bridge``/``wns1`` and the DiT are read from the weights (:class:`MelDecoderDims`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint_io import MAX_LAYERS, CheckpointError
from .attentions import apply_mask
from .config import SoVITSConfig
from .dit import DiT, DiTConfig
from .flow import WaveNet
from .front import SoVITSFront

# Mel frames per 50 Hz content frame (nearest upsampling), and the feature length upstream
# passes to the WaveNet mask per 25 Hz token: a little more than the real length, so the mask
# only ever trims a frame at very high speeds (kept for parity).
MEL_FRAMES_PER_CONTENT_FRAME = {"v3": 1.875, "v4": 2.0}
MASK_FRAMES_PER_TOKEN = {"v3": 3.875, "v4": 4.0}
WNS1_KERNEL = 5


@dataclass(frozen=True)
class MelDecoderDims:
    """Widths that upstream hard-codes (512 channels, 8 WaveNet layers, DiT 1024 x 22) but that
    we read from the tensors, so smaller test models in the same format load too."""

    channels: int
    wavenet_layers: int
    dit: DiTConfig

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], path: str) -> MelDecoderDims:
        bridge = state.get("bridge.0.weight")
        if bridge is None or bridge.dim() != 3:
            raise CheckpointError(f"{path}: a v3/v4 SoVITS model needs bridge.0.weight [C, 192, 1]")
        layers = sum(1 for k in state if k.startswith("wns1.enc.in_layers.") and k.endswith((".weight", ".weight_v")))
        if not 1 <= layers <= MAX_LAYERS:
            raise CheckpointError(f"{path}: wns1 has {layers} WaveNet layers, expected 1..{MAX_LAYERS}")
        estimator = {k.removeprefix("cfm.estimator."): v for k, v in state.items() if k.startswith("cfm.estimator.")}
        try:
            dit = DiTConfig.from_state_dict(estimator)
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read the DiT's sizes from cfm.estimator.* ({e})") from None
        return cls(channels=bridge.shape[0], wavenet_layers=layers, dit=dit)


class FeatureEncoder(nn.Module):
    """``wns1``: 1x1 in, a WaveNet conditioned on the speaker vector, 1x1 out, masked."""

    def __init__(self, channels: int, kernel_size: int, n_layers: int, gin_channels: int):
        super().__init__()
        self.pre = nn.Conv1d(channels, channels, 1)
        self.enc = WaveNet(channels, kernel_size, n_layers, gin_channels)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        x = self.enc(apply_mask(self.pre(x), mask), g, mask)
        return apply_mask(self.proj(x), mask)


class FlowMatchingDecoder(nn.Module):
    """Holds the DiT under the file's name ``cfm.estimator``; sampling is in cfm.py."""

    def __init__(self, dit: DiTConfig):
        super().__init__()
        self.estimator = DiT(dit)


class MelSynthesizer(SoVITSFront):
    def __init__(self, config: SoVITSConfig, dims: MelDecoderDims):
        if config.model_version not in MEL_FRAMES_PER_CONTENT_FRAME:
            raise ValueError(f"MelSynthesizer serves v3/v4, not {config.model_version}")
        super().__init__(config)
        self.dims = dims
        c = config
        self.bridge = nn.Sequential(nn.Conv1d(c.inter_channels, dims.channels, 1), nn.LeakyReLU())
        self.wns1 = FeatureEncoder(dims.channels, WNS1_KERNEL, dims.wavenet_layers, c.gin_channels)
        self.cfm = FlowMatchingDecoder(dims.dit)

    @property
    def estimator(self) -> DiT:
        return self.cfm.estimator

    @property
    def mel_frames_per_content_frame(self) -> float:
        return MEL_FRAMES_PER_CONTENT_FRAME[self.config.model_version]

    @torch.inference_mode()
    def speaker_vector(self, spec: Tensor) -> Tensor:
        """Reference spectrogram [1, 1025, F] (32 kHz STFT) -> ge [1, gin, 1]."""
        return self.ref_enc(spec.to(self.device, self.dtype))

    @torch.inference_mode()
    def features(self, codes: Tensor, phone_ids: Tensor, ge: Tensor, speed: float = 1.0) -> Tensor:
        """codes [1, 1, T25], phone_ids [1, N] -> DiT condition [1, C, T_mel] (upstream's decode_encp)."""
        content = self.enc_p.content(self.semantic_frames(codes), phone_ids.to(self.device), ge)
        if speed != 1:
            content = F.interpolate(content, size=int(content.shape[-1] / speed) + 1, mode="linear")
        fea = F.interpolate(self.bridge(content), scale_factor=self.mel_frames_per_content_frame, mode="nearest")
        mask = self.feature_mask(codes.shape[-1], fea.shape[-1], speed).to(fea)
        return self.wns1(fea, mask, ge)

    def feature_mask(self, tokens: int, frames: int, speed: float) -> Tensor:
        """[1, 1, frames]: ones for the first ``valid`` frames (upstream's length rule)."""
        per_token = MASK_FRAMES_PER_TOKEN[self.config.model_version]
        valid = int(tokens * per_token) if speed == 1 else int(tokens * per_token / speed) + 1
        return (torch.arange(frames, device=self.device) < valid).view(1, 1, -1)

    def keep_prompt_encoder_only(self) -> MelSynthesizer:
        """Free the DiT, bridge and ``wns1`` (~1.3 GB in float32 at full size) for a process that only
        turns reference audio into prompt tokens (the reference node); decoding is impossible after."""
        del self.cfm, self.bridge, self.wns1
        return self
