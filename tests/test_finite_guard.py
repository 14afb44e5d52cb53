"""finite_guard: a half-precision module that computes NaN is rerun (and from then on run) in float32.

The real defect this guards against (oneDNN's AMX bfloat16 convolution reading past a padded edge)
only shows on Intel CPUs with AMX, and only for some memory states; the unit tests here use a
module that fails the same way on purpose, so they fail without the guard on every CPU.
tests/test_speaker_verification.py::test_half_precision_loading[bfloat16] is the real case
(NaN on every run on a Xeon with AMX before the guard).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from dora_gpt_sovits.finite_guard import NonFiniteOutput, module_dtype, run_finite


class NaNInHalf(nn.Module):
    """Doubles its input; in half precision the last output columns are NaN, like the AMX defect."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0), requires_grad=False)
        self.calls: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(self.scale.dtype)
        y = x * self.scale
        if self.scale.dtype != torch.float32:
            y[..., -2:] = float("nan")
        return y


def forward_on(x):
    return lambda module: module(x.to(module_dtype(module)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_module_with_nan_output_switches_to_float32_once(dtype, caplog):
    module = NaNInHalf().to(dtype)
    x = torch.arange(6, dtype=torch.float32).reshape(1, 6)
    with caplog.at_level(logging.WARNING, logger="dora_gpt_sovits"):
        first = run_finite(module, forward_on(x), "toy", (x,))
        second = run_finite(module, forward_on(x), "toy", (x,))
    for out in (first, second):
        assert out.dtype == dtype  # the caller keeps the precision it asked for
        torch.testing.assert_close(out.float(), 2 * x)
    # one half call found the NaN; the float32 twin answered it and every later call
    assert [r.message for r in caplog.records if "toy" in r.message and "float32" in r.message] != []
    assert len([r for r in caplog.records if "toy" in r.message]) == 1
    assert module.calls == [dtype]
    assert module_dtype(module) == dtype  # the module itself is unchanged


def test_a_finite_half_output_is_returned_as_is():
    module = nn.Linear(4, 3).to(torch.bfloat16)
    x = torch.ones(1, 4)
    out = run_finite(module, forward_on(x), "linear", (x,))
    assert out.dtype == torch.bfloat16 and not hasattr(module, "_float32_twin")


def test_float32_nan_output_is_an_error_not_audio():
    module = nn.Linear(4, 3)
    with torch.no_grad():
        module.weight[0, 0] = float("nan")
    x = torch.ones(1, 4)
    with pytest.raises(NonFiniteOutput, match=r"^broken: output holds NaN or infinite values in float32"):
        run_finite(module, forward_on(x), "broken", (x,))


def test_half_module_whose_twin_is_also_broken_is_an_error():
    module = nn.Linear(4, 3).to(torch.float16)
    with torch.no_grad():
        module.weight[0, 0] = float("inf")
    x = torch.ones(1, 4)
    with pytest.raises(NonFiniteOutput, match="even in float32"):
        run_finite(module, forward_on(x), "broken", (x,))


def test_non_finite_input_is_named_before_the_module_runs():
    module = NaNInHalf()
    x = torch.tensor([[1.0, float("nan")]])
    with pytest.raises(NonFiniteOutput, match="input 0 holds NaN"):
        run_finite(module, forward_on(x), "toy", (x,))
    assert module.calls == []


def test_the_vocoder_stage_never_sends_nan_samples():
    from dora_gpt_sovits import messages as m
    from dora_gpt_sovits.nodes.vocoder import VocoderStage

    def nan_decoder(cond, phone_ids, seed, speed):
        def decode(history, run, lookahead, position):
            return torch.full((len(run) * 640,), float("nan")), torch.zeros(0)

        return decode

    stage = VocoderStage(lambda spec, sv: "cond", nan_decoder, 32000, needs_speaker_embedding=False)
    list(
        stage.handle(m.REFERENCE_SPECTROGRAM, *m.ReferencePart("default", np.ones((1025, 8), np.float32)).to_message())
    )
    key = m.SegmentKey("u", 0, True, "default", 1.0)
    chunk = m.SemanticChunk(key, np.arange(20, dtype=np.int64), 0, True, [1, 2]).to_message()
    sent = [o for o in stage.handle(m.SEMANTIC_TOKENS, *chunk) if o is not None and o.output_id == m.AUDIO]
    assert len(sent) == 1
    audio = m.AudioChunk.from_event(sent[0].data, sent[0].metadata)
    assert audio.samples.size == 0 and audio.segment_final
    assert "NaN" in audio.error


def test_hubert_features_from_an_exported_graph_are_checked_too():
    from dora_gpt_sovits.encoders.hubert import hubert_features

    class NaNGraph:  # the shape of backends.encoder_runtime.GraphHubert
        device, dtype = torch.device("cpu"), torch.float32

        def last_hidden(self, wav):
            return torch.full((1, wav.shape[1] // 320, 768), float("nan"))

    with pytest.raises(NonFiniteOutput, match=r"^CN-HuBERT \(exported graph\): output holds NaN"):
        hubert_features(NaNGraph(), torch.zeros(16000))
