"""Packed GPT weights (GSV_GPT_QUANT): fp16 reproduces upstream's tokens exactly, through every
decoder that reads them (fused, module path on our kernel, module path on FBGEMM's).

(The int8 format and its accuracy tests were removed with it: docs/performance.md, "GPT speed options".)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FIXTURES

from dora_gpt_sovits.gpt.generate import as_decoder, generate
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.options import TorchGPTOptions, make_decoder
from dora_gpt_sovits.gpt.sampling import SamplingParams
from dora_gpt_sovits.gpt.weights import HalfDecodeLinear, QuantizationError, apply_quantization, resolve_mode

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def inputs():
    expected = np.load(FIXTURES / "expected.npz")
    return tuple(torch.from_numpy(expected[f"gpt_v2_tiny_{k}"]) for k in ("phone_ids", "bert", "prompt_semantic"))


@pytest.fixture(scope="module")
def fp32():
    return load_gpt(FIXTURES / "gpt_v2_tiny.ckpt")


def forced_logits(model, inputs, fed: torch.Tensor) -> torch.Tensor:
    """Logits of the prefill and of one step per ``fed`` token (the same context for every model),
    computed by the decoder ``model`` is or gets (generate.as_decoder)."""
    decoder = as_decoder(model)
    with torch.inference_mode():
        out = [decoder.prefill_logits([decoder.prepare(*inputs)], len(fed) + 1)[0]]
        for k, token in enumerate(fed.tolist(), start=1):
            decoder.k = k  # the step's position: what the decoder's own draws count
            out.append(decoder.step_logits(torch.tensor([token]))[0])
    decoder.reset()
    return torch.stack(out)


def test_bad_requests_are_refused(inputs):
    for removed in ("int4", "int8"):
        with pytest.raises(QuantizationError, match=f"GSV_GPT_QUANT='{removed}'"):
            apply_quantization(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), removed)
    with pytest.raises(QuantizationError, match="float32"):
        apply_quantization(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt", dtype=torch.float16), "fp16")
    model = load_gpt(FIXTURES / "gpt_v2_tiny.ckpt")
    assert apply_quantization(model, "none") is model


# fp16: lossless for float16-exact weights (official files store float16), so upstream's tokens hold.
# Both float16 kernels: ours (half_matvec.py; FBGEMM where it cannot be built), with the fused
# decode step (decode_layers.py) and without, and FBGEMM's.
@pytest.fixture(scope="module", params=["auto", "auto-unfused", "fbgemm"])
def half_packed(request):
    """The decoder the options give: fused (our kernel), module path (our kernel, or FBGEMM's)."""
    kernel, _, unfused = request.param.partition("-")
    options = TorchGPTOptions(quant="fp16", half_matvec=kernel, fused_decode=not unfused)
    return make_decoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), options)


@pytest.mark.parametrize(
    "name", ["greedy_rp1.35", "sample_k15_p1_t1_rp1.35_seed777", "sample_k20_p0.6_t0.6_rp1.35_seed1234"]
)
def test_half_packed_reproduces_upstream_tokens(half_packed, inputs, name):
    from test_gpt_parity import params_of

    expected = np.load(FIXTURES / "expected.npz")
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    run = {r["name"]: r for r in manifest["gpt_models"]["gpt_v2_tiny"]["runs"]}[name]
    result = generate(half_packed, *inputs, params_of(run))
    np.testing.assert_array_equal(result.tokens.numpy(), expected[f"gpt_v2_tiny_{name}_tokens"])


def test_half_packed_steps_match_float32(fp32, half_packed, inputs):
    fed = generate(fp32, *inputs, SamplingParams(top_k=1, repetition_penalty=1.0, early_stop_num=20)).generated
    want, got = forced_logits(fp32, inputs, fed), forced_logits(half_packed, inputs, fed)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)  # summation order only
    assert isinstance(half_packed.model.layers[0].qkv, HalfDecodeLinear)
    assert half_packed.model.layers[0].qkv.weight.dtype == torch.float32  # kept for the prefill


def test_auto_mode_picks_lossless_half_only():
    model = load_gpt(FIXTURES / "gpt_v2_tiny.ckpt")
    assert resolve_mode(model, "auto") == "fp16"
    with torch.no_grad():
        model.layers[0].qkv.weight[0, 0] += 1e-6  # no longer representable in float16
    assert resolve_mode(model, "auto") == "none"
    with pytest.raises(QuantizationError, match="float16 holds exactly"):
        apply_quantization(model, "fp16")
    assert resolve_mode(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt", dtype=torch.float16), "auto") == "none"
