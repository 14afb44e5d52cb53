"""The v3/v4 mel generator: DiT estimator (sovits/dit.py) and Euler flow-matching sampler (sovits/cfm.py).

Properties on a tiny random model here; agreement with the reference implementation is checked
against recorded arrays in tests/fixtures/upstream-v3v4 (the tests at the end, skipped until that
folder exists). On random weights our computation equals the reference's bit for bit in float32
(same operations in the same order), so the fixture tolerance only has to absorb other CPUs' kernels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dora_gpt_sovits.checkpoint_io import read_checkpoint
from dora_gpt_sovits.sovits.cfm import MAX_STEPS, check_steps, draw_noise, sample_mel
from dora_gpt_sovits.sovits.dit import DiT, DiTConfig, RotaryEmbedding, apply_rotary

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TINY = DiTConfig(dim=128, depth=2, heads=2, dim_head=64, ff_mult=2, mel_dim=100, text_dim=64, conv_layers=2)


def random_dit(config: DiTConfig = TINY, seed: int = 0) -> DiT:
    """Random weights scaled so activations stay O(1) through the blocks (default init zeroes GRN)."""
    model = DiT(config).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * (0.5 / p.shape[-1] ** 0.5 if p.dim() > 1 else 0.1))
    return model


def inputs(batch: int, length: int, config: DiTConfig = TINY, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, config.mel_dim, generator=g)
    cond = torch.randn(batch, length, config.mel_dim, generator=g)
    features = torch.randn(batch, length, config.text_dim, generator=g)
    return x, cond, features, torch.rand(batch, generator=g), torch.full((batch,), 0.25)


# --- sizes from a state dict ---------------------------------------------------------------------


@pytest.mark.parametrize("config", [TINY, DiTConfig()], ids=["tiny", "official"])
def test_config_read_back_from_state_dict(config):
    with torch.device("meta"):  # shapes only: the official size without allocating 1.3 GB
        state = DiT(config).state_dict()
    assert DiTConfig.from_state_dict(state) == config


def test_official_key_names():
    state = random_dit().state_dict()
    for key in (
        "time_embed.time_mlp.0.weight",
        "d_embed.time_mlp.2.bias",
        "text_embed.text_blocks.1.grn.gamma",
        "input_embed.conv_pos_embed.conv1d.2.weight",
        "rotary_embed.inv_freq",
        "transformer_blocks.1.attn.to_out.0.weight",
        "transformer_blocks.1.ff.ff.0.0.weight",
        "transformer_blocks.1.ff.ff.2.weight",
        "norm_out.linear.weight",
        "proj_out.bias",
    ):
        assert key in state, key


def test_from_state_dict_refuses_bad_shapes_and_counts():
    state = random_dit().state_dict()
    with pytest.raises(KeyError, match="proj_out.weight"):
        DiTConfig.from_state_dict({k: v for k, v in state.items() if k != "proj_out.weight"})
    gap = {k: v for k, v in state.items() if not k.startswith("transformer_blocks.0.")}
    with pytest.raises(ValueError, match="numbered"):
        DiTConfig.from_state_dict(gap)
    wrong = dict(state, **{"transformer_blocks.1.attn.to_v.weight": torch.zeros(128, 64)})
    with pytest.raises(ValueError, match="to_v.weight has shape"):
        DiTConfig.from_state_dict(wrong)


def test_loads_a_state_dict_without_the_rotary_buffer_and_keeps_a_stored_one():
    source = random_dit()
    state = source.state_dict()
    without = DiT.from_state_dict({k: v for k, v in state.items() if k != "rotary_embed.inv_freq"})
    assert torch.equal(without.rotary_embed.inv_freq, RotaryEmbedding.exact_inv_freq(64))
    # Official files hold it in float16; the reference computes with those rounded values.
    rounded = state["rotary_embed.inv_freq"].half().float()
    kept = DiT.from_state_dict(dict(state, **{"rotary_embed.inv_freq": rounded}))
    assert torch.equal(kept.rotary_embed.inv_freq, rounded)


# --- the estimator ---------------------------------------------------------------------------------


def test_rotary_rotates_only_the_first_head_and_encodes_relative_position():
    cos, sin = RotaryEmbedding(64)(20)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 20, 128, generator=g).unbind(0)
    rq, rk = apply_rotary(q, cos, sin, 64), apply_rotary(k, cos, sin, 64)
    assert torch.equal(rq[..., 64:], q[..., 64:])
    # A rotation: pair norms kept; scores depend on m - n only (same vectors at shifted positions).
    assert torch.allclose(
        rq[..., :64].unflatten(-1, (32, 2)).norm(dim=-1), q[..., :64].unflatten(-1, (32, 2)).norm(dim=-1)
    )
    same_q, same_k = q[:, :1].expand(-1, 20, -1), k[:, :1].expand(-1, 20, -1)
    rq, rk = apply_rotary(same_q, cos, sin, 64)[0, :, :64], apply_rotary(same_k, cos, sin, 64)[0, :, :64]
    assert torch.allclose(rq[5] @ rk[2], rq[13] @ rk[10], atol=1e-4)


def test_cached_text_and_step_equal_the_whole_computation():
    model = random_dit()
    x, cond, features, t, dt = inputs(1, 37)
    whole = model(x, cond, features, t, dt)
    cached = model.velocity(x, cond, model.embed_text(features), t, model.embed_step(dt))
    assert whole.shape == (1, 37, 100)
    assert torch.equal(whole, cached)


def test_batch_items_are_independent():
    """Each padded item computes as it would alone (at the same padded length and valid length).

    Padded frames still reach valid ones through the convolutions and the GRN's energy over time,
    exactly as in the reference, so an item alone at its own length may differ near its end; the
    key mask only keeps padded frames out of attention.
    """
    model = random_dit()
    x, cond, features, t, dt = inputs(2, 41)
    lengths = torch.tensor([41, 29])
    together = model(x, cond, features, t, dt, lengths)
    for i in range(2):
        alone = model(
            x[i : i + 1], cond[i : i + 1], features[i : i + 1], t[i : i + 1], dt[i : i + 1], lengths[i : i + 1]
        )
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=0)
    # No mask and a mask of full length are the same computation.
    full = model(x, cond, features, t, dt, torch.tensor([41, 41]))
    torch.testing.assert_close(model(x, cond, features, t, dt), full, atol=1e-5, rtol=0)


# --- the sampler ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, MAX_STEPS + 1, 10**9, 1.5, 4.0, "4", True, None])
def test_step_count_is_validated(bad):
    with pytest.raises(ValueError, match="n_steps"):
        check_steps(bad)


def test_step_count_range_ends_are_accepted():
    assert check_steps(1) == 1 and check_steps(MAX_STEPS) == MAX_STEPS


def test_sampled_mel_keeps_prompt_frames_zero_and_seeded_noise_is_reproducible():
    model = random_dit()
    _, _, features, _, _ = inputs(1, 30)
    prompt = torch.randn(1, 100, 12)
    torch.manual_seed(5)
    drawn = sample_mel(model, features, prompt, 4)
    torch.manual_seed(5)
    noise = draw_noise(features, 100)
    given = sample_mel(model, features, prompt, 4, noise=noise)
    assert drawn.shape == (1, 100, 30)
    assert torch.equal(drawn, given)
    assert not drawn[..., :12].any() and drawn[..., 12:].abs().sum() > 0


def test_one_step_is_one_euler_step_from_the_noise():
    model = random_dit()
    _, _, features, _, _ = inputs(1, 20)
    prompt, noise = torch.randn(1, 100, 5), torch.randn(1, 100, 20)
    mel = sample_mel(model, features, prompt, 1, noise=noise)
    x = noise.transpose(1, 2).clone()
    x[:, :5] = 0
    cond = torch.zeros(1, 20, 100)
    cond[:, :5] = prompt.transpose(1, 2)
    v = model(x, cond, features, torch.zeros(1), torch.ones(1))
    expected = (x + v).transpose(1, 2)
    expected[..., :5] = 0
    torch.testing.assert_close(mel, expected, atol=1e-6, rtol=0)


def test_sampler_refuses_mismatched_inputs():
    model = random_dit()
    _, _, features, _, _ = inputs(1, 20)
    with pytest.raises(ValueError, match="prompt"):
        sample_mel(model, features, torch.zeros(1, 100, 21), 2)
    with pytest.raises(ValueError, match="noise"):
        sample_mel(model, features, torch.zeros(1, 100, 4), 2, noise=torch.zeros(1, 100, 19))
    with pytest.raises(ValueError, match="features"):
        sample_mel(model, features[..., :10], torch.zeros(1, 100, 4), 2)
    with pytest.raises(ValueError, match="lengths"):
        sample_mel(model, features, torch.zeros(1, 100, 4), 2, lengths=torch.tensor([0]))


# --- export -----------------------------------------------------------------------------------------


def test_onnx_export_of_one_step_with_dynamic_length(tmp_path):
    pytest.importorskip("onnx", reason="the export check needs the onnx package (extra 'export')")
    ort = pytest.importorskip("onnxruntime", reason="running the exported graph needs onnxruntime")
    model = random_dit()
    path = tmp_path / "dit.onnx"
    torch.onnx.export(
        model,
        inputs(1, 24),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x", "cond", "features", "t", "dt"],
        output_names=["velocity"],
        dynamic_axes={name: {1: "frames"} for name in ("x", "cond", "features", "velocity")},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    example = inputs(1, 53, seed=4)  # another length than the traced one
    (got,) = session.run(None, dict(zip(["x", "cond", "features", "t", "dt"], (a.numpy() for a in example))))
    expected = model(*example)
    assert math.isfinite(float(expected.abs().max()))
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=0)


# --- against the reference implementation (tests/fixtures/upstream-v3v4) ---------------------------

UPSTREAM = Path(__file__).resolve().parent / "fixtures" / "upstream-v3v4"
MODEL_FILES = {"v3": "sovits_v3_tiny_02.pth", "v4": "sovits_v4_tiny_pk.pth"}
# Recorded in float32 with one thread on an Intel Xeon (AMX); same operations in the same order give
# bit-equal results there, the margin is for other CPUs' kernels (summation order in GEMMs and
# attention): an AMD EPYC (AVX-512, no AMX) is up to 2.1e-5 apart (2026-12-07).
FIXTURE_ATOL = 5e-5


@pytest.fixture(scope="module")
def recorded():
    if not (UPSTREAM / "expected.npz").is_file():
        pytest.skip(f"upstream v3/v4 fixtures not found at {UPSTREAM}")
    return dict(np.load(UPSTREAM / "expected.npz"))


@pytest.fixture(scope="module", params=sorted(MODEL_FILES))
def version_and_estimator(request, recorded):
    """The file's ``cfm.estimator.*`` tensors (float16 in the file) as float32, loaded as they are."""
    state = read_checkpoint(UPSTREAM / MODEL_FILES[request.param]).content["weight"]
    prefix = "cfm.estimator."
    estimator = {k.removeprefix(prefix): v.float() for k, v in state.items() if k.startswith(prefix)}
    return request.param, DiT.from_state_dict(estimator)


def test_file_sizes_and_fp16_rotary_frequencies(version_and_estimator):
    _, model = version_and_estimator
    assert model.config == TINY
    # The file's float16 frequencies are what the reference computes with (its recorded quirk).
    exact = RotaryEmbedding.exact_inv_freq(64)
    assert torch.equal(model.rotary_embed.inv_freq, exact.half().float())
    assert not torch.equal(model.rotary_embed.inv_freq, exact)


def test_one_forward_matches_the_reference(version_and_estimator, recorded):
    version, model = version_and_estimator
    x, cond, text = (torch.from_numpy(recorded[f"dit_in_{n}"]).transpose(1, 2) for n in ("x", "cond", "text"))
    t, dt, lengths = (torch.from_numpy(recorded[f"dit_in_{n}"]) for n in ("time", "dt", "lens"))
    text_embed = model.embed_text(text)
    step = model.embed_step(dt)
    velocity = model.velocity(x, cond, text_embed, t, step, lengths)
    close = dict(atol=FIXTURE_ATOL, rtol=0)
    torch.testing.assert_close(text_embed, torch.from_numpy(recorded[f"{version}_dit_text_embed"]), **close)
    torch.testing.assert_close(step, torch.from_numpy(recorded[f"{version}_dit_dt_embed"]), **close)
    torch.testing.assert_close(velocity, torch.from_numpy(recorded[f"{version}_dit_out"]), **close)


@pytest.mark.parametrize("n_steps", [4, 32])
def test_sampled_mel_matches_the_reference(version_and_estimator, recorded, n_steps):
    version, model = version_and_estimator
    features = torch.from_numpy(recorded[f"{version}_cfm_in_mu"])
    prompt = torch.from_numpy(recorded[f"{version}_cfm_in_prompt"])
    noise = torch.from_numpy(recorded[f"{version}_cfm_noise"])
    expected = torch.from_numpy(recorded[f"{version}_cfm_out_steps{n_steps}"])
    mel = sample_mel(model, features, prompt, n_steps, noise=noise)
    torch.testing.assert_close(mel, expected, atol=FIXTURE_ATOL * n_steps, rtol=0)
    # Our own draw under the recording's seed is the reference's draw.
    torch.manual_seed(1234)
    assert torch.equal(draw_noise(features, 100), noise)
