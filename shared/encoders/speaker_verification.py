"""ERes2NetV2 speaker-verification embedding for SoVITS v2Pro / v2ProPlus.

v2Pro models add a 20480-d speaker vector to their global conditioning. Upstream obtains it from
3D-Speaker's ERes2NetV2 (width 24, scale 4, expansion 4; file ``sv/pretrained_eres2netv2w24s4ep4.ckpt``,
a plain ``state_dict``) applied to Kaldi fbank features of the 16 kHz reference, taking not the
192-d speaker embedding but the last feature map ``[2048, 10, T/8]`` flattened over (channel, freq)
and averaged over time. This module is our own implementation of that network:

* stem: 3×3 conv (1→64) + BN + ReLU over the ``[1, 80 mel, T]`` "image";
* four stages of bottleneck Res2Net blocks (3, 4, 6, 3 blocks; 64·2^i planes; stride 2 from
  stage 2 on, so 80 mel bins end as 10). A block: 1×1 conv to ``scale`` groups of
  ``floor(planes·24/64)`` channels; group i is passed through its own 3×3 conv after being combined
  with the previous group's output (stages 1–2: plain sum; stages 3–4: attentional feature fusion);
  then a 1×1 conv to ``planes·4`` channels plus the (projected) shortcut. All activations inside
  blocks are ReLU clipped at 20;
* stage 3's output is downsampled by a strided 3×3 conv and fused with stage 4's output by AFF.

AFF (attentional feature fusion) of ``a`` and ``b``: ``w = 1 + tanh(att([a; b]))`` where ``att`` is
1×1 conv (2C→C/4) + BN + SiLU + 1×1 conv (C/4→C) + BN; output ``a·w + b·(2 − w)``.

The checkpoint also holds the unused classification head (``seg_1``, Linear 40960→192); the loader
requires it to be present (so a wrong file is still caught) but does not keep it. BatchNorm is folded
into the preceding convolution at load time, which is the same affine map evaluated with fewer passes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from dora_gpt_sovits.checkpoint_io import CheckpointError, check_state_dict_keys, read_checkpoint
from dora_gpt_sovits.encoders.fbank import fbank
from dora_gpt_sovits.finite_guard import module_dtype, run_finite

EMBEDDING_DIM = 20480  # 2048 channels × 10 frequency rows


@dataclass(frozen=True)
class ERes2NetV2Config:
    m_channels: int = 64
    base_width: int = 24
    scale: int = 4
    expansion: int = 4
    num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    feat_dim: int = 80
    head_dim: int = 192  # size of the unused ``seg_1`` head stored in the checkpoint
    aff_reduction: int = 4

    @property
    def out_channels(self) -> int:
        return self.m_channels * 8 * self.expansion

    @property
    def head_in_features(self) -> int:
        # mean and std statistics of the [C, F/8] map (the pooling the head was trained with)
        return 2 * self.out_channels * (self.feat_dim // 8)


class ClippedReLU(nn.Module):
    """ReLU capped at 20, as in the original network (keeps activations bounded in fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 20.0)


class AFF(nn.Module):
    """Attentional feature fusion: a per-element convex-style mix of two equally shaped maps."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        inner = channels // reduction
        # Sequential indices (0 conv, 1 bn, 2 act, 3 conv, 4 bn) are the checkpoint's key names.
        self.local_att = nn.Sequential(
            nn.Conv2d(2 * channels, inner, kernel_size=1),
            nn.BatchNorm2d(inner),
            nn.SiLU(),
            nn.Conv2d(inner, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w = 1.0 + torch.tanh(self.local_att(torch.cat((a, b), dim=1)))
        return a * w + b * (2.0 - w)


class Res2NetBlock(nn.Module):
    """Bottleneck block with hierarchical group convolutions; ``fused`` selects AFF group merging."""

    def __init__(self, cfg: ERes2NetV2Config, in_planes: int, planes: int, stride: int, fused: bool) -> None:
        super().__init__()
        width = int(math.floor(planes * cfg.base_width / 64.0))
        out_planes = planes * cfg.expansion
        self.width = width
        self.conv1 = nn.Conv2d(in_planes, width * cfg.scale, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * cfg.scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False) for _ in range(cfg.scale)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(cfg.scale))
        self.fuse_models = nn.ModuleList(AFF(width, cfg.aff_reduction) for _ in range(cfg.scale - 1)) if fused else None
        self.conv3 = nn.Conv2d(width * cfg.scale, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        self.act = ClippedReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(self.act(self.bn1(self.conv1(x))), self.width, dim=1)
        outputs = []
        carried = groups[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            if i > 0:
                carried = self.merge(i, carried, groups[i])
            carried = self.act(bn(conv(carried)))
            outputs.append(carried)
        out = self.bn3(self.conv3(torch.cat(outputs, dim=1)))
        return self.act(out + self.shortcut(x))

    def merge(self, i: int, previous: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """How group ``i`` receives the previous group's output: AFF in fused blocks, else a sum."""
        if self.fuse_models is None:
            return previous + group
        return self.fuse_models[i - 1](previous, group)


class ERes2NetV2(nn.Module):
    """The feature trunk of ERes2NetV2; ``forward`` returns the ``[B, 20480]`` v2Pro embedding."""

    def __init__(self, cfg: ERes2NetV2Config = ERes2NetV2Config()) -> None:
        super().__init__()
        self.cfg = cfg
        m = cfg.m_channels
        self.conv1 = nn.Conv2d(1, m, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        in_planes = m
        stages = []
        for i, blocks in enumerate(cfg.num_blocks):
            planes, fused = m * 2**i, i >= 2
            layer = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                layer.append(Res2NetBlock(cfg, in_planes, planes, stride, fused))
                in_planes = planes * cfg.expansion
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.layer3_ds = nn.Conv2d(
            m * 4 * cfg.expansion, cfg.out_channels, kernel_size=3, padding=1, stride=2, bias=False
        )
        self.fuse34 = AFF(cfg.out_channels, cfg.aff_reduction)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats [B, T, 80]`` fbank → ``[B, 20480]`` (mean over time of the flattened last map)."""
        x = feats.transpose(1, 2).unsqueeze(1)  # the network sees a [1, freq, time] image
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x3 = self.layer3(x)
        fused = self.fuse34(self.layer4(x3), self.layer3_ds(x3))
        return fused.flatten(1, 2).mean(dim=-1)

    @torch.no_grad()
    def fold_batchnorm(self) -> None:
        """Fold every eval-mode BatchNorm into the convolution before it and drop the BN."""
        _fold_pair(self, "conv1", self, "bn1")
        for module in self.modules():
            if isinstance(module, Res2NetBlock):
                _fold_pair(module, "conv1", module, "bn1")
                for i in range(len(module.convs)):
                    _fold_pair(module.convs, str(i), module.bns, str(i))
                _fold_pair(module, "conv3", module, "bn3")
                if len(module.shortcut):
                    _fold_pair(module.shortcut, "0", module.shortcut, "1")
            elif isinstance(module, AFF):
                _fold_pair(module.local_att, "0", module.local_att, "1")
                _fold_pair(module.local_att, "3", module.local_att, "4")


def _fold_pair(conv_owner: nn.Module, conv_name: str, bn_owner: nn.Module, bn_name: str) -> None:
    conv, bn = getattr(conv_owner, conv_name), getattr(bn_owner, bn_name)
    if not isinstance(bn, nn.BatchNorm2d):
        return  # already folded
    # Fold in float64 so the folded weights equal the two-step computation to float rounding.
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    weight = conv.weight.double() * scale[:, None, None, None]
    bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
    conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    setattr(bn_owner, bn_name, nn.Identity())


HEAD_KEYS = ("seg_1.weight", "seg_1.bias")


@lru_cache(maxsize=4)
def _official_shapes(cfg: ERes2NetV2Config) -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):  # shapes only: no memory, no random init
        trunk = ERes2NetV2(cfg).state_dict()
    shapes = [(k, tuple(v.shape)) for k, v in trunk.items() if not _is_counter(k)]
    shapes += [("seg_1.weight", (cfg.head_dim, cfg.head_in_features)), ("seg_1.bias", (cfg.head_dim,))]
    return tuple(shapes)


def checkpoint_keys(cfg: ERes2NetV2Config = ERes2NetV2Config()) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the official state_dict (without BatchNorm ``num_batches_tracked``)."""
    return dict(_official_shapes(cfg))


def _is_counter(key: str) -> bool:
    return key.endswith(".num_batches_tracked")


def load_speaker_verification(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    fold_bn: bool = True,
) -> ERes2NetV2:
    """Load ``pretrained_eres2netv2w24s4ep4.ckpt`` strictly; return the eval-mode trunk.

    Raises :class:`CheckpointError` (one line, naming the file) for unreadable files, a top level
    that is not a state_dict, missing/unexpected keys or wrong tensor shapes.
    """
    raw = read_checkpoint(path)
    state = raw.content
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{raw.path}: not an ERes2NetV2 state_dict (expected a flat dict of tensors)")
    state = {k: v for k, v in state.items() if not _is_counter(k)}  # counters do not affect eval
    cfg = ERes2NetV2Config()
    expected = checkpoint_keys(cfg)
    check_state_dict_keys(state, set(expected), raw.path)
    wrong = [f"{k} {tuple(state[k].shape)} != {s}" for k, s in expected.items() if tuple(state[k].shape) != s]
    if wrong:
        raise CheckpointError(f"{raw.path}: wrong tensor shapes ({len(wrong)}): {', '.join(wrong[:3])}")
    with torch.device("meta"):  # parameters come from the file, so skip random initialisation
        model = ERes2NetV2(cfg)
    trunk = {k: v.float() for k, v in state.items() if k not in HEAD_KEYS}
    for name, _ in model.named_buffers():
        if _is_counter(name):
            trunk[name] = torch.zeros((), dtype=torch.long)  # training-only counters
    model.load_state_dict(trunk, strict=True, assign=True)
    model.requires_grad_(False).eval()
    if fold_bn:
        model.fold_batchnorm()
    return model.to(device=device, dtype=dtype)


@torch.inference_mode()
def speaker_embedding(model: ERes2NetV2, wav16k: torch.Tensor) -> torch.Tensor:
    """20480-d v2Pro speaker vector of a mono 16 kHz waveform ``[samples]`` (model dtype/device).

    Features are computed in float32 and then cast to the model dtype (upstream's half mode runs
    the fbank in fp16 too; float32 features are the more accurate choice). Never NaN: raises
    :class:`~dora_gpt_sovits.finite_guard.NonFiniteOutput` where even float32 gives NaN/inf.
    """
    param = next(model.parameters())
    feats = fbank(wav16k.to(param.device).float())[None]
    # Half precision on some CPUs computes NaN here (oneDNN's AMX bfloat16 convolution on short
    # references): finite_guard then runs the model in float32 for good.
    return run_finite(model, lambda m: m(feats.to(module_dtype(m))), "speaker verification (ERes2NetV2)", (feats,))[0]
