"""The fused decode step (gpt/decode_layers.py + .cpp): same results as the module path, every
row and thread count alike, the module path wherever the operator does not apply, bad operands refused.

Upstream's tokens through the fused step: tests/test_gpt_quant.py (``half_packed``). The kernel is
compiled on first use; where it cannot be built the operator tests skip saying why.
"""

from __future__ import annotations

import pytest
import torch
from conftest import FIXTURES

from dora_gpt_sovits.gpt import half_matvec as hm
from dora_gpt_sovits.gpt.config import GPTConfig
from dora_gpt_sovits.gpt.decode_layers import FusedDecodeLayers, FusedDecoder
from dora_gpt_sovits.gpt.generate import generate_batch
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.model import Text2Semantic
from dora_gpt_sovits.gpt.options import OptionError, TorchGPTOptions, describe, make_decoder
from dora_gpt_sovits.gpt.sampling import SamplingParams
from dora_gpt_sovits.gpt.weights import pack_half


@pytest.fixture(scope="module")
def kernel():
    built, problem = hm._build()
    if not built:
        pytest.skip(f"the CPU kernels cannot be built here: {problem}")


def random_model(hidden: int, heads: int, layers: int, seed: int) -> Text2Semantic:
    """Random float16-exact weights (as official checkpoints hold), LayerNorms included."""
    torch.manual_seed(seed)
    model = Text2Semantic(GPTConfig(embedding_dim=hidden, hidden_dim=hidden, n_head=heads, n_layer=layers)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.randn_like(p) * (0.5 if p.dim() == 1 else p.shape[-1] ** -0.5)).half().float())
    return model.requires_grad_(False)


MODELS = {
    "fixture": lambda: load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"),  # head_dim 16
    "head_dim_32": lambda: random_model(hidden=128, heads=4, layers=3, seed=1),  # full-size head width
}


def packed_pair(name: str) -> tuple[Text2Semantic, FusedDecodeLayers]:
    model = pack_half(MODELS[name]())
    fused = FusedDecodeLayers.for_model(model)
    assert fused is not None
    return model, fused


def fused_step(
    model: Text2Semantic, fused: FusedDecodeLayers, tokens: torch.Tensor, positions: torch.Tensor, cache
) -> torch.Tensor:
    """What FusedDecoder.step_logits computes."""
    return model.ar_predict_layer(fused(model.embed_step(tokens, positions), cache))


def run_steps(
    model: Text2Semantic,
    fused: FusedDecodeLayers | None,
    rows: int = 1,
    steps: int = 12,
    seed: int = 0,
    context: int = 9,
):
    """Prefill the same random context, then decode ``steps`` fixed tokens: (logits per step, cache);
    the steps run fused, or through the modules if ``fused`` is None."""
    g = torch.Generator().manual_seed(seed)
    d = model.config.hidden_dim
    cache = model.new_cache(rows, context + steps + 1)
    logits = []
    with torch.inference_mode():
        model.prefill(
            torch.randn(rows, context, d, generator=g), torch.ones(rows, 1, context, context, dtype=torch.bool), cache
        )
        for k in range(steps):
            tokens, positions = torch.randint(0, 1024, (rows,), generator=g), torch.full((rows,), k)
            logits.append(
                model.step(tokens, positions, cache)
                if fused is None
                else fused_step(model, fused, tokens, positions, cache)
            )
    return torch.stack(logits), cache


@pytest.mark.parametrize(
    ("name", "context"),
    # 10-21 cached positions: whole groups of 8 scored together and the positions after them;
    # 230-232: hundreds of positions (a long reference), where attention reads ahead of itself.
    [*((name, 9) for name in sorted(MODELS)), ("head_dim_32", 229)],
)
def test_fused_steps_match_the_module_path(kernel, name, context):
    model, fused = packed_pair(name)
    steps = 12 if context < 100 else 3
    got, got_cache = run_steps(model, fused, steps=steps, context=context)
    want, want_cache = run_steps(model, None, steps=steps, context=context)
    torch.testing.assert_close(got, want, atol=1e-5 * want.abs().max().item(), rtol=0)  # summation order only
    n = want_cache.length
    assert got_cache.length == n
    torch.testing.assert_close(got_cache.k[..., :n, :], want_cache.k[..., :n, :], atol=1e-5, rtol=0)
    torch.testing.assert_close(got_cache.v[..., :n, :], want_cache.v[..., :n, :], atol=1e-5, rtol=0)


def test_each_row_of_a_batch_decodes_as_it_would_alone(kernel):
    model, fused = packed_pair("head_dim_32")
    batch, _ = run_steps(model, fused, rows=2, seed=3)
    # Row r of a 2-row run saw row r of the same random draws; decode each row alone from them.
    g = torch.Generator().manual_seed(3)
    d, context, steps = model.config.hidden_dim, 9, 12
    x = torch.randn(2, context, d, generator=g)
    tokens = [torch.randint(0, 1024, (2,), generator=g) for _ in range(steps)]
    for r in range(2):
        cache = model.new_cache(1, context + steps + 1)
        with torch.inference_mode():
            model.prefill(x[r : r + 1], torch.ones(1, 1, context, context, dtype=torch.bool), cache)
            alone = torch.stack(
                [fused_step(model, fused, t[r : r + 1], torch.full((1,), k), cache) for k, t in enumerate(tokens)]
            )
        # (The prefill's float32 GEMM may round a 2-row batch differently, hence not bit-equal.)
        torch.testing.assert_close(alone[:, 0], batch[:, r], atol=1e-5 * alone.abs().max().item(), rtol=0)


def fused_step_at(threads: int, seed: int, position: int = 30):
    """A function running one fused step of 2 rows over a random ``position``-position cache on
    ``threads`` threads: (hidden states, keys, values) after the step (the cache is copied first)."""
    model, fused = packed_pair("head_dim_32")
    g = torch.Generator().manual_seed(seed)
    x, filled = torch.randn(2, model.config.hidden_dim, generator=g), model.new_cache(2, position + 10)
    filled.k.copy_(torch.randn(filled.k.shape, generator=g))
    filled.v.copy_(torch.randn(filled.v.shape, generator=g))

    def step() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            k, v = filled.k.clone(), filled.v.clone()
            return torch.ops.gsv.decode_layers(x, fused.weights, k, v, position, 1e-5), k, v
        finally:
            torch.set_num_threads(previous)

    return step


@pytest.mark.parametrize("position", [30, 293])  # 31 / 294 attended: groups of 8 and a rest
def test_results_do_not_depend_on_the_thread_count(kernel, position):
    one = fused_step_at(1, seed=5, position=position)()
    for threads in (2, 8):
        assert all(torch.equal(a, b) for a, b in zip(one, fused_step_at(threads, seed=5, position=position)()))


def test_threads_that_outnumber_the_cores_meet_at_every_phase(kernel):
    """More threads than cores: some are descheduled at each barrier and the others sleep there
    (decode_layers.cpp, SpinBarrier); every step must still finish with the 1-thread result."""
    import os

    alone = fused_step_at(1, seed=6)()
    crowded = fused_step_at(min(8, 2 * (os.cpu_count() or 1)), seed=6)
    for _ in range(50):
        assert all(torch.equal(a, b) for a, b in zip(crowded(), alone))


def test_steps_the_operator_cannot_take_use_the_module_path(kernel):
    model, fused = packed_pair("fixture")
    x = torch.zeros(2, model.config.hidden_dim)
    cache = model.new_cache(2, 8)
    assert fused.accepts(x, cache)
    cache.mark_padding(torch.tensor([1, 0]))  # a left-padded batch needs the attention mask
    assert not fused.accepts(x, cache)
    cache.reset()
    assert not fused.accepts(x[:1], cache)  # rows in use differ from the step's rows
    assert not fused.accepts(x.half(), cache)


def test_a_left_padded_batch_decodes_through_the_modules(kernel):
    import numpy as np

    model, fused = packed_pair("fixture")
    expected = np.load(FIXTURES / "expected.npz")
    phones, bert, prompt = (
        torch.from_numpy(expected[f"gpt_v2_tiny_{k}"]) for k in ("phone_ids", "bert", "prompt_semantic")
    )
    rows = ([phones, phones[:40]], [bert, bert[:, :40]], prompt)  # the second row is left-padded
    params = SamplingParams(top_k=1, early_stop_num=20)
    got = generate_batch(FusedDecoder(model, fused), *rows, params)
    want = generate_batch(model, *rows, params)  # the module path
    assert [r.tokens.tolist() for r in got] == [r.tokens.tolist() for r in want]


def test_a_full_cache_is_an_error_not_a_write_past_the_end(kernel):
    model, fused = packed_pair("fixture")
    cache = model.new_cache(1, 4)
    cache.advance(4)
    with pytest.raises(RuntimeError, match="KV cache full"):
        fused(torch.zeros(1, model.config.hidden_dim), cache)


def test_malformed_operands_are_refused(kernel):
    model, fused = packed_pair("fixture")
    weights, d = fused.weights, model.config.hidden_dim
    cache = model.new_cache(1, 8)
    x = torch.zeros(1, d)
    op = torch.ops.gsv.decode_layers
    with pytest.raises(RuntimeError, match="12 tensors per layer"):
        op(x, weights[:-1], cache.k, cache.v, 0, 1e-5)
    with pytest.raises(RuntimeError, match="position 8 outside the cache"):
        op(x, weights, cache.k, cache.v, 8, 1e-5)
    with pytest.raises(RuntimeError, match="caches must be contiguous float32"):
        op(
            x, weights, cache.k.double(), cache.v.double(), 0, 1e-5
        )  # (float16 is the other format: GSV_GPT_CACHE_DTYPE)
    with pytest.raises(RuntimeError, match="caches must be contiguous float32"):
        op(x, weights, cache.k, cache.v.half(), 0, 1e-5)  # keys and values in different formats
    with pytest.raises(RuntimeError, match="qkv must come from half_matvec.pack_rows"):
        op(x, [weights[2], *weights[1:]], cache.k, cache.v, 0, 1e-5)
    with pytest.raises(RuntimeError, match="x must be a contiguous float32"):
        op(x.double(), weights, cache.k, cache.v, 0, 1e-5)
    with pytest.raises(RuntimeError, match="does not fit"):
        op(torch.zeros(1, 2 * d), weights, cache.k, cache.v, 0, 1e-5)


def test_widths_the_operator_cannot_take_keep_the_module_path(kernel):
    model = pack_half(random_model(hidden=48, heads=4, layers=1, seed=2))  # head_dim 12: not whole vectors
    assert FusedDecodeLayers.for_model(model) is None
    assert make_decoder(model, TorchGPTOptions(quant="fp16")).name == "module"
    logits, cache = run_steps(model, None, steps=3)
    assert torch.isfinite(logits).all() and cache.length == 9 + 3


def test_only_our_kernel_gets_fused_layers():
    assert FusedDecodeLayers.for_model(pack_half(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), "fbgemm")) is None


def test_the_option_is_read_checked_and_described(kernel):
    assert TorchGPTOptions.from_env({}).fused_decode is True
    off = make_decoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), TorchGPTOptions.from_env({"GSV_FUSED_DECODE": "0"}))
    assert off.name == "module" and "GSV_FUSED_DECODE=0" in describe(off)
    on = make_decoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), TorchGPTOptions.from_env({"GSV_FUSED_DECODE": "1"}))
    assert isinstance(on, FusedDecoder) and "one C++ call" in describe(on)
    with pytest.raises(OptionError, match="GSV_FUSED_DECODE"):
        TorchGPTOptions.from_env({"GSV_FUSED_DECODE": "yes"})


@pytest.mark.parametrize("threads", [1, 2])
def test_a_step_ending_with_the_logits_gives_the_projection_s_values(kernel, threads):
    """The logits projection run inside the step (one parallel region per token) is the same
    product as the module's half_matvec: the same bits, alone or rows of their own caches."""
    model, fused = packed_pair("head_dim_32")
    assert fused.head is not None and fused.vocab == model.config.vocab_size
    g = torch.Generator().manual_seed(8)
    x, filled = torch.randn(2, model.config.hidden_dim, generator=g), model.new_cache(2, 40)
    filled.k.copy_(torch.randn(filled.k.shape, generator=g))
    filled.v.copy_(torch.randn(filled.v.shape, generator=g))
    filled.advance(25)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            hidden = fused(x, copy_cache(model, filled))
            logits = fused(x, copy_cache(model, filled), logits=True)
            rows = [copy_cache(model, filled, row) for row in range(2)]
            row_logits = fused.rows(x, rows, logits=True)
            projected = model.ar_predict_layer(hidden)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(logits, projected) and torch.equal(row_logits, projected)
    assert all(cache.length == 26 for cache in rows)


def copy_cache(model: Text2Semantic, cache, row: int | None = None):
    """A copy of ``cache`` (or of one row of it, as a single-row cache) at the same length."""
    rows = slice(None) if row is None else slice(row, row + 1)
    copy = model.new_cache(cache.k.shape[1] if row is None else 1, cache.max_len)
    copy.k.copy_(cache.k[:, rows])
    copy.v.copy_(cache.v[:, rows])
    copy.advance(cache.length)
    return copy


def test_layers_without_a_logits_projection_refuse_to_end_with_logits(kernel):
    model, fused = packed_pair("fixture")
    bare = FusedDecodeLayers(model.layers, model.config.norm_eps)
    assert bare.head is None
    with pytest.raises(ValueError, match="no float16 logits projection"):
        bare(torch.zeros(1, model.config.hidden_dim), model.new_cache(1, 4), logits=True)
