"""One factory per heavy stage and backend: what each node opens through ``registry.open_stage``.

Every stage object has the same shape whatever runs it, so the nodes never branch on the backend:

* gpt       ``decode(phone_ids, bert, prompt | None, params) -> TokenStream``
* vocoder   :class:`VocoderBackend` (``condition(spec, sv)``, ``chunks``: a ``streaming.StreamingSynthesis``);
            for v3/v4 a ``sovits.mel_engine.MelVocoderEngine`` (:func:`mel_vocoder_builders`)
* bert      a model object for ``encoders.bert`` (HF model or :class:`GraphBert`)
* hubert    a model object for ``encoders.hubert`` (HF model or :class:`GraphHubert`)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import BackendChoice
from .errors import BackendError, BackendUnavailable

log = logging.getLogger("gsv.backends")


def torch_device(choice: BackendChoice) -> torch.device:
    if choice.is_cuda and not torch.cuda.is_available():
        raise BackendUnavailable(f"GSV_DEVICE={choice.device} but no CUDA GPU is available to this process")
    return torch.device(choice.device)


def torch_dtype(choice: BackendChoice) -> torch.dtype:
    from ..settings import torch_dtype as dtype_of

    return dtype_of(choice.dtype)


def trt_options(choice: BackendChoice, stages: tuple[str, ...], source: Path | None) -> dict | None:
    if choice.backend != "tensorrt":
        return None
    from .tensorrt import options_for

    return options_for(choice.onnx_dir, stages, "float16" if choice.dtype == "float16" else "float32", source)


# -- gpt --------------------------------------------------------------------------------------------


def gpt_builders(source: Path, threads: int | None = None) -> dict[str, Callable[[BackendChoice], Any]]:
    def torch_gpt(choice: BackendChoice):
        import os

        from ..gpt.loader import load_gpt
        from ..gpt.options import OptionError, TorchGPTOptions, make_decoder, stream_function
        from ..gpt.weights import QuantizationError

        model = load_gpt(source, device=torch_device(choice), dtype=torch_dtype(choice))
        try:  # GSV_GPT_QUANT, GSV_COMPILE, GSV_CUDA_GRAPHS...: see gpt/options.py; compiles before serving
            return stream_function(make_decoder(model, TorchGPTOptions.from_env(os.environ)))
        except (OptionError, QuantizationError) as e:
            raise BackendError(str(e)) from None

    def graph_gpt(choice: BackendChoice):
        import os

        from ..gpt.options import OptionError, make_decoder, refuse_torch_only_options, stream_function
        from .gpt_runtime import GraphDecoder

        try:  # GSV_GPT_CACHE_DTYPE=float16 would be ignored by the graphs: refused, not dropped
            refuse_torch_only_options(os.environ, choice.backend)
        except OptionError as e:
            raise BackendError(str(e)) from None
        graph = GraphDecoder.open(choice, source, threads, trt_options(choice, ("gpt_prefill", "gpt_step"), source))
        return stream_function(make_decoder(graph))

    return {"torch": torch_gpt, "onnxruntime": graph_gpt, "tensorrt": graph_gpt}


# -- vocoder ----------------------------------------------------------------------------------------


@dataclass
class VocoderBackend:
    condition: Callable[[np.ndarray, np.ndarray | None], Any]  # (spec [1025, F], sv or None) -> conditioning
    chunks: Any  # a sovits.streaming.StreamingSynthesis (or a Synthesizer)
    sampling_rate: int
    is_pro: bool
    model_version: str


def vocoder_builders(source: Path, threads: int | None = None) -> dict[str, Callable[[BackendChoice], VocoderBackend]]:
    def torch_vocoder(choice: BackendChoice) -> VocoderBackend:
        from ..sovits.engine import load_torch_sovits

        device = torch_device(choice)
        model = load_torch_sovits(source, device, torch_dtype(choice))  # GSV_VOCODER_FFT; CPU half: generator only

        @torch.inference_mode()
        def condition(spec, sv):
            specs = [torch.from_numpy(np.asarray(spec)).to(device, model.dtype)[None]]
            return model.global_condition(
                specs, None if sv is None else [torch.from_numpy(np.asarray(sv)).to(device, model.dtype)[None]]
            )

        version = model.version.model_version
        return VocoderBackend(condition, model, model.config.sampling_rate, version in ("v2Pro", "v2ProPlus"), version)

    def graph_vocoder(choice: BackendChoice) -> VocoderBackend:
        from .sovits_runtime import STAGES, GraphStreamingSynthesis

        model = GraphStreamingSynthesis.open(choice, source, threads, trt_options(choice, STAGES, source))
        return VocoderBackend(model.condition, model, model.sampling_rate, model.is_pro, model.model_version)

    return {"torch": torch_vocoder, "onnxruntime": graph_vocoder, "tensorrt": graph_vocoder}


# -- v3/v4 vocoder (flow matching) ----------------------------------------------------------------


def mel_vocoder_builders(paths, settings, threads: int | None = None) -> dict[str, Callable[[BackendChoice], Any]]:
    """v3/v4: a ``sovits.mel_engine.MelVocoderEngine`` on torch, or with its DiT and vocoder on the
    exported graphs (backends/mel_graph.py); ``paths`` a ``model_paths.ModelPaths``, ``settings``
    the vocoder node's (sample_steps, speed)."""
    from ..sovits.mel_engine import MelVocoderEngine

    def torch_engine(choice: BackendChoice):
        return MelVocoderEngine.load(
            paths.sovits,
            paths.vocoder,
            paths.version,
            torch_device(choice),
            torch_dtype(choice),
            lora_base=paths.sovits_base,
            sample_steps=settings.sample_steps,
            speed=settings.speed,
        )

    def graph_engine(choice: BackendChoice):
        from .mel_graph import DIT_STAGES, VOCODER_STAGE

        # The DiT's graphs were exported from the SoVITS file, the vocoder's from the vocoder file.
        options = {
            **(trt_options(choice, DIT_STAGES, paths.sovits) or {}),
            **(trt_options(choice, (VOCODER_STAGE,), paths.vocoder) or {}),
        }
        return MelVocoderEngine.open(
            paths.sovits,
            paths.vocoder,
            paths.version,
            choice,
            paths.sovits_base,
            settings.sample_steps,
            settings.speed,
            threads,
            options,
        )

    return {"torch": torch_engine, "onnxruntime": graph_engine, "tensorrt": graph_engine}


# -- encoders ---------------------------------------------------------------------------------------


def bert_builders(
    source: Path, threads: int | None = None, pack_products: bool | None = None
) -> dict[str, Callable[[BackendChoice], Any]]:
    """``pack_products``: the torch encoder's (encoders.bert.load_bert; None: where the CPU gains)."""

    def torch_bert(choice: BackendChoice):
        from ..encoders.bert import load_bert

        return load_bert(source, device=torch_device(choice), dtype=torch_dtype(choice), pack_products=pack_products)

    def graph_bert(choice: BackendChoice):
        from transformers import AutoTokenizer

        from .encoder_runtime import GraphBert

        graph = GraphBert.open(choice, source, threads, trt_options(choice, ("bert",), source))
        return graph, AutoTokenizer.from_pretrained(str(source), local_files_only=True)

    return {"torch": torch_bert, "onnxruntime": graph_bert, "tensorrt": graph_bert}


def hubert_builders(source: Path, threads: int | None = None) -> dict[str, Callable[[BackendChoice], Any]]:
    def torch_hubert(choice: BackendChoice):
        from ..encoders.hubert import load_hubert

        return load_hubert(source, device=torch_device(choice), dtype=torch_dtype(choice))

    def graph_hubert(choice: BackendChoice):
        from .encoder_runtime import GraphHubert

        return GraphHubert.open(choice, source, threads, trt_options(choice, ("hubert",), source))

    return {"torch": torch_hubert, "onnxruntime": graph_hubert, "tensorrt": graph_hubert}


def open_or_exit(
    stage: str,
    make_builders: Callable[[Path], dict[str, Callable[[BackendChoice], Any]]],
    source: Path,
    model_dir: Path,
) -> tuple[Any, BackendChoice]:
    """For a node's main(): ``stage`` from ``source`` on the configured backend, or exit with one
    clear line (a backend that cannot run, or an unusable model file). Exported graphs are looked
    for in ``GSV_ONNX_DIR``, by default ``<model dir>/onnx``."""
    import dataclasses

    from ..node_runtime import fail
    from ..runtime_config import load_model_or_exit
    from .config import choice_from_env
    from .errors import BackendError
    from .registry import open_stage

    try:
        choice = choice_from_env()
        if choice.onnx_dir is None:
            default = Path(model_dir) / "onnx"
            choice = dataclasses.replace(
                choice,
                onnx_dir=default,
                fallback=tuple(dataclasses.replace(f, onnx_dir=default) for f in choice.fallback),
            )
        return load_model_or_exit(lambda path: open_stage(stage, choice, make_builders(path)), source)
    except BackendError as e:
        fail(str(e))
