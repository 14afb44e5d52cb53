"""The exported SoVITS graphs (condition, content, window) against torch, through the same
``decode_chunk`` arithmetic, on the tiny fixture model.

Tolerance: float32 everywhere; ONNX Runtime sums in other orders than PyTorch, which moves
samples by ~1e-6 (measured max 1.2e-6 on audio peaking at ~0.85, SNR ~125 dB). ``ATOL = 1e-4``
(SNR >= 60 dB required) leaves a 100x margin for other CPUs, while any real fault — a frame off,
a wrong slice, noise drawn differently — moves samples by > 1e-2 (SNR ~14 dB for the one such
export bug met while writing this).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES, export_every_precision

from dora_gpt_sovits.backends.config import BackendChoice
from dora_gpt_sovits.backends.sovits_graph import export_sovits
from dora_gpt_sovits.backends.sovits_runtime import GraphStreamingSynthesis
from dora_gpt_sovits.sovits.loader import load_sovits
from dora_gpt_sovits.sovits.streaming import decode_chunk, decode_in_chunks

pytestmark = [pytest.mark.usefixtures("torch_single_thread"), pytest.mark.slow]
SOURCE = FIXTURES / "sovits_v2_tiny_pk_dict.pth"
ATOL, MIN_SNR_DB = 1e-4, 60


@pytest.fixture(scope="module")
def model():
    return load_sovits(SOURCE)


@pytest.fixture(scope="module")
def graphs(model, tmp_path_factory):
    return export_every_precision(lambda dtype: export_sovits(model, dtype), SOURCE, tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def voice():
    e = np.load(FIXTURES / "expected.npz")
    codes = torch.randint(0, 1024, (1, 1, 40), generator=torch.Generator().manual_seed(3))
    return e["ref_spec"], torch.from_numpy(e["dec_sovits_v2_tiny_pk_dict_text_ids"]).view(1, -1), codes


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    snr = 10 * torch.log10((a**2).sum() / ((a - b) ** 2).sum().clamp_min(1e-30))
    assert (a - b).abs().max() <= ATOL and snr >= MIN_SNR_DB, (float((a - b).abs().max()), float(snr))


@pytest.mark.parametrize("noise_scale", [0.0, 0.5])
def test_streamed_chunks_match_torch(model, graphs, voice, noise_scale):
    spec, phones, codes = voice
    ort_model = GraphStreamingSynthesis.open(BackendChoice("onnxruntime", "cpu", "float32", graphs), SOURCE, threads=1)
    torch_cond, ort_cond = model.global_condition([torch.from_numpy(spec)[None]]), ort_model.condition(spec, None)
    kwargs = dict(chunk_tokens=12, lookahead_tokens=4, noise_scale=noise_scale, noise_seed=7)
    expected = torch.cat(list(decode_in_chunks(model, torch_cond, phones, codes, **kwargs)), -1)
    got = torch.cat(list(decode_in_chunks(ort_model, ort_cond, phones, codes, **kwargs)), -1)
    close(expected, got)


def test_one_chunk_is_the_one_shot_decode(model, graphs, voice):
    spec, phones, codes = voice
    ort_model = GraphStreamingSynthesis.open(BackendChoice("onnxruntime", "cpu", "float32", graphs), SOURCE, threads=1)
    empty = codes[0, 0, :0]
    got = decode_chunk(ort_model, ort_model.condition(spec, None), phones, empty, codes, empty, noise_scale=0).samples
    close(model.decode(codes, phones, [torch.from_numpy(spec)[None]], noise_scale=0), got)


def test_float16_graphs_load_and_stay_near_float32(model, graphs, voice):
    """Half precision moves samples by ~1e-3 relative: checked as a loose SNR, not bit parity."""
    spec, phones, codes = voice
    half = GraphStreamingSynthesis.open(BackendChoice("onnxruntime", "cpu", "float16", graphs), SOURCE, threads=1)
    empty = codes[0, 0, :0]
    got = decode_chunk(half, half.condition(spec, None), phones, empty, codes, empty, noise_scale=0).samples
    expected = model.decode(codes, phones, [torch.from_numpy(spec)[None]], noise_scale=0)
    snr = 10 * torch.log10((expected**2).sum() / ((expected - got) ** 2).sum())
    assert torch.isfinite(got).all() and snr > 20, float(snr)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "backend, provider", [("onnxruntime", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")]
)
def test_gpu_providers_match_torch(model, graphs, voice, backend, provider):
    import onnxruntime

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (torch.cuda.is_available() is False here)")
    if provider not in onnxruntime.get_available_providers():
        pytest.skip(f"needs onnxruntime-gpu with {provider}")
    trt = None
    if backend == "tensorrt":
        from dora_gpt_sovits.backends.sovits_runtime import STAGES
        from dora_gpt_sovits.backends.tensorrt import options_for

        trt = options_for(graphs, STAGES, "float32", SOURCE)
    spec, phones, codes = voice
    gpu = GraphStreamingSynthesis.open(BackendChoice(backend, "cuda:0", "float32", graphs), SOURCE, trt_options=trt)
    torch_cond = model.global_condition([torch.from_numpy(spec)[None]])
    kwargs = dict(chunk_tokens=12, lookahead_tokens=4, noise_scale=0.5, noise_seed=7)
    expected = torch.cat(list(decode_in_chunks(model, torch_cond, phones, codes, **kwargs)), -1)
    got = torch.cat(list(decode_in_chunks(gpu, gpu.condition(spec, None), phones, codes, **kwargs)), -1)
    # GPU convolutions may run in TF32 (10-bit mantissa, ~1e-3 relative per product): a sample-level
    # bound would be arbitrary, so the check is the signal-to-error ratio, 40 dB (1 % error
    # amplitude); a frame or noise fault gives ~14 dB.
    snr = 10 * torch.log10((expected**2).sum() / ((expected - got.cpu()) ** 2).sum().clamp_min(1e-30))
    assert expected.shape == got.shape and snr >= 40, float(snr)
