"""The PyTorch decoders' shared part (sampling after the logits) and the module path.

:class:`TorchDecoder` turns logits into a :class:`~.decoder.Draw` exactly as upstream samples
(sampling.sample, the first steps' EOS ban, the EOS test on the penalised logits); subclasses only
say how logits are computed: ``prefill_logits(utterances, max_steps)`` and ``step_logits(tokens)``.

:class:`ModuleDecoder` computes them with the model's modules (``Text2Semantic.prefill`` / ``step``
over a :class:`~.kv_cache.KVCache` sized for the utterance), several utterances at once if asked
(left-padded; finished rows are dropped from the cache). Its products run on whatever the model's
linear layers are (weights.py: float16 decode weights, or float32 split over the threads);
on a CPU it gives plain ``nn.Linear`` layers the float32/half-precision kernels of weights.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from .decoder import Draw, Utterance, check_utterance
from .kv_cache import KVCache
from .model import Text2Semantic, prefix_lm_mask
from .sampling import SamplingParams, sample
from .stopping import eos_allowed
from .weights import use_cpu_kernels


class TorchDecoder(ABC):
    """Sampling state of the rows being decoded, and the Decoder calls built on the logits."""

    name = "torch"
    read_every = 1

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
        model = self.model
        self.params, self.rows, self.k = params, len(utterances), 0
        self.generator = None if params.seed is None else torch.Generator(model.device).manual_seed(params.seed)
        self.seen = torch.zeros(len(utterances), model.config.vocab_size, dtype=torch.bool, device=model.device)
        for row, u in enumerate(utterances):
            if u.prompt is not None:
                self.seen[row, u.prompt] = True
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
        eos = self.model.config.eos
        if not eos_allowed(self.k):
            logits = logits[:, :eos]
        tokens = sample(logits, self.seen, self.params, self.generator)
        self.seen.scatter_(1, tokens[:, None], True)
        ended = (logits.argmax(dim=-1) == eos) | (tokens == eos)
        self.k += 1
        return Draw(tokens, ended)


class ModuleDecoder(TorchDecoder):
    """The model's modules, one PyTorch call per operation; batches of rows."""

    name = "module"

    def __init__(self, model: Text2Semantic) -> None:
        super().__init__(model)
        use_cpu_kernels(model)
        self.cache: KVCache | None = None
        self.prompt_lens: torch.Tensor | None = None

    def prefill_logits(self, utterances: Sequence[Utterance], max_steps: int) -> torch.Tensor:
        model = self.model
        x, mask, self.prompt_lens, pad = prefill_inputs(model, utterances)
        model.ensure_positions(max(self.prompt_lens.tolist()) + max_steps)
        self.cache = model.new_cache(len(utterances), x.shape[1] + max_steps)
        if pad is not None:
            self.cache.mark_padding(pad)
        return model.prefill(x, mask, self.cache)

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
