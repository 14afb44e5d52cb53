"""A random-weight ERes2NetV2 checkpoint in the official ``pretrained_eres2netv2w24s4ep4.ckpt`` format.

The file is a plain ``state_dict`` with the official key names and shapes (trunk, BatchNorm buffers
including ``num_batches_tracked``, and the unused ``seg_1`` head), full size (~54 M parameters).

Random convolutions followed by BatchNorm layers with default statistics would push activations far
from unit scale after 16 residual blocks. So the BatchNorm running statistics are calibrated: one
training-mode pass over two synthetic voices records each layer's real activation mean/variance,
which is what a trained network's statistics look like to the layers after it. Embeddings of the
dev model are therefore finite, well scaled and differ between voices.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from dora_gpt_sovits.audio.synthetic_voice import speech_like_signal
from dora_gpt_sovits.encoders.fbank import fbank
from dora_gpt_sovits.encoders.speaker_verification import ERes2NetV2, ERes2NetV2Config, Res2NetBlock

_CALIBRATION_SECONDS = 0.5
_CALIBRATION_F0 = (110.0, 210.0)
_RESIDUAL_GAMMA = (0.1, 0.3)


def random_sv_state_dict(seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The official-format state_dict of a seeded random ERes2NetV2 with calibrated BatchNorm."""
    cfg = ERes2NetV2Config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ERes2NetV2(cfg)
        head = nn.Linear(cfg.head_in_features, cfg.head_dim)
        _randomise_batchnorm_affine(model)
        _calibrate_batchnorm(model, seed)
    state = model.state_dict()
    state["seg_1.weight"] = head.weight.detach()
    state["seg_1.bias"] = head.bias.detach()
    return {k: (v.to(dtype) if v.is_floating_point() else v).clone() for k, v in state.items()}


def write_random_sv(path: str | os.PathLike[str], seed: int = 0, dtype: torch.dtype = torch.float32) -> str:
    """Write the dev speaker-verification checkpoint to ``path`` (a plain ``torch.save``); return it."""
    path = os.fspath(path)
    torch.save(random_sv_state_dict(seed, dtype), path)
    return path


@torch.no_grad()
def _randomise_batchnorm_affine(model: nn.Module) -> None:
    # Trained BN scales/shifts are not identity; a spread keeps channels distinguishable.
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight.copy_(torch.empty_like(bn.weight).uniform_(0.7, 1.3))
            bn.bias.copy_(torch.randn_like(bn.bias) * 0.1)
    # A random BatchNorm network is chaotic: tiny input (or rounding) differences grow with every
    # block, so half precision would drift far from fp32. Trained ResNets keep the last BN of each
    # residual branch small, which keeps blocks close to identity; do the same here.
    for block in model.modules():
        if isinstance(block, Res2NetBlock):
            block.bn3.weight.copy_(torch.empty_like(block.bn3.weight).uniform_(*_RESIDUAL_GAMMA))


@torch.no_grad()
def _calibrate_batchnorm(model: nn.Module, seed: int) -> None:
    """Set every BN's running mean/var to the statistics of its input over two synthetic voices."""
    voices = [
        torch.from_numpy(speech_like_signal(_CALIBRATION_SECONDS, 16000, f0=f0, seed=seed + i))
        for i, f0 in enumerate(_CALIBRATION_F0)
    ]
    feats = torch.stack([fbank(v) for v in voices])
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one batch gives exactly its statistics
    model.train()
    model(feats)
    model.eval()
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = 0.1
