"""The v3/v4 mel generator's velocity field: a diffusion transformer (DiT) over mel frames.

Inputs are time-major ``[B, T, C]``: the noisy mel ``x`` (100 bins), the prompt mel ``cond`` (the
reference frames, zeros elsewhere), and the conditioning features ``text`` (512 channels, one
vector per mel frame). The flow time ``t`` and the Euler step size ``dt`` enter through sinusoidal
MLPs whose sum modulates every block (adaptive LayerNorm).

    text  = ConvNeXtV2^n(features + sincos(position))                  cached across ODE steps
    h     = Linear([x ; cond ; text]) ;  h += Mish-conv-Mish-conv(h)    (convolutional positions)
    c     = MLP_t(sincos(1000 t)) + MLP_dt(sincos(1000 dt))             dt part cached
    block: h += gate_a * Attn(LN(h)(1 + scale_a) + shift_a)
           h += gate_f * FFN(LN(h)(1 + scale_f) + shift_f)             (shift, scale, gate) = Linear(SiLU(c))
    v     = Linear(LN(h)(1 + scale) + shift)

Attention carries a rotary position code on the first ``dim_head`` channels of q and k, taken
before the split into heads: only head 0 sees positions, the others rely on the convolutional
code. That is how the official weights were trained, so it is reproduced as is.

Module and parameter names follow the official state dict under ``cfm.estimator.``, so a file's
tensors load with a plain ``load_state_dict``.

Cost (official size, T = 600, float32, CPU): about 3 s of one core per step, 65% in the linear
layers and 17% in attention; there fused q/k/v, fused modulation, in-place rotary and contiguous
attention inputs gave nothing beyond noise. A streamed first run is different: 64 frames, where a
step's ~600 operations cost mostly their overhead (under the graphs' OMP_WAIT_POLICY=PASSIVE, a
thread wake-up each). So the rotary is applied in place (bit-equal), a half dtype takes the fused
``addcmul`` forms of the modulation and the gated residual (float32 keeps the reference's two
roundings, bit for bit), and ``dit_packed.py`` gives a bfloat16 CPU DiT prepacked products and
channels-last position convolutions (docs/performance.md, issue #17).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint_io import MAX_LAYERS

SINUSOID_DIM = 256  # width of the sin/cos code of t and dt fed to their MLPs
TIME_SCALE = 1000.0  # t in [0, 1] is spread over the code's frequencies as 1000 t
TEXT_MAX_POSITION = 4096  # the text position table's length; later frames reuse its last row
ROPE_BASE = 10000.0
CONV_POS_KERNEL = 31
CONV_POS_GROUPS = 16
TEXT_CONV_KERNEL = 7
TEXT_CONV_MULT = 2  # ConvNeXt hidden width = 2 x text_dim
NORM_EPS = 1e-6


@dataclass(frozen=True)
class DiTConfig:
    dim: int = 1024
    depth: int = 22
    heads: int = 16
    dim_head: int = 64
    ff_mult: int = 2
    mel_dim: int = 100
    text_dim: int = 512
    conv_layers: int = 4

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], dim_head: int = 64) -> DiTConfig:
        """Every size read from the tensors of an estimator state dict (keys without ``cfm.estimator.``).

        Head width is not stored anywhere; 64 is the only value the official models use. Raises
        ``KeyError`` for a missing tensor and ``ValueError`` for inconsistent shapes or counts.
        """

        def shape(key: str, ndim: int) -> tuple[int, ...]:
            if key not in state:
                raise KeyError(f"missing {key}")
            s = tuple(state[key].shape)
            if len(s) != ndim:
                raise ValueError(f"{key} has shape {list(s)}, expected {ndim} dimensions")
            return s

        mel_dim, dim = shape("proj_out.weight", 2)
        width, fan_in = shape("input_embed.proj.weight", 2)
        text_dim = fan_in - 2 * mel_dim
        depth = _count_indexed(state, "transformer_blocks", "attn_norm.linear.weight")
        conv_layers = _count_indexed(state, "text_embed.text_blocks", "dwconv.weight")
        if width != dim or text_dim < 1:
            raise ValueError(f"input_embed.proj.weight is {[width, fan_in]}, expected [{dim}, 2*{mel_dim} + text_dim]")
        if not 1 <= depth <= MAX_LAYERS:
            raise ValueError(f"{depth} transformer blocks, expected 1..{MAX_LAYERS}")
        if conv_layers > MAX_LAYERS:
            raise ValueError(f"{conv_layers} text ConvNeXt blocks, expected at most {MAX_LAYERS}")
        inner, _ = shape("transformer_blocks.0.attn.to_q.weight", 2)
        if inner % dim_head:
            raise ValueError(f"attention width {inner} is not a multiple of the head width {dim_head}")
        ff_inner, _ = shape("transformer_blocks.0.ff.ff.0.0.weight", 2)
        if ff_inner % dim:
            raise ValueError(f"feed-forward width {ff_inner} is not a multiple of dim {dim}")
        config = cls(dim, depth, inner // dim_head, dim_head, ff_inner // dim, mel_dim, text_dim, conv_layers)
        config.check_shapes(state)
        return config

    def check_shapes(self, state: Mapping[str, Tensor]) -> None:
        """ValueError naming the first tensor whose shape differs from what this config builds."""
        with torch.device("meta"):
            expected = DiT(self).state_dict()
        for key, tensor in state.items():
            if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
                raise ValueError(f"{key} has shape {list(tensor.shape)}, expected {list(expected[key].shape)}")


def _count_indexed(state: Mapping[str, Tensor], prefix: str, leaf: str) -> int:
    """Number of ``prefix.{i}.leaf`` keys, which must be numbered 0..n-1."""
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.{re.escape(leaf)}")
    found = sorted(int(m.group(1)) for k in state if (m := pattern.fullmatch(k)))
    if found != list(range(len(found))):
        raise ValueError(f"{prefix}.* are numbered {found[:8]}..., expected 0..{len(found) - 1}")
    return len(found)


def sinusoid(t: Tensor, width: int = SINUSOID_DIM) -> Tensor:
    """[B] scalars -> [B, width] code [sin(1000 t f_i) ; cos(1000 t f_i)], f_i from 1 down to 1e-4."""
    half = width // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000.0) / (half - 1)))
    angles = TIME_SCALE * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


def text_positions(length: int, width: int, device: torch.device) -> Tensor:
    """[length, width] fixed code [cos(p f_i) ; sin(p f_i)], f_i = 10000^(-2i/width), p clamped to the table."""
    freqs = 1.0 / (10000.0 ** (torch.arange(0, width, 2, device=device)[: width // 2].float() / width))
    p = torch.arange(length, device=device).clamp(max=TEXT_MAX_POSITION - 1)
    angles = torch.outer(p.float(), freqs)
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


def padding_mask(lengths: Tensor | None, length: int) -> Tensor | None:
    """[B] valid lengths -> [B, T] bool (True = real frame); None when nothing is padded."""
    if lengths is None:
        return None
    return torch.arange(length, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor, width: int) -> Tensor:
    """LayerNorm without affine over the last axis (``width``, a Python int so that export sees a
    constant), then the per-item affine predicted from the time code."""
    normed = F.layer_norm(x, (width,), eps=NORM_EPS)
    if exact_rounding(x):
        return normed * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
    return torch.addcmul(shift.unsqueeze(1), normed, 1 + scale.unsqueeze(1))


def add_gated(h: Tensor, gate: Tensor, y: Tensor) -> Tensor:
    """The residual update h + gate * y (gate [B, C] per item, y [B, T, C])."""
    if exact_rounding(h):
        return h + gate.unsqueeze(1) * y
    return torch.addcmul(h, gate.unsqueeze(1), y)


def exact_rounding(x: Tensor) -> bool:
    """Whether to keep the reference's separate multiply and add. float32 does (its results stay the
    reference's bit for bit) and so do exported graphs; a half dtype takes the fused form, one pass
    over the frames instead of two and one rounding instead of two: at a streamed first run's few
    dozen frames each pass costs mostly a thread wake-up (docs/performance.md, issue #17)."""
    return x.dtype == torch.float32 or torch.jit.is_tracing()


class TimestepEmbedding(nn.Module):
    """Scalar per item -> [B, dim] through its sinusoid and a two-layer SiLU MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.time_mlp = nn.Sequential(nn.Linear(SINUSOID_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.time_mlp(sinusoid(t).to(t.dtype))


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN: each channel scaled by its L2 energy over time relative to the channel mean."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        energy = torch.norm(x, p=2, dim=1, keepdim=True)
        relative = energy / (energy.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * relative) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Depthwise conv over time, LayerNorm, pointwise MLP with GELU and GRN, residual."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, TEXT_CONV_KERNEL, padding=TEXT_CONV_KERNEL // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.grn = GlobalResponseNorm(hidden)
        self.pwconv2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        h = self.grn(F.gelu(self.pwconv1(self.norm(h))))
        return x + self.pwconv2(h)


class TextEmbedding(nn.Module):
    """Conditioning features [B, T, text_dim] + fixed position code, refined by ConvNeXt blocks."""

    def __init__(self, text_dim: int, n_blocks: int):
        super().__init__()
        self.text_dim = text_dim
        self.text_blocks = nn.Sequential(*(ConvNeXtBlock(text_dim, text_dim * TEXT_CONV_MULT) for _ in range(n_blocks)))

    def forward(self, features: Tensor) -> Tensor:
        if len(self.text_blocks) == 0:  # the position code belongs to the ConvNeXt branch only
            return features
        positions = text_positions(features.shape[1], self.text_dim, features.device)
        return self.text_blocks(features + positions.to(features.dtype))


class ConvPositionEmbedding(nn.Module):
    """Two grouped wide convolutions over time, each followed by Mish: a relative position code."""

    def __init__(self, dim: int):
        super().__init__()
        pad = CONV_POS_KERNEL // 2
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, CONV_POS_KERNEL, groups=CONV_POS_GROUPS, padding=pad),
            nn.Mish(),
            nn.Conv1d(dim, dim, CONV_POS_KERNEL, groups=CONV_POS_GROUPS, padding=pad),
            nn.Mish(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1d(x.transpose(1, 2)).transpose(1, 2)


class InputEmbedding(nn.Module):
    """[noisy mel ; prompt mel ; text] per frame -> model width, plus the convolutional position code."""

    def __init__(self, mel_dim: int, text_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * mel_dim + text_dim, dim)
        self.conv_pos_embed = ConvPositionEmbedding(dim)

    def forward(self, x: Tensor, cond: Tensor, text: Tensor) -> Tensor:
        h = self.proj(torch.cat((x, cond, text), dim=-1))
        return h + self.conv_pos_embed(h)


class RotaryEmbedding(nn.Module):
    """Rotary position code over ``width`` channels, adjacent pairs (2i, 2i+1) rotated by p * f_i.

    Adjacent pairs, not the two halves: that is the layout of x-transformers >= 1.31, the library
    the weights were trained with (older releases rotated halves; the outputs differ).

    ``inv_freq`` is a stored buffer because the files carry it (rounded to float16 in official
    ones, and the reference uses the rounded values); a state dict without it keeps the exact one.
    """

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("inv_freq", self.exact_inv_freq(width))

    @staticmethod
    def exact_inv_freq(width: int) -> Tensor:
        return 1.0 / (ROPE_BASE ** (torch.arange(0, width, 2).float() / width))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "inv_freq"
        if key not in state_dict:
            state_dict[key] = self.exact_inv_freq(2 * self.inv_freq.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, length: int) -> tuple[Tensor, Tensor]:
        """(cos, sin), each [T, width], every frequency repeated for both channels of its pair."""
        p = torch.arange(length, device=self.inv_freq.device).to(self.inv_freq.dtype)
        angles = torch.outer(p, self.inv_freq)
        angles = torch.stack((angles, angles), dim=-1).flatten(-2)
        return angles.cos(), angles.sin()


def rotate_pairs(x: Tensor, width: int) -> Tensor:
    """(a, b) -> (-b, a) on each adjacent channel pair of [..., width]: multiplication by i in the
    complex view. Sizes are Python ints so that an exported graph keeps them constant."""
    pairs = x.reshape(*x.shape[:-1], width // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((-b, a), dim=-1).reshape(x.shape)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, width: int) -> Tensor:
    """Rotate the first ``width`` channels of [B, T, C] (cos, sin: [T, width]); the rest pass through."""
    head, tail = x[..., :width], x[..., width:]
    return torch.cat((rotated(head, cos, sin, width), tail), dim=-1)


def rotated(head: Tensor, cos: Tensor, sin: Tensor, width: int) -> Tensor:
    return head * cos + rotate_pairs(head, width) * sin


def apply_rotary_(x: Tensor, cos: Tensor, sin: Tensor, width: int) -> Tensor:
    """:func:`apply_rotary` in place: the same values, without copying the other heads' channels
    (a [T, C] copy per projection; at a first run's few dozen frames each such pass is mostly the
    cost of waking the second thread). Returns ``x``."""
    head = x[..., :width]
    head.copy_(rotated(head, cos, sin, width))
    return x


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])  # index 0 as in the files (1 was dropout)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        """x [B, T, dim]; mask [B, T] (True = real frame) hides padded keys and zeroes padded outputs."""
        cos, sin = rope
        q, k, v = self.project_qkv(x)
        # Rotary on the first head's channels only, before the head split (see the module docstring).
        # In place on the fresh projections, except in an exported graph, which keeps the plain form.
        rotary = apply_rotary if torch.jit.is_tracing() else apply_rotary_
        q, k = rotary(q, cos, sin, self.dim_head), rotary(k, cos, sin, self.dim_head)
        q, k, v = (y.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2) for y in (q, k, v))
        key_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        out = self.project_out(out.transpose(1, 2).flatten(2))
        return out if mask is None else out.masked_fill(~mask.unsqueeze(-1), 0.0)

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.to_q(x), self.to_k(x), self.to_v(x)

    def project_out(self, x: Tensor) -> Tensor:
        return self.to_out[0](x)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        # Indices are the files': ff.0.0 in-projection (with its GELU), ff.1 was dropout, ff.2 out.
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(approximate="tanh")),
            nn.Identity(),
            nn.Linear(dim * mult, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(x)


class AdaLayerNormZero(nn.Module):
    """Time code -> ``chunks`` per-item vectors of width dim (shifts, scales, gates)."""

    def __init__(self, dim: int, chunks: int):
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(dim, chunks * dim)

    def forward(self, c: Tensor) -> tuple[Tensor, ...]:
        return self.linear(F.silu(c)).chunk(self.chunks, dim=-1)


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int):
        super().__init__()
        self.dim = dim
        self.attn_norm = AdaLayerNormZero(dim, 6)
        self.attn = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim, ff_mult)

    def forward(self, h: Tensor, c: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.attn_norm(c)
        h = add_gated(h, gate_a, self.attn(modulate(h, shift_a, scale_a, self.dim), rope, mask))
        return add_gated(h, gate_f, self.ff(modulate(h, shift_f, scale_f, self.dim)))


class DiT(nn.Module):
    """The CFM estimator: velocity of the mel flow at time t, given prompt mel and features."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        c = config
        self.time_embed = TimestepEmbedding(c.dim)
        self.d_embed = TimestepEmbedding(c.dim)
        self.text_embed = TextEmbedding(c.text_dim, c.conv_layers)
        self.input_embed = InputEmbedding(c.mel_dim, c.text_dim, c.dim)
        self.rotary_embed = RotaryEmbedding(c.dim_head)
        self.transformer_blocks = nn.ModuleList(DiTBlock(c.dim, c.heads, c.dim_head, c.ff_mult) for _ in range(c.depth))
        self.norm_out = AdaLayerNormZero(c.dim, 2)
        self.proj_out = nn.Linear(c.dim, c.mel_dim)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> DiT:
        """Built to the tensors' sizes (no random init) and loaded strictly, in the tensors' dtype."""
        with torch.device("meta"):
            model = cls(DiTConfig.from_state_dict(state))
        model.load_state_dict(dict(state), strict=True, assign=True)
        return model.eval().requires_grad_(False)

    def embed_text(self, features: Tensor) -> Tensor:
        """[B, T, text_dim] features -> refined text channels; independent of t, so computed once."""
        return self.text_embed(features)

    def embed_step(self, dt: Tensor) -> Tensor:
        """[B] Euler step sizes -> their share of the time code; constant over a sampling run."""
        return self.d_embed(dt)

    def velocity(
        self, x: Tensor, cond: Tensor, text: Tensor, t: Tensor, step: Tensor, lengths: Tensor | None = None
    ) -> Tensor:
        """One estimator call on cached parts.

        x, cond [B, T, mel_dim]; text = :meth:`embed_text`; t [B] flow time; step = :meth:`embed_step`;
        lengths [B] valid frames (None: no padding). Returns the velocity [B, T, mel_dim].
        """
        length = x.shape[1]
        mask = padding_mask(lengths, length)
        if t.dim() == 0:
            t = t.repeat(x.shape[0])
        c = self.time_embed(t) + step
        h = self.input_embed(x, cond, text)
        rope = self.rotary_embed(length)
        for block in self.transformer_blocks:
            h = block(h, c, rope, mask)
        scale, shift = self.norm_out(c)  # scale first in this layer's output
        return self.proj_out(modulate(h, shift, scale, self.config.dim))

    def forward(
        self, x: Tensor, cond: Tensor, features: Tensor, t: Tensor, dt: Tensor, lengths: Tensor | None = None
    ) -> Tensor:
        """The whole computation for one step (nothing cached): x, cond [B, T, mel], features [B, T, text]."""
        return self.velocity(x, cond, self.embed_text(features), t, self.embed_step(dt), lengths)
