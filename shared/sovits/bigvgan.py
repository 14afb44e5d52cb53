"""BigVGAN v2: log-mel [B, num_mels, T] -> waveform [B, 1, T * prod(upsample_rates)] (GPT-SoVITS v3, 24 kHz).

The HiFi-GAN layout (conv_pre, per stage a transposed-conv upsampler and the mean of several residual
blocks, conv_post) with one change that matters: every nonlinearity is a periodic "snake",
``x + sin²(a·x) / b`` with learned per-channel ``a`` and ``b``, evaluated at twice the sample rate so
that the harmonics it creates do not fold back as aliasing. "Twice the rate" means: upsample 2× with
a Kaiser-windowed sinc low-pass (12 taps), apply the snake, low-pass with the same filter and keep
every other sample. The last stage's output goes through one more such activation, conv_post, and
then tanh or a clamp to [-1, 1] (config.json says which; the 24 kHz v2 release clamps).

Speed (CPU): like generator.py, tensors flow as channels-last ``[B, C, 1, T]`` and convolutions run
as 2-D ones (the same helpers, so the long residual convolutions can also go by FFT). The
resampling is done polyphase: the 2× upsampler's even and odd outputs are each a 7-tap filter of the
input, the snake is elementwise so it runs on each phase as it is, and the decimating low-pass is a
7-tap filter of each phase, summed. Nothing is zero-stuffed, interleaved or cropped at 2T, and the
upsampler's gain of 2 is folded into its taps. All four filters are plain depthwise convolutions
(one filter per channel): oneDNN has a fast kernel for exactly that, while a grouped convolution
with two channels per group (both phases in one call) ran 2-4x slower. Upstream pads with edge
replication before each filter; :meth:`AntiAliasedSnake.forward` writes the values that padding
would have read, so the result equals the direct evaluation up to float rounding (~1e-6).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..regular_file import open_regular_file
from .generator import conv, conv_transpose, use_spectral_convs

RESAMPLE_TAPS = 12  # low-pass length of every anti-aliased activation (fixed in BigVGAN)
SNAKE_EPS = 1e-9  # added to the magnitude before dividing, as in training
MAX_CONFIG_BYTES = 1 << 20
MAX_STAGES = 16
MAX_CHANNELS = 1 << 14
# (channels, taps) -> (FFT block size, shortest input in frames) for the residual convolutions
# computed by FFT (spectral_conv.py) when enabled: the layers where it measured faster than oneDNN
# (one thread, CPU time: 768 ch x 11 taps 2.4x, 768 x 7 1.6x, 384 x 11 1.8x, with torch.fft; the DFT
# products since are ~6% faster on the whole model). The spectra take ~1.6 GB for the full-size model
# (720 MB of it for the 768 x 7 layers, which bought ~3% of the total);
# 384 x 7 and 192 x 11 gained only 1.3x and stay direct, as does everything narrower or 3-tap.
BIGVGAN_FFT_PLAN = {(768, 7): (32, 512), (768, 11): (32, 512), (384, 11): (64, 2048)}


def kaiser_sinc_lowpass(cutoff: float, half_width: float, taps: int) -> Tensor:
    """A windowed-sinc low-pass ``[taps]`` with unit DC gain (Kaiser window sized by Kaiser's formulas).

    ``cutoff`` and ``half_width`` (of the transition band) are fractions of the sample rate. Evaluated
    in the float32 order of BigVGAN's own design, so the taps equal the ones its checkpoints carry.
    """
    half = taps // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95  # dB
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(taps, periodic=False, beta=beta)
    # Taps sit at half-integers for an even length (the filter's centre falls between two samples).
    t = torch.arange(-half, half) + 0.5 if taps % 2 == 0 else torch.arange(taps) - half
    if cutoff == 0:
        return torch.zeros(taps)
    h = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return h / h.sum()


def default_resample_filter() -> Tensor:
    """The 2× resampler's low-pass: cutoff at a quarter of the high rate, transition half-width 0.3."""
    return kaiser_sinc_lowpass(0.25, 0.3, RESAMPLE_TAPS)


# Polyphase form of the 2x resampling with a K-tap low-pass h (K even). With x clamped at its ends:
#   up[2m + p]  = 2 * sum_s h[(K - 2) / 2 + p - 2 s] * x[m + s]          (p = 0, 1)
#   down[n]     = sum_k h[k] * z[2 n + k - (K / 2 - 1)],  z clamped at its ends
# so both are 7-tap filters over offsets -3..3 of their (phase) inputs for K = 12.
REACH = 3  # up reads offsets -3..2 (p = 0) / -2..3 (p = 1); down reads -2..3 of phase 0, -3..2 of phase 1
SPAN = 2 * REACH + 1


def _tap_index(phase_offset: int, step: int) -> Tensor:
    """[2, SPAN] indices k = step * offset + phase + phase_offset into a low-pass, RESAMPLE_TAPS where
    k falls outside it (that entry reads the zero appended by :func:`polyphase_taps`)."""
    phase = torch.arange(2)[:, None]
    offset = torch.arange(-REACH, REACH + 1)[None, :]
    k = step * offset + phase + phase_offset
    return torch.where((k >= 0) & (k < RESAMPLE_TAPS), k, RESAMPLE_TAPS)


UP_TAPS = _tap_index((RESAMPLE_TAPS - 2) // 2, -2)
DOWN_TAPS = _tap_index(RESAMPLE_TAPS // 2 - 1, 2)


def polyphase_taps(h: Tensor, index: Tensor) -> Tensor:
    """``[2, SPAN]``: row p holds phase p's taps by offset, gathered from the low-pass ``h [K]``."""
    return F.pad(h, (0, 1))[index]


def depthwise(x: Tensor, taps: Tensor, channels: int, padding: int = 0) -> Tensor:
    """The filter ``taps [SPAN]`` along time in every channel of a channels-last ``[B, C, 1, T]``
    (``channels`` = C as a Python int: ONNX export needs the weight's shape known)."""
    weight = taps.expand(channels, SPAN).reshape(channels, 1, 1, SPAN)
    return F.conv2d(x, weight, padding=(0, padding), groups=channels)


class AntiAliasedSnake(nn.Module):
    """``x -> lowpass_decimate(snake(upsample_2x(x)))`` on channels-last ``[B, C, 1, T]``.

    ``alpha``/``beta`` are stored as trained (log scale when ``log_scale``); ``up_filter``/``down_filter``
    are the low-pass taps the checkpoint carries (the designed filter unless a file says otherwise).
    """

    def __init__(self, channels: int, log_scale: bool):
        super().__init__()
        self.channels = channels
        self.log_scale = log_scale
        self.alpha = nn.Parameter(torch.zeros(channels) if log_scale else torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels) if log_scale else torch.ones(channels))
        self.register_buffer("up_filter", default_resample_filter())
        self.register_buffer("down_filter", default_resample_filter())

    def snake_coefficients(self) -> tuple[Tensor, Tensor]:
        """(frequency a, 1 / (magnitude + eps)) per channel."""
        a, b = (self.alpha.exp(), self.beta.exp()) if self.log_scale else (self.alpha, self.beta)
        return a, 1.0 / (b + SNAKE_EPS)

    def forward(self, x: Tensor) -> Tensor:
        c = self.channels
        up = 2 * polyphase_taps(self.up_filter, UP_TAPS)  # the upsampler's gain of 2 in its taps
        down = polyphase_taps(self.down_filter, DOWN_TAPS)
        a, inv_b = (k.view(1, c, 1, 1) for k in self.snake_coefficients())

        # Each phase of the 2x signal at positions -REACH..T+REACH-1: x's ends replicated as upstream
        # pads them, and REACH scratch columns each side (zero-padded, overwritten below).
        x = F.pad(x, (REACH, REACH, 0, 0), mode="replicate")
        phases = []
        for p in range(2):
            y = depthwise(x, up[p], c, padding=REACH)
            s = torch.mul(y, a).sin_()
            phases.append(y.addcmul_(s.mul_(s), inv_b))  # snake: y + sin²(a y) / b
        z0, z1 = phases
        # What edge replication of the interleaved 2x signal reads beyond its ends: its first sample
        # (phase 0, position 0) on the left, its last (phase 1, position T - 1) on the right.
        first, last = z0[..., REACH : REACH + 1], z1[..., -REACH - 1 : -REACH]
        z0[..., :REACH], z1[..., :REACH] = first, first
        z0[..., -REACH:], z1[..., -REACH:] = last, last
        return depthwise(z0, down[0], c).add_(depthwise(z1, down[1], c))


class AMPBlock(nn.Module):
    """Residual units ``x += conv2(act(conv1_d(act(x))))`` per dilation d (type "1"), or
    ``x += conv1_d(act(x))`` (type "2": no second convolution)."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], two_convs: bool, log_scale: bool):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
            for _ in (dilations if two_convs else ())
        )
        n_acts = len(self.convs1) + len(self.convs2)
        self.activations = nn.ModuleList(AntiAliasedSnake(channels, log_scale) for _ in range(n_acts))

    def forward(self, x: Tensor) -> Tensor:
        """x: channels-last [B, C, 1, T] -> a new tensor (x is not modified)."""
        acts = iter(self.activations)
        for i, c1 in enumerate(self.convs1):
            h = conv(next(acts)(x), c1)
            if self.convs2:
                h = conv(next(acts)(h), self.convs2[i])
            x = h.add_(x)
        return x


@dataclass(frozen=True)
class BigVGANConfig:
    """The generator's part of BigVGAN's ``config.json`` (training-only keys are ignored)."""

    num_mels: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock: str  # "1": two convolutions per residual unit; "2": one
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    activation: str  # "snakebeta" (separate magnitude) or "snake" (magnitude = frequency)
    snake_logscale: bool
    use_tanh_at_final: bool = True  # absent from v1 configs: they end with tanh and a biased conv_post
    use_bias_at_final: bool = True
    sampling_rate: int | None = None  # informational: what the output rate is

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> BigVGANConfig:
        """Read and validate; every problem is one ``ValueError`` line naming the file (and the field)."""
        path = os.fspath(path)
        with open_regular_file(path, MAX_CONFIG_BYTES, "BigVGAN config", ValueError) as f:
            raw = f.read()
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: BigVGAN config is not valid JSON ({e})") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> BigVGANConfig:
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: BigVGAN config must be a JSON object, not {type(data).__name__}")

        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"{source}: BigVGAN config field {name!r} {why} (got {data.get(name)!r:.80})")

        def field(name: str, default: Any = ...) -> Any:
            if name not in data:
                if default is ...:
                    raise ValueError(f"{source}: BigVGAN config lacks the field {name!r}")
                return default
            return data[name]

        def integer(name: str, low: int, high: int, value: Any = ...) -> int:
            v = field(name) if value is ... else value
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise bad(name, f"must be an integer in [{low}, {high}]")
            return v

        def integers(name: str, low: int, high: int, value: Any = ...) -> tuple[int, ...]:
            v = field(name) if value is ... else value
            if not isinstance(v, list) or not 1 <= len(v) <= MAX_STAGES:
                raise bad(name, f"must be a list of 1 to {MAX_STAGES} integers")
            return tuple(integer(name, low, high, item) for item in v)

        def flag(name: str, default: Any = ...) -> bool:
            v = field(name, default)
            if not isinstance(v, bool):
                raise bad(name, "must be true or false")
            return v

        def choice(name: str, options: tuple[str, ...]) -> str:
            v = field(name)
            if v not in options:
                raise bad(name, f"must be one of {list(options)}")
            return v

        rates = integers("upsample_rates", 1, 64)
        kernels = integers("upsample_kernel_sizes", 1, 256)
        if len(kernels) != len(rates):
            raise bad("upsample_kernel_sizes", f"must have one entry per upsample rate ({len(rates)})")
        for r, k in zip(rates, kernels):
            if k < r:
                raise bad("upsample_kernel_sizes", f"must not be shorter than their rates {list(rates)}")
        initial = integer("upsample_initial_channel", 1, MAX_CHANNELS)
        if initial % (1 << len(rates)):
            raise bad("upsample_initial_channel", f"must be divisible by 2^{len(rates)} (channels halve per stage)")
        res_kernels = integers("resblock_kernel_sizes", 1, 63)
        if any(k % 2 == 0 for k in res_kernels):
            raise bad("resblock_kernel_sizes", "must be odd (residual convolutions keep the length)")
        dilations = field("resblock_dilation_sizes")
        if not isinstance(dilations, list) or len(dilations) != len(res_kernels):
            raise bad("resblock_dilation_sizes", f"must be a list of {len(res_kernels)} lists (one per kernel size)")
        dilations = tuple(integers("resblock_dilation_sizes", 1, 64, d) for d in dilations)
        sampling_rate = field("sampling_rate", None)
        return cls(
            num_mels=integer("num_mels", 1, 1024),
            upsample_rates=rates,
            upsample_kernel_sizes=kernels,
            upsample_initial_channel=initial,
            resblock=choice("resblock", ("1", "2")),
            resblock_kernel_sizes=res_kernels,
            resblock_dilation_sizes=dilations,
            activation=choice("activation", ("snakebeta", "snake")),
            snake_logscale=flag("snake_logscale"),
            use_tanh_at_final=flag("use_tanh_at_final", True),
            use_bias_at_final=flag("use_bias_at_final", True),
            sampling_rate=None if sampling_rate is None else integer("sampling_rate", 1000, 384_000),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (lists, not tuples), as config.json holds it."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["resblock_dilation_sizes"] = [list(d) for d in self.resblock_dilation_sizes]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items() if v is not None}


class BigVGAN(nn.Module):
    def __init__(self, config: BigVGANConfig):
        super().__init__()
        self.config = config
        c, u = config, config.upsample_initial_channel
        self.n_kernels = len(c.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(c.num_mels, u, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(u >> i, u >> (i + 1), k, r, padding=(k - r) // 2)
            for i, (r, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            AMPBlock(u >> (i + 1), k, d, c.resblock == "1", c.snake_logscale)
            for i in range(len(c.upsample_rates))
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes)
        )
        last = u >> len(c.upsample_rates)
        self.activation_post = AntiAliasedSnake(last, c.snake_logscale)
        self.conv_post = nn.Conv1d(last, 1, 7, padding=3, bias=c.use_bias_at_final)

    def use_spectral_convs(
        self, enabled: bool, plans: Mapping[tuple[int, int], tuple[int, int]] = BIGVGAN_FFT_PLAN
    ) -> int:
        """As :meth:`Generator.use_spectral_convs` (float32 on CPU; call after moving the model)."""
        return use_spectral_convs(self.resblocks, enabled, plans)

    def forward(self, mel: Tensor) -> Tensor:
        """mel [B, num_mels, T] (natural-log magnitude, not normalised) -> wav [B, 1, T * hop] in [-1, 1]."""
        x = self.conv_pre(mel).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        for i, up in enumerate(self.ups):
            x = conv_transpose(x, up)  # no activation before it, unlike HiFi-GAN
            blocks = self.resblocks[i * self.n_kernels : (i + 1) * self.n_kernels]
            acc = blocks[0](x)
            for block in blocks[1:]:
                acc.add_(block(x))
            x = acc.div_(self.n_kernels)
        wav = conv(self.activation_post(x), self.conv_post).squeeze(2)
        return torch.tanh(wav) if self.config.use_tanh_at_final else wav.clamp(-1.0, 1.0)
