"""BERT (chinese-roberta) and CN-HuBERT as ONNX graphs.

Each graph computes only what the pipeline reads: BERT's third-from-last hidden state and HuBERT's
last hidden state, with dynamic length.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..encoders.bert import selected_hidden
from .export import onnx_bytes


class BertGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return selected_hidden(self.model, inputs)


class HubertGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, wav):
        return self.model(wav).last_hidden_state


def _half_copy(model, dtype):
    return copy.deepcopy(model).to("cpu", dtype).eval()


def export_bert(model, dtype: torch.dtype = torch.float32) -> dict[str, tuple[bytes, dict]]:
    model = _half_copy(model, dtype)
    ids = torch.tensor([[101, 872, 1962, 102]])
    with torch.no_grad():
        data = onnx_bytes(
            BertGraph(model),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            ["input_ids", "attention_mask", "token_type_ids"],
            ["hidden"],
            {n: {0: "batch", 1: "tokens"} for n in ("input_ids", "attention_mask", "token_type_ids", "hidden")},
        )
    return {"bert": (data, {"hidden_size": model.config.hidden_size})}


def export_hubert(model, dtype: torch.dtype = torch.float32) -> dict[str, tuple[bytes, dict]]:
    model = _half_copy(model, dtype)
    with torch.no_grad():
        data = onnx_bytes(
            HubertGraph(model),
            (torch.zeros(1, 16000, dtype=dtype),),
            ["wav"],
            ["hidden"],
            {"wav": {1: "samples"}, "hidden": {1: "frames"}},
        )
    return {"hubert": (data, {"hidden_size": model.config.hidden_size})}
