"""The decoder interface and the one generation loop every GPT decode path runs.

A :class:`Decoder` owns a model's decode state (KV cache, sampling state) for ``rows`` utterances
and answers two calls: ``prefill`` (the utterances' ``[text ; prompt]``) and ``step`` (one token per
row), each returning the next sampled token of every row and whether it ended the row (a
:class:`Draw`, still on the device). Implementations:

* ``module_decoder.ModuleDecoder``: the model's own modules, one PyTorch call per operation, with
  the CPU weight kernels of weights.py; batches of rows (left-padded).
* ``decode_layers.FusedDecoder``: a step through every layer in one C++ call.
* ``static_decode.StaticDecoder``: bucketed static shapes for ``torch.compile`` / CUDA graphs; the
  host reads tokens every ``read_every`` steps.
* ``backends.gpt_runtime.GraphDecoder``: the exported ONNX graphs (ONNX Runtime, TensorRT), which
  sample inside the graph.

``options.make_decoder`` picks one from the settings and logs which. :func:`decode` is the loop:
it applies upstream's stop rules (stopping.py) to what the decoder draws, the same for all of them.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch

from .sampling import SamplingParams
from .stopping import GenerationResult, StopRules, finish


@dataclass(frozen=True)
class Utterance:
    phone_ids: torch.Tensor  # [T] int64, prompt phones then target phones
    bert: torch.Tensor  # [bert_dim, T]
    prompt: torch.Tensor | None  # [P] int64 prompt semantic tokens; None = reference-free


class Draw(NamedTuple):
    tokens: torch.Tensor  # [rows] int64: the sampled token of every row
    ended: torch.Tensor  # [rows] bool: EOS (sampled, or the arg-max): the row ends, the token is dropped


class Decoder(Protocol):
    name: str  # what runs, for the log line: "module", "fused", "static", "onnxruntime", ...
    rows: int  # utterances being decoded (shrinks as rows finish)
    read_every: int  # steps the loop may run before it reads the drawn tokens back to the host
    early_stop_num: int  # the model's token budget (SamplingParams.early_stop_num == -1)

    def prepare(self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt: torch.Tensor | None) -> Utterance:
        """Validate one utterance and move it where this decoder runs (ValueError if malformed)."""

    def prefill(self, utterances: Sequence[Utterance], params: SamplingParams, max_steps: int) -> Draw:
        """Start decoding ``utterances`` (forgetting any earlier ones) for up to ``max_steps`` steps."""

    def step(self, tokens: torch.Tensor) -> Draw:
        """Feed every row its last drawn token; draw the next."""

    def keep_rows(self, rows: list[int]) -> None:
        """Go on with these rows only (indices into the current rows, in order)."""

    def reset(self) -> None:
        """Forget the current utterances (releases what a decoder allocates per utterance)."""

    # Optional (``joins_rows`` True: the module and fused decoders): rows of different utterances
    # that join and leave at any step, each with its own cache, sampling settings and generator —
    # ``prefill_row(utterance, params, max_steps) -> row`` and ``step_rows(rows)`` (module_decoder.Row),
    # at most ``max_rows`` at once. batching.Scheduler decodes the others one utterance at a time.


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

    def close(self) -> None:
        self._steps.close()


class KeptTokens:
    """One row's kept tokens under its stop rules: what the loop (and batching.py) records per draw."""

    def __init__(self, prompt: torch.Tensor | None, rules: StopRules) -> None:
        self.prompt, self.rules = prompt, rules
        self.generated: list[int] = []

    def add(self, step: int, token: int) -> GenerationResult | None:
        """Record step ``step``'s draw (``token < 0``: EOS, dropped); the row's result once it stops."""
        if token >= 0:
            self.generated.append(token)
        reason = self.rules.stop_reason(step, eos=token < 0)
        return None if reason is None else finish(self.prompt, self.generated, step, reason)


@torch.inference_mode()
def decode(
    decoder: Decoder, utterances: Sequence[Utterance], params: SamplingParams
) -> Generator[tuple[int, int], None, list[GenerationResult]]:
    """The generation loop: yields ``(row, token)`` for every kept token as soon as the host has
    read it, returns every row's result (input order). Rows finish independently."""
    rules = StopRules.of(params.early_stop_num, decoder.early_stop_num)
    results: list[GenerationResult | None] = [None] * len(utterances)
    kept = [KeptTokens(u.prompt, rules) for u in utterances]
    rows = list(range(len(utterances)))  # the utterance of each live decoder row
    unread: list[torch.Tensor] = []  # per step not yet read: token, or -1 for EOS, per row
    try:
        draw = decoder.prefill(utterances, params, rules.max_steps)
        read_from = 0
        for k in range(rules.max_steps):
            if k > 0:
                draw = decoder.step(draw.tokens)
            unread.append(torch.where(draw.ended, -1, draw.tokens))
            if len(unread) < decoder.read_every and k < rules.max_steps - 1:
                continue  # the last step always ends every row still running: read it
            outcomes = (unread[0][:, None] if len(unread) == 1 else torch.stack(unread, dim=1)).tolist()  # host sync
            unread.clear()
            running = []
            for i, row in enumerate(rows):
                for step, token in enumerate(outcomes[i], start=read_from):
                    result = kept[row].add(step, token)
                    if token >= 0:
                        yield row, token
                    if result is not None:
                        results[row] = result
                        break
                else:
                    running.append(i)
            read_from = k + 1
            if not running:
                return results  # type: ignore[return-value]
            if len(running) < len(rows):
                decoder.keep_rows(running)
                keep = torch.tensor(running, device=draw.tokens.device)
                draw = Draw(draw.tokens[keep], draw.ended[keep])
                rows = [rows[i] for i in running]
        raise AssertionError("decoding ended without a result")
    finally:
        decoder.reset()


def _one_row(steps: Generator[tuple[int, int], None, list[GenerationResult]]) -> Generator[int, None, GenerationResult]:
    try:
        while True:
            yield next(steps)[1]
    except StopIteration as stop:
        return stop.value[0]
    finally:
        steps.close()


def stream(decoder: Decoder, phone_ids, bert, prompt, params: SamplingParams = SamplingParams()) -> TokenStream:
    """Decode one utterance: ``phone_ids [T]``, ``bert [bert_dim, T]``, ``prompt [P]`` (None or empty
    = reference-free), torch tensors or arrays. Yields each kept token the moment the host reads it;
    ``stream.result`` tells how it ended."""
    utterance = decoder.prepare(
        as_tensor(phone_ids), as_tensor(bert), None if prompt is None or len(prompt) == 0 else as_tensor(prompt)
    )
    return TokenStream(_one_row(decode(decoder, [utterance], params)))


def as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def check_ids(ids: torch.Tensor, name: str, limit: int) -> torch.Tensor:
    """``ids`` as a 1-D int64 tensor of values in ``[0, limit)``, else a ValueError naming it."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"{name} must be a 1-D integer tensor")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= limit):
        raise ValueError(f"{name} holds ids outside [0, {limit})")
    return ids.long()


def check_utterance(
    phone_ids: torch.Tensor,
    bert: torch.Tensor,
    prompt: torch.Tensor | None,
    *,
    phoneme_vocab: int,
    bert_dim: int,
    eos: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The checks every decoder's ``prepare`` makes; returns the ids as int64."""
    phone_ids = check_ids(phone_ids, "phone_ids", phoneme_vocab)
    if phone_ids.numel() == 0:
        raise ValueError("phone_ids is empty")
    if bert.dim() != 2 or tuple(bert.shape) != (bert_dim, phone_ids.numel()):
        raise ValueError(f"bert has shape {list(bert.shape)}, expected [{bert_dim}, {phone_ids.numel()}]")
    return phone_ids, bert, None if prompt is None else check_ids(prompt, "prompt_tokens", eos)
