"""Exported BERT and CN-HuBERT graphs behind the calls ``encoders.bert``/``encoders.hubert`` make,
so the feature code (tokenising, phone alignment, padding) is shared with the torch path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import BackendChoice
from .manifest import checked_graph
from .ort import open_session


class _Graph:
    stage = ""

    def __init__(self, session, precision: str):
        self.session = session
        self.dtype = torch.float16 if precision == "float16" else torch.float32
        self.device = torch.device("cpu")  # inputs are prepared on the host and handed over as numpy

    @classmethod
    def open(cls, choice: BackendChoice, source: Path | None, threads: int | None = None, trt_options=None):
        precision = "float16" if choice.dtype == "float16" else "float32"
        path, _ = checked_graph(choice.onnx_dir, cls.stage, precision, source)
        return cls(open_session(path, choice, threads, (trt_options or {}).get(cls.stage)), precision)


class GraphBert(_Graph):
    stage = "bert"

    def selected_hidden(self, inputs) -> Tensor:
        feed = {
            name: inputs[name].cpu().numpy().astype(np.int64)
            for name in ("input_ids", "attention_mask", "token_type_ids")
        }
        return torch.from_numpy(self.session.run(None, feed)[0])


class GraphHubert(_Graph):
    stage = "hubert"

    def last_hidden(self, wav: Tensor) -> Tensor:
        array = np.ascontiguousarray(wav.cpu().numpy(), dtype=np.float16 if self.dtype == torch.float16 else np.float32)
        return torch.from_numpy(self.session.run(None, {"wav": array})[0])
