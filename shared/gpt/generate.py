"""Autoregressive decoding of semantic tokens, with upstream GPT-SoVITS's stop rules.

Step ``k = 0, 1, ...``: logits (``k = 0`` from the prefill, later from one cached step) -> for
``k < 11`` the EOS column is dropped -> sample -> stop on EOS (sampled, or the arg-max of the
penalised logits; that token is discarded), on ``generated > early_stop_num`` (that token is kept)
or at ``k = 1499``.

Upstream hands SoVITS ``y[-k:]`` (``y`` = prompt + kept tokens, ``k`` the last step). After an EOS
stop that is every generated token; after an early stop or the step cap one more token was kept
than ``k``, so **the first generated token is dropped**. :attr:`GenerationResult.tokens` reproduces
that slice exactly; :attr:`GenerationResult.generated` and the stream hold every kept token.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generator, Iterator, Sequence

import torch

from .model import Text2Semantic, prefix_lm_mask
from .sampling import SamplingParams, sample

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


@dataclass(frozen=True)
class Utterance:
    phone_ids: torch.Tensor  # [T] int64, prompt phones then target phones
    bert: torch.Tensor  # [bert_dim, T], model dtype
    prompt: torch.Tensor | None  # [P] int64 prompt semantic tokens; None = reference-free


class TokenStream(Iterator[int]):
    """Iterator over generated tokens; ``.result`` is set once it is exhausted."""

    def __init__(self, steps: Generator[int, None, GenerationResult]) -> None:
        self._steps = steps
        self.result: GenerationResult | None = None

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> int:
        try:
            return next(self._steps)
        except StopIteration as stop:
            self.result = stop.value
            raise


def generate_stream(
    model: Text2Semantic,
    phone_ids: torch.Tensor,
    bert: torch.Tensor,
    prompt_tokens: torch.Tensor | None,
    params: SamplingParams = SamplingParams(),
) -> TokenStream:
    """Yield each kept semantic token the moment it is sampled; ``stream.result`` tells how it ended.

    Also usable as a plain generator: the ``StopIteration`` value is the :class:`GenerationResult`.
    """
    utterance = prepare_utterance(model, phone_ids, bert, prompt_tokens)
    return TokenStream(_stream_one(model, utterance, params))


def generate(
    model: Text2Semantic,
    phone_ids: torch.Tensor,
    bert: torch.Tensor,
    prompt_tokens: torch.Tensor | None,
    params: SamplingParams = SamplingParams(),
) -> GenerationResult:
    stream = generate_stream(model, phone_ids, bert, prompt_tokens, params)
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result


def generate_batch(
    model: Text2Semantic,
    phone_ids: Sequence[torch.Tensor],
    bert: Sequence[torch.Tensor],
    prompt_tokens: torch.Tensor | None | Sequence[torch.Tensor | None],
    params: SamplingParams = SamplingParams(),
) -> list[GenerationResult]:
    """Decode several utterances together; results in input order.

    ``prompt_tokens`` is one prompt shared by every row (the usual case: several sentences of one
    request) or one per row. Rows are left-padded, finish independently, and are dropped from the
    batch (KV cache included) when they finish. Greedy results equal :func:`generate`'s; sampled
    results differ because the rows share one random stream.
    """
    if len(phone_ids) != len(bert):
        raise ValueError(f"{len(phone_ids)} phone sequences but {len(bert)} BERT feature matrices")
    if prompt_tokens is None or isinstance(prompt_tokens, torch.Tensor):
        prompt_tokens = [prompt_tokens] * len(phone_ids)
    if len(prompt_tokens) != len(phone_ids):
        raise ValueError(f"{len(phone_ids)} phone sequences but {len(prompt_tokens)} prompts")
    utterances = [prepare_utterance(model, *row) for row in zip(phone_ids, bert, prompt_tokens)]
    if not utterances:
        return []
    results: list[GenerationResult | None] = [None] * len(utterances)
    for events in decode_steps(model, utterances, params):
        for row, _, result in events:
            if result is not None:
                results[row] = result
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def prepare_utterance(
    model: Text2Semantic, phone_ids: torch.Tensor, bert: torch.Tensor, prompt_tokens: torch.Tensor | None
) -> Utterance:
    """Validate one utterance's inputs and move them to the model's device and dtype."""
    cfg = model.config
    phone_ids = _ids(phone_ids, "phone_ids", cfg.phoneme_vocab_size)
    if phone_ids.numel() == 0:
        raise ValueError("phone_ids is empty")
    if bert.dim() != 2 or tuple(bert.shape) != (cfg.bert_dim, phone_ids.numel()):
        raise ValueError(f"bert has shape {list(bert.shape)}, expected [{cfg.bert_dim}, {phone_ids.numel()}]")
    prompt = None if prompt_tokens is None else _ids(prompt_tokens, "prompt_tokens", cfg.eos)
    device = model.device
    return Utterance(
        phone_ids.to(device),
        bert.to(device=device, dtype=model.dtype),
        None if prompt is None else prompt.to(device),
    )


def _ids(ids: torch.Tensor, name: str, limit: int) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"{name} must be a 1-D integer tensor")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= limit):
        raise ValueError(f"{name} holds ids outside [0, {limit})")
    return ids.long()


def _stream_one(model: Text2Semantic, utterance: Utterance, params: SamplingParams) -> Generator[int, None, GenerationResult]:
    for ((_, token, result),) in decode_steps(model, [utterance], params):
        if token is not None:
            yield token
        if result is not None:
            return result
    raise AssertionError("decoding ended without a result")


StepEvents = list[tuple[int, int | None, GenerationResult | None]]


@torch.inference_mode()
def decode_steps(
    model: Text2Semantic, utterances: list[Utterance], params: SamplingParams
) -> Iterator[StepEvents]:
    """The decode loop. Yields, per step, ``(row, kept token or None, result if the row just finished)``
    for every row still running at that step."""
    cfg = model.config
    early_stop = model.early_stop_num if params.early_stop_num == -1 else params.early_stop_num
    generator = None if params.seed is None else torch.Generator(model.device).manual_seed(params.seed)

    max_steps = MAX_STEPS if early_stop == -1 else min(MAX_STEPS, early_stop + 1)

    x, mask, prompt_lens, pad = prefill_inputs(model, utterances)
    model.ensure_positions(max(prompt_lens.tolist()) + max_steps)
    cache = model.new_cache(len(utterances), x.shape[1] + max_steps)
    if pad is not None:
        cache.mark_padding(pad)
    seen = torch.zeros(len(utterances), cfg.vocab_size, dtype=torch.bool, device=x.device)
    for row, u in enumerate(utterances):
        if u.prompt is not None:
            seen[row, u.prompt] = True

    rows = list(range(len(utterances)))  # original index of each live cache row
    generated: list[list[int]] = [[] for _ in utterances]
    logits = model.prefill(x, mask, cache)
    for k in range(max_steps):
        if k > 0:
            logits = model.step(tokens, prompt_lens + (k - 1), cache)
        if k < MIN_STEPS_BEFORE_EOS:
            logits = logits[:, : cfg.eos]
        tokens = sample(logits, seen, params, generator)
        seen.scatter_(1, tokens[:, None], True)
        ended = (logits.argmax(dim=-1) == cfg.eos) | (tokens == cfg.eos)
        outcome = torch.where(ended, -1, tokens).tolist()  # the one host sync per step

        over_budget = early_stop != -1 and k + 1 > early_stop  # every row has k + 1 tokens sampled
        events: StepEvents = []
        running: list[int] = []
        for i, (row, token) in enumerate(zip(rows, outcome)):
            kept = token if token >= 0 else None
            if kept is not None:
                generated[row].append(kept)
            reason = _stop_reason(kept is None, over_budget, k == MAX_STEPS - 1)
            if reason is None:
                running.append(i)
            done = None if reason is None else _result(utterances[row].prompt, generated[row], k, reason)
            events.append((row, kept, done))
        yield events

        if not running:
            return
        if len(running) < len(rows):
            cache.keep_rows(running)
            keep = torch.tensor(running, device=x.device)
            seen, tokens, prompt_lens = seen[keep], tokens[keep], prompt_lens[keep]
            rows = [rows[i] for i in running]


def prefill_inputs(
    model: Text2Semantic, utterances: list[Utterance]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Embedded ``[pad ; text ; prompt]`` rows ``[B, S, d]``, their mask, prompt lengths ``[B]`` and,
    if any row is padded, the pad length of each row (``None`` otherwise).

    Each row is embedded on its own (its positions start at 0) and left-padded with zero vectors.
    """
    device = model.device
    parts = []
    for u in utterances:
        text = model.embed_text(u.phone_ids[None], u.bert[None])[0]
        prompt = None if u.prompt is None else model.embed_semantic(u.prompt[None])[0]
        parts.append(text if prompt is None else torch.cat([text, prompt]))
    text_lens = torch.tensor([u.phone_ids.numel() for u in utterances], device=device)
    prompt_lens = torch.tensor([0 if u.prompt is None else u.prompt.numel() for u in utterances], device=device)
    total = max(p.shape[0] for p in parts)
    mask = prefix_lm_mask(text_lens, prompt_lens, total)
    if all(p.shape[0] == total for p in parts):
        return torch.stack(parts), mask, prompt_lens, None
    x = torch.zeros(len(parts), total, model.config.hidden_dim, dtype=model.dtype, device=device)
    for row, p in enumerate(parts):
        x[row, total - p.shape[0] :] = p
    pad = torch.tensor([total - p.shape[0] for p in parts], device=device)
    return x, mask, prompt_lens, pad


def _stop_reason(eos: bool, over_budget: bool, last_step: bool) -> StopReason | None:
    if eos:  # checked last upstream but it decides whether the token is dropped, so it wins
        return StopReason.EOS
    if over_budget:
        return StopReason.EARLY_STOP
    return StopReason.MAX_STEPS if last_step else None


def _result(prompt: torch.Tensor | None, generated: list[int], k: int, reason: StopReason) -> GenerationResult:
    kept = torch.tensor(generated, dtype=torch.long)
    sequence = kept if prompt is None else torch.cat([prompt.cpu(), kept])
    if prompt is None:
        tokens = sequence  # upstream returns idx 0 for reference-free runs, and y[-0:] is all of y
    else:
        # Upstream slices y[-idx:]. QUIRK kept for parity: when one more token was kept than idx
        # (early stop, step cap) the first generated token is lost, and with idx == 0 (only
        # reachable with early_stop_num 0) the slice is the whole sequence, prompt included.
        tokens = sequence[-k:] if k > 0 else sequence
    # Upstream's "bad zero prediction" fallback (an empty result) cannot happen: EOS is banned for
    # the first 11 steps, so every finished row has kept at least one token.
    return GenerationResult(tokens, kept, sequence, reason, k + 1)
