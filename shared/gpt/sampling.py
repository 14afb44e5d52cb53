"""Next-token sampling with upstream GPT-SoVITS's exact order of operations.

penalty -> top-p -> temperature -> top-k -> softmax -> exponential race. Following that order (and
drawing exactly one ``Exp(1)`` tensor per step) is what lets seeded runs reproduce upstream's
token sequences bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    top_k: int = 15  # <= 0 disables top-k
    top_p: float = 1.0  # only applied when < 1
    temperature: float = 1.0
    repetition_penalty: float = 1.35  # 1.0 disables
    early_stop_num: int = -1  # -1: the model's default (50 * max_sec); otherwise a token budget
    seed: int | None = None  # None: draw from torch's global generator

    def __post_init__(self) -> None:
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, got {self.repetition_penalty}")
        if self.early_stop_num < -1:
            raise ValueError(f"early_stop_num must be -1 (model default) or >= 0, got {self.early_stop_num}")


def penalise_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> None:
    """In place: shrink the logits of already-seen ids towards -inf (each id once, not per occurrence).

    In place matters: the caller's EOS test looks at the penalised logits, as upstream's does.
    """
    logits.copy_(penalised(logits, seen, penalty))


def penalised(logits: torch.Tensor, seen: torch.Tensor, penalty: float | torch.Tensor) -> torch.Tensor:
    """Out-of-place :func:`penalise_repeats` (``penalty`` may be a tensor: the exported graphs use it)."""
    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def top_p_filter(logits: torch.Tensor, top_p: float | torch.Tensor) -> torch.Tensor:
    """Keep the smallest high-probability prefix whose mass reaches ``top_p`` (at least one id)."""
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative > top_p
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep every logit >= the k-th largest (ties at the threshold all survive)."""
    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def exponential_race(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``argmax(p / q)``, ``q ~ Exp(1)``: an exact categorical draw without a host sync."""
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.argmax(probs / q, dim=-1)


def sample(
    logits: torch.Tensor, seen: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one id per row from ``logits [B, V]`` (model dtype); returns ``[B]`` int64.

    ``seen [B, >= V]`` marks the prompt and generated ids. ``logits`` is penalised in place.
    """
    if params.repetition_penalty != 1.0:
        penalise_repeats(logits, seen[:, : logits.shape[1]], params.repetition_penalty)
    scores = logits
    if params.top_p < 1.0:
        scores = top_p_filter(scores, params.top_p)
    scores = scores / max(params.temperature, 1e-5)
    if params.top_k > 0:
        scores = top_k_filter(scores, params.top_k)
    return exponential_race(torch.softmax(scores, dim=-1), generator)
