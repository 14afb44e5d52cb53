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
long convolutions are computed by FFT instead (spectral_conv.py: less arithmetic for the same
result, ~1e-6 apart), once :meth:`Generator.use_spectral_convs` has prepared their spectra.

Streaming: a run of frames that continues the run before it can take each convolution's left
context from that run (:class:`LeftContext`) instead of zero padding, so the stream does not have
to decode a margin of frames before every run again (streaming.py).
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


class LeftContext:
    """A stream's carried state: every convolution's input just before the next run's first frame.

    A run computes its first outputs of each convolution from what this holds (the previous run's
    input there) instead of the zero padding at a sequence's start, and leaves in it its own input
    before its ``commit`` frame, where the next run starts. Empty: the stream's start (zeros)."""

    def __init__(self) -> None:
        # The i-th convolution of a pass -> its input before the commit. By order, not by module: a
        # generator's float32 twin (finite_guard) is another copy of the same layers.
        self.inputs: dict[int, Tensor] = {}
        self.frame: int | None = None  # the stream's frame where the next run must start (the caller's count)


class RunEdges:
    """One forward pass over a run with a :class:`LeftContext`: each convolution's first outputs
    are computed again on the carried input (a few positions, not the run), and the run's input
    before ``commit`` is recorded; :meth:`keep` stores it once the whole pass has succeeded."""

    def __init__(self, context: LeftContext, commit: int):
        self.context, self.commit = context, commit
        self.recorded: dict[int, Tensor] = {}

    def same(self, layer: nn.Conv1d, x: Tensor, out: Tensor, scale: int) -> Tensor:
        """``out`` = ``layer`` ("same" padding) applied to ``x`` [..., T] (positions at ``scale`` per
        frame), its first outputs recomputed on the carried left context (in place)."""
        width, dilation = layer.padding[0], layer.dilation[0]
        left = self.swap(x, width, scale)
        if left is None or width == 0:
            return out
        head = torch.cat([left.to(x.dtype), x[..., : 2 * width]], -1)
        if x.dim() == 4:
            fixed = F.conv2d(head, layer.weight.unsqueeze(2), layer.bias, padding=(0, width), dilation=(1, dilation))
        else:
            fixed = F.conv1d(head, layer.weight, layer.bias, padding=width, dilation=dilation)
        n = min(width, out.shape[-1])
        out[..., :n] = fixed[..., width : width + n]
        return out

    def transposed(self, layer: nn.ConvTranspose1d, x: Tensor, out: Tensor, scale: int) -> Tensor:
        """The same for a transposed (upsampling) convolution over channels-last ``x``."""
        (taps,), (stride,), (pad,) = layer.kernel_size, layer.stride, layer.padding
        width = (taps - 1 - pad) // stride  # input positions before the run that reach its outputs
        reached = taps - pad - stride  # how many of its first outputs they reach
        left = self.swap(x, width, scale)
        if left is None or width == 0 or reached <= 0:
            return out
        head = torch.cat([left.to(x.dtype), x[..., : (reached - 1 + pad) // stride + 1]], -1)
        fixed = F.conv_transpose2d(head, layer.weight.unsqueeze(2), layer.bias, stride=(1, stride), padding=(0, pad))
        n = min(reached, out.shape[-1])
        out[..., :n] = fixed[..., width * stride : width * stride + n]
        return out

    def swap(self, x: Tensor, width: int, scale: int) -> Tensor | None:
        """The next convolution's carried input before the run (None at the stream's start);
        records ``x``'s before the commit for the next run."""
        layer = len(self.recorded)
        left = self.context.inputs.get(layer)
        cut = self.commit * scale
        if cut >= width:
            self.recorded[layer] = x[..., cut - width : cut].clone()
        else:  # a run shorter than the context: part of it is still the carried input
            before = x.new_zeros(*x.shape[:-1], width) if left is None else left.to(x.dtype)
            self.recorded[layer] = torch.cat([before, x[..., :cut]], -1)[..., -width:].clone()
        return left

    def keep(self) -> None:
        self.context.inputs = self.recorded


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

    def forward(self, x: Tensor, valid: int | None = None, edges: RunEdges | None = None, scale: int = 1) -> Tensor:
        """x: channels-last [B, C, 1, T] -> a new tensor (x is not modified); frames from ``valid``
        on are padding (:func:`zero_tail`); ``edges``: a streamed run's left context (``scale``
        positions per frame)."""

        def apply(layer: nn.Conv1d, inputs: Tensor) -> Tensor:
            out = conv(inputs, layer)
            return out if edges is None else edges.same(layer, inputs, out, scale)

        for c1, c2 in zip(self.convs1, self.convs2):
            # In-place ops on fresh conv outputs: these activations are tens of MB, and every
            # avoided allocation is a page-faulting pass over memory.
            h = F.leaky_relu_(zero_tail(apply(c1, F.leaky_relu(x, LRELU_SLOPE)), valid), LRELU_SLOPE)
            x = zero_tail(apply(c2, h), valid).add_(x)
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

    def forward(
        self,
        z: Tensor,
        g: Tensor | None = None,
        valid_frames: int | None = None,
        context: LeftContext | None = None,
        commit: int | None = None,
    ) -> Tensor:
        """z [B, C, T] (already masked), g [B, gin, 1] (None without conditioning) -> wav [B, 1, T * prod(upsample_rates)].

        ``valid_frames``: z is a shorter input padded at the end; every layer then zeroes what lies
        past the input's end, so the first ``valid_frames`` frames compute what the unpadded input
        computes (each convolution's own zero padding), and only their samples are returned.
        ``context``: z continues a stream whose run before it ended here: every convolution takes
        its left context from it, and it keeps this run's for a run starting at frame ``commit``."""
        edges = None if context is None else RunEdges(context, z.shape[-1] if commit is None else commit)
        x = self.conv_pre(z)
        if edges is not None:
            x = edges.same(self.conv_pre, z, x, 1)
        if self.cond is not None:
            x = x + self.cond(g)
        valid, scale = valid_frames, 1
        x = zero_tail(x.unsqueeze(2).contiguous(memory_format=torch.channels_last), valid)
        for i, up in enumerate(self.ups):
            valid = None if valid is None else valid * up.stride[0]
            activated = F.leaky_relu(x, LRELU_SLOPE)
            x = conv_transpose(activated, up)
            if edges is not None:
                x = edges.transposed(up, activated, x, scale)
            x = zero_tail(x, valid)
            scale *= up.stride[0]
            blocks = self.resblocks[i * self.n_kernels : (i + 1) * self.n_kernels]
            acc = blocks[0](x, valid, edges, scale)
            for block in blocks[1:]:
                acc.add_(block(x, valid, edges, scale))
            x = acc.div_(self.n_kernels)
        activated = F.leaky_relu(x.squeeze(2))
        x = self.conv_post(activated)
        if edges is not None:
            x = edges.same(self.conv_post, activated, x, scale)
            edges.keep()
        wav = torch.tanh(x)
        return wav if valid is None else wav[..., :valid]

    def use_spectral_convs(self, enabled: bool, plans: Mapping[tuple[int, int], tuple[int, int]] = FFT_PLAN) -> int:
        """Compute the residual blocks' long convolutions by FFT (spectral_conv.py) or directly;
        returns how many convolutions go by FFT. Their spectra take memory (~210 MB for v2) and
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
