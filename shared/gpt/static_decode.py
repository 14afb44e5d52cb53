"""Static-shape decode loop: bucketed steps run as CUDA graphs or torch.compile'd, few host syncs.

The module path (module_decoder.py) launches ~20 kernels per layer per token from Python and
reads every token back (``.tolist()``), so the GPU idles while Python works. Here:

* **Static state.** One KV cache sized for the longest utterance (``capacity``), zeroed once and kept
  across utterances; the next token, its position and the cache length live in device tensors.
* **Bucketed graphs.** A step attends to the first ``bucket`` cache positions (the smallest bucket
  holding every filled position plus the new one) under a key mask built on the GPU from the
  device-side length; its new keys/values are written at that length with ``index_copy_``. Shapes
  therefore depend on the bucket only, and each bucket's step is captured once as a CUDA graph
  (``GSV_CUDA_GRAPHS``) and/or compiled once by ``torch.compile`` (``GSV_COMPILE``; CUDA models: on a
  CPU the option is refused, the fused step being faster, but the tests compile it there too):
  the eager loop's step changes shape every token, which makes ``torch.compile`` recompile (or
  give up after its recompile limit and run slower than eager).
* **Sampling and EOS on the GPU.** penalty -> top-p -> temperature -> top-k -> exponential race
  (sampling.sample, upstream's order) and the EOS test run as ordinary kernels after the graph;
  each step's outcome (token, or -1 for EOS) goes into a device buffer.
* **Host syncs per chunk.** The host reads the outcomes every ``read_every`` steps (and at the steps
  where the budget or step cap ends decoding, which it knows without reading), yields the tokens
  in order, and stops at the first EOS; steps run past it within that chunk are discarded. Up to
  ``read_every - 1`` extra steps are spent after an EOS, in exchange for no per-token sync.

The generation loop (decoder.decode) is the one every decoder runs; this decoder only sets
``read_every``. On a CPU the same steps run without capture: that is how the tests check that
bucketing, device-side indexing and chunked EOS handling give the module path's tokens exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .decoder import Decoder, Draw, Utterance
from .model import Text2Semantic
from .module_decoder import ModuleDecoder, TorchDecoder, prefill_inputs
from .sampling import SamplingParams
from .stopping import MAX_STEPS

log = logging.getLogger("gsv.gpt")

BUCKET = 512  # cache positions per bucket: 5 graphs cover the default capacity
CAPACITY = 1024 + MAX_STEPS  # prefill (phones + prompt tokens) up to 1024, then the longest decode


def bucket_for(positions: int, bucket: int = BUCKET) -> int:
    """The attended length for a step whose keys fill ``positions`` cache positions."""
    return -(-positions // bucket) * bucket


class DeviceIndexedCache:
    """One utterance's keys and values, per layer, whose decode-step writes, reads and length live
    on the device (the interface of :class:`KVCache` that the model uses: write, advance, step_mask).

    The prefill writes by host slicing (``bucket is None``); decode steps set ``bucket`` and then
    write at ``position`` (a device tensor advanced by the step itself) and attend to the first
    ``bucket`` positions, unfilled ones masked out.

    * One tensor per layer, written with an index assignment on the whole tensor: ``torch.compile``
      turns a write through a view of one shared buffer (or ``index_copy_``) into a copy of that
      buffer every step (measured 5x slower than eager on the full-size model), this into an
      in-place write.
    * Zeroed at allocation: masked keys still enter the attention product (with weight 0), and
      uninitialised memory could hold inf/NaN.
    """

    batch = 1
    visible = None  # no padding: one utterance

    def __init__(
        self, n_layer: int, n_head: int, head_dim: int, max_len: int, dtype: torch.dtype, device: torch.device | str
    ) -> None:
        shape = (1, n_head, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.key_index = torch.arange(max_len, device=device)
        self.max_len = max_len
        self.length = 0  # the host's count of filled positions
        self.bucket: int | None = None

    def reset(self) -> None:
        self.length, self.bucket = 0, None
        self.position.zero_()

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer], self.values[layer]
        if self.bucket is None:
            end = self.length + k.shape[2]
            keys[:, :, self.length : end] = k
            values[:, :, self.length : end] = v
            return keys[:, :, :end], values[:, :, :end]
        keys[:, :, self.position] = k
        values[:, :, self.position] = v
        return keys[:, :, : self.bucket], values[:, :, : self.bucket]

    def advance(self, n: int) -> None:
        if self.bucket is None:
            self.length += n  # the prefill: the host counts too
        # Decode steps only move the device-side length: the decoder counts them on the host, so
        # a replayed graph (which runs no Python) and a compiled step (which must not guard on a
        # changing integer) see the same thing.
        self.position += n

    def step_mask(self) -> torch.Tensor | None:
        if self.bucket is None:
            return None
        return (self.key_index[: self.bucket] <= self.position)[None, None, None, :]


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph | None
    logits: torch.Tensor  # the step's static output


class StaticDecoder(TorchDecoder):
    """Single-utterance decoding for one model on one device; reuse it for every utterance.

    ``cuda_graphs``: capture each bucket's step (CUDA models only). ``compile``: run the step
    through ``torch.compile`` (one compiled graph per bucket; with CUDA graphs, the compiled step is
    what gets captured). An utterance longer than the cache holds is decoded by ``fallback``
    (default: the module path) instead: same tokens, slower, with a warning.
    """

    name = "static"
    rows = 1

    def __init__(
        self,
        model: Text2Semantic,
        capacity: int = CAPACITY,
        read_every: int = 12,
        cuda_graphs: bool = False,
        compile: bool = False,
        bucket: int = BUCKET,
        fallback: Decoder | None = None,
    ) -> None:
        if read_every < 1 or bucket < 1:
            raise ValueError(f"read_every and bucket must be >= 1, got {read_every} and {bucket}")
        super().__init__(model)
        capacity = bucket_for(capacity, bucket)  # the last bucket must fit in the cache
        self.capacity, self.bucket = capacity, bucket
        self.chunk = self.read_every = read_every  # the eager fallback reads every step
        self.capture = cuda_graphs
        if cuda_graphs and model.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA model, this one is on {model.device}")
        self.fallback = fallback or ModuleDecoder(model)
        self.active: Decoder = self  # the fallback while it decodes an utterance too long for the cache
        self._run_step = self._eager_step
        if compile:
            buckets = -(-capacity // bucket)
            # One compiled graph per bucket; the default limit (8) would send long utterances back to eager.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, buckets + 2)
            self._run_step = torch.compile(self._eager_step, dynamic=False, fullgraph=True)
        cfg = model.config
        model.ensure_positions(capacity)  # before capture: graphs hold the sine table's address
        self.cache = DeviceIndexedCache(
            cfg.n_layer, cfg.n_head, cfg.head_dim, capacity, model.cache_dtype, model.device
        )
        self.token = torch.zeros(1, dtype=torch.long, device=model.device)
        self.semantic_position = torch.zeros(1, dtype=torch.long, device=model.device)
        self.prompt_len = 0
        self.graphs: dict[int, _Graph] = {}

    # -- the Decoder protocol: the fallback takes over an utterance too long for the cache --------

    def prefill(self, utterances: Sequence[Utterance], params: SamplingParams, max_steps: int) -> Draw:
        if len(utterances) != 1:
            raise ValueError(f"the static decoder decodes one utterance at a time, got {len(utterances)}")
        (u,) = utterances
        needed = len(u.phone_ids) + (0 if u.prompt is None else len(u.prompt)) + max_steps
        self.active = self
        if needed > self.capacity:
            log.warning(
                "utterance needs %d cache positions, the static decoder holds %d: decoding it eagerly",
                needed,
                self.capacity,
            )
            self.active = self.fallback
            self.read_every = 1  # as the eager path reads
            return self.fallback.prefill(utterances, params, max_steps)
        self.read_every = self.chunk
        return super().prefill(utterances, params, max_steps)

    def step(self, tokens: torch.Tensor) -> Draw:
        return super().step(tokens) if self.active is self else self.active.step(tokens)

    def reset(self) -> None:
        if self.active is not self:
            self.active.reset()
        self.active = self
        self.read_every = self.chunk
        super().reset()

    # -- logits -----------------------------------------------------------------------------------

    def prefill_logits(self, utterances: Sequence[Utterance], max_steps: int) -> torch.Tensor:
        x, mask, prompt_lens, _ = prefill_inputs(self.model, utterances)
        self.cache.reset()
        self.prompt_len = int(prompt_lens[0])
        return self.model.prefill(x, mask, self.cache)

    def step_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        self.token.copy_(tokens)
        self.semantic_position.fill_(self.prompt_len + self.k - 1)
        return self._step(bucket_for(self.cache.length + 1, self.bucket))

    def buckets(self) -> list[int]:
        return list(range(self.bucket, bucket_for(self.capacity, self.bucket) + 1, self.bucket))

    @torch.inference_mode()
    def prepare_buckets(self) -> None:
        """Compile and/or capture every bucket's step now (a node does it before serving), rather
        than in the middle of the first utterance long enough to need it."""
        for bucket in self.buckets():
            self.cache.reset()
            self.cache.length = bucket - 1  # a state that needs this bucket; nothing is read back
            self.cache.position.fill_(bucket - 1)
            self._step(bucket)
        self.cache.reset()

    def _eager_step(self) -> torch.Tensor:
        return self.model.step(self.token, self.semantic_position, self.cache)

    def _step(self, bucket: int) -> torch.Tensor:
        """Logits of one decode step attending to ``bucket`` positions (replaying its graph)."""
        self.cache.bucket = bucket
        self.cache.length += 1  # counted here, not by the step: see DeviceIndexedCache.advance
        if not self.capture:
            return self._run_step()
        entry = self.graphs.get(bucket)
        if entry is None:
            entry = self.graphs[bucket] = self._capture()
        entry.graph.replay()
        return entry.logits

    def _capture(self) -> _Graph:
        # Warm-up runs and capture must not move the device-side length: restore it after each.
        # (They do write this step's keys/values at that position: the same values the replay writes.)
        saved = self.cache.position.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._run_step()
                self.cache.position.copy_(saved)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._run_step()
        self.cache.position.copy_(saved)
        return _Graph(graph, logits)
