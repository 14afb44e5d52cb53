"""The GPT prefill (model.Text2Semantic.prefill): the default path skips work but not results, and
the optional bfloat16 prefill (GSV_GPT_PREFILL_DTYPE, bfloat16_prefill.py) stays close, computes
what it says, and is refused where it cannot run. docs/performance.md, "Prefill"."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES  # noqa: E402

from dora_gpt_sovits.gpt import bfloat16_prefill
from dora_gpt_sovits.gpt.bfloat16_prefill import BFloat16PrefillLayer, prefill_dtype, use_bfloat16_prefill
from dora_gpt_sovits.gpt.generate import prefill_inputs, prepare_utterance
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.model import additive_mask, prefix_lm_mask
from dora_gpt_sovits.gpt.options import OptionError, TorchGPTOptions, describe, make_decoder
from dora_gpt_sovits.gpt.weights import QuantizationError, apply_quantization, use_cpu_kernels

pytestmark = pytest.mark.usefixtures("torch_single_thread")  # tiny models; see conftest


def tiny(quant: str = "none"):
    return use_cpu_kernels(apply_quantization(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), quant))


def utterances(model, lengths=((7, 5), (4, 3))):
    """Random utterances of ``(phones, prompt tokens)`` lengths (different: a left-padded batch)."""
    g = torch.Generator().manual_seed(3)
    cfg = model.config
    return [
        prepare_utterance(
            model,
            torch.randint(0, cfg.phoneme_vocab_size, (t,), generator=g),
            torch.randn(cfg.bert_dim, t, generator=g),
            torch.randint(0, cfg.eos, (p,), generator=g),
        )
        for t, p in lengths
    ]


def prefill_both_ways(model, rows):
    """(logits, cache) of ``prefill`` and of every layer over every position (upstream's work)."""
    x, mask, _, pad = prefill_inputs(model, rows)
    caches = [model.new_cache(len(rows), x.shape[1] + 4) for _ in range(2)]
    for cache in caches:
        if pad is not None:
            cache.mark_padding(pad)
    with torch.inference_mode():
        fast = model.prefill(x, mask, caches[0])
        full = model.ar_predict_layer(model.transformer(x, mask, caches[1])[:, -1])
    return (fast, caches[0]), (full, caches[1])


@pytest.mark.parametrize("lengths", [((7, 5),), ((7, 5), (4, 3)), ((6, 0),)], ids=["one", "padded", "no-prompt"])
def test_prefill_equals_every_layer_over_every_position(lengths):
    model = tiny()
    (fast, c_fast), (full, c_full) = prefill_both_ways(model, utterances(model, lengths))
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
    assert c_fast.length == c_full.length == sum(lengths[0]) + max(0, max(t + p for t, p in lengths) - sum(lengths[0]))
    n = c_full.length
    torch.testing.assert_close(c_fast.k[..., :n, :], c_full.k[..., :n, :], atol=1e-5, rtol=0)
    torch.testing.assert_close(c_fast.v[..., :n, :], c_full.v[..., :n, :], atol=1e-5, rtol=0)


def test_additive_mask_is_the_boolean_masks_attention():
    g = torch.Generator().manual_seed(0)
    allowed = prefix_lm_mask(torch.tensor([3, 2]), torch.tensor([2, 1]), 5)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))
    added = additive_mask(allowed, torch.float32)
    assert added.dtype == torch.float32 and torch.equal(added == 0, allowed)
    assert torch.isneginf(added[~allowed]).all()
    assert torch.equal(
        F.scaled_dot_product_attention(q, k, v, attn_mask=added),
        F.scaled_dot_product_attention(q, k, v, attn_mask=allowed),
    )


@pytest.fixture
def matrix_units(monkeypatch):
    """Pretend the CPU has bfloat16 units: the products run (slowly) without them too, so the
    arithmetic is tested on every CPU; the refusal is tested separately."""
    monkeypatch.setattr(bfloat16_prefill, "matrix_units_for", lambda dtype: "amx_bf16")


@pytest.mark.parametrize("quant", ["none", "fp16"])
def test_bfloat16_prefill_stays_close_and_leaves_decode_steps_alone(matrix_units, quant):
    model, exact = tiny(quant), tiny(quant)
    rows = utterances(model, ((12, 9), (10, 4)))  # > MAX_PACKED_ROWS positions: the bfloat16 path
    use_bfloat16_prefill(model)
    assert prefill_dtype(model) == "bfloat16" and prefill_dtype(exact) == "float32"
    assert all(isinstance(layer, BFloat16PrefillLayer) for layer in model.layers)
    assert model.state_dict().keys() == exact.state_dict().keys()  # the official parameters, untouched
    (fast, cache), _ = prefill_both_ways(model, rows)
    (want, want_cache), _ = prefill_both_ways(exact, rows)
    scale = want.abs().max()
    error = (fast - want).abs().max()
    assert 0 < error < 0.05 * scale, (error, scale)  # bfloat16 moves the logits, but only a little
    assert cache.k.dtype == torch.float32
    n = want_cache.length  # the caches are allocated, not zeroed, past it
    keys, want_keys = cache.k[..., :n, :], want_cache.k[..., :n, :]
    assert 0 < (keys - want_keys).abs().max() < 0.05 * want_keys.abs().max()
    step = torch.randn(1, 1, model.config.hidden_dim)  # one row: a decode step, the layer's own kernels
    cache_a, cache_b = model.new_cache(1, 4), exact.new_cache(1, 4)
    torch.testing.assert_close(
        model.layers[0](step, None, cache_a, 0), exact.layers[0](step, None, cache_b, 0), atol=0, rtol=0
    )


def reference_bfloat16_layer(layer, x, mask):
    """One layer's many-row call as plain PyTorch: bfloat16 products (``F.linear``), each widened to
    float32, the ReLU in float32."""

    def product(linear, h):
        return F.linear(h.bfloat16(), linear.weight.bfloat16(), linear.bias.bfloat16()).float()

    b, t, d = x.shape
    q, k, v = product(layer.qkv, x).view(b, t, 3, layer.n_head, layer.head_dim).permute(2, 0, 3, 1, 4)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, t, d)
    h = layer.norm1(x + product(layer.out_proj, attended))
    return layer.norm2(h + product(layer.ffn_out, F.relu(product(layer.ffn_in, h))))


def bfloat16_layer_and_inputs(t: int = 20, prompt: int = 8):
    model = tiny()
    use_bfloat16_prefill(model)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, t, model.config.hidden_dim, generator=g)
    mask = prefix_lm_mask(torch.tensor([t - prompt, 9]), torch.tensor([prompt, 5]), t)
    return model, model.layers[1], x, mask


def test_bfloat16_layer_computes_the_plain_bfloat16_layer(matrix_units):
    """Packed products and the ReLU inside the first feed-forward product are rearrangements, not
    further rounding: the layer equals the plain bfloat16 computation to float32 summation order
    (one bfloat16 rounding step is ~4e-3 relative: 100x the tolerance)."""
    model, layer, x, allowed = bfloat16_layer_and_inputs()
    mask = additive_mask(allowed, torch.float32)
    with torch.inference_mode():
        got = layer(x, mask, model.new_cache(2, x.shape[1]), 1)
        want = reference_bfloat16_layer(layer, x, mask)
    torch.testing.assert_close(got, want, atol=5e-5, rtol=0)


def test_bfloat16_prefill_is_refused_where_it_cannot_pay(monkeypatch):
    monkeypatch.setattr(bfloat16_prefill, "matrix_units_for", lambda dtype: None)
    with pytest.raises(QuantizationError, match="AMX or AVX512-BF16"):
        use_bfloat16_prefill(tiny())
    with pytest.raises(QuantizationError, match="float32 CPU model"):
        use_bfloat16_prefill(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt", dtype=torch.float16))


def test_the_option_is_read_checked_and_described(matrix_units):
    assert TorchGPTOptions.from_env({}).prefill_dtype == "float32"
    assert TorchGPTOptions.from_env({"GSV_GPT_PREFILL_DTYPE": " BFloat16 "}).prefill_dtype == "bfloat16"
    with pytest.raises(OptionError, match="GSV_GPT_PREFILL_DTYPE='fp8'"):
        TorchGPTOptions.from_env({"GSV_GPT_PREFILL_DTYPE": "fp8"})
    lossy = make_decoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), TorchGPTOptions(prefill_dtype="bfloat16"))
    assert "prefill products in bfloat16 (lossy)" in describe(lossy)
    assert "prefill" not in describe(make_decoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), TorchGPTOptions()))
