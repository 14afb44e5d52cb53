"""The float16 key/value cache (``GSV_GPT_CACHE_DTYPE=float16``, lossy): the fused step stores each
new key/value rounded as torch rounds and reads them back widened; it matches the module path over
the same rounded cache, its results do not depend on the thread count or on the rows beside a row,
and the setting is refused wherever it would be ignored. (The float32 cache: test_decode_layers.py.)
"""

from __future__ import annotations

import pytest
import torch
from conftest import FIXTURES
from test_decode_layers import packed_pair, random_model

from dora_gpt_sovits.gpt import half_matvec as hm
from dora_gpt_sovits.gpt.decode_layers import FusedDecoder
from dora_gpt_sovits.gpt.decoder import stream
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.module_decoder import ModuleDecoder, new_cache
from dora_gpt_sovits.gpt.options import (
    OptionError,
    TorchGPTOptions,
    describe,
    make_decoder,
    refuse_torch_only_options,
)
from dora_gpt_sovits.gpt.sampling import SamplingParams

HALF = torch.float16


@pytest.fixture(scope="module")
def kernel():
    built, problem = hm._build()
    if not built:
        pytest.skip(f"the CPU kernels cannot be built here: {problem}")


def steps_over(model, fused, stored, rows=1, steps=10, context=9, seed=0):
    """Prefill a random context into a cache held as ``stored``, then decode fixed tokens fused (or
    through the modules if ``fused`` is None): (logits per step, cache)."""
    g = torch.Generator().manual_seed(seed)
    d = model.config.hidden_dim
    cache = new_cache(model, rows, context + steps + 1, stored)
    logits = []
    with torch.inference_mode():
        mask = torch.ones(rows, 1, context, context, dtype=torch.bool)
        model.prefill(torch.randn(rows, context, d, generator=g), mask, cache)
        for k in range(steps):
            tokens, positions = torch.randint(0, 1024, (rows,), generator=g), torch.full((rows,), k)
            if fused is None:
                logits.append(model.step(tokens, positions, cache))
            else:
                logits.append(model.ar_predict_layer(fused(model.embed_step(tokens, positions), cache)))
    return torch.stack(logits), cache


def test_the_cache_holds_float16_and_attention_reads_float32():
    model = random_model(hidden=64, heads=2, layers=1, seed=0)
    cache = new_cache(model, 1, 8, HALF)
    assert cache.k.dtype == cache.v.dtype == HALF and cache.dtype == torch.float32
    k, v = torch.randn(2, 1, 2, 3, 32).unbind()
    got_k, got_v = cache.write(0, k, v)
    assert (
        got_k.dtype == torch.float32 and torch.equal(got_k, k.half().float()) and torch.equal(got_v, v.half().float())
    )
    assert new_cache(model, 1, 8).k.dtype == torch.float32  # the default: unchanged


@pytest.mark.parametrize(("name", "context"), [("fixture", 9), ("head_dim_32", 9), ("head_dim_32", 229)])
def test_fused_steps_over_a_float16_cache_match_the_module_path_over_it(kernel, name, context):
    """The module path widening the rounded cache (kv_cache.KVCache) is the reference: the same
    rounded values, float32 arithmetic in another summation order."""
    model, fused = packed_pair(name)
    steps = 10 if context < 100 else 3
    got, got_cache = steps_over(model, fused, HALF, steps=steps, context=context)
    want, want_cache = steps_over(model, None, HALF, steps=steps, context=context)
    assert got_cache.k.dtype == HALF and got_cache.length == want_cache.length
    torch.testing.assert_close(got, want, atol=1e-4 * want.abs().max().item(), rtol=0)
    n = want_cache.length
    for a, b in ((got_cache.k, want_cache.k), (got_cache.v, want_cache.v)):
        a, b = a[..., :n, :].float(), b[..., :n, :].float()
        # The float32 values differ by summation order (1e-5 as test_decode_layers allows), which may
        # move one across a rounding boundary: a half step more, and rarely.
        assert ((a - b).abs() <= b.abs() * 2**-10 + 1e-5 * b.abs().max()).all()
        assert (a != b).float().mean() < 1e-2


def test_the_kernel_rounds_a_new_key_as_torch_does(kernel):
    """The first layer's new key/value do not depend on the cache: a float16 step writes exactly
    the float32 step's values rounded by torch (round to nearest even)."""
    model, fused = packed_pair("head_dim_32")
    g = torch.Generator().manual_seed(4)
    x, position = torch.randn(2, model.config.hidden_dim, generator=g), 37
    full = model.new_cache(2, 50)
    full.k.copy_(torch.randn(full.k.shape, generator=g))
    full.v.copy_(torch.randn(full.v.shape, generator=g))
    half_k, half_v = full.k.half(), full.v.half()
    op = torch.ops.gsv.decode_layers
    op(x, fused.weights, full.k, full.v, position, 1e-5)
    op(x, fused.weights, half_k, half_v, position, 1e-5)
    assert torch.equal(half_k[0, :, :, position], full.k[0, :, :, position].half())
    assert torch.equal(half_v[0, :, :, position], full.v[0, :, :, position].half())
    untouched = torch.ones(half_k.shape[3], dtype=torch.bool)
    untouched[position] = False
    assert torch.equal(half_k[:, :, :, untouched], full.k.half()[:, :, :, untouched])


def half_step_at(threads: int, seed: int, position: int):
    """One fused step of 2 rows over a random float16 cache on ``threads`` threads: (x, keys, values)."""
    model, fused = packed_pair("head_dim_32")
    g = torch.Generator().manual_seed(seed)
    x, filled = torch.randn(2, model.config.hidden_dim, generator=g), new_cache(model, 2, position + 10, HALF)
    filled.k.copy_(torch.randn(filled.k.shape, generator=g))
    filled.v.copy_(torch.randn(filled.v.shape, generator=g))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        k, v = filled.k.clone(), filled.v.clone()
        return torch.ops.gsv.decode_layers(x, fused.weights, k, v, position, 1e-5, fused.head, fused.vocab), k, v
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("position", [30, 293])  # 31 / 294 attended: groups of 8 and a rest
def test_float16_results_do_not_depend_on_the_thread_count(kernel, position):
    one = half_step_at(1, seed=5, position=position)
    for threads in (2, 8):
        assert all(torch.equal(a, b) for a, b in zip(one, half_step_at(threads, seed=5, position=position)))


@pytest.mark.parametrize("threads", [1, 2])
def test_rows_of_float16_caches_decode_as_each_alone(kernel, threads):
    """decode_rows (continuous batching) over float16 caches of different lengths: each row's
    logits and cache bits are those of the same row stepped alone."""
    model, fused = packed_pair("head_dim_32")
    g = torch.Generator().manual_seed(9)
    lengths = (5, 40, 17)
    x = torch.randn(len(lengths), model.config.hidden_dim, generator=g)
    caches = []
    for length in lengths:
        cache = new_cache(model, 1, length + 8, HALF)
        cache.k.copy_(torch.randn(cache.k.shape, generator=g))
        cache.v.copy_(torch.randn(cache.v.shape, generator=g))
        cache.advance(length)
        caches.append(cache)
    alone = [copy_of(model, cache) for cache in caches]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            together = fused.rows(x, caches, logits=True)
            each = torch.cat([fused(x[r : r + 1], alone[r], logits=True) for r in range(len(lengths))])
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(together, each)
    for a, b in zip(caches, alone):
        assert a.length == b.length and torch.equal(a.k, b.k) and torch.equal(a.v, b.v)


def copy_of(model, cache):
    copy = new_cache(model, 1, cache.max_len, cache.k.dtype)
    copy.k.copy_(cache.k)
    copy.v.copy_(cache.v)
    copy.advance(cache.length)
    return copy


def test_rows_of_mixed_cache_formats_are_refused(kernel):
    model, fused = packed_pair("fixture")
    caches = [new_cache(model, 1, 8, HALF), new_cache(model, 1, 8)]
    with pytest.raises(RuntimeError, match="rows of different cache dtypes"):
        fused.rows(torch.zeros(2, model.config.hidden_dim), caches)


def tiny_utterance():
    import numpy as np

    expected = np.load(FIXTURES / "expected.npz")
    return [torch.from_numpy(expected[f"gpt_v2_tiny_{k}"]) for k in ("phone_ids", "bert", "prompt_semantic")]


def decode(decoder, params=SamplingParams(top_k=1, early_stop_num=30)) -> list[int]:
    return [int(t) for t in stream(decoder, *tiny_utterance(), params)]


def test_the_option_makes_float16_caches_on_the_fused_and_the_module_path(kernel):
    env = {"GSV_GPT_CACHE_DTYPE": "float16"}
    fused = make_decoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), TorchGPTOptions.from_env(env))
    modules = make_decoder(
        load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), TorchGPTOptions.from_env({**env, "GSV_FUSED_DECODE": "0"})
    )
    assert isinstance(fused, FusedDecoder) and type(modules) is ModuleDecoder
    for decoder in (fused, modules):
        assert decoder.cache_dtype == HALF and "cache in float16 (lossy)" in describe(decoder)
    assert decode(fused) == decode(modules)  # the same rounded cache; summation order only
    row = fused.prefill_row(fused.prepare(*tiny_utterance()), SamplingParams(top_k=1), 10)
    assert row.cache.k.dtype == HALF and fused.layers.accepts(torch.zeros(1, fused.model.config.hidden_dim), row.cache)
    default = make_decoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), TorchGPTOptions.from_env({}))
    assert default.cache_dtype is None and "cache in" not in describe(default)


def test_a_left_padded_batch_over_float16_caches_decodes_through_the_modules(kernel):
    from dora_gpt_sovits.gpt.generate import generate_batch

    model, fused = packed_pair("fixture")
    phones, bert, prompt = tiny_utterance()
    rows = ([phones, phones[:40]], [bert, bert[:, :40]], prompt)  # the second row is left-padded
    params = SamplingParams(top_k=1, early_stop_num=20)
    got = generate_batch(FusedDecoder(model, fused, HALF), *rows, params)
    want = [generate_batch(ModuleDecoder(model, HALF), [p], [b], prompt, params)[0] for p, b in zip(*rows[:2])]
    assert [r.tokens.tolist() for r in got] == [r.tokens.tolist() for r in want]


def test_the_setting_is_refused_where_it_would_be_ignored():
    with pytest.raises(OptionError, match="GSV_GPT_CACHE_DTYPE='float8': expected one of float32, float16"):
        TorchGPTOptions.from_env({"GSV_GPT_CACHE_DTYPE": "float8"})
    options = TorchGPTOptions.from_env({"GSV_GPT_CACHE_DTYPE": "float16"})
    off_cpu = load_gpt(FIXTURES / "gpt_v2_tiny.ckpt").to("meta")  # any device but the CPU (no GPU needed)
    with pytest.raises(OptionError, match="GSV_GPT_CACHE_DTYPE=float16 is for the CPU decoders; this model is on meta"):
        make_decoder(off_cpu, options)
    with pytest.raises(OptionError, match="GSV_GPT_CACHE_DTYPE=float16 is for the torch backend"):
        refuse_torch_only_options({"GSV_GPT_CACHE_DTYPE": "float16"}, "onnxruntime")
    refuse_torch_only_options({"GSV_GPT_CACHE_DTYPE": "float32"}, "onnxruntime")  # the default passes


def test_the_graph_backends_refuse_a_float16_cache_at_start_up(monkeypatch, tmp_path):
    from dora_gpt_sovits.backends.config import BackendChoice
    from dora_gpt_sovits.backends.errors import BackendError
    from dora_gpt_sovits.backends.stages import gpt_builders

    monkeypatch.setenv("GSV_GPT_CACHE_DTYPE", "float16")
    with pytest.raises(BackendError, match="the onnxruntime graphs keep their own cache"):
        gpt_builders(tmp_path)["onnxruntime"](BackendChoice(backend="onnxruntime", onnx_dir=tmp_path))
