"""GSV_DIT_COMPILE: the v3/v4 DiT's per-step call under torch.compile equals the eager DiT."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_v4_files
from test_cfm_dit import TINY, random_dit

from dora_gpt_sovits.settings import SettingsError, VocoderSettings
from dora_gpt_sovits.sovits.cfm import sample_mel
from dora_gpt_sovits.sovits.dit_compile import compile_dit, compile_mode, is_compiled


def run_inputs(length: int, prompt_frames: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(1, length, TINY.text_dim, generator=g)
    prompt = torch.randn(1, TINY.mel_dim, prompt_frames, generator=g).clamp(-1, 1)
    noise = torch.randn(1, TINY.mel_dim, length, generator=g)
    return features, prompt, noise


def assert_compiled_matches_eager(device: str, mode: str, lengths: tuple[int, ...], atol: float) -> None:
    eager = random_dit(TINY).to(device)
    compiled = compile_dit(random_dit(TINY).to(device), mode)
    assert is_compiled(compiled) and not is_compiled(eager)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    for length in lengths:  # a streamed segment's runs: growing lengths, one compiled graph
        features, prompt, noise = (t.to(device) for t in run_inputs(length))
        want = sample_mel(eager, features, prompt, 4, noise=noise)
        got = sample_mel(compiled, features, prompt, 4, noise=noise)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() < atol, length
    # dynamic=True: the lengths share one graph (no recompile per streamed run)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


@pytest.mark.slow
def test_inductor_equals_eager_at_varying_lengths_on_cpu():
    assert_compiled_matches_eager("cpu", "inductor", (24, 40, 57, 96), 1e-4)


@pytest.mark.gpu
def test_cudagraphs_equals_eager_on_gpu():
    assert_compiled_matches_eager("cuda", "cudagraphs", (24, 40, 57, 96, 40), 1e-3)


def test_off_leaves_the_dit_eager():
    dit = random_dit(TINY)
    assert compile_dit(dit, "off") is dit and not is_compiled(dit)


def test_cudagraphs_on_a_cpu_is_one_clear_line():
    with pytest.raises(SettingsError, match="cudagraphs needs a CUDA device") as e:
        compile_mode({"GSV_DIT_COMPILE": "cudagraphs"}, torch.device("cpu"))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cudagraphs needs a CUDA device"):
        compile_dit(random_dit(TINY), "cudagraphs")


def test_bad_values_are_one_clear_line():
    with pytest.raises(SettingsError, match="GSV_DIT_COMPILE='jit'") as e:
        compile_mode({"GSV_DIT_COMPILE": "jit"}, torch.device("cpu"))
    assert "\n" not in str(e.value)
    with pytest.raises(SettingsError, match="GSV_DIT_COMPILE"):
        VocoderSettings.from_env({"GSV_DIT_COMPILE": "yes"})
    assert VocoderSettings.from_env({}).dit_compile == "off"
    assert compile_mode({"GSV_DIT_COMPILE": "Inductor"}, torch.device("cpu")) == "inductor"
    with pytest.raises(ValueError, match="not one of"):
        compile_dit(random_dit(TINY), "max-autotune")


def test_the_engine_compiles_the_plain_dit(monkeypatch, tmp_path):
    """GSV_DIT_COMPILE=inductor in the engine: compiled, neither the modulation memo nor packed products."""
    from dora_gpt_sovits.sovits.dit_packed import PackedAttention
    from dora_gpt_sovits.sovits.mel_engine import MelVocoderEngine
    from dora_gpt_sovits.sovits.modulation_memo import MemoModulation

    sovits, vocoder = tiny_v4_files(tmp_path)

    def load():
        engine = MelVocoderEngine.load(sovits, vocoder, "v4", torch.device("cpu"), torch.bfloat16)
        return engine.model.cfm.estimator

    monkeypatch.setenv("GSV_DIT_COMPILE", "inductor")
    dit = load()
    assert is_compiled(dit) and not isinstance(dit.norm_out, MemoModulation)
    assert not any(isinstance(b.attn, PackedAttention) for b in dit.transformer_blocks)
    monkeypatch.setenv("GSV_DIT_COMPILE", "cudagraphs")
    with pytest.raises(SettingsError, match="cudagraphs needs a CUDA device"):
        load()
