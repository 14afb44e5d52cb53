"""v3/v4 LoRA fine-tunes merged into their base model's weights at load (no peft at run time).

Upstream trains v3/v4 fine-tunes with peft LoRA adapters on the DiT's attention projections
(``to_q``, ``to_k``, ``to_v``, ``to_out.0``) with ``r = lora_alpha = lora_rank``, and saves only
what was trainable: the adapters, under peft's wrapped names
``cfm.base_model.model.<module>.lora_A.default.weight`` ([r, in]) and ``...lora_B.default.weight``
([out, r]), plus the small modules trained in full (reference encoder, bridge, ``wns1``) under
their ordinary names. Inference loads the base, overlays the file, and merges:
``W <- W + (alpha / r) * B @ A`` — what this module does on the state dicts, in float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..checkpoint_io import CheckpointError

PEFT_PREFIX = "cfm.base_model.model."
ADAPTER_SUFFIXES = (".lora_A.default.weight", ".lora_B.default.weight")
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
MAX_RANK = 1024


def lora_rank(content: Mapping[str, object], path: str) -> int:
    rank = content.get("lora_rank")
    if isinstance(rank, str) and rank.isdigit():
        rank = int(rank)  # the training config stores it as text; savee passes int(...)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= MAX_RANK:
        raise CheckpointError(f"{path}: lora_rank is {rank!r}, expected an integer 1..{MAX_RANK}")
    return rank


def merge_lora(
    base: Mapping[str, torch.Tensor], lora: Mapping[str, torch.Tensor], rank: int, path: str
) -> dict[str, torch.Tensor]:
    """Base state dict (file names) + a LoRA file's tensors -> the merged state dict (file names)."""
    merged = {k: v for k, v in base.items()}
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in lora.items():
        if name.startswith(PEFT_PREFIX) and name.endswith(ADAPTER_SUFFIXES):
            suffix = next(s for s in ADAPTER_SUFFIXES if name.endswith(s))
            module = name[len(PEFT_PREFIX) : -len(suffix)]
            adapters.setdefault(module, {})[suffix.split(".")[1]] = tensor
        elif name.startswith(PEFT_PREFIX):
            # A wrapped base weight (``...base_layer.weight``) or any other cfm tensor: same module, plain name.
            plain = "cfm." + name[len(PEFT_PREFIX) :].replace(".base_layer.", ".")
            merged[_existing(plain, base, path)] = tensor
        else:
            merged[_existing(name, base, path)] = tensor
    if not adapters:
        raise CheckpointError(f"{path}: a LoRA fine-tune without any lora_A/lora_B adapter tensors")
    scale = 1.0  # alpha / r with alpha = r, as upstream trains and loads them
    for module, pair in sorted(adapters.items()):
        merged[_target(module, base, path)] = _merged_weight(module, pair, base, rank, scale, path)
    return merged


def _existing(name: str, base: Mapping[str, torch.Tensor], path: str) -> str:
    if name not in base and not name.startswith(("enc_q.", "linear_mel.")):
        raise CheckpointError(f"{path}: LoRA file tensor {name} has no counterpart in the base model")
    return name


def _target(module: str, base: Mapping[str, torch.Tensor], path: str) -> str:
    if not module.endswith(LORA_TARGETS):
        raise CheckpointError(f"{path}: LoRA adapter on {module}, which upstream never adapts")
    weight = f"cfm.{module}.weight"
    if weight not in base:
        raise CheckpointError(f"{path}: LoRA adapter for {weight}, which the base model does not have")
    return weight


def _merged_weight(
    module: str, pair: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], rank: int, scale: float, path: str
) -> torch.Tensor:
    if set(pair) != {"lora_A", "lora_B"}:
        raise CheckpointError(f"{path}: LoRA adapter of {module} lacks {({'lora_A', 'lora_B'} - set(pair)).pop()}")
    a, b = pair["lora_A"].float(), pair["lora_B"].float()
    weight = base[f"cfm.{module}.weight"].float()
    out_features, in_features = weight.shape
    if a.shape != (rank, in_features) or b.shape != (out_features, rank):
        raise CheckpointError(
            f"{path}: LoRA adapter of {module} is A {list(a.shape)} / B {list(b.shape)}, expected "
            f"A [{rank}, {in_features}] / B [{out_features}, {rank}] for rank {rank}"
        )
    delta = b @ a * scale
    if not math.isfinite(float(delta.abs().max())):
        raise CheckpointError(f"{path}: LoRA adapter of {module} gives non-finite weights")
    return weight + delta
