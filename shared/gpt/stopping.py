"""When GPT decoding stops, and what it returns: upstream GPT-SoVITS's rules, used by every decoder.

Step ``k = 0, 1, ...`` samples one token (``k = 0`` from the prefill's logits, later from one
cached step). For ``k < 11`` EOS is not a candidate. Decoding stops

* on EOS (sampled, or the arg-max of the penalised logits): that token is **dropped**;
* when ``k + 1 > early_stop_num`` (the token budget: the request's, else the model's
  ``50 * max_sec``): that token is **kept**;
* at ``k = 1499`` (60 s of audio): that token is kept.

Upstream hands SoVITS ``y[-k:]`` (``y`` = prompt + kept tokens, ``k`` the last step). After an EOS
stop that is every generated token; after an early stop or the step cap one more token was kept
than ``k``, so **the first generated token is dropped**. :func:`finish` reproduces that slice
exactly; :attr:`GenerationResult.generated` (and a stream) holds every kept token.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch

MAX_STEPS = 1500  # 60 s of audio at 25 tokens/s
MIN_STEPS_BEFORE_EOS = 11  # ~0.44 s: EOS is not even a candidate before this step


class StopReason(StrEnum):
    EOS = "eos"
    EARLY_STOP = "early_stop"  # generated more than early_stop_num tokens
    MAX_STEPS = "max_steps"


@dataclass(frozen=True)
class GenerationResult:
    tokens: torch.Tensor  # [N] int64 on CPU: upstream's ``y[-idx:]``, what SoVITS decodes
    generated: torch.Tensor  # [M] int64: every kept generated token (= what the stream yielded)
    sequence: torch.Tensor  # upstream's ``y``: prompt tokens then ``generated``
    stop_reason: StopReason
    n_steps: int  # decode steps run, prefill included; upstream's ``idx`` is n_steps - 1


def eos_allowed(step: int) -> bool:
    """Whether EOS is a candidate at decode step ``step`` (the first 11 steps ban it)."""
    return step >= MIN_STEPS_BEFORE_EOS


@dataclass(frozen=True)
class StopRules:
    """One utterance's budget: ``early_stop`` tokens (-1 = none) and the steps that allows."""

    early_stop: int
    max_steps: int

    @classmethod
    def of(cls, early_stop_num: int, model_default: int) -> StopRules:
        """``early_stop_num`` as in SamplingParams (-1 = the model's ``model_default``)."""
        early_stop = model_default if early_stop_num == -1 else early_stop_num
        return cls(early_stop, MAX_STEPS if early_stop == -1 else min(MAX_STEPS, early_stop + 1))

    def stop_reason(self, step: int, eos: bool) -> StopReason | None:
        """Why decoding ends after step ``step`` (whose token was EOS or not); None = go on."""
        if eos:  # checked last upstream but it decides whether the token is dropped, so it wins
            return StopReason.EOS
        if self.early_stop != -1 and step + 1 > self.early_stop:  # step + 1 tokens sampled
            return StopReason.EARLY_STOP
        return StopReason.MAX_STEPS if step == MAX_STEPS - 1 else None


def finish(prompt: torch.Tensor | None, generated: list[int], step: int, reason: StopReason) -> GenerationResult:
    """The result of a row that stopped after step ``step`` having kept ``generated``."""
    kept = torch.tensor(generated, dtype=torch.long)
    sequence = kept if prompt is None else torch.cat([prompt.cpu(), kept])
    if prompt is None:
        tokens = sequence  # upstream returns idx 0 for reference-free runs, and y[-0:] is all of y
    else:
        # Upstream slices y[-idx:]. QUIRK kept for parity: when one more token was kept than idx
        # (early stop, step cap) the first generated token is lost, and with idx == 0 (only
        # reachable with early_stop_num 0) the slice is the whole sequence, prompt included.
        tokens = sequence[-step:] if step > 0 else sequence
    # Upstream's "bad zero prediction" fallback (an empty result) cannot happen: EOS is banned for
    # the first 11 steps, so every finished row has kept at least one token.
    return GenerationResult(tokens, kept, sequence, reason, step + 1)
