"""Decoding semantic tokens from a model or a decoder: the library's convenience entry points.

``generate`` / ``generate_stream`` decode one utterance, ``generate_batch`` several together (the
module path: left-padded rows that finish independently). Each takes a :class:`Text2Semantic`
(decoded by the module path, as it is: no option applied) or any :class:`~.decoder.Decoder`
(options.make_decoder). The loop and upstream's stop rules are decoder.decode and stopping.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .decoder import Decoder, TokenStream, Utterance, decode, stream
from .model import Text2Semantic
from .module_decoder import ModuleDecoder, prefill_inputs, prepare_utterance
from .sampling import SamplingParams
from .stopping import MAX_STEPS, MIN_STEPS_BEFORE_EOS, GenerationResult, StopReason

__all__ = [
    "MAX_STEPS", "MIN_STEPS_BEFORE_EOS", "GenerationResult", "StopReason", "TokenStream", "Utterance",
    "generate", "generate_batch", "generate_stream", "prefill_inputs", "prepare_utterance",
]  # fmt: skip


def as_decoder(model: Text2Semantic | Decoder) -> Decoder:
    return ModuleDecoder(model) if isinstance(model, Text2Semantic) else model


def generate_stream(
    model: Text2Semantic | Decoder,
    phone_ids: torch.Tensor,
    bert: torch.Tensor,
    prompt_tokens: torch.Tensor | None,
    params: SamplingParams = SamplingParams(),
) -> TokenStream:
    """Yield each kept semantic token the moment it is sampled; ``stream.result`` tells how it ended.

    Also usable as a plain generator: the ``StopIteration`` value is the :class:`GenerationResult`.
    """
    return stream(as_decoder(model), phone_ids, bert, prompt_tokens, params)


def generate(
    model: Text2Semantic | Decoder,
    phone_ids: torch.Tensor,
    bert: torch.Tensor,
    prompt_tokens: torch.Tensor | None,
    params: SamplingParams = SamplingParams(),
) -> GenerationResult:
    tokens = generate_stream(model, phone_ids, bert, prompt_tokens, params)
    for _ in tokens:
        pass
    assert tokens.result is not None
    return tokens.result


def generate_batch(
    model: Text2Semantic | Decoder,
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
    decoder = as_decoder(model)
    utterances = [decoder.prepare(*row) for row in zip(phone_ids, bert, prompt_tokens)]
    if not utterances:
        return []
    steps = decode(decoder, utterances, params)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
