"""A streamed run carrying the generator's left context (sovits/generator.LeftContext) computes what
one pass over the whole sequence computes, so the stream decodes no left margin again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES

from dora_gpt_sovits.sovits import load_sovits
from dora_gpt_sovits.sovits.generator import Generator, LeftContext
from dora_gpt_sovits.sovits.half_generator import HalfPrecisionGenerator
from dora_gpt_sovits.sovits.streaming import TorchStreamingSynthesis, decode_chunk

pytestmark = pytest.mark.usefixtures("torch_single_thread")

HOP = 160  # 10 * 4 * 2 * 2: the upsampling of v2_shaped()
RIGHT_MARGIN = 30  # frames past a run's commit: more than the generator's receptive field


def v2_shaped(seed: int = 0) -> Generator:
    """The v2 generator's kernels, strides and dilations (v2: 512 channels, rates 10,8,2,2,2) at a
    small width: every kind of left context the real one carries (dilated, transposed, 1-tap)."""
    torch.manual_seed(seed)
    gen = Generator(12, 64, (10, 4, 2, 2), (16, 8, 2, 4), (3, 7, 11), ((1, 3, 5),) * 3, 8)
    with torch.no_grad():
        for p in gen.parameters():  # scaled so the activations neither vanish nor saturate tanh
            p.mul_(0.6)
    return gen.eval()


def in_runs(gen, z: torch.Tensor, g: torch.Tensor, commits: list[int], context: LeftContext | None) -> torch.Tensor:
    """z decoded run by run: each run starts at the previous commit and sees RIGHT_MARGIN frames past
    its own (as a streamed run sees its lookahead); only the samples before the commit are kept."""
    pieces, start = [], 0
    for commit in [*commits, z.shape[-1]]:
        stop = min(commit + RIGHT_MARGIN, z.shape[-1])
        wav = gen(z[..., start:stop], g, context=context, commit=commit - start)
        pieces.append(wav[..., : (commit - start) * HOP])
        start = commit
    return torch.cat(pieces, -1)


@pytest.mark.parametrize("spectral", [False, True], ids=["direct", "fft"])
@pytest.mark.parametrize("commits", [[30, 55], [3, 4, 6, 9, 40]], ids=["long-runs", "runs-shorter-than-context"])
def test_runs_carrying_left_context_compute_the_whole_sequence(spectral, commits):
    gen = v2_shaped()
    if spectral:  # the residual blocks' long convolutions by FFT, as the CPU vocoder runs them
        assert gen.use_spectral_convs(True, {(32, 7): (32, 0), (32, 11): (64, 0), (16, 7): (32, 0)}) > 0
    z, g = torch.randn(1, 12, 70), torch.randn(1, 8, 1)
    with torch.inference_mode():
        whole = gen(z, g)
        carried = in_runs(gen, z, g, commits, LeftContext())
        zero_padded = in_runs(gen, z, g, commits, None)
    assert carried.shape == whole.shape
    torch.testing.assert_close(carried, whole, rtol=0, atol=1e-5)
    assert (zero_padded - whole).abs().max() > 1e-2  # each run's start needs the context carried


def test_half_precision_runs_carry_context_and_a_float32_retry_starts_from_it(monkeypatch):
    z, g = torch.randn(1, 12, 60), torch.randn(1, 8, 1)
    with torch.inference_mode():
        whole = v2_shaped()(z, g)
        half = in_runs(HalfPrecisionGenerator(v2_shaped(), torch.bfloat16), z, g, [20, 41], LeftContext())
    assert 10 * torch.log10(whole.pow(2).sum() / (half - whole).pow(2).sum()) > 30  # bfloat16's agreement

    forward = Generator.forward

    def nan_in_bfloat16(self, *args, **kwargs):  # a kernel defect in bfloat16 only, after the run recorded
        out = forward(self, *args, **kwargs)
        return out.fill_(float("nan")) if out.dtype == torch.bfloat16 else out

    rounded = v2_shaped().to(torch.bfloat16).float()  # the generator's float32 twin
    with torch.inference_mode():  # whose output the guard returns in the module's dtype
        expected = in_runs(rounded, z, g, [20, 41], LeftContext()).to(torch.bfloat16).float()
    monkeypatch.setattr(Generator, "forward", nan_in_bfloat16)
    with torch.inference_mode():
        retried = in_runs(HalfPrecisionGenerator(v2_shaped(), torch.bfloat16), z, g, [20, 41], LeftContext())
    # The first run's float32 retry starts from the stream's start again, not from what the failed
    # bfloat16 attempt recorded; the later runs carry the retry's context.
    torch.testing.assert_close(retried, expected, rtol=0, atol=1e-4)


class CountingSynthesis(TorchStreamingSynthesis):
    """The torch synthesis, counting the frames each chunk's generator decodes."""

    def __init__(self, model):
        super().__init__(model)
        self.frames: list[int] = []

    def window_audio(self, window, eps, noise_scale, cond, keep, **carry):
        self.frames.append(keep.stop - keep.start)
        return super().window_audio(window, eps, noise_scale, cond, keep, **carry)


@pytest.fixture(scope="module")
def tiny_sovits():
    """Upstream's tiny v2 fixture model, its reference spectrogram and target phones."""
    if not FIXTURES.is_dir():
        pytest.skip("upstream-v2 fixtures not present")
    model = load_sovits(FIXTURES / "sovits_v2_tiny_pk_dict.pth")
    expected = np.load(FIXTURES / "expected.npz")
    cond = model.global_condition([torch.from_numpy(expected["ref_spec"]).unsqueeze(0)])
    return model, cond, torch.from_numpy(expected["dec_sovits_v2_tiny_pk_dict_text_ids"]).view(1, -1)


def test_a_chunk_continuing_the_stream_decodes_no_left_margin(tiny_sovits):
    model, cond, phones = tiny_sovits
    codes = torch.randint(0, 1024, (30,), generator=torch.Generator().manual_seed(1))
    synthesis = CountingSynthesis(model)
    context = LeftContext()

    def chunk(start: int, stop: int, **kwargs):
        return decode_chunk(
            synthesis, cond, phones, codes[:start], codes[start:stop], codes[stop : stop + 4], noise_scale=0, **kwargs
        )

    with torch.inference_mode():
        chunk(0, 10, context=context)
        chunk(10, 20, context=context)  # continues: frames 20..40 and the 8-frame right margin
        assert synthesis.frames == [20 + 8, 20 + 8]
        # A chunk that does not start where the stream stands (a gap) decodes both margins, as without.
        apart = chunk(22, 26, context=context)
        alone = chunk(22, 26)
    assert synthesis.frames[2:] == [8 + 8 + 8, 8 + 8 + 8]
    torch.testing.assert_close(apart.samples, alone.samples, rtol=0, atol=1e-6)
    assert context.frame == 52
