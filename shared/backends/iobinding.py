"""Bind torch tensors (CPU or CUDA) as ONNX Runtime inputs/outputs, so nothing is copied on the way.

The same code serves the CPU and CUDA providers: a buffer is bound by its device and data pointer,
and ONNX Runtime reads or writes it in place.
"""

from __future__ import annotations

import numpy as np
import torch

NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.bool: np.bool_}


def _where(t: torch.Tensor) -> tuple[str, int]:
    return ("cuda", t.device.index or 0) if t.device.type == "cuda" else ("cpu", 0)


def bind_input(binding, name: str, t: torch.Tensor) -> None:
    assert t.is_contiguous(), name
    kind, index = _where(t)
    binding.bind_input(name, kind, index, NUMPY[t.dtype], list(t.shape), t.data_ptr())


def bind_output(binding, name: str, t: torch.Tensor) -> None:
    assert t.is_contiguous(), name
    kind, index = _where(t)
    binding.bind_output(name, kind, index, NUMPY[t.dtype], list(t.shape), t.data_ptr())
