"""SoVITS v1/v2/v2Pro/v2ProPlus synthesizer (inference half of upstream's ``SynthesizerTrn``).

semantic tokens (25 Hz) + target phones + reference spectrogram(s) -> 32 kHz waveform:

    codebook lookup -> x2 in time -> enc_p (with MRTE conditioning) -> prior sample
    -> flow^-1 (conditioned on ge) -> HiFi-GAN (conditioned on ge)

and the prompt path: HuBERT features -> ``ssl_proj`` (stride 2) -> nearest codebook row.

Pro models add a speaker-verification embedding (20480-d) into ``ge`` before a PReLU, and feed
the text encoder a 512-d projection of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import SoVITSConfig
from .flow import ResidualCouplingFlow
from .front import SoVITSFront
from .generator import Generator

SV_DIM = 20480
MRTE_GE_DIM = 512


@dataclass(frozen=True)
class Conditioning:
    """Global speaker conditioning derived from the reference clip(s); reuse it across utterances."""

    ge: Tensor  # [1, gin, 1] for the flow and the generator
    ge_text: Tensor  # [1, 512, 1] for MRTE inside the text encoder


class Synthesizer(SoVITSFront):
    def __init__(self, config: SoVITSConfig):
        super().__init__(config)
        c = config
        self.flow = ResidualCouplingFlow(c.inter_channels, c.hidden_channels, c.gin_channels)
        self.dec = Generator(
            c.inter_channels,
            c.upsample_initial_channel,
            c.upsample_rates,
            c.upsample_kernel_sizes,
            c.resblock_kernel_sizes,
            c.resblock_dilation_sizes,
            c.gin_channels,
        )
        if c.is_pro:
            self.sv_emb = nn.Linear(SV_DIM, c.gin_channels)
            self.prelu = nn.PReLU(c.gin_channels)
            self.ge_to512 = nn.Linear(c.gin_channels, MRTE_GE_DIM)

    # -- conditioning ---------------------------------------------------------------------------

    def reference_embedding(self, spec: Tensor) -> Tensor:
        """One reference spectrogram [1, 1025, F] -> style vector [1, gin, 1] (before any sv term)."""
        return self.ref_enc(spec.to(self.device, self.dtype))

    @torch.inference_mode()
    def global_condition(
        self, refer_specs: Sequence[Tensor] | Tensor, sv_emb: Sequence[Tensor] | Tensor | None = None
    ) -> Conditioning:
        """Per-reference ``ge`` (plus PReLU(ge + sv_emb(sv)) for Pro), averaged over references.

        ``refer_specs``: [1, 1025, F] spectrograms (float32 is fine; cast here). ``sv_emb``: for
        Pro models one [1, 20480] speaker-verification vector per reference (a list, or a tensor
        with one row per reference).
        """
        specs = [refer_specs] if isinstance(refer_specs, Tensor) else list(refer_specs)
        if not specs:
            raise ValueError("at least one reference spectrogram is required")
        svs = self.per_reference_sv(sv_emb, len(specs))
        ge = torch.stack([self.reference_condition(spec, sv) for spec, sv in zip(specs, svs)]).mean(0)
        return Conditioning(ge, self.text_condition(ge))

    def reference_condition(self, spec: Tensor, sv: Tensor | None) -> Tensor:
        """One reference's ``ge`` [1, gin, 1] (Pro: PReLU(ge + sv_emb(sv)))."""
        ge = self.reference_embedding(spec)
        if self.config.is_pro:
            ge = self.prelu(ge + self.sv_emb(sv.to(self.device, self.dtype)).unsqueeze(-1))
        return ge

    def text_condition(self, ge: Tensor) -> Tensor:
        """``ge_text`` [1, 512, 1] for MRTE from the (averaged) ``ge``."""
        return self.ge_to512(ge.transpose(1, 2)).transpose(1, 2) if self.config.is_pro else ge

    def per_reference_sv(self, sv_emb: Sequence[Tensor] | Tensor | None, n_refs: int) -> list[Tensor | None]:
        if not self.config.is_pro:
            return [None] * n_refs
        if sv_emb is None:
            raise ValueError(f"{self.config.model_version} needs a speaker-verification embedding per reference")
        if isinstance(sv_emb, Tensor):
            rows = sv_emb.reshape(-1, SV_DIM)
            svs = [rows[i : i + 1] for i in range(rows.shape[0])]
        else:
            svs = [s.reshape(1, SV_DIM) for s in sv_emb]
        if len(svs) != n_refs:
            raise ValueError(f"got {len(svs)} speaker embeddings for {n_refs} reference spectrograms")
        return svs

    # -- decoding -------------------------------------------------------------------------------

    def prior(self, codes: Tensor, phone_ids: Tensor, cond: Conditioning, speed: float = 1.0) -> tuple[Tensor, Tensor]:
        """-> (m_p, logs_p), each [1, inter, T'] with T' = 2*T25, or int(2*T25/speed)+1."""
        content = self.enc_p.content(self.semantic_frames(codes), phone_ids.to(self.device), cond.ge_text)
        m, logs, _ = self.enc_p.prior(content, speed)
        return m, logs

    def vocode(self, z_p: Tensor, cond: Conditioning) -> Tensor:
        """Prior sample [1, inter, T] -> waveform [1, 1, T * hop]."""
        return self.dec(self.flow.reverse(z_p, cond.ge), cond.ge)

    @torch.inference_mode()
    def decode(
        self,
        codes: Tensor,
        phone_ids: Tensor,
        refer_specs: Sequence[Tensor] | Tensor,
        noise_scale: float = 0.5,
        speed: float = 1.0,
        sv_emb: Sequence[Tensor] | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """codes [1, 1, T] long, phone_ids [1, N] long (target phones only), refer_specs: list of
        [1, 1025, F] -> wav [1, 1, samples] at 32 kHz."""
        cond = self.global_condition(refer_specs, sv_emb)
        m, logs = self.prior(codes, phone_ids, cond, speed)
        return self.vocode(sample_prior(m, logs, noise_scale, generator), cond)


def sample_prior(m: Tensor, logs: Tensor, noise_scale: float, generator: torch.Generator | None = None) -> Tensor:
    if noise_scale == 0:
        return m
    device = generator.device if generator is not None else m.device
    eps = torch.randn(m.shape, generator=generator, device=device).to(m)
    return m + eps * torch.exp(logs) * noise_scale
