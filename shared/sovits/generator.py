"""HiFi-GAN generator: decoder latent at 50 Hz -> 32 kHz waveform (v1/v2), or log-mel -> 48 kHz (v4).

conv_pre (+ speaker bias) -> per stage: leaky-ReLU(0.1), transposed-conv upsampler, mean of three
multi-receptive-field residual blocks -> leaky-ReLU(0.01) -> conv_post -> tanh.
The final slope of 0.01 (PyTorch's default, not the 0.1 used elsewhere) is what the pretrained
weights expect. The SoVITS decoders are conditioned on the speaker (``gin_channels`` > 0) and their
conv_post has no bias; the v4 mel vocoder (mel_vocoders.py) is the same network without
conditioning (``gin_channels=0``) and with a conv_post bias.

Speed: the upsampling stages run as 2-D convolutions over ``[B, C, 1, T]`` tensors in
channels-last memory layout. The weights stay ordinary ``Conv1d`` parameters (so checkpoints load
unchanged); the computation is identical, but oneDNN's channels-last kernels are 2-3x faster than
its 1-D ones for these thin, very long activations (16-256 channels, up to 32 000 frames/s),
which is where nearly all of SoVITS' inference time goes. On a CPU in float32 the residual blocks'
long convolutions are computed in the frequency domain instead (spectral_conv.py: less arithmetic
for the same result, ~1e-6 apart), once :meth:`Generator.use_spectral_convs` has prepared their spectra.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .spectral_conv import FFT_PLAN, SpectralKernel, spectral_conv

LRELU_SLOPE = 0.1


def conv(x: Tensor, layer: nn.Conv1d) -> Tensor:
    """A Conv1d applied to a channels-last ``[B, C, 1, T]`` tensor (by FFT where it has a spectrum)."""
    # Read from __dict__: a layer never prepared has no attribute, and nn.Module's lookup of a
    # missing one raises (slowly) before the default applies.
    spectral: SpectralKernel | None = layer.__dict__.get("spectral")
    if (
        spectral is not None
        and x.shape[-1] >= spectral.min_length
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    ):
        return spectral_conv(x, spectral)
    return F.conv2d(
        x, layer.weight.unsqueeze(2), layer.bias, padding=(0, layer.padding[0]), dilation=(1, layer.dilation[0])
    )


def conv_transpose(x: Tensor, layer: nn.ConvTranspose1d) -> Tensor:
    """A ConvTranspose1d applied to a channels-last ``[B, C, 1, T]`` tensor."""
    return F.conv_transpose2d(
        x, layer.weight.unsqueeze(2), layer.bias, stride=(1, layer.stride[0]), padding=(0, layer.padding[0])
    )


def zero_tail(x: Tensor, valid: int | None) -> Tensor:
    """``x`` with its frames from ``valid`` on set to zero (in place; None: nothing is padding).

    A run padded to a fixed length (so that a kernel built for that length is reused) computes its
    real frames exactly as the unpadded run does only if what lies past its end is what each
    convolution's own padding would supply there: zeros, after every layer."""
    if valid is not None and valid < x.shape[-1]:
        x[..., valid:] = 0
    return x


class ResBlock(nn.Module):
    """Three [lrelu, dilated conv, lrelu, conv] residual units with one kernel size."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilations
        )

    def forward(self, x: Tensor, valid: int | None = None) -> Tensor:
        """x: channels-last [B, C, 1, T] -> a new tensor (x is not modified); frames from ``valid``
        on are padding (:func:`zero_tail`)."""
        for c1, c2 in zip(self.convs1, self.convs2):
            # In-place ops on fresh conv outputs: these activations are tens of MB, and every
            # avoided allocation is a page-faulting pass over memory.
            h = F.leaky_relu_(zero_tail(conv(F.leaky_relu(x, LRELU_SLOPE), c1), valid), LRELU_SLOPE)
            x = zero_tail(conv(h, c2), valid).add_(x)
        return x


class Generator(nn.Module):
    def __init__(
        self,
        in_channels: int,
        upsample_initial_channel: int,
        upsample_rates: tuple[int, ...],
        upsample_kernel_sizes: tuple[int, ...],
        resblock_kernel_sizes: tuple[int, ...],
        resblock_dilation_sizes: tuple[tuple[int, ...], ...],
        gin_channels: int,
        post_bias: bool = False,
    ):
        super().__init__()
        u = upsample_initial_channel
        self.n_kernels = len(resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(in_channels, u, 7, padding=3)
        self.cond = nn.Conv1d(gin_channels, u, 1) if gin_channels > 0 else None
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(u >> i, u >> (i + 1), k, r, padding=(k - r) // 2)
            for i, (r, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            ResBlock(u >> (i + 1), k, tuple(d))
            for i in range(len(upsample_rates))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes)
        )
        self.conv_post = nn.Conv1d(u >> len(upsample_rates), 1, 7, padding=3, bias=post_bias)

    def forward(self, z: Tensor, g: Tensor | None = None, valid_frames: int | None = None) -> Tensor:
        """z [B, C, T] (already masked), g [B, gin, 1] (None without conditioning) -> wav [B, 1, T * prod(upsample_rates)].

        ``valid_frames``: z is a shorter input padded at the end; every layer then zeroes what lies
        past the input's end, so the first ``valid_frames`` frames compute what the unpadded input
        computes (each convolution's own zero padding), and only their samples are returned."""
        x = self.conv_pre(z)
        if self.cond is not None:
            x = x + self.cond(g)
        valid = valid_frames
        x = zero_tail(x.unsqueeze(2).contiguous(memory_format=torch.channels_last), valid)
        for i, up in enumerate(self.ups):
            valid = None if valid is None else valid * up.stride[0]
            x = zero_tail(conv_transpose(F.leaky_relu(x, LRELU_SLOPE), up), valid)
            blocks = self.resblocks[i * self.n_kernels : (i + 1) * self.n_kernels]
            acc = blocks[0](x, valid)
            for block in blocks[1:]:
                acc.add_(block(x, valid))
            x = acc.div_(self.n_kernels)
        wav = torch.tanh(self.conv_post(F.leaky_relu(x.squeeze(2))))
        return wav if valid is None else wav[..., :valid]

    def use_spectral_convs(self, enabled: bool, plans: Mapping[tuple[int, int], tuple[int, int]] = FFT_PLAN) -> int:
        """Compute the residual blocks' long convolutions in the frequency domain (spectral_conv.py) or directly;
        returns how many convolutions go by FFT. Their spectra take memory (~225 MB for v2) and
        stay where the weights were: call it after moving the model.
        ``plans``: (channels, taps) -> (FFT block size, shortest input) of the layers to compute by FFT."""
        return use_spectral_convs(self.resblocks, enabled, plans)


def use_spectral_convs(
    resblocks: nn.ModuleList, enabled: bool, plans: Mapping[tuple[int, int], tuple[int, int]]
) -> int:
    """Generator.use_spectral_convs for any residual blocks holding ``convs1``/``convs2`` lists."""
    layers = [c for block in resblocks for c in (*block.convs1, *block.convs2)]
    for layer in layers:
        plan = SpectralKernel.plan(layer, plans) if enabled else None
        layer.spectral = None if plan is None else SpectralKernel.of(layer, *plan)
    return sum(layer.spectral is not None for layer in layers)
