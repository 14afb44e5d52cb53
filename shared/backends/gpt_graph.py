"""The GPT as two ONNX graphs: a prefill graph and a one-token step graph, both ending in sampling.

Cache layout: ``[positions, n_layer, batch, n_head, head_dim]`` — position-major, so the filled
prefix of a pre-allocated buffer is one contiguous block. The runtime binds that prefix as
``past_k``/``past_v`` and binds ``new_k``/``new_v`` (the step's own keys/values) straight onto the
next position of the same buffer: the cache is written in place, one position per step, and never
leaves the device. (A graph that scattered into a full cache tensor would copy the whole cache
every step, since ONNX Runtime never aliases a graph input with an output.)

Sampling runs inside both graphs with upstream's order (see ``gpt.sampling``): penalty -> top-p ->
temperature -> top-k -> softmax -> ``argmax(p / q)``. The ``Exp(1)`` draws ``q`` are an input, so the
runtime draws them with torch's CPU generator exactly as ``gpt.sampling`` does: given the same seed
and the same logits the same token comes out. Only the token, an ``ended`` flag and the
repetition-penalty mask leave the graph.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..gpt.model import Text2Semantic, prefix_lm_mask
from ..gpt.sampling import penalised, top_p_filter
from .export import onnx_bytes


def sample_in_graph(
    logits: torch.Tensor,
    seen: torch.Tensor,
    noise: torch.Tensor,
    allow_eos: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    temperature: torch.Tensor,
    penalty: torch.Tensor,
    eos: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``gpt.sampling.sample`` plus the decode loop's EOS rules, with every knob a tensor.

    The first steps' "drop the EOS column" becomes "EOS logit = -inf" (``allow_eos`` false): the
    same candidates, the same top-k threshold while k < vocabulary, and EOS can never be arg-max.
    ``top_k``: the host passes the vocabulary size to disable it; ``temperature`` is already clamped.
    Returns (token [B], ended [B] bool, seen with the token marked).
    """
    vocab = logits.shape[-1]
    ids = torch.arange(vocab, device=logits.device)
    logits = logits.float().masked_fill((ids == eos) & ~allow_eos, float("-inf"))
    logits = penalised(logits, seen, penalty)
    scores = torch.where(top_p < 1.0, top_p_filter(logits, top_p), logits)
    scores = scores / temperature
    ranked = torch.sort(scores, dim=-1, descending=True).values
    kth = ranked.gather(1, (top_k - 1).clamp(0, vocab - 1).reshape(1, 1).expand(scores.shape[0], 1))
    scores = scores.masked_fill(scores < kth, float("-inf"))
    token = torch.argmax(torch.softmax(scores, dim=-1) / noise, dim=-1)
    ended = (logits.argmax(dim=-1) == eos) | (token == eos)
    return token, ended, seen | (ids[None, :] == token[:, None])


class GraphCache:
    """What ``DecoderLayer.forward`` needs from a cache, for tracing: ``write`` returns the layer's
    keys/values so far (past positions from the graph input, then the new ones) and records the new."""

    def __init__(self, past_k: torch.Tensor | None = None, past_v: torch.Tensor | None = None):
        self.past_k, self.past_v = past_k, past_v
        self.new_k: list[torch.Tensor] = []
        self.new_v: list[torch.Tensor] = []

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.new_k.append(k)
        self.new_v.append(v)
        if self.past_k is None:
            return k, v
        # past [T, L, B, H, hd] -> this layer's [B, H, T, hd], then the new positions
        past_k = self.past_k[:, layer].permute(1, 2, 0, 3)
        past_v = self.past_v[:, layer].permute(1, 2, 0, 3)
        return torch.cat([past_k, k.to(past_k.dtype)], dim=2), torch.cat([past_v, v.to(past_v.dtype)], dim=2)

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """New keys/values of every layer as ``[t, L, B, H, hd]`` (the cache layout)."""
        k = torch.stack(self.new_k).permute(3, 0, 1, 2, 4)
        v = torch.stack(self.new_v).permute(3, 0, 1, 2, 4)
        return k, v


class SamplingInputs(nn.Module):
    """Shared tail of both graphs: logits of the last position -> sampled token."""

    def __init__(self, model: Text2Semantic):
        super().__init__()
        self.model = model

    def logits_and_sample(self, h, seen, noise, allow_eos, top_k, top_p, temperature, penalty):
        logits = nn.functional.linear(h[:, -1], self.model.ar_predict_layer.weight)
        return sample_in_graph(
            logits, seen, noise, allow_eos, top_k, top_p, temperature, penalty, self.model.config.eos
        )

    def layers(self, x: torch.Tensor, mask: torch.Tensor | None, cache: GraphCache) -> torch.Tensor:
        for i, layer in enumerate(self.model.layers):
            x = layer(x, mask, cache, i)
        return x


class PrefillGraph(SamplingInputs):
    """``[text ; prompt]`` -> first token, plus every layer's keys/values ``[S, L, 1, H, hd]``."""

    def forward(self, phone_ids, bert, prompt, seen, noise, allow_eos, top_k, top_p, temperature, penalty):
        m = self.model
        x = torch.cat([m.embed_text(phone_ids, bert), m.embed_semantic(prompt)], dim=1)
        text_lens = torch.ones_like(phone_ids).sum(dim=1)
        prompt_lens = torch.ones_like(prompt).sum(dim=1)
        mask = prefix_lm_mask(text_lens, prompt_lens, x.shape[1])
        cache = GraphCache()
        h = self.layers(x, mask, cache)
        token, ended, seen = self.logits_and_sample(h, seen, noise, allow_eos, top_k, top_p, temperature, penalty)
        k, v = cache.stacked()
        return token, ended, seen, k, v


class StepGraph(SamplingInputs):
    """One semantic token at semantic ``position`` over the cached ``past`` -> the next token."""

    def forward(self, token, position, past_k, past_v, seen, noise, allow_eos, top_k, top_p, temperature, penalty):
        m = self.model
        x = m.semantic_embedding(token) + m.semantic_alpha * m.pe[position]
        cache = GraphCache(past_k, past_v)
        h = self.layers(x[:, None], None, cache)
        token, ended, seen = self.logits_and_sample(h, seen, noise, allow_eos, top_k, top_p, temperature, penalty)
        k, v = cache.stacked()
        return token, ended, seen, k, v


SAMPLING_NAMES = ["seen", "noise", "allow_eos", "top_k", "top_p", "temperature", "penalty"]
OUTPUT_NAMES = ["token", "ended", "seen_out", "new_k", "new_v"]


def sampling_example(vocab: int) -> tuple[torch.Tensor, ...]:
    return (
        torch.zeros(1, vocab, dtype=torch.bool),
        torch.ones(1, vocab),
        torch.tensor(True),
        torch.tensor([15]),
        torch.tensor(1.0),
        torch.tensor(1.0),
        torch.tensor(1.35),
    )


def export_gpt(
    model: Text2Semantic, max_positions: int, dtype: torch.dtype = torch.float32
) -> dict[str, tuple[bytes, dict]]:
    """Trace the prefill and step graphs on the CPU; returns {graph name: (onnx bytes, facts)}.

    ``dtype`` float16 traces a half model: weights, ``bert`` and the cache are float16 in the graph
    (sampling still runs in float32), so a CUDA run keeps a half-size cache.
    """
    model = copy.deepcopy(model).to("cpu", dtype).eval()  # the caller keeps its model as it was
    model.ensure_positions(max_positions)
    cfg = model.config
    sampling = sampling_example(cfg.vocab_size)
    dyn_sampling = {"seen": {0: "batch"}, "noise": {0: "batch"}}
    graphs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the plain F.linear route of gpt.model.linear is the one to trace
    try:
        with torch.no_grad():
            t, p = 7, 5
            example = (
                torch.zeros(1, t, dtype=torch.long),
                torch.zeros(1, cfg.bert_dim, t, dtype=dtype),
                torch.zeros(1, p, dtype=torch.long),
            )
            graphs["gpt_prefill"] = _export_gpt(
                PrefillGraph(model),
                example + sampling,
                ["phone_ids", "bert", "prompt"] + SAMPLING_NAMES,
                {
                    "phone_ids": {1: "text"},
                    "bert": {2: "text"},
                    "prompt": {1: "prompt"},
                    **dyn_sampling,
                    "new_k": {0: "positions"},
                    "new_v": {0: "positions"},
                },
            )
            past = torch.zeros(t + p, cfg.n_layer, 1, cfg.n_head, cfg.head_dim, dtype=dtype)
            example = (torch.zeros(1, dtype=torch.long), torch.tensor([p]), past, past.clone())
            graphs["gpt_step"] = _export_gpt(
                StepGraph(model),
                example + sampling,
                ["last_token", "position", "past_k", "past_v"] + SAMPLING_NAMES,
                {"past_k": {0: "past"}, "past_v": {0: "past"}, **dyn_sampling},
            )
    finally:
        torch.set_num_threads(threads)
    facts = {
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "eos": cfg.eos,
        "bert_dim": cfg.bert_dim,
        "phoneme_vocab_size": cfg.phoneme_vocab_size,
        "early_stop_num": cfg.early_stop_num,
        "max_positions": max_positions,
    }
    return {name: (data, facts) for name, data in graphs.items()}


def _export_gpt(module, example: tuple, input_names: list[str], dynamic_axes: dict) -> bytes:
    return onnx_bytes(module, example, input_names, OUTPUT_NAMES, dynamic_axes)
