"""The PyTorch decoders' shared part (sampling after the logits) and the module path.

:class:`TorchDecoder` turns logits into a :class:`~.decoder.Draw` exactly as upstream samples
(sampling.sample, the first steps' EOS ban, the EOS test on the penalised logits); subclasses only
say how logits are computed: ``prefill_logits(utterances, max_steps)`` and ``step_logits(tokens)``.

:class:`ModuleDecoder` computes them with the model's modules (``Text2Semantic.prefill`` / ``step``
over a :class:`~.kv_cache.KVCache` sized for the utterance), several utterances at once if asked
(left-padded; finished rows are dropped from the cache). It also decodes rows of different
utterances that joined at different steps (:class:`Row`: a cache, step count, sampling settings
and random generator of its own; batching.py schedules them). Its products run on whatever the model's
linear layers are (weights.py: float16 decode weights, or float32 split over the threads);
on a CPU it gives plain ``nn.Linear`` layers the float32/half-precision kernels of weights.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .decoder import Draw, Utterance, check_utterance
from .kv_cache import KVCache
from .model import Text2Semantic, prefix_lm_mask
from .sampling import SamplingParams, sample
from .stopping import eos_allowed
from .weights import MAX_PACKED_ROWS, use_cpu_kernels


class TorchDecoder(ABC):
    """Sampling state of the rows being decoded, and the Decoder calls built on the logits."""

    name = "torch"
    read_every = 1
    # The format of the caches this decoder fills (None: the model's; torch.float16: GSV_GPT_CACHE_DTYPE).
    cache_dtype: torch.dtype | None = None

    def __init__(self, model: Text2Semantic) -> None:
        self.model = model
        self.early_stop_num = model.early_stop_num
        self.rows = 0
        self.k = 0  # decode step of the next draw
        self.seen: torch.Tensor | None = None
        self.params = SamplingParams()
        self.generator: torch.Generator | None = None

    def prepare(self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt: torch.Tensor | None) -> Utterance:
        return prepare_utterance(self.model, phone_ids, bert, prompt)

    # -- the Decoder protocol -------------------------------------------------------------------

    def prefill(self, utterances: Sequence[Utterance], params: SamplingParams, max_steps: int) -> Draw:
        self.params, self.rows, self.k = params, len(utterances), 0
        self.generator = new_generator(params.seed, self.model.device)
        self.seen = seen_of(self.model, utterances)
        return self.draw(self.prefill_logits(utterances, max_steps))

    def step(self, tokens: torch.Tensor) -> Draw:
        return self.draw(self.step_logits(tokens))

    def keep_rows(self, rows: list[int]) -> None:
        self.seen = self.seen[torch.tensor(rows, device=self.seen.device)]
        self.rows = len(rows)

    def reset(self) -> None:
        self.seen = None

    # -- what subclasses implement ----------------------------------------------------------------

    @abstractmethod
    def prefill_logits(self, utterances: Sequence[Utterance], max_steps: int) -> torch.Tensor:
        """Logits ``[rows, V]`` of the first step, the utterances' caches filled."""

    @abstractmethod
    def step_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``[rows, V]`` after feeding each row's last token ``tokens [rows]``."""

    # ---------------------------------------------------------------------------------------------

    def draw(self, logits: torch.Tensor) -> Draw:
        """Upstream's sampling of step ``self.k`` from ``logits [rows, V]`` (penalised in place)."""
        drawn = draw_next(logits, self.seen, self.k, self.params, self.generator, self.model.config.eos)
        self.k += 1
        return drawn

    # -- rows of different utterances (batching.py) -----------------------------------------------

    joins_rows = False  # whether prefill_row/step_rows work: decoders with a shared static state cannot
    max_rows = 1

    def prefill_row(self, utterance: Utterance, params: SamplingParams, max_steps: int) -> Row:
        """Prefill one utterance on its own into a :class:`Row` holding its first draw."""
        logits, cache, prompt_lens = prefill_cache(self.model, [utterance], max_steps, self.cache_dtype)
        row = Row(
            cache,
            int(prompt_lens[0]),
            params,
            new_generator(params.seed, self.model.device),
            seen_of(self.model, [utterance]),
        )
        return self.draw_row(row, logits)

    def step_rows(self, rows: Sequence[Row]) -> None:
        """One decode step for every row: feed each its last token, draw its next (``row.draw``)."""
        tokens = torch.cat([row.draw.tokens for row in rows])
        positions = torch.tensor([row.prompt_len + row.k - 1 for row in rows], device=tokens.device)
        logits = self.rows_logits(tokens, positions, [row.cache for row in rows])
        for i, row in enumerate(rows):
            self.draw_row(row, logits[i : i + 1])

    def rows_logits(self, tokens: torch.Tensor, positions: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """Logits ``[rows, V]`` after feeding each row its token at its semantic position, over its own cache."""
        raise NotImplementedError(f"the {self.name} decoder does not decode rows of different utterances")

    def draw_row(self, row: Row, logits: torch.Tensor) -> Row:
        """Draw a row's next token from its logits ``[1, V]``: the same operations as a one-row decode."""
        row.draw = draw_next(logits, row.seen, row.k, row.params, row.generator, self.model.config.eos)
        row.k += 1
        return row


class ModuleDecoder(TorchDecoder):
    """The model's modules, one PyTorch call per operation; batches of rows."""

    name = "module"

    joins_rows = True
    # Up to this many rows a step's products read the float16 weights through our kernel, whose
    # per-row sums do not depend on the other rows (weights.MAX_PACKED_ROWS): rows stay exact.
    max_rows = MAX_PACKED_ROWS

    def __init__(self, model: Text2Semantic, cache_dtype: torch.dtype | None = None) -> None:
        super().__init__(model)
        use_cpu_kernels(model)
        self.cache_dtype = cache_dtype
        self.cache: KVCache | None = None
        self.prompt_lens: torch.Tensor | None = None

    def prefill_logits(self, utterances: Sequence[Utterance], max_steps: int) -> torch.Tensor:
        logits, self.cache, self.prompt_lens = prefill_cache(self.model, utterances, max_steps, self.cache_dtype)
        return logits

    def rows_logits(self, tokens: torch.Tensor, positions: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        return self.model.step_rows(tokens, positions, caches)

    def step_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        # step k feeds the token drawn at step k - 1, at semantic position prompt + k - 1
        return self.model.step(tokens, self.prompt_lens + (self.k - 1), self.cache)

    def keep_rows(self, rows: list[int]) -> None:
        super().keep_rows(rows)
        self.cache.keep_rows(rows)
        self.prompt_lens = self.prompt_lens[torch.tensor(rows, device=self.prompt_lens.device)]

    def reset(self) -> None:
        super().reset()
        self.cache = self.prompt_lens = None


@dataclass
class Row:
    """One utterance decoded among others: its own cache, step, sampling settings and random stream."""

    cache: KVCache
    prompt_len: int
    params: SamplingParams
    generator: torch.Generator | None
    seen: torch.Tensor  # [1, V] bool: prompt and drawn ids (the repetition penalty's)
    k: int = 0  # decode step of the next draw
    draw: Draw | None = None  # the last draw (still on the device)


def draw_next(
    logits: torch.Tensor,
    seen: torch.Tensor,
    step: int,
    params: SamplingParams,
    generator: torch.Generator | None,
    eos: int,
) -> Draw:
    """Upstream's sampling of decode step ``step`` from ``logits [rows, V]`` (penalised in place);
    marks the drawn ids in ``seen``."""
    if not eos_allowed(step):
        logits = logits[:, :eos]
    tokens = sample(logits, seen, params, generator)
    seen.scatter_(1, tokens[:, None], True)
    ended = (logits.argmax(dim=-1) == eos) | (tokens == eos)
    return Draw(tokens, ended)


def new_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device).manual_seed(seed)


def seen_of(model: Text2Semantic, utterances: Sequence[Utterance]) -> torch.Tensor:
    """``[rows, V]`` bool: each row's prompt tokens, which the repetition penalty counts as seen."""
    seen = torch.zeros(len(utterances), model.config.vocab_size, dtype=torch.bool, device=model.device)
    for row, u in enumerate(utterances):
        if u.prompt is not None:
            seen[row, u.prompt] = True
    return seen


def prefill_cache(
    model: Text2Semantic, utterances: Sequence[Utterance], max_steps: int, stored: torch.dtype | None = None
) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
    """The first logits ``[B, V]``, a cache holding the utterances with room for ``max_steps`` more
    positions, and the prompt lengths ``[B]``. ``stored``: the cache's format if not the model's
    (kv_cache.KVCache; the prefill then attends over the rounded keys and values too)."""
    x, mask, prompt_lens, pad = prefill_inputs(model, utterances)
    model.ensure_positions(max(prompt_lens.tolist()) + max_steps)
    cache = new_cache(model, len(utterances), x.shape[1] + max_steps, stored)
    if pad is not None:
        cache.mark_padding(pad)
    return model.prefill(x, mask, cache), cache, prompt_lens


def new_cache(model: Text2Semantic, batch: int, max_len: int, stored: torch.dtype | None = None) -> KVCache:
    """The model's cache (Text2Semantic.new_cache), its keys and values held as ``stored`` if given."""
    if stored is None or stored == model.cache_dtype:
        return model.new_cache(batch, max_len)
    cfg = model.config
    return KVCache(
        cfg.n_layer, batch, cfg.n_head, cfg.head_dim, max_len, model.cache_dtype, model.device, stored=stored
    )


def prepare_utterance(
    model: Text2Semantic, phone_ids: torch.Tensor, bert: torch.Tensor, prompt_tokens: torch.Tensor | None
) -> Utterance:
    """Validate one utterance's inputs and move them to the model's device and dtype."""
    cfg = model.config
    phone_ids, bert, prompt = check_utterance(
        phone_ids, bert, prompt_tokens, phoneme_vocab=cfg.phoneme_vocab_size, bert_dim=cfg.bert_dim, eos=cfg.eos
    )
    device = model.device
    return Utterance(
        phone_ids.to(device),
        bert.to(device=device, dtype=model.dtype),
        None if prompt is None else prompt.to(device),
    )


def prefill_inputs(
    model: Text2Semantic, utterances: Sequence[Utterance]
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
