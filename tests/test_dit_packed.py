"""A streamed first run's cheaper DiT call (issue #17): prepacked bfloat16 products, channels-last
position convolutions, in-place rotary, fused modulation in half dtypes, short runs on one thread.

float32 must stay the reference's computation bit for bit; bfloat16 must stay what the plain
bfloat16 modules compute up to bfloat16 rounding (the products themselves are the same oneDNN
kernels, the GELU is rounded once instead of twice).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_v4_files
from test_cfm_dit import TINY, inputs, random_dit
from test_mel_synthesis import MeanVocoder, tiny_model

from dora_gpt_sovits.sovits import mel_synthesis as ms
from dora_gpt_sovits.sovits.cfm import sample_mel
from dora_gpt_sovits.sovits.dit import NORM_EPS, DiT, add_gated, apply_rotary, apply_rotary_, modulate
from dora_gpt_sovits.sovits.dit_packed import (
    PackedAttention,
    PackedConvPositions,
    PackedFeedForward,
    pack_products,
    packed_rows_limit,
)
from dora_gpt_sovits.sovits.mel_engine import MelVocoderEngine

pytestmark = [
    pytest.mark.usefixtures("torch_single_thread"),
    pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN"),
]


def bf16_pair(max_rows: int | None = 128) -> tuple[DiT, DiT]:
    """(plain, packed) bfloat16 copies of one random tiny DiT."""
    plain = random_dit().to(torch.bfloat16)
    packed = random_dit().to(torch.bfloat16)
    return plain, pack_products(packed, max_rows)


def velocity(model: DiT, length: int) -> torch.Tensor:
    x, cond, features, t, dt = (a.to(torch.bfloat16) for a in inputs(1, length))
    with torch.inference_mode():
        return model(x, cond, features, t, dt).float()


def test_packing_keeps_the_state_dict_and_refuses_float32():
    plain, packed = bf16_pair()
    assert list(packed.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(packed.state_dict()[k], v) for k, v in plain.state_dict().items())
    assert isinstance(packed.transformer_blocks[0].attn, PackedAttention)
    assert isinstance(packed.transformer_blocks[0].ff, PackedFeedForward)
    assert isinstance(packed.input_embed.conv_pos_embed, PackedConvPositions)
    with pytest.raises(ValueError, match="bfloat16 DiT on a CPU"):
        pack_products(random_dit())


def test_packed_short_calls_stay_the_plain_bfloat16_computation():
    plain, packed = bf16_pair()
    exact = random_dit()  # float32, the reference
    x, cond, features, t, dt = inputs(1, 40)
    with torch.inference_mode():
        want = exact(x, cond, features, t, dt)
    fast, slow = velocity(packed, 40), velocity(plain, 40)
    # Same to bfloat16 rounding, and no farther from float32 than the plain modules are.
    torch.testing.assert_close(fast, slow, atol=0.05 * slow.abs().max().item(), rtol=0)
    assert (fast - want).pow(2).mean() <= 1.5 * (slow - want).pow(2).mean()


def test_the_packed_projections_are_the_plain_ones():
    plain, packed = bf16_pair()
    x = torch.randn(1, 24, TINY.dim).to(torch.bfloat16)
    attn, ff = packed.transformer_blocks[0].attn, packed.transformer_blocks[0].ff
    with torch.inference_mode():
        q, k, v = attn.project_qkv(x)
        for got, linear in zip((q, k, v), (attn.to_q, attn.to_k, attn.to_v)):
            torch.testing.assert_close(got, linear(x), atol=1e-2, rtol=1e-2)
        torch.testing.assert_close(attn.project_out(q), attn.to_out[0](q), atol=1e-2, rtol=1e-2)
        hidden = F.gelu(ff.ff[0][0](x), approximate="tanh")
        torch.testing.assert_close(ff(x), ff.ff[2](hidden), atol=3e-2, rtol=3e-2)


def test_long_calls_take_the_plain_products():
    plain, packed = bf16_pair(max_rows=16)
    packed.input_embed.conv_pos_embed.dtype = None  # the position convs' own path is tested below
    assert torch.equal(velocity(packed, 40), velocity(plain, 40))


def test_without_a_limit_every_call_takes_the_packed_products(monkeypatch):
    plain, packed = bf16_pair(max_rows=None)
    _, limited = bf16_pair(max_rows=16)
    limited.input_embed.conv_pos_embed.dtype = None  # as in the test above: the plain modules only
    calls = []
    for model in (packed, limited):
        ff = model.transformer_blocks[0].ff
        monkeypatch.setattr(ff, "last", lambda x, last=ff.last, model=model: calls.append(model) or last(x))
    long_packed, long_limited = velocity(packed, 200), velocity(limited, 200)
    assert calls == [packed]  # 200 rows: over the limited copy's 16
    # The unlimited copy is the plain bfloat16 computation up to the GELU's one rounding.
    slow = velocity(plain, 200)
    torch.testing.assert_close(long_packed, slow, atol=0.05 * slow.abs().max().item(), rtol=0)
    assert torch.equal(long_limited, slow)


def test_the_packed_rows_limit_follows_the_matrix_units():
    assert packed_rows_limit(frozenset({"avx512_bf16", "amx_bf16", "amx_tile"})) == 128  # Xeon (AMX)
    assert packed_rows_limit(frozenset({"avx512_bf16", "avx512_vnni"})) is None  # AMD Zen 4
    assert packed_rows_limit(frozenset()) is None


def test_channels_last_position_convs_are_the_plain_ones_in_bfloat16():
    plain, packed = bf16_pair()
    h = torch.randn(1, 50, TINY.dim).to(torch.bfloat16)
    with torch.inference_mode():
        got = packed.input_embed.conv_pos_embed(h)
        want = plain.input_embed.conv_pos_embed(h)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)


def test_a_traced_packed_dit_is_the_plain_graph():
    plain, packed = bf16_pair()
    x, cond, features, t, dt = (a.to(torch.bfloat16) for a in inputs(1, 20))
    traced = torch.jit.trace(packed, (x, cond, features, t, dt), check_trace=False)
    names = {n.kind() for n in traced.inlined_graph.nodes()}
    assert "mkldnn::_linear_pointwise" not in names and "aten::conv2d" not in names
    assert "aten::cat" in names  # the rotary's plain, export-friendly form


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_rotary_is_the_plain_rotary_bit_for_bit(dtype):
    q = torch.randn(2, 30, 256).to(dtype)
    model = random_dit()
    cos, sin = (a.to(dtype) for a in model.rotary_embed(30))
    want = apply_rotary(q, cos, sin, 64)
    got = apply_rotary_(q.clone(), cos, sin, 64)
    assert torch.equal(got, want)


def test_float32_modulation_and_residual_are_the_references_bit_for_bit():
    x, shift, scale, gate = torch.randn(2, 30, 128), torch.randn(2, 128), torch.randn(2, 128), torch.randn(2, 128)
    normed = F.layer_norm(x, (128,), eps=NORM_EPS)
    assert torch.equal(modulate(x, shift, scale, 128), normed * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1))
    assert torch.equal(add_gated(x, gate, normed), x + gate.unsqueeze(1) * normed)
    # bfloat16 takes the fused form: one rounding, so within one bfloat16 step of the two-step one.
    xb, sb, hb = x.bfloat16(), scale.bfloat16(), shift.bfloat16()
    two_steps = F.layer_norm(xb, (128,), eps=NORM_EPS) * (1 + sb.unsqueeze(1)) + hb.unsqueeze(1)
    torch.testing.assert_close(modulate(xb, hb, sb, 128).float(), two_steps.float(), atol=0.1, rtol=2**-7)


def test_intra_op_threads_lowers_and_restores():
    torch.set_num_threads(2)
    with ms.intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with ms.intra_op_threads(None), ms.intra_op_threads(3):  # never raised
        assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), ms.intra_op_threads(1):
        raise RuntimeError
    assert torch.get_num_threads() == 2


def test_a_short_first_run_decodes_on_its_threads_and_later_runs_on_the_processes(monkeypatch):
    model = tiny_model("v4")
    plan = ms.CHUNK_PLANS["v4"]
    wav = torch.sin(torch.arange(plan.sample_rate * 3) * 0.05) * 0.3
    voice = ms.prepare_voice(
        model,
        torch.randint(0, 1024, (1, 1, 60)),
        torch.randint(1, 700, (1, 12)),
        torch.rand(1, 1025, 90),
        ms.reference_mel(wav, plan.sample_rate, "v4"),
    )
    threads: list[tuple[int, int]] = []  # (frames of the CFM call, threads it ran on)

    def spy(estimator, features, prompt, n_steps, **kwargs):
        threads.append((features.shape[1], torch.get_num_threads()))
        return sample_mel(estimator, features, prompt, n_steps, **kwargs)

    monkeypatch.setattr(ms, "sample_mel", spy)
    torch.set_num_threads(2)
    stream = ms.MelStream(
        model,
        MeanVocoder(plan.samples_per_frame),
        voice,
        torch.randint(1, 700, (1, 20)),
        2,
        first_run=ms.FirstRun(prompt_frames=32),
        short_call_threads=1,
    )
    codes = torch.randint(0, 1024, (30,))
    stream.decode(codes[:4], codes[4:8])
    stream.decode(codes[8:20], codes[20:24])
    assert threads[0] == (32 + 8 * 4, 1) and threads[1][0] > ms.SHORT_CALL_FRAMES and threads[1][1] == 2
    assert torch.get_num_threads() == 2


def test_the_engine_packs_only_a_bfloat16_cpu_dit_and_thins_every_cpu_first_run(tmp_path):
    sovits, vocoder = tiny_v4_files(tmp_path)
    cpu = torch.device("cpu")
    fast = MelVocoderEngine.load(sovits, vocoder, "v4", cpu, torch.bfloat16)
    assert isinstance(fast.model.estimator.transformer_blocks[0].attn, PackedAttention)
    assert fast.short_call_threads == 1
    exact = MelVocoderEngine.load(sovits, vocoder, "v4", cpu, torch.float32)
    assert type(exact.model.estimator.transformer_blocks[0].attn).__name__ == "Attention"
    assert exact.short_call_threads == 1


def test_the_first_run_profile_script_runs_on_a_tiny_model(tmp_path, capsys):
    tiny_v4_files(tmp_path)
    script = Path(__file__).resolve().parents[1] / "scripts" / "profile_dit_first_run.py"
    spec = importlib.util.spec_from_file_location("profile_dit_first_run", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--model-dir", str(tmp_path), "--threads", "1", "--frames", "8", "--prompt-frames", "8"]
    module.main([*args, "--steps", "2", "--calls", "2", "--profile", "--save", str(tmp_path / "mel.pt")])
    printed = capsys.readouterr().out
    assert "v4 DiT, 8 + 8 frames, 2 steps, bfloat16, 1 threads" in printed and "median" in printed
    assert "aten operators:" in printed and "mkldnn::_linear_pointwise" in printed  # the packed products ran
    mel = torch.load(tmp_path / "mel.pt")
    assert mel.shape == (1, 100, 16) and bool(mel.isfinite().all()) and not mel[..., :8].any()


def test_the_first_runs_threads_are_a_vocoder_setting_and_all_of_them_in_gsv_tts(tmp_path, monkeypatch):
    from dora_gpt_sovits.model_paths import ModelPaths
    from dora_gpt_sovits.nodes.gsv_tts import with_kokoro_defaults
    from dora_gpt_sovits.nodes.vocoder import open_mel_engine
    from dora_gpt_sovits.settings import VocoderSettings

    sovits, vocoder = tiny_v4_files(tmp_path)
    paths = ModelPaths("v4", tmp_path, tmp_path, sovits, tmp_path, tmp_path, None, True, vocoder)
    monkeypatch.setenv("GSV_BACKEND", "torch")
    monkeypatch.setenv("GSV_DEVICE", "cpu")
    threads = {}
    for setting in (None, "0", "2"):
        env = {} if setting is None else {"GSV_FIRST_RUN_THREADS": setting}
        engine, _ = open_mel_engine(paths, VocoderSettings.from_env(env))
        threads[setting] = engine.short_call_threads
    assert threads == {None: 1, "0": None, "2": 2}  # None: the node's own thread count
    assert with_kokoro_defaults({})["GSV_FIRST_RUN_THREADS"] == "0"  # one process: no GPT beside it
    with pytest.raises(ValueError, match="GSV_FIRST_RUN_THREADS"):
        VocoderSettings.from_env({"GSV_FIRST_RUN_THREADS": "-1"})
