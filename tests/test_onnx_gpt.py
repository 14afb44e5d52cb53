"""The exported GPT (prefill + step graphs, sampling inside) against the torch decoder, on the tiny
fixture model. Tokens must be identical: greedy by construction (same argmax of logits equal to
~1e-6; the smallest best/second-best gap on these runs is 0.017), and seeded sampling too, because
the graph receives the very Exp(1) draws torch's CPU generator gives ``gpt.sampling``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES, export_every_precision

from dora_gpt_sovits.backends.config import BackendChoice
from dora_gpt_sovits.backends.errors import BackendUnavailable
from dora_gpt_sovits.backends.gpt_graph import export_gpt
from dora_gpt_sovits.backends.gpt_runtime import GraphDecoder
from dora_gpt_sovits.gpt.generate import generate
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.sampling import SamplingParams

pytestmark = pytest.mark.usefixtures("torch_single_thread")
CKPT = FIXTURES / "gpt_v2_tiny.ckpt"


@pytest.fixture(scope="module")
def model():
    return load_gpt(CKPT)


@pytest.fixture(scope="module")
def onnx_dir(model, tmp_path_factory):
    return export_every_precision(lambda dtype: export_gpt(model, 4096, dtype), CKPT, tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def inputs():
    e = np.load(FIXTURES / "expected.npz")
    return [torch.from_numpy(e[f"gpt_v2_tiny_{k}"]) for k in ("phone_ids", "bert", "prompt_semantic")]


CASES = [
    SamplingParams(top_k=1, early_stop_num=40),
    SamplingParams(seed=3, early_stop_num=40),
    SamplingParams(seed=5, top_k=0, top_p=0.8, temperature=0.7, repetition_penalty=1.1, early_stop_num=60),
]


@pytest.mark.parametrize("params", CASES, ids=["greedy", "seeded", "top-p"])
@pytest.mark.parametrize("with_prompt", [True, False], ids=["prompt", "reference-free"])
def test_onnxruntime_cpu_decodes_the_same_tokens_as_torch(model, onnx_dir, inputs, params, with_prompt):
    phones, bert, prompt = inputs
    prompt = prompt if with_prompt else None
    expected = generate(model, phones, bert, prompt, params)
    decoder = GraphDecoder.open(BackendChoice("onnxruntime", "cpu", "float32", onnx_dir), CKPT, threads=1)
    stream = decoder.stream(phones, bert, prompt, params)
    assert list(stream) == expected.generated.tolist()
    assert stream.result.stop_reason == expected.stop_reason
    assert torch.equal(stream.result.tokens, expected.tokens)


def test_float16_graph_runs_on_the_cpu_provider(onnx_dir, inputs):
    """Half-precision weights change logits by ~1e-3: tokens may differ from float32, so this
    checks the converted graph loads, decodes and stops by upstream's rules."""
    phones, bert, prompt = inputs
    decoder = GraphDecoder.open(BackendChoice("onnxruntime", "cpu", "float16", onnx_dir), CKPT, threads=1)
    stream = decoder.stream(phones, bert, prompt, SamplingParams(top_k=1, early_stop_num=20))
    tokens = list(stream)
    assert 1 <= len(tokens) <= 21 and all(0 <= t < 1024 for t in tokens)


def test_bad_inputs_are_one_line_errors(onnx_dir, inputs):
    phones, bert, prompt = inputs
    decoder = GraphDecoder.open(BackendChoice("onnxruntime", "cpu", "float32", onnx_dir), CKPT, threads=1)
    with pytest.raises(ValueError, match="bert has shape"):
        decoder.stream(phones, bert[:, :-1], prompt)
    with pytest.raises(ValueError, match="phone_ids holds ids outside"):
        decoder.stream(phones + 10_000, bert, prompt)


def test_cuda_provider_missing_is_an_error(onnx_dir):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() and torch.cuda.is_available():
        pytest.skip("a CUDA machine: test_onnxruntime_cuda_matches_torch covers it")
    with pytest.raises(BackendUnavailable):
        GraphDecoder.open(BackendChoice("onnxruntime", "cuda:0", "float32", onnx_dir), CKPT)


def gpu_backend_or_skip(backend: str) -> BackendChoice:
    import onnxruntime

    provider = {"onnxruntime": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[backend]
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (torch.cuda.is_available() is False here)")
    if provider not in onnxruntime.get_available_providers():
        pytest.skip(f"needs onnxruntime-gpu with {provider} (this build has {onnxruntime.get_available_providers()})")
    return BackendChoice(backend, "cuda:0", "float32")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_gpu_providers_decode_the_same_greedy_tokens(model, onnx_dir, inputs, backend):
    import dataclasses

    choice = dataclasses.replace(gpu_backend_or_skip(backend), onnx_dir=onnx_dir)
    phones, bert, prompt = inputs
    params = SamplingParams(top_k=1, early_stop_num=40)
    expected = generate(model, phones, bert, prompt, params)
    trt = None
    if backend == "tensorrt":
        from dora_gpt_sovits.backends.tensorrt import gpt_trt_options

        trt = gpt_trt_options(onnx_dir, CKPT)
    decoder = GraphDecoder.open(choice, CKPT, trt_options=trt)
    assert list(decoder.stream(phones, bert, prompt, params)) == expected.generated.tolist()
