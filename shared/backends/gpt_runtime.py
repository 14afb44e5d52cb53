"""The decode loop over the exported GPT graphs (ONNX Runtime CPU/CUDA, or its TensorRT provider).

Same contract as ``gpt.generate.generate_stream``: a :class:`TokenStream` yielding each kept token,
with upstream's stop rules and result slicing (shared with the torch loop, not re-implemented).
One utterance at a time (what the gpt node streams). Per step only the token and the EOS flag are
copied to the host; the KV cache lives in one pre-allocated buffer on the session's device,
``past`` bound to its filled prefix and ``new`` to the next position (see ``gpt_graph``).

Randomness: the ``Exp(1)`` draws come from torch's CPU generator in the same shapes as
``gpt.sampling`` draws them, so a seeded run equals a seeded torch CPU run given equal logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Generator

import numpy as np
import torch

from ..gpt.generate import (
    MAX_STEPS,
    MIN_STEPS_BEFORE_EOS,
    GenerationResult,
    TokenStream,
    _ids,
    _result,
    _stop_reason,
)
from ..gpt.sampling import SamplingParams
from .config import BackendChoice
from .iobinding import bind_input, bind_output
from .manifest import Manifest, checked_graph
from .ort import open_session

PREFILL, STEP = "gpt_prefill", "gpt_step"


class GraphDecoder:
    """Holds the prefill and step sessions of one exported GPT."""

    def __init__(self, prefill, step, manifest: Manifest, device: torch.device):
        self.prefill, self.step, self.device = prefill, step, device
        f = manifest.facts
        self.n_layer, self.n_head, self.head_dim = f["n_layer"], f["n_head"], f["head_dim"]
        self.vocab, self.eos, self.bert_dim = f["vocab_size"], f["eos"], f["bert_dim"]
        self.phoneme_vocab, self.early_stop_num, self.max_positions = f["phoneme_vocab_size"], f["early_stop_num"], f["max_positions"]
        self.precision = manifest.precision
        self.dtype = torch.float16 if manifest.precision == "float16" else torch.float32  # bert and cache

    @classmethod
    def open(cls, choice: BackendChoice, source: Path | None, threads: int | None = None, trt_options=None) -> GraphDecoder:
        precision = "float16" if choice.dtype == "float16" else "float32"
        prefill_path, manifest = checked_graph(choice.onnx_dir, PREFILL, precision, source)
        step_path, _ = checked_graph(choice.onnx_dir, STEP, precision, source)
        device = torch.device(choice.device if choice.is_cuda else "cpu")
        if choice.is_cuda and not torch.cuda.is_available():
            from .errors import BackendUnavailable

            raise BackendUnavailable(f"GSV_DEVICE={choice.device} but torch sees no CUDA GPU (the cache buffers live there)")
        options = (trt_options or {}).get
        return cls(
            open_session(prefill_path, choice, threads, options(PREFILL)),
            open_session(step_path, choice, threads, options(STEP)),
            manifest,
            device,
        )

    def stream(self, phone_ids, bert, prompt, params: SamplingParams = SamplingParams()) -> TokenStream:
        """``phone_ids [T]``, ``bert [bert_dim, T]``, ``prompt [P]`` or None (torch tensors or arrays)."""
        phone_ids = _ids(torch.as_tensor(np.asarray(phone_ids)), "phone_ids", self.phoneme_vocab)
        if phone_ids.numel() == 0:
            raise ValueError("phone_ids is empty")
        bert = torch.as_tensor(np.asarray(bert, dtype=np.float32))
        if bert.dim() != 2 or tuple(bert.shape) != (self.bert_dim, phone_ids.numel()):
            raise ValueError(f"bert has shape {list(bert.shape)}, expected [{self.bert_dim}, {phone_ids.numel()}]")
        prompt = None if prompt is None or len(prompt) == 0 else _ids(torch.as_tensor(np.asarray(prompt)), "prompt_tokens", self.eos)
        return TokenStream(self._decode(phone_ids, bert, prompt, params))

    def _decode(self, phone_ids, bert, prompt, params) -> Generator[int, None, GenerationResult]:
        early_stop = self.early_stop_num if params.early_stop_num == -1 else params.early_stop_num
        max_steps = MAX_STEPS if early_stop == -1 else min(MAX_STEPS, early_stop + 1)
        n_prompt = 0 if prompt is None else prompt.numel()
        if n_prompt + max_steps > self.max_positions:
            raise ValueError(f"{n_prompt} prompt tokens + {max_steps} steps exceed the exported graph's "
                             f"{self.max_positions} positions; export with a larger --max-positions")
        generator = None if params.seed is None else torch.Generator().manual_seed(params.seed)
        dev, host = self.device, torch.device("cpu")
        knobs = {
            "top_k": torch.tensor([self.vocab if params.top_k <= 0 else params.top_k]),
            "top_p": torch.tensor(params.top_p, dtype=torch.float32),
            "temperature": torch.tensor(max(params.temperature, 1e-5), dtype=torch.float32),
            "penalty": torch.tensor(params.repetition_penalty, dtype=torch.float32),
        }
        knobs = {k: v.to(dev) for k, v in knobs.items()}
        allow = {False: torch.tensor(False, device=dev), True: torch.tensor(True, device=dev)}
        seen = [torch.zeros(1, self.vocab, dtype=torch.bool, device=dev) for _ in range(2)]  # ping-pong
        if prompt is not None:
            seen[0][0, prompt.to(dev)] = True
        n_context = phone_ids.numel() + n_prompt
        shape = (n_context + max_steps, self.n_layer, 1, self.n_head, self.head_dim)
        cache_k = torch.empty(shape, dtype=self.dtype, device=dev)
        cache_v = torch.empty(shape, dtype=self.dtype, device=dev)
        token, ended = torch.zeros(1, dtype=torch.long, device=host), torch.zeros(1, dtype=torch.bool, device=host)
        noise = torch.ones(1, self.vocab, dtype=torch.float32, device=host)
        position = torch.zeros(1, dtype=torch.long, device=host)

        def run(session, inputs: dict[str, torch.Tensor], k: int, start: int, n_new: int) -> None:
            binding = session.io_binding()
            # Exactly the draws gpt.sampling makes: one Exp(1) per candidate id (no EOS column early on).
            n = self.vocab - 1 if k < MIN_STEPS_BEFORE_EOS else self.vocab
            noise[:, :n].exponential_(1, generator=generator)
            src, dst = seen[k % 2], seen[(k + 1) % 2]
            for name, t in {**inputs, **knobs, "seen": src, "noise": noise.to(dev), "allow_eos": allow[k >= MIN_STEPS_BEFORE_EOS]}.items():
                bind_input(binding, name, t)
            for name, t in (("token", token), ("ended", ended), ("seen_out", dst),
                            ("new_k", cache_k[start : start + n_new]), ("new_v", cache_v[start : start + n_new])):
                bind_output(binding, name, t)
            session.run_with_iobinding(binding)

        generated: list[int] = []
        prompt_row = torch.zeros(1, 0, dtype=torch.long) if prompt is None else prompt[None]
        prefill_inputs = {"phone_ids": phone_ids[None].to(dev), "bert": bert[None].to(dev, self.dtype).contiguous(), "prompt": prompt_row.to(dev)}
        for k in range(max_steps):
            if k == 0:
                run(self.prefill, prefill_inputs, 0, 0, n_context)
            else:
                length = n_context + k - 1
                position[0] = n_prompt + k - 1
                run(self.step, {"last_token": token.to(dev), "position": position.to(dev),
                                "past_k": cache_k[:length], "past_v": cache_v[:length]}, k, length, 1)
            kept = None if bool(ended[0]) else int(token[0])
            if kept is not None:
                generated.append(kept)
                yield kept
            over_budget = early_stop != -1 and k + 1 > early_stop
            reason = _stop_reason(kept is None, over_budget, k == MAX_STEPS - 1)
            if reason is not None:
                return _result(prompt, generated, k, reason)
        raise AssertionError("decoding ended without a result")
