"""The PyTorch GPT's speed options, read from the environment in this one place, and the factory
that turns a model and its options into the decoder that runs (:func:`make_decoder`).

``GSV_GPT_QUANT``       auto (default) | none | fp16 — CPU weight formats (weights.py):
                        auto = lossless fp16-packed weights where possible, else none
``GSV_HALF_MATVEC``     auto (default) | native | fbgemm — the fp16 weights' decode-step kernel:
                        ours on every thread (half_matvec.py; built on first use) or FBGEMM's
``GSV_GPT_PREFILL_DTYPE`` float32 (default) | bfloat16 — the prefill's products (weights.py): bfloat16
                        runs them on AMX / AVX512-BF16, ~1.8x faster prefill, tokens no longer
                        upstream's (lossy; refused on CPUs without those units)
``GSV_GPT_CACHE_DTYPE`` float32 (default) | float16 — the CPU decoders' key/value cache (kv_cache.py):
                        float16 halves what attention reads per cached position, ~0.4 ms less per
                        token at 200 positions; keys/values rounded once when written, tokens no
                        longer upstream's (lossy; refused off the CPU and by the exported graphs)
``GSV_FUSED_DECODE``    1 (default) | 0 — with our fp16 kernel, run a decode step's layers in one
                        C++ call (decode_layers.py); 0 = one PyTorch call per operation
``GSV_COMPILE``         1 = ``torch.compile`` the decode step of a CUDA model (static_decode.py),
                        one graph per cache-length bucket, compiled before serving; 0 (default).
                        Refused on a CPU, where the fused float16 step is faster (docs/performance.md)
``GSV_COMPILE_CACHE``   folder for compiled kernels, reused across runs (default
                        ~/.cache/dora-gpt-sovits/inductor; an explicit TORCHINDUCTOR_CACHE_DIR wins)
``GSV_CUDA_GRAPHS``     auto (default: on for CUDA models) | 1 | 0 — capture each bucket's step
``GSV_GPT_READ_EVERY``  static decoder: host reads sampled tokens every N steps (default 12, the
                        gpt node's first chunk); 1 = every token
``GSV_GPT_CAPACITY``    static decoder: cache positions (prefill + decoded tokens) it holds, rounded
                        up to 512-position buckets, each compiled/captured before serving (default
                        2524: prefill up to 1024 + the 1500-step cap); longer utterances decode eagerly
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .bfloat16_prefill import PREFILL_DTYPES, prefill_dtype, use_bfloat16_prefill
from .decode_layers import FusedDecodeLayers, FusedDecoder
from .decoder import Decoder, TokenStream, stream
from .half_matvec import KERNEL_CHOICES
from .model import Text2Semantic
from .module_decoder import ModuleDecoder
from .sampling import SamplingParams
from .static_decode import CAPACITY, StaticDecoder
from .weights import QUANT_MODES, apply_quantization, weights_in_use

log = logging.getLogger("gsv.gpt")

# (phone_ids [T], bert [1024, T], prompt tokens or None, params) -> TokenStream
StreamFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, SamplingParams], TokenStream]
# One folder per torch version: Inductor's artifacts name functions of the torch that wrote them,
# and a cache shared between versions fails to load (ImportError from torch._inductor).
DEFAULT_COMPILE_CACHE = Path(f"~/.cache/dora-gpt-sovits/inductor/torch-{torch.__version__}").expanduser()


class OptionError(ValueError):
    """An option's value is malformed or cannot apply to this model (one line, naming the variable)."""


@dataclass(frozen=True)
class TorchGPTOptions:
    quant: str = "auto"
    compile: bool = False
    cuda_graphs: str = "auto"  # "auto", "1" or "0"
    read_every: int = 12
    compile_cache: Path = DEFAULT_COMPILE_CACHE
    capacity: int = CAPACITY
    half_matvec: str = "auto"
    fused_decode: bool = True
    prefill_dtype: str = "float32"
    cache_dtype: str = "float32"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TorchGPTOptions:
        env = os.environ if env is None else env
        quant = env.get("GSV_GPT_QUANT", "auto").strip().lower() or "auto"
        if quant not in QUANT_MODES:
            raise OptionError(f"GSV_GPT_QUANT={quant!r}: expected one of {', '.join(QUANT_MODES)}")
        graphs = env.get("GSV_CUDA_GRAPHS", "auto").strip().lower() or "auto"
        if graphs not in ("auto", "1", "0"):
            raise OptionError(f"GSV_CUDA_GRAPHS={graphs!r}: expected auto, 1 or 0")
        compile_flag = env.get("GSV_COMPILE", "0").strip()
        if compile_flag not in ("0", "1", ""):
            raise OptionError(f"GSV_COMPILE={compile_flag!r}: expected 1 or 0")
        read_every = env.get("GSV_GPT_READ_EVERY", "12").strip()
        if not read_every.isdigit() or int(read_every) < 1:
            raise OptionError(f"GSV_GPT_READ_EVERY={read_every!r}: expected a positive integer")
        cache = Path(env.get("GSV_COMPILE_CACHE") or DEFAULT_COMPILE_CACHE).expanduser()
        capacity = env.get("GSV_GPT_CAPACITY", str(CAPACITY)).strip()
        if not capacity.isdigit() or int(capacity) < 1:
            raise OptionError(f"GSV_GPT_CAPACITY={capacity!r}: expected a positive integer")
        kernel = env.get("GSV_HALF_MATVEC", "auto").strip().lower() or "auto"
        if kernel not in KERNEL_CHOICES:
            raise OptionError(f"GSV_HALF_MATVEC={kernel!r}: expected one of {', '.join(KERNEL_CHOICES)}")
        fused = env.get("GSV_FUSED_DECODE", "1").strip() or "1"
        if fused not in ("0", "1"):
            raise OptionError(f"GSV_FUSED_DECODE={fused!r}: expected 1 or 0")
        prefill = env.get("GSV_GPT_PREFILL_DTYPE", "float32").strip().lower() or "float32"
        if prefill not in PREFILL_DTYPES:
            raise OptionError(f"GSV_GPT_PREFILL_DTYPE={prefill!r}: expected one of {', '.join(PREFILL_DTYPES)}")
        return cls(
            quant,
            compile_flag == "1",
            graphs,
            int(read_every),
            cache,
            int(capacity),
            kernel,
            fused == "1",
            prefill,
            cache_dtype_from(env),
        )

    def use_cuda_graphs(self, device: torch.device) -> bool:
        if self.cuda_graphs == "1" and device.type != "cuda":
            raise OptionError(f"GSV_CUDA_GRAPHS=1 needs a CUDA model, this one is on {device}")
        return device.type == "cuda" and self.cuda_graphs != "0"


CACHE_DTYPES = {"float32": None, "float16": torch.float16}  # None: the model's (float32 on a CPU)


def cache_dtype_from(env: Mapping[str, str]) -> str:
    """``GSV_GPT_CACHE_DTYPE``, checked."""
    value = env.get("GSV_GPT_CACHE_DTYPE", "float32").strip().lower() or "float32"
    if value not in CACHE_DTYPES:
        raise OptionError(f"GSV_GPT_CACHE_DTYPE={value!r}: expected one of {', '.join(CACHE_DTYPES)}")
    return value


def refuse_torch_only_options(env: Mapping[str, str], backend: str) -> None:
    """For the exported graphs' backends, which hold caches of their own: a float16 cache asked
    for there would be silently ignored, so it is an error (OptionError) at start-up instead."""
    cache_dtype = cache_dtype_from(env)
    if cache_dtype != "float32":
        raise OptionError(
            f"GSV_GPT_CACHE_DTYPE={cache_dtype} is for the torch backend's CPU decoders; "
            f"the {backend} graphs keep their own cache (unset it, or use GSV_BACKEND=torch)"
        )


def use_compile_cache(folder: Path) -> Path:
    """Point Inductor's on-disk cache (compiled kernels and FX graphs) at ``folder`` unless the
    user set TORCHINDUCTOR_CACHE_DIR; a later process with the same model, shapes and torch
    version then skips most of the compile. Returns the folder in use."""
    chosen = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder)))
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def make_decoder(model: Text2Semantic | Decoder, options: TorchGPTOptions = TorchGPTOptions()) -> Decoder:
    """The decoder for ``model`` under ``options``, logged in one line ``GPT decoder: <impl> (<why>)``.

    A :class:`Text2Semantic` gets its weights prepared in place (``GSV_GPT_QUANT``,
    ``GSV_HALF_MATVEC``) and then, in this order: the static decoder if ``GSV_COMPILE`` or CUDA
    graphs are on (every bucket compiled/captured here, before the first request); the fused
    decode step where our float16 kernel holds the weights and ``GSV_FUSED_DECODE=1``; else the
    module path. A decoder already made (an exported graph: backends.gpt_runtime) is logged as is.
    """
    if not isinstance(model, Text2Semantic):
        decoder, why = model, getattr(model, "why", "")
    else:
        decoder, why = _torch_decoder(model, options)
    decoder.why = why
    log.info("GPT decoder: %s", describe(decoder))
    return decoder


def describe(decoder: Decoder) -> str:
    return f"{decoder.name} ({decoder.why})"


def _torch_decoder(model: Text2Semantic, options: TorchGPTOptions) -> tuple[Decoder, str]:
    cache_dtype = CACHE_DTYPES[options.cache_dtype]
    if cache_dtype is not None and model.device.type != "cpu":
        raise OptionError(
            f"GSV_GPT_CACHE_DTYPE={options.cache_dtype} is for the CPU decoders; this model is on {model.device} "
            "(its cache already holds the model's dtype)"
        )
    apply_quantization(model, options.quant, options.half_matvec)  # auto: none off the CPU
    if options.prefill_dtype == "bfloat16":
        use_bfloat16_prefill(model)
    weights = f"weights {weights_in_use(model)}, {model.dtype} on {model.device}"
    if prefill_dtype(model) != "float32":
        weights += f", prefill products in {prefill_dtype(model)} (lossy)"
    if cache_dtype is not None:
        weights += f", cache in {options.cache_dtype} (lossy)"
    fused = FusedDecodeLayers.for_model(model) if options.fused_decode else None
    if fused is not None:
        eager, why = FusedDecoder(model, fused, cache_dtype), f"{weights}; every layer of a step in one C++ call"
    else:
        reason = "GSV_FUSED_DECODE=0" if options.fused_decode is False else "no float16 weights for our kernel"
        eager, why = ModuleDecoder(model, cache_dtype), f"{weights}; one PyTorch call per operation ({reason})"
    graphs = options.use_cuda_graphs(model.device)
    if options.compile and model.device.type != "cuda":
        raise OptionError(
            f"GSV_COMPILE=1 compiles the static decoder of a CUDA model; this one is on {model.device}, "
            "where the default fused float16 step is faster (docs/performance.md)"
        )
    if not (options.compile or graphs):
        return eager, why
    if options.compile:
        use_compile_cache(options.compile_cache)
    decoder = StaticDecoder(
        model, options.capacity, options.read_every, cuda_graphs=graphs, compile=options.compile, fallback=eager
    )
    decoder.prepare_buckets()
    what = " + ".join(name for name, on in (("torch.compile", options.compile), ("CUDA graphs", graphs)) if on)
    return decoder, (
        f"{weights}; {what} per {decoder.bucket}-position bucket, tokens read every "
        f"{options.read_every} steps; utterances over {decoder.capacity} positions: {eager.name}"
    )


class StreamFunction:
    """The stage callable of a gpt backend: one utterance per call, any decoder; ``.decoder`` is
    the decoder itself (the gpt node's continuous batching schedules its rows: batching.py)."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def __call__(self, phone_ids, bert, prompt, params: SamplingParams) -> TokenStream:
        return stream(self.decoder, phone_ids, bert, prompt, params)


def stream_function(decoder: Decoder) -> StreamFunction:
    return StreamFunction(decoder)
