"""GPT (Text2Semantic) parity with upstream GPT-SoVITS, on the random-weight tiny fixture model.

Tolerances: the expected arrays were computed by upstream in float32 on CPU from the same fp16
weights. Our kernels reduce in a different order (fused qkv, other matmul blocking), which moves
float32 results by ~1e-6 relative; through 2 layers and LayerNorms values of order 1-10 differ by a
few 1e-6. ``atol = 1e-4`` leaves a wide margin for that yet is far below any real bug (a wrong
position, mask or head split changes values by > 1e-2). Token sequences must match exactly: along
the greedy runs the smallest best/second-best logit gap is 0.017.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FIXTURES  # noqa: E402

from dora_gpt_sovits.gpt.generate import (
    StopReason,
    generate,
    generate_batch,
    generate_stream,
    prefill_inputs,
    prepare_utterance,
)
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.sampling import SamplingParams

ATOL = 1e-4
pytestmark = pytest.mark.usefixtures("torch_single_thread")  # tiny models; see conftest
EARLY_STOP = 40  # the fixture runs' early_stop_num


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURES / "expected.npz")


@pytest.fixture(scope="module")
def manifest_runs():
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    return {run["name"]: run for run in manifest["gpt_models"]["gpt_v2_tiny"]["runs"]}


@pytest.fixture(scope="module")
def model():
    return load_gpt(FIXTURES / "gpt_v2_tiny.ckpt")


@pytest.fixture(scope="module")
def inputs(expected):
    return (
        torch.from_numpy(expected["gpt_v2_tiny_phone_ids"]),
        torch.from_numpy(expected["gpt_v2_tiny_bert"]),
        torch.from_numpy(expected["gpt_v2_tiny_prompt_semantic"]),
    )


@pytest.fixture(scope="module")
def prefilled(model, inputs):
    """Prefill once: (embedded input, mask, cache, last hidden state)."""
    with torch.inference_mode():
        x, mask, _, pad = prefill_inputs(model, [prepare_utterance(model, *inputs)])
        assert pad is None
        cache = model.new_cache(1, x.shape[1] + 8)
        hidden = model.transformer(x, mask, cache)
    return x, mask, cache, hidden


def test_prefill_input(prefilled, expected):
    x = prefilled[0]
    np.testing.assert_allclose(x[0].numpy(), expected["gpt_v2_tiny_prefill_input"], atol=ATOL, rtol=0)


def test_prefill_mask(prefilled, expected):
    blocked = ~prefilled[1][0, 0]
    np.testing.assert_array_equal(blocked.numpy(), expected["gpt_v2_tiny_prefill_mask_blocked"])


def test_prefill_k_cache_layer0(prefilled, expected):
    cache = prefilled[2]
    k = cache.k[0, 0, :, : cache.length]  # [heads, positions, head_dim]
    k = k.transpose(0, 1).reshape(cache.length, -1)  # heads back side by side, as upstream stores them
    np.testing.assert_allclose(k.numpy(), expected["gpt_v2_tiny_prefill_k_cache_layer0"], atol=ATOL, rtol=0)


def test_prefill_hidden_and_logits(model, prefilled, expected):
    hidden_last = prefilled[3][0, -1]
    np.testing.assert_allclose(hidden_last.numpy(), expected["gpt_v2_tiny_prefill_hidden_last"], atol=ATOL, rtol=0)
    with torch.inference_mode():
        logits = model.ar_predict_layer(hidden_last)
    np.testing.assert_allclose(logits.numpy(), expected["gpt_v2_tiny_prefill_logits"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("run", ["greedy_rp1.35", "greedy_rp1.0"])
def test_greedy_step_logits(model, inputs, expected, run):
    """Raw logits of every step, feeding back upstream's own tokens (so this checks ``step`` alone)."""
    want = expected[f"gpt_v2_tiny_{run}_step_logits"]
    fed = expected[f"gpt_v2_tiny_{run}_y"][102:]
    with torch.inference_mode():
        x, mask, prompt_lens, _ = prefill_inputs(model, [prepare_utterance(model, *inputs)])
        cache = model.new_cache(1, x.shape[1] + len(want))
        got = [model.prefill(x, mask, cache)[0]]
        for k in range(1, len(want)):
            got.append(model.step(torch.tensor([int(fed[k - 1])]), prompt_lens + (k - 1), cache)[0])
    np.testing.assert_allclose(torch.stack(got).numpy(), want, atol=ATOL, rtol=0)


RUNS = [
    "greedy_rp1.35",
    "greedy_rp1.0",
    "sample_k15_p1_t1_rp1.35_seed1234",
    "sample_k15_p1_t1_rp1.35_seed777",
    "sample_k20_p0.6_t0.6_rp1.35_seed1234",
]


def params_of(run: dict) -> SamplingParams:
    return SamplingParams(
        top_k=run["top_k"],
        top_p=run["top_p"],
        temperature=run["temperature"],
        repetition_penalty=run["repetition_penalty"],
        early_stop_num=run["early_stop_num"],
        seed=run["torch_manual_seed"],
    )


@pytest.mark.parametrize("name", RUNS)
def test_decode_run_matches_upstream(model, inputs, expected, manifest_runs, name):
    run = manifest_runs[name]
    result = generate(model, *inputs, params_of(run))
    np.testing.assert_array_equal(result.tokens.numpy(), expected[f"gpt_v2_tiny_{name}_tokens"])
    np.testing.assert_array_equal(result.sequence.numpy(), expected[f"gpt_v2_tiny_{name}_y"])
    assert result.n_steps == run["n_decode_steps"]
    assert len(result.generated) == run["n_generated"]
    reason = {"eos": StopReason.EOS, "early_stop_num": StopReason.EARLY_STOP}[run["stop_reason"]]
    assert result.stop_reason == reason


def test_early_stop_drops_first_generated_token(model, inputs, manifest_runs):
    """Upstream's slice y[-idx:] loses the first token after an early stop; we keep that quirk."""
    result = generate(model, *inputs, params_of(manifest_runs["greedy_rp1.0"]))
    assert len(result.generated) == EARLY_STOP + 1
    assert torch.equal(result.tokens, result.generated[1:])


def test_stream_yields_every_kept_token(model, inputs, manifest_runs):
    params = params_of(manifest_runs["sample_k15_p1_t1_rp1.35_seed777"])
    stream = generate_stream(model, *inputs, params)
    streamed = list(stream)
    assert stream.result is not None
    assert streamed == stream.result.generated.tolist()
    assert stream.result.stop_reason == StopReason.EARLY_STOP
    assert torch.equal(stream.result.tokens, generate(model, *inputs, params).tokens)


def test_reference_free_returns_everything(model, inputs):
    phones, bert, _ = inputs
    target = slice(21, None)  # target phones only: no prompt text either
    result = generate(model, phones[target], bert[:, target], None, SamplingParams(top_k=1, early_stop_num=20))
    assert result.stop_reason == StopReason.EARLY_STOP
    # Upstream returns idx 0 without a reference, so y[-0:] is the whole (generated-only) sequence.
    assert torch.equal(result.tokens, result.generated)
    assert torch.equal(result.sequence, result.generated)
    assert len(result.tokens) == 21


def test_batched_greedy_equals_single(model, inputs):
    phones, bert, prompt = inputs
    rows = [
        (phones, bert, prompt),  # EOS at step 26 with penalty 1.35: finishes before the others
        (phones[:40], bert[:, :40], prompt),  # shorter text: left-padded
        (phones[5:], bert[:, 5:], prompt[:60]),  # its own shorter prompt
        (phones[21:], bert[:, 21:], None),  # reference-free row in the same batch
    ]
    params = SamplingParams(top_k=1, repetition_penalty=1.35, early_stop_num=EARLY_STOP)
    batched = generate_batch(model, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], params)
    singles = [generate(model, *r, params) for r in rows]
    assert batched[0].stop_reason == StopReason.EOS
    assert any(r.stop_reason == StopReason.EARLY_STOP for r in batched)
    for b, s in zip(batched, singles):
        assert torch.equal(b.tokens, s.tokens)
        assert torch.equal(b.sequence, s.sequence)
        assert (b.stop_reason, b.n_steps) == (s.stop_reason, s.n_steps)


def test_batched_shared_prompt(model, inputs):
    phones, bert, prompt = inputs
    params = SamplingParams(top_k=1, repetition_penalty=1.0, early_stop_num=12)
    batched = generate_batch(model, [phones, phones[:30]], [bert, bert[:, :30]], prompt, params)
    assert torch.equal(batched[0].tokens, generate(model, phones, bert, prompt, params).tokens)
    assert torch.equal(batched[1].tokens, generate(model, phones[:30], bert[:, :30], prompt, params).tokens)


def test_seed_reproduces_and_differs(model, inputs):
    a = generate(model, *inputs, SamplingParams(early_stop_num=15, seed=3))
    b = generate(model, *inputs, SamplingParams(early_stop_num=15, seed=3))
    c = generate(model, *inputs, SamplingParams(early_stop_num=15, seed=4))
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_default_early_stop_is_model_default(model):
    assert model.early_stop_num == 50 * 54


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs(inputs, dtype):
    half = load_gpt(FIXTURES / "gpt_v2_tiny.ckpt", dtype=dtype)
    assert half.dtype == dtype
    result = generate(half, *inputs, SamplingParams(early_stop_num=15, seed=0))
    assert len(result.generated) == 16 and int(result.generated.max()) < 1024
    greedy = generate(half, *inputs, SamplingParams(top_k=1, early_stop_num=EARLY_STOP))
    assert greedy.stop_reason in (StopReason.EOS, StopReason.EARLY_STOP)
    with torch.inference_mode():
        x, mask, _, _ = prefill_inputs(half, [prepare_utterance(half, *inputs)])
        logits = half.prefill(x, mask, half.new_cache(1, x.shape[1]))
    assert logits.dtype == dtype and torch.isfinite(logits).all()


def test_input_validation(model, inputs):
    phones, bert, prompt = inputs
    with pytest.raises(ValueError, match="bert has shape"):
        generate(model, phones, bert[:, :10], prompt)
    with pytest.raises(ValueError, match="phone_ids holds ids outside"):
        generate(model, phones + 10_000, bert, prompt)
    with pytest.raises(ValueError, match="prompt_tokens holds ids outside"):
        generate(model, phones, bert, prompt + 1024)


def test_step_cap_keeps_token_and_drops_first(model, inputs, monkeypatch):
    """At the last allowed step upstream stops keeping the token; y[-idx:] then drops the first one."""
    import dora_gpt_sovits.gpt.stopping as stopping

    no_eos = load_gpt(FIXTURES / "gpt_v2_tiny.ckpt")
    no_eos.ar_predict_layer.weight[no_eos.config.eos] = 0  # EOS logit 0 never beats the best of 1024
    monkeypatch.setattr(stopping, "MAX_STEPS", 30)
    result = generate(no_eos, *inputs, SamplingParams(top_k=1, early_stop_num=1000))
    assert (result.stop_reason, result.n_steps, len(result.generated)) == (StopReason.MAX_STEPS, 30, 30)
    assert torch.equal(result.tokens, result.generated[1:])


def test_thread_split_products_match(model, inputs, expected, manifest_runs):
    """With 2 threads float32 decode steps take the split matrix-vector route (weights.SplitRowsLinear,
    which the module path gives a CPU model's plain float32 layers)."""
    import copy

    from dora_gpt_sovits.gpt.weights import SplitRowsLinear, use_cpu_kernels

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        layer = use_cpu_kernels(copy.deepcopy(model)).layers[0].ffn_in
        assert type(layer) is SplitRowsLinear
        for rows in (1, 3):
            x = torch.randn(rows, 1, 64)
            torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
        name = "sample_k20_p0.6_t0.6_rp1.35_seed1234"
        result = generate(model, *inputs, params_of(manifest_runs[name]))
        np.testing.assert_array_equal(result.tokens.numpy(), expected[f"gpt_v2_tiny_{name}_tokens"])
    finally:
        torch.set_num_threads(previous)
