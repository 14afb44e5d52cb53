"""v3/v4 synthesis on a small random model: the chunk recurrence, streaming, LoRA merging, step checks.

Parity with upstream's own outputs is in tests/test_upstream_v3v4.py; these tests pin the rules
that make the stream what it is (one call = upstream's one-shot loop, runs line up sample for
sample, the prompt context) on a model small enough to run in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.checkpoint_io import CheckpointError
from dora_gpt_sovits.sovits import mel_synthesis as ms
from dora_gpt_sovits.sovits.cfm import sample_mel
from dora_gpt_sovits.sovits.config import SoVITSConfig
from dora_gpt_sovits.sovits.dit import DiTConfig
from dora_gpt_sovits.sovits.lora import merge_lora
from dora_gpt_sovits.sovits.mel_engine import MelVocoderEngine
from dora_gpt_sovits.sovits.mel_synthesizer import MelDecoderDims, MelSynthesizer

pytestmark = pytest.mark.usefixtures("torch_single_thread")


class MeanVocoder(torch.nn.Module):
    """A stand-in vocoder whose every sample depends on its own mel frame only (joins are exact)."""

    def __init__(self, hop: int):
        super().__init__()
        self.hop = hop

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(mel.mean(1, keepdim=True), self.hop, -1)


def tiny_model(version: str) -> MelSynthesizer:
    torch.manual_seed(0)
    config = SoVITSConfig(model_version=version, filter_channels=32, n_layers=2)
    dit = DiTConfig(dim=64, depth=1, heads=1, dim_head=64, ff_mult=2, mel_dim=100, text_dim=32, conv_layers=1)
    model = MelSynthesizer(config, MelDecoderDims(32, 2, dit)).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    model.quantizer.embed.normal_()
    return model


@pytest.fixture(scope="module", params=["v3", "v4"])
def setup(request):
    model = tiny_model(request.param)
    plan = ms.CHUNK_PLANS[request.param]
    wav = torch.sin(torch.arange(plan.sample_rate * 3) * 0.05) * 0.3
    ref_mel = ms.reference_mel(wav, plan.sample_rate, request.param)
    voice = ms.prepare_voice(
        model, torch.randint(0, 1024, (1, 1, 60)), torch.randint(1, 700, (1, 12)), torch.rand(1, 1025, 90), ref_mel
    )
    return model, MeanVocoder(plan.samples_per_frame), voice


def test_prompt_is_the_frames_both_cover_at_most_t_ref(setup):
    model, _, voice = setup
    assert (
        voice.features.shape[-1] == voice.mel.shape[-1] <= ms.CHUNK_PLANS[model.config.model_version].max_prompt_frames
    )


def long_reference_voice(model: MelSynthesizer) -> ms.MelVoice:
    """A 7 s reference: P = T_ref, and for v3 a chunk (T_chunk - T_ref = 466) is shorter than P (468)."""
    plan = ms.CHUNK_PLANS[model.config.model_version]
    ref_mel = ms.reference_mel(torch.sin(torch.arange(plan.sample_rate * 7) * 0.03) * 0.3, plan.sample_rate, "v3")
    return ms.prepare_voice(
        model, torch.randint(0, 1024, (1, 1, 175)), torch.randint(1, 700, (1, 40)), torch.rand(1, 1025, 350), ref_mel
    )


@pytest.mark.parametrize("reference", ["short", "long"])
def test_one_call_is_upstreams_chunk_loop(setup, reference):
    """Upstream's loop written out: chunks of T_chunk - P frames, each prompted by the previous chunk's tail."""
    model, vocoder, voice = setup
    if reference == "long":
        voice = long_reference_voice(model)
        assert voice.mel.shape[-1] == ms.CHUNK_PLANS[model.config.model_version].max_prompt_frames
    codes, phones = torch.randint(0, 1024, (400,)), torch.randint(1, 700, (1, 30))
    ours = ms.synthesize(
        model, vocoder, voice, codes, phones, 2, noise=ms.upstream_noise(torch.Generator().manual_seed(5))
    )

    torch.manual_seed(5)  # upstream draws its noise from the global stream
    fea_todo = model.features(codes.view(1, 1, -1), phones, voice.ge)
    fea_ref, mel2 = voice.features, voice.mel
    chunk_len = ms.CHUNK_PLANS[model.config.model_version].chunk_frames - mel2.shape[-1]
    out, index = [], 0
    assert fea_todo.shape[-1] > chunk_len  # the loop runs more than once
    while index < fea_todo.shape[-1]:
        chunk = fea_todo[..., index : index + chunk_len]
        index += chunk_len
        mel = sample_mel(model.estimator, torch.cat([fea_ref, chunk], -1).transpose(1, 2), mel2, 2)
        mel = mel[..., mel2.shape[-1] :]
        mel2, fea_ref = mel[..., -voice.mel.shape[-1] :], chunk[..., -voice.mel.shape[-1] :]
        out.append(mel)
    expected = vocoder(ms.denormalise_mel(torch.cat(out, -1))).reshape(-1)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_streamed_runs_cover_the_segment_and_stay_finite(setup):
    model, vocoder, voice = setup
    codes, phones = torch.randint(0, 1024, (60,)), torch.randint(1, 700, (1, 20))
    one_shot = ms.synthesize(model, vocoder, voice, codes, phones, 2, noise=ms.frame_noise(1))
    stream = ms.MelStream(model, vocoder, voice, phones, 2, noise=ms.frame_noise(1))
    pieces = []
    for start in range(0, 60, 10):
        lookahead = codes[start + 10 : start + 14]
        samples, tail = stream.decode(codes[start : start + 10], lookahead)
        pieces.append(samples)
        assert torch.isfinite(samples).all() and (len(tail) > 0) == (len(lookahead) > 0)
    streamed = torch.cat(pieces)
    assert streamed.shape == one_shot.shape  # same frames: the token -> frame grid is fixed


def test_runs_must_come_in_order(setup):
    model, vocoder, voice = setup
    engine = MelVocoderEngine(model, vocoder, sample_steps=1)
    inputs = engine.condition(np.ones((1025, 50), np.float32), None, "", np.arange(40), voice.mel[0].numpy())
    decode = engine.make_decoder(inputs, np.arange(1, 9), 0, None, list(range(1, 9)))
    decode(np.zeros(0, np.int64), np.arange(10), np.arange(4), 0)
    with pytest.raises(ValueError, match="out of order"):
        decode(np.zeros(0, np.int64), np.arange(10), np.arange(4), 0)


def test_engine_refuses_what_v3_v4_cannot_do(setup):
    model, vocoder, voice = setup
    engine = MelVocoderEngine(model, vocoder)
    assert engine.sample_steps == ms.DEFAULT_STEPS[model.config.model_version]
    spec = np.ones((1025, 50), np.float32)
    with pytest.raises(ValueError, match="prompt text"):
        engine.condition(spec, None, "", np.zeros(0, np.int64), voice.mel[0].numpy())
    inputs = engine.condition(spec, None, "", np.arange(40), voice.mel[0].numpy())
    with pytest.raises(ValueError, match="prompt text's phones"):
        engine.make_decoder(inputs, np.arange(1, 9), 0, None, [])


@pytest.mark.parametrize("steps", [0, 1000, 4.5, "8", True, -1])
def test_bad_step_counts(steps):
    with pytest.raises(ValueError, match="sample_steps"):
        m.sample_steps(steps)
    with pytest.raises(m.MessageError, match="sample_steps"):
        m.RequestOptions.from_metadata({m.SAMPLE_STEPS: steps}, "text")


def test_step_counts_accepted():
    assert m.sample_steps(8) == 8 and m.sample_steps(32.0) == 32
    assert m.RequestOptions.from_metadata({m.SAMPLE_STEPS: 4}, "text").sample_steps == 4


# ---- LoRA ---------------------------------------------------------------------------------------
PEFT = "cfm.base_model.model.estimator.transformer_blocks.0.attn.to_q"


def lora_case(rank: int = 2):
    base = {"cfm.estimator.transformer_blocks.0.attn.to_q.weight": torch.randn(6, 4), "bridge.0.weight": torch.ones(3)}
    a, b = torch.randn(rank, 4), torch.randn(6, rank)
    lora = {f"{PEFT}.lora_A.default.weight": a, f"{PEFT}.lora_B.default.weight": b, "bridge.0.weight": torch.zeros(3)}
    return base, lora, a, b


def test_lora_merges_b_a_into_the_base_and_overlays_full_tensors():
    base, lora, a, b = lora_case()
    merged = merge_lora(base, lora, 2, "ft.pth")
    key = "cfm.estimator.transformer_blocks.0.attn.to_q.weight"
    torch.testing.assert_close(merged[key], base[key] + b @ a)
    assert torch.equal(merged["bridge.0.weight"], torch.zeros(3))


def test_lora_errors_are_one_line_naming_the_file():
    base, lora, _, _ = lora_case()
    half = {k: v for k, v in lora.items() if "lora_B" not in k}
    with pytest.raises(CheckpointError, match="ft.pth: .*lacks lora_B"):
        merge_lora(base, half, 2, "ft.pth")
    with pytest.raises(CheckpointError, match="expected A \\[3, 4\\]"):
        merge_lora(base, lora, 3, "ft.pth")
    with pytest.raises(CheckpointError, match="no counterpart in the base"):
        merge_lora(base, {**lora, "enc_p.unknown": torch.zeros(1)}, 2, "ft.pth")
    with pytest.raises(CheckpointError, match="without any lora_A/lora_B"):
        merge_lora(base, {"bridge.0.weight": torch.zeros(3)}, 2, "ft.pth")


def test_frame_noise_is_the_same_for_a_frame_whichever_call_draws_it():
    draw = ms.frame_noise(7)
    whole = draw(3, 0, 200)
    assert whole.shape == (1, 100, 203) and torch.equal(whole[..., :3], torch.zeros(1, 100, 3))
    torch.testing.assert_close(draw(5, 60, 130)[..., 5:], whole[..., 63:133], rtol=0, atol=0)
    assert not torch.equal(ms.frame_noise(8)(0, 0, 10), draw(0, 0, 10))


def test_upstream_noise_is_one_draw_of_the_calls_shape():
    torch.manual_seed(3)
    expected = torch.randn([1, 100, 50])
    torch.testing.assert_close(ms.upstream_noise(torch.Generator().manual_seed(3))(20, 0, 30), expected)


def test_a_bfloat16_dit_integrates_in_float32_and_stays_near_float32(setup):
    """GSV_DTYPE=bfloat16 on a CPU: only the DiT is bfloat16 (mel_engine); the ODE state stays float32."""
    model, _, voice = setup
    features = torch.cat([voice.features, voice.features[..., :40]], -1).transpose(1, 2)
    noise = ms.frame_noise(3)(voice.mel.shape[-1], 0, 40)
    exact = sample_mel(model.estimator, features, voice.mel, 4, noise=noise)
    half = tiny_model(model.config.model_version)
    half.load_state_dict(model.state_dict())
    half.cfm.estimator.to(torch.bfloat16)
    fast = sample_mel(half.estimator, features, voice.mel, 4, noise=noise)
    assert fast.dtype == torch.float32
    error = (fast - exact).pow(2).mean() / exact.pow(2).mean()
    assert 0 < error < 1e-3, error


def test_the_reference_node_keeps_only_the_prompt_encoder():
    model = tiny_model("v3")
    hubert = torch.randn(1, 768, 40)
    codes = model.extract_prompt_codes(hubert)
    model.keep_prompt_encoder_only()
    assert not hasattr(model, "cfm") and not hasattr(model, "wns1")
    assert torch.equal(model.extract_prompt_codes(hubert), codes)


# ---- a streamed segment's first run (FirstRun) and the remembered modulation ---------------------


def recorded_calls(monkeypatch) -> list[tuple[int, int, int]]:
    """(prompt frames, new frames, steps) of every CFM call the stream makes."""
    calls: list[tuple[int, int, int]] = []

    def spy(estimator, features, prompt, n_steps, **kwargs):
        calls.append((prompt.shape[-1], features.shape[1] - prompt.shape[-1], n_steps))
        return sample_mel(estimator, features, prompt, n_steps, **kwargs)

    monkeypatch.setattr(ms, "sample_mel", spy)
    return calls


def stream_runs(model, vocoder, voice, first_run, codes, phones, run=10, lookahead=4) -> torch.Tensor:
    stream = ms.MelStream(model, vocoder, voice, phones, 2, noise=ms.frame_noise(1), first_run=first_run)
    pieces = []
    for start in range(0, len(codes), run):
        pieces.append(stream.decode(codes[start : start + run], codes[start + run : start + run + lookahead])[0])
    return torch.cat(pieces)


def test_the_first_run_shortcut_cuts_only_a_streamed_first_call(setup, monkeypatch):
    model, vocoder, voice = setup
    calls = recorded_calls(monkeypatch)
    codes, phones = torch.randint(0, 1024, (30,)), torch.randint(1, 700, (1, 20))
    stream_runs(model, vocoder, voice, ms.FirstRun(prompt_frames=16, steps=1), codes, phones)
    prompt = voice.mel.shape[-1]
    assert prompt > 16 and len(calls) == 3
    assert calls[0][0] == 16 and calls[0][2] == 1  # the first run: the reference's last 16 frames, 1 step
    assert [(p, s) for p, _, s in calls[1:]] == [(prompt, 2), (prompt, 2)]  # later runs: the whole prompt


def test_a_segment_in_one_call_never_takes_the_shortcut(setup):
    """One call of the stream stays upstream's one-shot synthesis whatever the first-run setting."""
    model, vocoder, voice = setup
    codes, phones = torch.randint(0, 1024, (40,)), torch.randint(1, 700, (1, 20))
    noise = ms.upstream_noise(torch.Generator().manual_seed(5))
    exact = ms.synthesize(model, vocoder, voice, codes, phones, 2, noise=noise)
    stream = ms.MelStream(
        model, vocoder, voice, phones, 2, noise=ms.upstream_noise(torch.Generator().manual_seed(5)),
        first_run=ms.FirstRun(prompt_frames=8, steps=1),
    )  # fmt: skip
    assert torch.equal(stream.decode(codes, codes[:0])[0], exact)


def test_a_shortcut_beyond_the_prompt_and_steps_is_the_exact_stream(setup):
    model, vocoder, voice = setup
    codes, phones = torch.randint(0, 1024, (30,)), torch.randint(1, 700, (1, 20))
    exact = stream_runs(model, vocoder, voice, ms.EXACT, codes, phones)
    loose = ms.FirstRun(prompt_frames=voice.mel.shape[-1] + 100, steps=64)
    assert torch.equal(stream_runs(model, vocoder, voice, loose, codes, phones), exact)
    cut = stream_runs(model, vocoder, voice, ms.FirstRun(prompt_frames=4), codes, phones)
    assert cut.shape == exact.shape and torch.isfinite(cut).all() and not torch.equal(cut, exact)


@pytest.mark.parametrize("bad", [{"prompt_frames": 0}, {"prompt_frames": -2}, {"prompt_frames": 2.5},
                                 {"prompt_frames": True}, {"steps": 0}, {"steps": 500}])  # fmt: skip
def test_first_run_refuses_bad_values_in_one_line(bad):
    with pytest.raises(ValueError) as e:
        ms.FirstRun(**bad)
    assert "\n" not in str(e.value)


def test_first_run_labels():
    assert ms.EXACT.label() == "exact" and ms.FirstRun(32).label() == "32 prompt frames"
    assert ms.FirstRun(32, 4).label() == "32 prompt frames, 4 steps"


def test_the_engine_streams_with_its_first_run_setting(setup, monkeypatch):
    model, vocoder, voice = setup
    calls = recorded_calls(monkeypatch)
    engine = MelVocoderEngine(model, vocoder, sample_steps=2, first_run=ms.FirstRun(prompt_frames=12))
    inputs = engine.condition(np.ones((1025, 50), np.float32), None, "", np.arange(40), voice.mel[0].numpy())
    decode = engine.make_decoder(inputs, np.arange(1, 9), 0, None, list(range(1, 9)))
    decode(np.zeros(0, np.int64), np.arange(10), np.arange(4), 0)
    decode(np.zeros(0, np.int64), np.arange(4), np.zeros(0, np.int64), 10)
    assert calls[0][0] == 12 and calls[1][0] > 12


def test_remembered_modulation_is_bit_exact_bounded_and_keeps_the_names(setup):
    import copy

    from dora_gpt_sovits.sovits.modulation_memo import MemoModulation, memoize_modulation

    model, _, voice = setup
    plain = model.estimator
    memo = memoize_modulation(copy.deepcopy(plain), max_times=3)
    assert list(memo.state_dict()) == list(plain.state_dict())
    features = torch.cat([voice.features, voice.features[..., :30]], -1).transpose(1, 2)
    noise = ms.frame_noise(2)(voice.mel.shape[-1], 0, 30)
    for steps in (2, 4, 2):
        exact = sample_mel(plain, features, voice.mel, steps, noise=noise)
        assert torch.equal(sample_mel(memo, features, voice.mel, steps, noise=noise), exact)
    assert isinstance(memo.norm_out, MemoModulation) and len(memo.norm_out.memo) == 3
