"""The static-shape decode loop (static_decode.py) behind GSV_COMPILE and GSV_CUDA_GRAPHS.

On a CPU the loop runs uncaptured: bucketed attention over a zeroed, device-indexed cache and
chunked reading of the sampled tokens must give exactly the eager loop's tokens, stop reasons and
step counts, whatever the bucket size and read interval (EOS inside a chunk included).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES

from dora_gpt_sovits.gpt.generate import StopReason, generate, generate_stream
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.options import OptionError, TorchGPTOptions, describe, make_decoder, stream_function
from dora_gpt_sovits.gpt.sampling import SamplingParams
from dora_gpt_sovits.gpt.static_decode import StaticDecoder, bucket_for
from dora_gpt_sovits.gpt.weights import HalfDecodeLinear

pytestmark = pytest.mark.usefixtures("torch_single_thread")
RUNS = {
    "greedy_eos_at_26": SamplingParams(top_k=1, repetition_penalty=1.35, early_stop_num=40),
    "greedy_early_stop": SamplingParams(top_k=1, repetition_penalty=1.0, early_stop_num=40),
    "sampled": SamplingParams(top_k=20, top_p=0.6, temperature=0.6, seed=1234, early_stop_num=40),
}


@pytest.fixture(scope="module")
def model():
    return load_gpt(FIXTURES / "gpt_v2_tiny.ckpt")


@pytest.fixture(scope="module")
def inputs():
    expected = np.load(FIXTURES / "expected.npz")
    return tuple(torch.from_numpy(expected[f"gpt_v2_tiny_{k}"]) for k in ("phone_ids", "bert", "prompt_semantic"))


def decode(decoder, inputs, params):
    stream = generate_stream(decoder, *inputs, params)
    tokens = list(stream)
    assert stream.result is not None and tokens == stream.result.generated.tolist()
    return stream.result


def assert_same(got, want):
    assert torch.equal(got.tokens, want.tokens) and torch.equal(got.sequence, want.sequence)
    assert (got.stop_reason, got.n_steps) == (want.stop_reason, want.n_steps)


def test_bucket_for():
    assert [bucket_for(n, 64) for n in (1, 63, 64, 65, 128, 129)] == [64, 64, 64, 128, 128, 192]


@pytest.mark.parametrize("read_every", [1, 5, 12, 100])
@pytest.mark.parametrize("run", RUNS)
def test_same_tokens_as_eager_loop(model, inputs, run, read_every):
    decoder = StaticDecoder(model, capacity=256, read_every=read_every, bucket=32)  # crosses buckets
    assert_same(decode(decoder, inputs, RUNS[run]), generate(model, *inputs, RUNS[run]))


def test_upstream_tokens_and_eos_inside_a_chunk(model, inputs):
    expected = np.load(FIXTURES / "expected.npz")
    decoder = StaticDecoder(model, capacity=256, read_every=12)  # EOS at step 26: mid-chunk
    result = decode(decoder, inputs, RUNS["greedy_eos_at_26"])
    assert result.stop_reason == StopReason.EOS
    np.testing.assert_array_equal(result.tokens.numpy(), expected["gpt_v2_tiny_greedy_rp1.35_tokens"])


def test_reuse_reference_free_prepare_and_overflow(model, inputs):
    phones, bert, prompt = inputs
    decoder = StaticDecoder(model, capacity=256, bucket=64)
    decoder.prepare_buckets()
    params = RUNS["greedy_early_stop"]
    first = decode(decoder, inputs, params)
    free = decode(decoder, (phones[21:], bert[:, 21:], None), params)
    assert_same(free, generate(model, phones[21:], bert[:, 21:], None, params))
    assert_same(decode(decoder, inputs, params), first)  # nothing leaks between utterances
    small = StaticDecoder(model, capacity=64, bucket=64)  # too small: decoded eagerly, same result
    assert_same(decode(small, inputs, params), first)


@pytest.mark.slow  # torch.compile: ~17 s
def test_compiled_steps_match_eager(model, inputs, tmp_path, monkeypatch):
    """One bucket, so one compile (~10 s on 2 cores); the whole-size compile is measured in docs/performance.md."""
    # A fresh Inductor cache: torch's default (/tmp/torchinductor_<user>) may hold another torch
    # version's artifacts on a shared machine, which fail to import.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    decoder = StaticDecoder(model, capacity=256, bucket=256, compile=True)
    params = SamplingParams(top_k=1, repetition_penalty=1.35, early_stop_num=30)
    assert_same(decode(decoder, inputs, params), generate(model, *inputs, params))


@pytest.mark.gpu
@pytest.mark.parametrize("read_every", [1, 12])
def test_cuda_graphs_match_eager_on_gpu(inputs, read_every):
    gpu = load_gpt(FIXTURES / "gpt_v2_tiny.ckpt", device="cuda")
    decoder = StaticDecoder(gpu, capacity=256, bucket=64, read_every=read_every, cuda_graphs=True)
    decoder.prepare_buckets()
    assert len(decoder.graphs) == len(decoder.buckets())
    for params in (RUNS["greedy_eos_at_26"], RUNS["greedy_early_stop"]):
        assert_same(decode(decoder, inputs, params), generate(gpu, *inputs, params))
    sampled = decode(decoder, inputs, RUNS["sampled"])
    assert sampled.stop_reason in (StopReason.EOS, StopReason.EARLY_STOP) and int(sampled.generated.max()) < 1024


def test_compile_is_refused_on_a_cpu():
    """The fused float16 step is faster there (docs/performance.md); StaticDecoder still compiles
    on a CPU (the test above), which is how CI checks the compiled step."""
    with pytest.raises(OptionError, match="GSV_COMPILE=1 compiles the static decoder of a CUDA model"):
        make_decoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), TorchGPTOptions(compile=True))


@pytest.mark.gpu
def test_cuda_picks_the_static_decoder_with_an_eager_fallback(monkeypatch):
    monkeypatch.setattr(StaticDecoder, "prepare_buckets", lambda self: None)
    decoder = make_decoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt", device="cuda"), TorchGPTOptions())
    assert decoder.name == "static" and decoder.fallback.name == "module"
    assert "CUDA graphs" in describe(decoder) and decoder.read_every == 12


def test_options_from_env():
    assert TorchGPTOptions.from_env({}) == TorchGPTOptions()
    chosen = TorchGPTOptions.from_env(
        {"GSV_GPT_QUANT": "none", "GSV_COMPILE": "1", "GSV_CUDA_GRAPHS": "0", "GSV_GPT_READ_EVERY": "4"}
    )
    assert (chosen.quant, chosen.compile, chosen.cuda_graphs, chosen.read_every) == ("none", True, "0", 4)
    for env, name in [
        ({"GSV_GPT_QUANT": "int4"}, "GSV_GPT_QUANT"),
        ({"GSV_GPT_QUANT": "int8"}, "GSV_GPT_QUANT"),
        ({"GSV_COMPILE": "yes"}, "GSV_COMPILE"),
        ({"GSV_CUDA_GRAPHS": "on"}, "GSV_CUDA_GRAPHS"),
        ({"GSV_GPT_READ_EVERY": "0"}, "GSV_GPT_READ_EVERY"),
    ]:
        with pytest.raises(OptionError, match=name):
            TorchGPTOptions.from_env(env)
    with pytest.raises(OptionError, match="needs a CUDA model"):
        TorchGPTOptions(cuda_graphs="1").use_cuda_graphs(torch.device("cpu"))


def test_default_options_pack_half_weights_and_keep_tokens(inputs, caplog):
    model = load_gpt(FIXTURES / "gpt_v2_tiny.ckpt")
    with caplog.at_level("INFO", logger="gsv.gpt"):
        decoder = make_decoder(model, TorchGPTOptions())
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("GPT decoder:")] == [
        f"GPT decoder: {describe(decoder)}"
    ]
    stream_fn = stream_function(decoder)
    assert isinstance(model.layers[0].qkv, HalfDecodeLinear)
    params = RUNS["greedy_eos_at_26"]
    stream = stream_fn(*inputs, params)
    list(stream)
    assert_same(stream.result, generate(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), *inputs, params))
