"""The vocoder's long convolutions computed by FFT (overlap-save), on CPU in float32.

Why: the HiFi-GAN generator is mostly convolutions, and oneDNN already runs them near the CPU's
float32 peak (the per-layer figures are in docs/performance.md); the only way left to go faster
without losing precision is an algorithm that does less work. A kernel
of ``r`` taps costs ``r`` multiply-adds per output and channel pair. By FFT, with blocks of ``N``
samples of which ``N - r + 1`` are kept, it costs one complex product per frequency bin: about
``4 (N/2 + 1) / (N - r + 1)`` real multiply-adds, 2.4 for ``r = 11, N = 64`` — whatever ``r``.
A dilated convolution is an ordinary one over each of its ``d`` interleaved phases, so dilation
costs nothing either. The transforms and layout changes are memory passes, so it pays only for
wide layers with long kernels; :data:`FFT_PLAN` lists where it measured faster
(docs/performance.md, "Vocoder: long convolutions by FFT").

Results differ from the direct convolution by FFT rounding, ~1e-6 relative (the full-size v2
generator's waveform: ~6e-7 apart), the size of a change of summation order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (channels, taps) -> (FFT block size, shortest input in frames), for the layers where FFT beat
# oneDNN when measured (docs/performance.md, "Vocoder: long convolutions by FFT", names the CPU);
# narrower layers and 3-tap kernels stayed direct. Short inputs go direct too, below the measured
# break-even of the whole generator: 64 latent frames (1.28 s) at each stage's rate (x10 at 256
# channels, x80 at 128).
FFT_PLAN = {(256, 7): (32, 640), (256, 11): (64, 640), (128, 7): (64, 5120), (128, 11): (64, 5120)}
TILE_FRAMES = 8192  # output frames per transform tile: untiled long inputs fall out of cache


@dataclass(frozen=True)
class SpectralKernel:
    """A ``Conv1d``'s weight as the spectrum overlap-save multiplies by."""

    spectrum: Tensor  # [N/2 + 1, in, out] complex64: FFT of the reversed taps, zero-padded to N
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
        weight = layer.weight.detach().float()
        spectrum = torch.fft.rfft(weight.flip(-1), n=n_fft, dim=-1).permute(2, 1, 0).contiguous()
        bias = None if layer.bias is None else layer.bias.detach().float()
        return cls(spectrum, bias, taps, dilation, n_fft, min_length)

    @staticmethod
    def plan(layer: nn.Conv1d, plans: Mapping[tuple[int, int], tuple[int, int]] = FFT_PLAN) -> tuple[int, int] | None:
        """(FFT block size, shortest input) this layer is computed with by FFT, or None: direct is as fast."""
        return plans.get((layer.in_channels, layer.kernel_size[0])) if layer.in_channels == layer.out_channels else None


def spectral_conv(x: Tensor, kernel: SpectralKernel) -> Tensor:
    """The convolution of a channels-last ``[B, C, 1, T]`` tensor, returned channels-last ``[B, C', 1, T]``."""
    rows = [_one_row(row[:, 0].t(), kernel) for row in x]
    y = rows[0][None] if len(rows) == 1 else torch.stack(rows)  # [B, T, C']: channels-last memory
    return y.permute(0, 2, 1)[:, :, None, :]


def _one_row(x: Tensor, k: SpectralKernel) -> Tensor:
    """``x [T, C]`` (a transposed view of channels-last memory, so contiguous) -> ``[T, C']``."""
    length, channels = x.shape
    bins, _, out_channels = k.spectrum.shape
    n, taps, d = k.n_fft, k.taps, k.dilation
    hop, centre = n - taps + 1, (taps - 1) // 2
    phase_length = -(-length // d)  # the d interleaved phases, each an undilated sequence
    blocks = -(-phase_length // hop)
    # Zero-pad so that phase position q sits at q + centre and every block is whole: block b's
    # N samples start at b * hop, and its last hop circular outputs are exact outputs b*hop...
    tail = (blocks * hop + taps - 1 - centre - phase_length) * d + phase_length * d - length
    padded = F.pad(x, (0, 0, centre * d, tail)).view(-1, d, channels)
    frames = padded.unfold(0, n, hop)  # [blocks, d, C, N], a view
    out = x.new_empty(blocks, hop, d, out_channels)
    group = max(1, TILE_FRAMES // (hop * d))
    for first in range(0, blocks, group):
        tile = frames[first : first + group]
        spectra = torch.fft.rfft(tile, dim=-1).permute(3, 0, 1, 2).reshape(bins, -1, channels)
        circular = torch.fft.irfft(torch.matmul(spectra, k.spectrum), n=n, dim=0)  # [N, tile*d, C']
        out[first : first + group] = circular[taps - 1 :].view(hop, -1, d, out_channels).transpose(0, 1)
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
