"""The GPT decoder over the exported graphs (ONNX Runtime CPU/CUDA, or its TensorRT provider).

A :class:`~dora_gpt_sovits.gpt.decoder.Decoder` like the torch ones, so the generation loop, the
stop rules and the result slicing are the same code (gpt.decoder.decode, gpt.stopping). The graphs
sample inside (``gpt_graph``): ``prefill`` and ``step`` return the drawn token and its EOS flag, the
only values copied to the host per step. One utterance at a time (what the gpt node streams). The
KV cache lives in one pre-allocated buffer on the session's device, ``past`` bound to its filled
prefix and ``new`` to the next position (see ``gpt_graph``).

Randomness: the ``Exp(1)`` draws come from torch's CPU generator in the same shapes as
``gpt.sampling`` draws them, so a seeded run equals a seeded torch CPU run given equal logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..gpt.decoder import Draw, TokenStream, Utterance, check_utterance, stream
from ..gpt.sampling import SamplingParams
from ..gpt.stopping import eos_allowed
from .config import BackendChoice
from .iobinding import bind_input, bind_output
from .manifest import Manifest, checked_graph
from .ort import open_session

PREFILL, STEP = "gpt_prefill", "gpt_step"


class GraphDecoder:
    """The prefill and step sessions of one exported GPT, as a Decoder."""

    def __init__(self, prefill, step, manifest: Manifest, device: torch.device):
        self.prefill_session, self.step_session, self.device = prefill, step, device
        f = manifest.facts
        self.n_layer, self.n_head, self.head_dim = f["n_layer"], f["n_head"], f["head_dim"]
        self.vocab, self.eos, self.bert_dim = f["vocab_size"], f["eos"], f["bert_dim"]
        self.phoneme_vocab, self.early_stop_num, self.max_positions = (
            f["phoneme_vocab_size"],
            f["early_stop_num"],
            f["max_positions"],
        )
        self.precision = manifest.precision
        self.dtype = torch.float16 if manifest.precision == "float16" else torch.float32  # bert and cache

    @classmethod
    def open(
        cls, choice: BackendChoice, source: Path | None, threads: int | None = None, trt_options=None
    ) -> GraphDecoder:
        precision = "float16" if choice.dtype == "float16" else "float32"
        prefill_path, manifest = checked_graph(choice.onnx_dir, PREFILL, precision, source)
        step_path, _ = checked_graph(choice.onnx_dir, STEP, precision, source)
        device = torch.device(choice.device if choice.is_cuda else "cpu")
        if choice.is_cuda and not torch.cuda.is_available():
            from .errors import BackendUnavailable

            raise BackendUnavailable(
                f"GSV_DEVICE={choice.device} but torch sees no CUDA GPU (the cache buffers live there)"
            )
        options = (trt_options or {}).get
        decoder = cls(
            open_session(prefill_path, choice, threads, options(PREFILL)),
            open_session(step_path, choice, threads, options(STEP)),
            manifest,
            device,
        )
        decoder.why_from(choice)
        return decoder

    name = "graph"
    read_every = 1
    rows = 1

    def why_from(self, choice: BackendChoice) -> None:
        self.name = choice.backend
        self.why = f"exported prefill + step graphs, {self.precision}, on {choice.device}; sampling in the graph"

    def prepare(self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt: torch.Tensor | None) -> Utterance:
        bert = (
            torch.as_tensor(np.asarray(bert, dtype=np.float32)) if not isinstance(bert, torch.Tensor) else bert.float()
        )
        phone_ids, bert, prompt = check_utterance(
            phone_ids, bert, prompt, phoneme_vocab=self.phoneme_vocab, bert_dim=self.bert_dim, eos=self.eos
        )
        return Utterance(phone_ids.cpu(), bert.cpu(), None if prompt is None else prompt.cpu())

    def stream(self, phone_ids, bert, prompt, params: SamplingParams = SamplingParams()) -> TokenStream:
        """``phone_ids [T]``, ``bert [bert_dim, T]``, ``prompt [P]`` or None (torch tensors or arrays)."""
        return stream(self, phone_ids, bert, prompt, params)

    # -- the Decoder protocol ---------------------------------------------------------------------

    def prefill(self, utterances: Sequence[Utterance], params: SamplingParams, max_steps: int) -> Draw:
        if len(utterances) != 1:
            raise ValueError(f"the graph decoder decodes one utterance at a time, got {len(utterances)}")
        (u,) = utterances
        phone_ids, bert, prompt = u.phone_ids, u.bert, u.prompt
        n_prompt = 0 if prompt is None else prompt.numel()
        if n_prompt + max_steps > self.max_positions:
            raise ValueError(
                f"{n_prompt} prompt tokens + {max_steps} steps exceed the exported graph's "
                f"{self.max_positions} positions; export with a larger --max-positions"
            )
        self.generator = None if params.seed is None else torch.Generator().manual_seed(params.seed)
        dev, host = self.device, torch.device("cpu")
        knobs = {
            "top_k": torch.tensor([self.vocab if params.top_k <= 0 else params.top_k]),
            "top_p": torch.tensor(params.top_p, dtype=torch.float32),
            "temperature": torch.tensor(max(params.temperature, 1e-5), dtype=torch.float32),
            "penalty": torch.tensor(params.repetition_penalty, dtype=torch.float32),
        }
        self.knobs = {k: v.to(dev) for k, v in knobs.items()}
        self.allow = {False: torch.tensor(False, device=dev), True: torch.tensor(True, device=dev)}
        self.seen = [torch.zeros(1, self.vocab, dtype=torch.bool, device=dev) for _ in range(2)]  # ping-pong
        if prompt is not None:
            self.seen[0][0, prompt.to(dev)] = True
        self.n_prompt, self.n_context = n_prompt, phone_ids.numel() + n_prompt
        shape = (self.n_context + max_steps, self.n_layer, 1, self.n_head, self.head_dim)
        self.cache_k = torch.empty(shape, dtype=self.dtype, device=dev)
        self.cache_v = torch.empty(shape, dtype=self.dtype, device=dev)
        self.token, self.ended = (
            torch.zeros(1, dtype=torch.long, device=host),
            torch.zeros(1, dtype=torch.bool, device=host),
        )
        self.noise = torch.ones(1, self.vocab, dtype=torch.float32, device=host)
        self.position = torch.zeros(1, dtype=torch.long, device=host)
        self.k = 0
        prompt_row = torch.zeros(1, 0, dtype=torch.long) if prompt is None else prompt[None]
        inputs = {
            "phone_ids": phone_ids[None].to(dev),
            "bert": bert[None].to(dev, self.dtype).contiguous(),
            "prompt": prompt_row.to(dev),
        }
        return self._run(self.prefill_session, inputs, 0, self.n_context)

    def step(self, tokens: torch.Tensor) -> Draw:
        length = self.n_context + self.k - 1
        self.position[0] = self.n_prompt + self.k - 1
        return self._run(
            self.step_session,
            {
                "last_token": tokens.to(self.device),
                "position": self.position.to(self.device),
                "past_k": self.cache_k[:length],
                "past_v": self.cache_v[:length],
            },
            length,
            1,
        )

    def keep_rows(self, rows: list[int]) -> None:
        raise AssertionError("one utterance at a time: there are no rows to drop")

    def reset(self) -> None:
        self.cache_k = self.cache_v = self.seen = None

    def _run(self, session, inputs: dict[str, torch.Tensor], start: int, n_new: int) -> Draw:
        k = self.k
        binding = session.io_binding()
        # Exactly the draws gpt.sampling makes: one Exp(1) per candidate id (no EOS column early on).
        n = self.vocab if eos_allowed(k) else self.vocab - 1
        self.noise[:, :n].exponential_(1, generator=self.generator)
        src, dst = self.seen[k % 2], self.seen[(k + 1) % 2]
        for name, t in {
            **inputs,
            **self.knobs,
            "seen": src,
            "noise": self.noise.to(self.device),
            "allow_eos": self.allow[eos_allowed(k)],
        }.items():
            bind_input(binding, name, t)
        for name, t in (
            ("token", self.token),
            ("ended", self.ended),
            ("seen_out", dst),
            ("new_k", self.cache_k[start : start + n_new]),
            ("new_v", self.cache_v[start : start + n_new]),
        ):
            bind_output(binding, name, t)
        session.run_with_iobinding(binding)
        self.k += 1
        return Draw(self.token, self.ended)
