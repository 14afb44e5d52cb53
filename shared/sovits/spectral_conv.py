"""The vocoder's long convolutions by overlap-save in the frequency domain, on CPU in float32.

Why: the HiFi-GAN generator is mostly convolutions, and oneDNN already runs them near the CPU's
float32 peak (the per-layer figures are in docs/performance.md); the only way left to go faster
without losing precision is an algorithm that does less work. A kernel of ``r`` taps costs ``r``
multiply-adds per output and channel pair. Cut into blocks of ``N`` samples, of which the last
``N - r + 1`` outputs of each circular convolution are kept (overlap-save), the convolution becomes
one complex product per frequency bin: three real ones by Gauss's trick, ``3 (N/2 + 1) / (N - r + 1)``
multiply-adds per output and channel pair, 1.8 for ``r = 11, N = 64`` — whatever ``r``. A dilated
convolution is an ordinary one over each of its ``d`` interleaved phases, so dilation costs nothing
either.

The block transforms are products with fixed real DFT matrices, not FFTs: at ``N`` = 32 or 64 a
matrix product costs more arithmetic than an FFT but runs at the CPU's peak on the channels-last
activations as they lie, where an FFT needs its signal axis contiguous and two transposing copies
of every activation (measured, docs/performance.md, "Vocoder: long convolutions by FFT"). They
still cost memory passes, so it pays only for wide layers with long kernels; :data:`FFT_PLAN`
lists where it measured faster.

Results differ from the direct convolution by rounding, ~1e-6 relative (the full-size v2
generator's waveform: ~6e-7 apart), the size of a change of summation order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (channels, taps) -> (block size N, shortest input in frames), for the layers where the spectral
# path beat oneDNN when measured (docs/performance.md, "Vocoder: long convolutions by FFT", names
# the CPU): the 7- and 11-tap kernels of the 256- and 128-channel stages and the 11-tap ones of the
# 64-channel stage. The 7-tap kernels at 64 channels, everything narrower and every 3-tap kernel
# stay direct, and so do inputs shorter than where a layer broke even: 48 latent frames (0.96 s)
# for the 256-channel 7-tap kernels (x10 at that stage's rate), 16 (0.32 s) for the others.
# On another CPU, `python scripts/bench_spectral_conv.py` measures what this plan rests on.
FFT_PLAN = {
    (256, 7): (32, 480),
    (256, 11): (32, 160),
    (128, 7): (32, 1280),
    (128, 11): (64, 1280),
    (64, 11): (32, 2560),
}
TILE_FRAMES = 8192  # output frames per tile: the spectra of untiled long inputs fall out of cache


@dataclass(frozen=True)
class SpectralKernel:
    """A ``Conv1d``'s weight as overlap-save multiplies by it, in real arithmetic: per frequency
    bin ``f`` the complex product ``S_f W_f`` is ``Re = (S_re + S_im) W_re - S_im (W_re + W_im)``,
    ``Im = (S_re + S_im) W_re + S_re (W_im - W_re)`` (three real products, not four)."""

    analysis: Tensor  # [2 * bins, N]: a block's real DFT, rows (cos, -sin) per bin
    real: Tensor  # [bins, in, out]: Re W_f, W = DFT of the reversed taps zero-padded to N
    real_plus_imag: Tensor  # [bins, in, out]
    imag_minus_real: Tensor  # [bins, in, out]
    synthesis: Tensor  # [2, N - r + 1, bins]: the inverse DFT of (Re, Im) at the samples a block keeps
    bias: Tensor | None
    taps: int
    dilation: int
    n_fft: int
    min_length: int = 0  # shorter inputs are convolved directly (generator.conv)

    @classmethod
    def of(cls, layer: nn.Conv1d, n_fft: int, min_length: int = 0) -> SpectralKernel:
        taps, dilation = layer.kernel_size[0], layer.dilation[0]
        if layer.padding[0] != dilation * (taps - 1) // 2 or taps % 2 == 0 or layer.stride[0] != 1 or layer.groups != 1:
            raise ValueError(f"spectral_conv computes 'same' convolutions with an odd kernel, not {layer}")
        if n_fft < 2 * taps:
            raise ValueError(f"an FFT block of {n_fft} is too short for {taps} taps")
        weight = layer.weight.detach().to("cpu", torch.float64)
        spectrum = torch.fft.rfft(weight.flip(-1), n=n_fft, dim=-1).permute(2, 1, 0)  # [bins, in, out]
        re, im = spectrum.real, spectrum.imag
        analysis, synthesis = dft_matrices(n_fft, taps)
        device = layer.weight.device

        def stored(t: Tensor) -> Tensor:
            return t.to(device, torch.float32).contiguous()

        bias = None if layer.bias is None else layer.bias.detach().float()
        return cls(
            stored(analysis), stored(re), stored(re + im), stored(im - re), stored(synthesis),
            bias, taps, dilation, n_fft, min_length,
        )  # fmt: skip

    @staticmethod
    def plan(layer: nn.Conv1d, plans: Mapping[tuple[int, int], tuple[int, int]] = FFT_PLAN) -> tuple[int, int] | None:
        """(FFT block size, shortest input) this layer is computed with by FFT, or None: direct is as fast."""
        return plans.get((layer.in_channels, layer.kernel_size[0])) if layer.in_channels == layer.out_channels else None


def dft_matrices(n: int, taps: int) -> tuple[Tensor, Tensor]:
    """(analysis [2 * bins, n], synthesis [2, n - taps + 1, bins]) in float64: ``analysis @ block``
    is the block's real DFT (``torch.fft.rfft``), re and im interleaved per bin; ``synthesis[0] @ re
    + synthesis[1] @ im`` is ``torch.fft.irfft`` of the bins at samples ``taps - 1 ... n - 1``."""
    bins = n // 2 + 1
    freq = torch.arange(bins, dtype=torch.float64)
    angle = 2 * math.pi * freq[:, None] * torch.arange(n, dtype=torch.float64)[None] / n  # [bins, n]
    analysis = torch.stack([torch.cos(angle), -torch.sin(angle)], 1).reshape(2 * bins, n)
    # irfft counts every bin but DC (and Nyquist, for an even n) twice: its mirror image
    weight = torch.full((bins,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    kept = angle.t()[taps - 1 :]  # [n - taps + 1, bins]
    synthesis = torch.stack([weight * torch.cos(kept), -weight * torch.sin(kept)]) / n
    return analysis, synthesis


def spectral_conv(x: Tensor, kernel: SpectralKernel) -> Tensor:
    """The convolution of a channels-last ``[B, C, 1, T]`` tensor, returned channels-last ``[B, C', 1, T]``."""
    rows = [_one_row(row[:, 0].t(), kernel) for row in x]
    y = rows[0][None] if len(rows) == 1 else torch.stack(rows)  # [B, T, C']: channels-last memory
    return y.permute(0, 2, 1)[:, :, None, :]


def _one_row(x: Tensor, k: SpectralKernel) -> Tensor:
    """``x [T, C]`` (a transposed view of channels-last memory, so contiguous) -> ``[T, C']``."""
    length, channels = x.shape
    bins, _, out_channels = k.real.shape
    n, taps, d = k.n_fft, k.taps, k.dilation
    hop, centre = n - taps + 1, (taps - 1) // 2
    phase_length = -(-length // d)  # the d interleaved phases, each an undilated sequence
    blocks = -(-phase_length // hop)
    # Zero-pad so that phase position q sits at q + centre and every block is whole: block b of
    # phase p reads padded rows (b * hop + i) * d + p, i < n, and keeps outputs b * hop ... + hop - 1.
    rows = (blocks * hop + taps - 1) * d
    padded = F.pad(x.contiguous(), (0, 0, centre * d, rows - centre * d - length))
    start = padded.storage_offset()  # as_strided counts from the storage's start
    out = x.new_empty(blocks, hop, d, out_channels)
    group = max(1, TILE_FRAMES // (hop * d))
    for first in range(0, blocks, group):
        tile = min(group, blocks - first)
        spectra = x.new_empty(d, tile, bins, 2, channels)
        for phase in range(d):
            frames = padded.as_strided(
                (tile, n, channels), (hop * d * channels, d * channels, 1), start + (first * hop * d + phase) * channels
            )
            torch.matmul(k.analysis, frames, out=spectra[phase].view(tile, 2 * bins, channels))
        re = spectra[:, :, :, 0].reshape(d * tile, bins, channels).transpose(0, 1)  # [bins, d*tile, C], views
        im = spectra[:, :, :, 1].reshape(d * tile, bins, channels).transpose(0, 1)
        common = torch.bmm(re + im, k.real)
        out_re = common - torch.bmm(im, k.real_plus_imag)
        out_im = common.add_(torch.bmm(re, k.imag_minus_real))
        waves = torch.matmul(k.synthesis[0], out_re.transpose(0, 1))  # [d*tile, hop, C']
        waves.add_(torch.matmul(k.synthesis[1], out_im.transpose(0, 1)))
        out[first : first + tile] = waves.view(d, tile, hop, out_channels).permute(1, 2, 0, 3)
    y = out.view(-1, out_channels)[:length]
    return y.add_(k.bias) if k.bias is not None else y


FFT_CHOICES = ("auto", "1", "0")


def spectral_convs_wanted(env: Mapping[str, str], device: torch.device, dtype: torch.dtype) -> bool:
    """``GSV_VOCODER_FFT``: ``auto`` (default: on for a float32 model on CPU, where it was measured
    faster), ``1`` (on wherever the model is float32) or ``0`` (direct convolutions)."""
    from ..settings import VOCODER_FFT

    choice = VOCODER_FFT.read(env)  # a SettingsError (ValueError) names the variable and the choices
    if choice == "1" and dtype != torch.float32:
        raise ValueError(f"GSV_VOCODER_FFT=1 needs a float32 model, this one is {dtype}")
    return choice == "1" or (choice == "auto" and device.type == "cpu" and dtype == torch.float32)
