"""SoVITS as three ONNX graphs, the pieces ``sovits.streaming.decode_chunk`` calls:

* ``sovits_condition``: one reference spectrogram [1, 1025, F] (+ Pro: speaker vector [1, 20480])
  -> ``ge`` [1, gin, 1] and ``ge_text`` [1, 512, 1] (once per voice);
* ``sovits_content``: a token window [1, 1, N] + target phones [1, M] + ``ge_text`` -> content
  [1, C, 2N] (dynamic N and M);
* ``sovits_window``: content frames [1, C, F] + prior noise + ``ge`` -> flow -> generator on frames
  ``[keep_start, keep_stop)`` -> waveform (dynamic F). The noise is an input, drawn by the caller
  exactly as the torch path draws it, so both backends give the same sample.

A one-shot decode is one chunk with no history or lookahead, so these graphs serve both.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..sovits.synthesizer import Synthesizer
from .export import onnx_bytes

SV_DIM = 20480


class ConditionGraph(nn.Module):
    def __init__(self, model: Synthesizer):
        super().__init__()
        self.model = model

    def forward(self, spec, sv=None):
        ge = self.model.reference_condition(spec, sv)
        return ge, self.model.text_condition(ge)


class ContentGraph(nn.Module):
    def __init__(self, model: Synthesizer):
        super().__init__()
        self.model = model

    def forward(self, codes, phone_ids, ge_text):
        m = self.model
        return m.enc_p.content(m.semantic_frames(codes), phone_ids, ge_text)


class WindowGraph(nn.Module):
    def __init__(self, model: Synthesizer):
        super().__init__()
        self.model = model

    def forward(self, window, eps, noise_scale, ge, keep_start, keep_stop):
        m = self.model
        mean, logs, _ = m.enc_p.prior(window)
        z = m.flow.reverse(mean + eps.to(mean.dtype) * torch.exp(logs) * noise_scale.to(mean.dtype), ge)
        keep = torch.arange(keep_start, keep_stop, device=z.device)  # traced with tensor bounds: dynamic
        return m.dec(z.index_select(2, keep), ge)


def export_sovits(model: Synthesizer, dtype: torch.dtype = torch.float32) -> dict[str, tuple[bytes, dict]]:
    model = copy.deepcopy(model).to("cpu", dtype).eval()
    c = model.config
    is_pro = c.is_pro
    frames, tokens, phones = 40, 12, 9
    with torch.no_grad():
        spec = torch.zeros(1, c.spec_channels, frames, dtype=dtype)
        cond_inputs = (spec, torch.zeros(1, SV_DIM, dtype=dtype)) if is_pro else (spec,)
        ge, ge_text = ConditionGraph(model)(*cond_inputs)
        graphs = {
            "sovits_condition": onnx_bytes(
                ConditionGraph(model),
                cond_inputs,
                ["spec", "sv"][: len(cond_inputs)],
                ["ge", "ge_text"],
                {"spec": {2: "frames"}},
            ),
            "sovits_content": onnx_bytes(
                ContentGraph(model),
                (torch.randint(0, 1024, (1, 1, tokens)), torch.randint(1, 100, (1, phones)), ge_text),
                ["codes", "phone_ids", "ge_text"],
                ["content"],
                {"codes": {2: "tokens"}, "phone_ids": {1: "phones"}, "content": {2: "frames"}},
            ),
        }
        content = ContentGraph(model)(
            torch.randint(0, 1024, (1, 1, tokens)), torch.randint(1, 100, (1, phones)), ge_text
        )
        n = content.shape[-1]
        graphs["sovits_window"] = onnx_bytes(
            WindowGraph(model),
            (
                content,
                torch.zeros(1, c.inter_channels, n, dtype=dtype),
                torch.tensor(0.5),
                ge,
                torch.tensor(2),
                torch.tensor(n - 3),
            ),
            ["window", "eps", "noise_scale", "ge", "keep_start", "keep_stop"],
            ["wav"],
            {"window": {2: "frames"}, "eps": {2: "frames"}, "wav": {2: "samples"}},
        )
    facts = {
        "model_version": model.version.model_version,
        "is_pro": is_pro,
        "sampling_rate": c.sampling_rate,
        "samples_per_frame": c.samples_per_frame,
        "inter_channels": c.inter_channels,
        "hidden_channels": c.hidden_channels,
        "receptive_field": model.flow.receptive_field,
    }
    return {name: (data, facts) for name, data in graphs.items()}
